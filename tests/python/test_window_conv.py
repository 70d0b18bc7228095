"""The window (matrix-product) forms of strided convolutions equal torch's, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from convnetvae.model.window import use_windows, window_conv1d, window_conv_transpose1d

GEOMETRIES = [  # (c_in, c_out, kernel, stride, length)
    (1, 32, 31, 31, 31 * 7), (3, 32, 31, 31, 31 * 7 + 5), (2, 8, 51, 51, 300), (3, 4, 11, 11, 121),
    (3, 32, 11, 3, 100), (32, 64, 11, 3, 61), (2, 5, 7, 7, 71), (3, 4, 5, 2, 50), (1, 2, 1, 1, 9),
]


@pytest.mark.parametrize("c_in,c_out,k,s,length", GEOMETRIES)
def test_window_conv1d_equals_conv1d(c_in, c_out, k, s, length):
    g = torch.Generator().manual_seed(k * 100 + s)
    x = torch.randn(3, c_in, length, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(c_out, c_in, k, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, generator=g, requires_grad=True)
    for bias in (b, None):
        ref = F.conv1d(x, w, bias, stride=s)
        got = window_conv1d(x, w, bias, s)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref)
        grad = torch.randn(ref.shape, dtype=torch.float64, generator=g)
        inputs = (x, w) if bias is None else (x, w, b)
        for a, r in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
            torch.testing.assert_close(a, r)


@pytest.mark.parametrize("c_in,c_out,k,s,length", GEOMETRIES)
def test_window_conv_transpose1d_equals_conv_transpose1d(c_in, c_out, k, s, length):
    g = torch.Generator().manual_seed(k * 10 + s)
    n = max(1, length // s)
    x = torch.randn(2, c_out, n, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(c_out, c_in, k + s - 1, dtype=torch.float64, generator=g, requires_grad=True)
    ref = F.conv_transpose1d(x, w, stride=s)
    got = window_conv_transpose1d(x, w, s)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref)
    grad = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    for a, r in zip(torch.autograd.grad(got, (x, w), grad), torch.autograd.grad(ref, (x, w), grad)):
        torch.testing.assert_close(a, r)


def test_use_windows_only_for_kernels_of_few_strides():
    assert use_windows(31, 31) and use_windows(61, 31) and use_windows(11, 11)
    assert not use_windows(11, 3) and not use_windows(13, 3)
