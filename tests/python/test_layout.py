"""The fast layout of the convolution stack equals its readable definitions, forward and backward.

Three levels, for every geometry of the paper's Group 1 (K = S = 11, 31, 51) and Group 2 (K = 11,
S = 3, one to three layers), with and without chromosome awareness:

* the run copies (:class:`~convnetvae.model.layout.Runs`) equal the gather index maps;
* the fused ReLU + dropout + placement nodes equal relu, multiply and gather;
* the whole encoder and decoder (training mode with dropout, and eval mode) equal a per-chromosome
  implementation written from the definition: every chromosome padded and convolved on its own
  (encoder: zero padding, strided Conv1d; decoder: nearest upsampling by S, zero padding, stride-1
  Conv1d: the paper's reference decoder), with ``nn.BatchNorm1d``, ReLU and dropout as modules do.
  Outputs, every parameter's gradient, the input's gradient and the BatchNorm running statistics
  agree to float64 rounding.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convnetvae.model import convnet
from convnetvae.model.convnet import ConvDecoder, ConvEncoder, dropout_keep
from convnetvae.model.layout import (
    ConvLayout,
    Runs,
    copy_runs,
    gather_positions,
    relu_dropout_flatten,
    relu_dropout_place,
    segment_lengths,
)

#: (kernel, stride, layers) of Group 1 and Group 2
GEOMETRIES = [(11, 11, 1), (31, 31, 1), (51, 51, 1), (11, 3, 1), (11, 3, 2), (11, 3, 3)]
#: chromosomes of awkward lengths: shorter than a kernel, shorter than a stride, a single bin
LENGTHS = (140, 77, 64, 5, 1, 36)


def _maps(k: int, s: int, layers: int, aware: bool):
    lengths = segment_lengths(list(LENGTHS), aware)
    for _ in range(layers):
        lay = ConvLayout(lengths, k, s)
        yield lay
        lengths = lay.out_lengths


@pytest.mark.parametrize("aware", [True, False])
@pytest.mark.parametrize("k,s,layers", GEOMETRIES)
def test_runs_equal_the_gather_maps(k, s, layers, aware):
    torch.manual_seed(0)
    for lay in _maps(k, s, layers, aware):
        in_e, out_e = lay.encoder_maps()
        in_d, out_d = lay.decoder_maps()
        conv_len = (len(in_e) - k) // s + 1
        convt_len = (len(in_d) - 1) * s + k + s - 1
        for index, n_src in ((in_e, lay.n_in), (out_e, conv_len), (in_d, lay.n_out),
                             (out_d, convt_len)):
            runs = Runs.from_gather(index, n_src)
            np.testing.assert_array_equal(runs.gather_index(), index)
            # one run per segment at most (or fewer where segments are adjacent)
            assert len(runs.runs) <= len(lay.in_lengths) + 1
            x1 = torch.randn(3, 2, n_src, dtype=torch.float64, requires_grad=True)
            x2 = x1.detach().clone().requires_grad_(True)
            bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
            a = gather_positions(x1, torch.as_tensor(index))
            b = copy_runs(x2, runs)
            assert torch.equal(a, b)
            g = torch.randn_like(a)
            (a * g).sum().backward()
            (b * g).sum().backward()
            assert torch.equal(x1.grad, x2.grad)
            if not runs.gaps:  # a crop: the bias is added on the way
                x2.grad = None
                c = copy_runs(x2, runs, bias)
                torch.testing.assert_close(c, a.detach() + bias.detach().view(1, -1, 1))
                (c * g).sum().backward()
                assert torch.equal(x1.grad, x2.grad)
                torch.testing.assert_close(bias.grad, g.sum((0, 2)))


def test_runs_reject_an_index_that_reads_a_position_twice():
    with pytest.raises(ValueError, match="at most once"):
        Runs.from_gather(np.array([0, 1, 1, 3]), 3)


@pytest.mark.parametrize("with_keep", [True, False])
@pytest.mark.parametrize("k,s,layers", [(11, 3, 2), (31, 31, 1)])
def test_relu_dropout_nodes_equal_their_definition(k, s, layers, with_keep):
    torch.manual_seed(1)
    lay = list(_maps(k, s, layers, True))[-1]
    in_e = torch.as_tensor(lay.encoder_maps()[0])
    runs = Runs.from_gather(in_e.numpy(), lay.n_in)
    y1 = torch.randn(4, 3, lay.n_in, dtype=torch.float64, requires_grad=True)
    y2 = y1.detach().clone().requires_grad_(True)
    keep = (torch.rand(4, 3, lay.n_in) > 0.3).double() if with_keep else None
    ref = torch.relu(y1) * (keep if with_keep else 1.0)
    for got, want in ((relu_dropout_place(y2, keep, runs), gather_positions(ref, in_e)),
                      (relu_dropout_place(y2, keep, None), ref)):
        assert torch.equal(got, want)
        g = torch.randn_like(want)
        y1.grad = y2.grad = None
        (want * g).sum().backward(retain_graph=True)
        (got * g).sum().backward()
        assert torch.equal(y1.grad, y2.grad)
    tail = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    got = relu_dropout_flatten(y2, keep, [tail])
    want = torch.cat([ref.flatten(1), tail], 1)
    assert torch.equal(got, want)
    g = torch.randn_like(want)
    y1.grad = y2.grad = None
    (want * g).sum().backward()
    t_grad = tail.grad.clone()
    tail.grad = None
    (got * g).sum().backward()
    assert torch.equal(y1.grad, y2.grad) and torch.equal(tail.grad, t_grad)


# ---------------------------------------------------------------------- the definition
def _segments(lengths, aware):
    return list(LENGTHS) if aware else [sum(LENGTHS)]


def _post(block, h, last: bool = False):
    """BatchNorm, ReLU and dropout as the modules compute them, with convnetvae's masks."""
    if last:
        return h
    h = torch.relu(block[0](h))
    p = block[2].p if block[2].training else 0.0
    keep = dropout_keep(h.shape, p, h.device, h.dtype)
    return h if keep is None else h * keep / (1.0 - p)


def reference_encoder(enc: ConvEncoder, x, b, aware: bool):
    """Every chromosome zero-padded and convolved on its own, then concatenated."""
    segs = _segments(LENGTHS, aware)
    h = x
    for conv, post in zip(enc.convs, enc.post):
        k, s = conv.kernel_size[0], conv.stride[0]
        pad = max(0, (k - s) // 2)
        outs, at = [], 0
        for n in segs:
            m = math.ceil(n / s)
            right = max(0, (m - 1) * s + k - pad - n)
            seg = F.pad(h[..., at:at + n], (pad, right))
            outs.append(F.conv1d(seg, conv.weight, conv.bias, stride=s)[..., :m])
            at += n
        segs = [math.ceil(n / s) for n in segs]
        h = _post(post, torch.cat(outs, dim=2))
    feats = torch.cat([h.flatten(1), b], dim=1)
    q = enc.fc(feats)
    return enc.mean(q), enc.logvar(q)


def reference_decoder(dec: ConvDecoder, z, b, aware: bool):
    """The reference decoder per chromosome: nearest upsampling by S, zero padding, Conv1d."""
    k, s = dec.weights[0].shape[-1], dec.stride
    p = (k - 1) // 2
    sizes = [_segments(LENGTHS, aware)]
    for _ in dec.post:
        sizes.append([math.ceil(n / s) for n in sizes[-1]])
    h = dec.fc(torch.cat([z, b], 1)).view(z.shape[0], dec.channels[-1], dec.n_reduced)
    n_layers = len(dec.post)
    for j, post in enumerate(dec.post):
        src, dst = sizes[n_layers - j], sizes[n_layers - 1 - j]
        outs, at = [], 0
        for m, n in zip(src, dst):
            up = F.interpolate(h[..., at:at + m], scale_factor=s, mode="nearest")
            up = F.pad(up, (p, k - 1 - p))  # zeros beyond the chromosome's own bins
            outs.append(F.conv1d(up, dec.weights[j], dec.biases[j])[..., :n])
            at += m
        h = _post(post, torch.cat(outs, dim=2), last=j == n_layers - 1)
    return h


def _compare_modules(fast, ref_fn, inputs, train: bool):
    ref_mod = copy.deepcopy(fast)
    fast.train(train)
    ref_mod.train(train)
    ins_f = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    ins_r = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    torch.manual_seed(7)
    out_f = fast(*ins_f)
    torch.manual_seed(7)
    out_r = ref_fn(ref_mod, *ins_r)
    out_f = out_f if isinstance(out_f, tuple) else (out_f,)
    out_r = out_r if isinstance(out_r, tuple) else (out_r,)
    for a, b in zip(out_f, out_r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    gs = [torch.randn_like(a) for a in out_f]
    sum((a * g).sum() for a, g in zip(out_f, gs)).backward()
    sum((a * g).sum() for a, g in zip(out_r, gs)).backward()
    for a, b in zip(ins_f, ins_r):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)
    for (name, pa), (_, pb) in zip(fast.named_parameters(), ref_mod.named_parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-10, msg=name)
    for (name, ba), (_, bb) in zip(fast.named_buffers(), ref_mod.named_buffers()):
        if ba.is_floating_point():
            torch.testing.assert_close(ba, bb, rtol=1e-10, atol=1e-12, msg=name)
        else:
            assert torch.equal(ba, bb), name


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("aware", [True, False])
@pytest.mark.parametrize("k,s,layers", GEOMETRIES)
def test_encoder_and_decoder_equal_the_per_chromosome_definition(k, s, layers, aware, train):
    torch.manual_seed(0)
    channels = [4 * 2 ** i for i in range(layers)]  # small channels: the geometry is the point
    enc = ConvEncoder(2, LENGTHS, k, s, channels, n_batches=2, n_hidden=8, n_latent=3,
                      chrom_aware=aware).double()
    dec = ConvDecoder(2, LENGTHS, k, s, channels, n_batches=2, n_latent=3,
                      chrom_aware=aware).double()
    for mod in (enc, dec):  # non-trivial BatchNorm statistics and affine weights
        for m in mod.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
    x = torch.log1p(torch.poisson(torch.full((6, 2, sum(LENGTHS)), 0.7))).double()
    b = F.one_hot(torch.tensor([0, 1, 1, 0, 1, 0]), 2).double()
    _compare_modules(enc, lambda m, x, b: reference_encoder(m, x, b, aware), [x, b], train)
    z = torch.randn(6, 3, dtype=torch.float64)
    _compare_modules(dec, lambda m, z, b: reference_decoder(m, z, b, aware), [z, b], train)


def test_dropout_masks_follow_torch_seed_and_rate():
    torch.manual_seed(3)
    a = dropout_keep((64, 1000), 0.2, torch.device("cpu"))
    torch.manual_seed(3)
    b = dropout_keep((64, 1000), 0.2, torch.device("cpu"))
    c = dropout_keep((64, 1000), 0.2, torch.device("cpu"))
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(float(a.mean()) - 0.8) < 0.01  # 64,000 draws: sd 0.0016
    assert dropout_keep((3, 4), 0.0, torch.device("cpu")) is None
    assert dropout_keep((3, 4), 0.5, torch.device("cpu"), torch.float64).dtype == torch.float64


def test_encoder_modules_keep_their_state_dict_keys():
    """Saved models load: the fast path changed no parameter or buffer names."""
    enc = ConvEncoder(3, LENGTHS, 11, 3, [32, 64], n_batches=2)
    dec = ConvDecoder(3, LENGTHS, 11, 3, [32, 64], n_batches=2)
    assert sorted(enc.state_dict()) == sorted(
        ["convs.0.weight", "convs.0.bias", "convs.1.weight", "convs.1.bias"]
        + [f"post.{i}.0.{n}" for i in range(2) for n in
           ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        + ["fc.0.weight", "fc.0.bias"] + [f"fc.1.{n}" for n in
                                          ("weight", "bias", "running_mean", "running_var",
                                           "num_batches_tracked")]
        + ["mean.weight", "mean.bias", "logvar.weight", "logvar.bias"])
    assert sorted(dec.state_dict()) == sorted(
        ["fc.weight", "fc.bias", "weights.0", "weights.1", "biases.0", "biases.1"]
        + [f"post.0.0.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                     "num_batches_tracked")])
    assert convnet.ConvEncoder.__init__.__code__.co_varnames[:12] == (
        "self", "n_modalities", "chrom_lengths", "kernel", "stride", "channels", "n_batches",
        "n_extra", "n_hidden", "n_latent", "dropout", "chrom_aware")


@pytest.mark.parametrize("aware", [True, False])
@pytest.mark.parametrize("k,s,layers", GEOMETRIES)
def test_inference_path_equals_the_training_path_in_eval_mode(k, s, layers, aware, monkeypatch):
    """Embeddings (eval, no gradient: BatchNorm folded into the convolutions, chunks of cells)
    equal the eval-mode forward that training uses."""
    monkeypatch.setattr(convnet, "INFERENCE_CHUNK", 4)  # several chunks, a ragged last one
    torch.manual_seed(0)
    channels = [4 * 2 ** i for i in range(layers)]
    enc = ConvEncoder(2, LENGTHS, k, s, channels, n_batches=2, n_extra=2, n_hidden=8,
                      n_latent=3, chrom_aware=aware).double().eval()
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    x = torch.log1p(torch.poisson(torch.full((10, 2, sum(LENGTHS)), 0.7))).double()
    b = F.one_hot(torch.arange(10) % 2, 2).double()
    extra = torch.ones(10, 2, dtype=torch.float64)
    want = enc(x, b, extra)  # gradients enabled: the training path
    with torch.no_grad():
        assert enc._inference_ready(x)
        got = enc(x, b, extra)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w.detach(), rtol=1e-10, atol=1e-10)


def test_runs_compose():
    rng = np.random.default_rng(0)
    for k, s, layers, aware in [(11, 3, 2, True), (31, 31, 1, True), (11, 3, 3, False)]:
        lays = list(_maps(k, s, layers, aware))
        for lay, nxt in zip(lays, lays[1:]):
            in_e, out_e = lay.encoder_maps()
            crop = Runs.from_gather(out_e, (len(in_e) - k) // s + 1)
            place = Runs.from_gather(nxt.encoder_maps()[0], nxt.n_in)
            x = torch.as_tensor(rng.normal(size=(2, 3, crop.n_src)))
            assert torch.equal(crop.then(place).apply(x), place.apply(crop.apply(x)))
