"""Strided 1D convolutions as matrix products over stride-wide windows (CPU fast path).

``torch.nn.functional.conv1d`` and ``conv_transpose1d`` are slow on CPU for the ConvNet-VAE's
geometries (a long signal, few channels, a wide kernel equal or close to the stride): their
backward pass alone took 60 % of a training step at 25,000 bins. When the kernel covers at most a
few strides (``q = ceil(K / S)`` windows), both are one matrix product on a reshaped view:

* convolution: output window ``i`` reads input windows ``i .. i + q - 1`` (``q * S`` positions,
  the kernel zero-padded to that width), so the input is cut into stride-wide windows, ``q``
  consecutive windows are laid side by side (no copy when ``q == 1``) and multiplied by the
  flattened kernel;
* transposed convolution: every input position writes ``K`` outputs starting at ``i * S``; one
  product gives each position's ``q`` windows of ``S`` outputs, which are then added at their
  offsets (overlap-add).

Both are exact (the same sums in another order) and differentiable by autograd; tests compare
them with the ``torch.nn.functional`` definitions, forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: use the window form when the kernel spans at most this many strides (else the copies of the
#: side-by-side windows cost more than the convolution saves)
MAX_WINDOWS = 2


def use_windows(kernel: int, stride: int) -> bool:
    """Whether :func:`window_conv1d` / :func:`window_conv_transpose1d` pay for this geometry."""
    return -(-int(kernel) // int(stride)) <= MAX_WINDOWS


def window_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride=stride)`` (no padding) as one matrix product.

    Parameters
    ----------
    x
        Input, (B, C_in, L).
    weight
        Kernel, (C_out, C_in, K).
    bias
        (C_out,) or ``None``.
    stride
        Stride S.

    Returns
    -------
    torch.Tensor
        (B, C_out, floor((L - K) / S) + 1), as ``F.conv1d``.
    """
    b, c_in, length = x.shape
    c_out, _, k = weight.shape
    s = int(stride)
    n_out = (length - k) // s + 1
    q = -(-k // s)
    need = (n_out + q - 1) * s
    x = F.pad(x, (0, need - length)) if need > length else x[:, :, :need]
    xw = x.reshape(b, c_in, n_out + q - 1, s)
    if q == 1:
        cols = xw.permute(0, 2, 1, 3).reshape(b, n_out, c_in * s)
    else:
        cols = torch.stack([xw[:, :, j:j + n_out] for j in range(q)], dim=3)
        cols = cols.permute(0, 2, 1, 3, 4).reshape(b, n_out, c_in * q * s)
    w = F.pad(weight, (0, q * s - k)).reshape(c_out, c_in * q * s)
    y = cols @ w.t() if bias is None else torch.addmm(bias, cols.reshape(-1, cols.shape[-1]),
                                                      w.t()).view(b, n_out, c_out)
    return y.transpose(1, 2)


def window_conv_transpose1d(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, weight, stride=stride)`` (no padding, no bias) as one matrix
    product and an overlap-add.

    Parameters
    ----------
    x
        Input, (B, C_in, N).
    weight
        Kernel, (C_in, C_out, K).
    stride
        Stride S.

    Returns
    -------
    torch.Tensor
        (B, C_out, (N - 1) * S + K), as ``F.conv_transpose1d``.
    """
    b, c_in, n = x.shape
    _, c_out, k = weight.shape
    s = int(stride)
    q = -(-k // s)
    w = F.pad(weight, (0, q * s - k)).reshape(c_in, c_out * q * s)
    p = (x.transpose(1, 2) @ w).view(b, n, c_out, q, s)
    y = p[:, :, :, 0]
    if q > 1:
        y = F.pad(y, (0, 0, 0, 0, 0, q - 1))
        for j in range(1, q):
            y = y + F.pad(p[:, :, :, j], (0, 0, 0, 0, j, q - 1 - j))
    length = (n - 1) * s + k
    return y.permute(0, 2, 1, 3).reshape(b, c_out, (n + q - 1) * s)[:, :, :length]
