"""ConvNet-VAE encoder and decoder (paper section 2.2.2, Table 1).

Encoder: log(1 + x) with modalities as channels -> Conv1d layers (kernel K, stride S, each with
BatchNorm1d, ReLU, Dropout) -> flatten -> concatenate the batch one-hot (and the modality mask
when modalities can be missing) -> FC(n_hidden) + BN + ReLU + Dropout -> linear heads for the mean
and log-variance of q(z | x, b).

Decoder: linear FC from (z, b) to channels x reduced length -> per layer the exact equivalent of
nearest upsampling by S followed by a stride-1 Conv1d of width K (computed as one transposed
convolution, see :mod:`.layout`), BN/ReLU/Dropout between layers -> logits over bins per modality.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layout import (
    ConvLayout,
    Runs,
    copy_runs,
    relu_dropout_flatten,
    relu_dropout_place,
    relu_runs,
    segment_lengths,
    upsample_conv_as_transposed_weight,
)
from .window import use_windows, window_conv1d, window_conv_transpose1d


class _Block(nn.Sequential):
    def __init__(self, n: int, dropout: float) -> None:
        super().__init__(nn.BatchNorm1d(n), nn.ReLU(), nn.Dropout(dropout))


#: dropout masks on CPU are drawn as 16-bit integers: a position is dropped when its integer is
#: below round(p * 2**16) (p = 0.2 -> 0.199997)
_KEEP_BITS = 16


def dropout_keep(shape: Sequence[int], p: float, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """A 0/1 keep mask (1 with probability 1 - p) of ``dtype``, or None when ``p == 0``.

    On CPU, torch's ``bernoulli_`` draws one Mersenne-Twister number per element (MKL's fast
    path is for Intel CPUs only), about 10x slower than slicing raw 64-bit words of NumPy's PCG64
    into 16-bit integers; the generator is seeded from torch's, so ``torch.manual_seed`` still
    fixes every mask.
    """
    if p <= 0.0:
        return None
    shape = tuple(int(v) for v in shape)
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1.0 - p)
    n = int(np.prod(shape))
    seed = int(torch.randint(0, 2**62, (1,)).numpy()[0])  # a CPU tensor: no device sync
    words = np.random.PCG64(seed).random_raw((n + 3) // 4)
    keep = words.view(np.uint16)[:n] >= int(round(p * (1 << _KEEP_BITS)))
    out = torch.empty(shape, dtype=dtype)
    if dtype in (torch.float32, torch.float64):
        np.copyto(out.numpy().reshape(-1), keep)
    else:
        out.copy_(torch.from_numpy(keep).view(shape))
    return out


class _ConvTranspose1d(torch.autograd.Function):
    """``F.conv_transpose1d`` whose backward asks oneDNN for the input and the weight gradient
    in two calls (one call computing both was measured slower on CPU)."""

    @staticmethod
    def forward(ctx, x, w, stride: int):  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.stride = stride
        return F.conv_transpose1d(x, w, stride=stride)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, w = ctx.saved_tensors
        args = (None, [ctx.stride], [0], [1], True, [0], 1)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(g, x, w, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            gw = torch.ops.aten.convolution_backward(g, x, w, *args, [False, True, False])[1]
        return gx, gw, None


def conv_transpose1d(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, w, stride=stride)`` (on CPU with the two-call backward)."""
    if x.device.type == "cpu":
        return _ConvTranspose1d.apply(x, w, stride)
    return F.conv_transpose1d(x, w, stride=stride)


def _batch_norm(h: torch.Tensor, bn: nn.BatchNorm1d, scale: float) -> torch.Tensor:
    """``bn(h) * scale`` (``nn.BatchNorm1d.forward`` with the affine weights scaled)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    w, b = bn.weight, bn.bias
    if scale != 1.0 and w is not None:
        w, b = w * scale, b * scale
    return F.batch_norm(h, bn.running_mean if track else None, bn.running_var if track else None,
                        w, b, use_batch, factor, bn.eps)


def _conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    if use_windows(conv.kernel_size[0], conv.stride[0]):  # same result, faster on CPU
        return window_conv1d(x, conv.weight, conv.bias, conv.stride[0])
    return conv(x)


class _ConvCropBatchNorm(torch.autograd.Function):
    """``batch_norm(crop(conv1d(x)))`` in training mode that keeps only ``x`` and the batch
    statistics for the backward: the BatchNorm input is recomputed there from ``x`` (one more
    forward convolution, bitwise the forward's). Used for the first encoder layer of Group 2,
    whose convolution is the cheapest (M input channels) and whose BatchNorm input the largest
    saved tensor of the encoder (137 MB per minibatch of 128 at 25,000 bins). The backward frees
    each buffer as soon as it is used, so its peak is no higher than without recomputation."""

    @staticmethod
    def forward(ctx, x, cw, cb, bw, bb, stride: int, crop: Runs,  # type: ignore[override]
                bn: nn.BatchNorm1d, momentum: float):
        h = crop.apply(F.conv1d(x, cw, cb, stride=stride))
        y, mean, invstd = torch.native_batch_norm(h, bw, bb, bn.running_mean, bn.running_var,
                                                  True, momentum, bn.eps)
        ctx.save_for_backward(x, cw, cb, bw, mean, invstd)
        ctx.stride, ctx.crop, ctx.eps = stride, crop, bn.eps
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, cw, cb, bw, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        h = ctx.crop.apply(F.conv1d(x, cw, cb, stride=ctx.stride))
        gh, gbw, gbb = torch.ops.aten.native_batch_norm_backward(
            g, h, bw, None, None, mean, invstd, True, ctx.eps, [True, need[3], need[4]])
        del h
        gconv = ctx.crop.inverse().apply(gh)
        del gh
        gx, gcw, gcb = torch.ops.aten.convolution_backward(
            gconv, x, cw, [cw.shape[0]], [ctx.stride], [0], [1], False, [0], 1,
            [need[0], need[1], need[2]])
        return gx, gcw, gcb, gbw, gbb, None, None, None, None


def _bn_relu_dropout(block: _Block, h: torch.Tensor, place: Runs | None = None,
                     tails: Sequence[torch.Tensor] | None = None,
                     conv: tuple[nn.Conv1d, Runs] | None = None) -> torch.Tensor:
    """``block(h)`` (BatchNorm, ReLU, Dropout), then the layout copy ``place`` or, with
    ``tails``, flattened and concatenated with the tails.

    The dropout scale 1 / (1 - p) is folded into the BatchNorm weights (ReLU commutes with a
    positive scale); ReLU, dropout and the copy are one autograd node
    (:func:`relu_dropout_place`, :func:`relu_dropout_flatten`). With ``conv`` = (convolution,
    crop), ``h`` is the convolution's *input* and the BatchNorm input is recomputed in the
    backward (:class:`_ConvCropBatchNorm`).
    """
    bn, drop = block[0], block[2]
    p = float(drop.p) if drop.training else 0.0
    scale = 1.0 / (1.0 - p) if p > 0.0 else 1.0
    if conv is not None:
        c, crop = conv
        shape = (h.shape[0], c.out_channels, crop.n_dst)
        keep = dropout_keep(shape, p, h.device, h.dtype)
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        y = _ConvCropBatchNorm.apply(h, c.weight, c.bias, bn.weight * scale, bn.bias * scale,
                                     c.stride[0], crop, bn, momentum)
    else:
        keep = dropout_keep(h.shape, p, h.device, h.dtype)
        y = _batch_norm(h, bn, scale)
    if tails is not None:
        return relu_dropout_flatten(y, keep, tails)
    return relu_dropout_place(y, keep, place)


#: cells per pass of the inference path (memory stays bounded whatever the minibatch)
INFERENCE_CHUNK = 128


def _folded(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` in eval mode as one convolution."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    c = bn.bias - bn.running_mean * a
    return conv.weight * a.view(-1, 1, 1), conv.bias * a + c


def _layouts(chrom_lengths: Sequence[int], chrom_aware: bool, kernel: int, stride: int,
             n_layers: int) -> list[ConvLayout]:
    lengths = segment_lengths(list(chrom_lengths), chrom_aware)
    out = []
    for _ in range(n_layers):
        lay = ConvLayout(lengths, kernel, stride)
        out.append(lay)
        lengths = lay.out_lengths
    return out


class ConvEncoder(nn.Module):
    """Convolutional encoder q(z | x, b).

    Parameters
    ----------
    n_modalities
        Input channels.
    chrom_lengths
        Number of bins of each chromosome, in order.
    kernel, stride, channels
        Conv geometry; one layer per entry of ``channels``.
    n_batches
        Width of the batch one-hot (0 or 1 = no batch input).
    n_extra
        Width of extra FC inputs (the modality mask when modalities can be missing).
    n_hidden, n_latent, dropout
        FC width, latent dimension, dropout rate.
    chrom_aware
        Pad each chromosome on its own (True) or run kernels across boundaries (False).
    """

    def __init__(self, n_modalities: int, chrom_lengths: Sequence[int], kernel: int, stride: int,
                 channels: Sequence[int], n_batches: int, n_extra: int = 0, n_hidden: int = 128,
                 n_latent: int = 30, dropout: float = 0.2, chrom_aware: bool = True) -> None:
        super().__init__()
        self.layouts = _layouts(chrom_lengths, chrom_aware, kernel, stride, len(channels))
        self.convs = nn.ModuleList()
        self.post = nn.ModuleList()
        self.place_runs: list[Runs] = []  # input layout of layer i
        self.crop_runs: list[Runs] = []  # valid windows of layer i's convolution output
        c_in = n_modalities
        for i, (c, lay) in enumerate(zip(channels, self.layouts)):
            self.convs.append(nn.Conv1d(c_in, c, kernel_size=kernel, stride=stride))
            self.post.append(_Block(c, dropout))
            in_map, out_map = lay.encoder_maps()
            # the readable definition (tests): gather(x, in_map) -> conv -> gather(., out_map)
            self.register_buffer(f"in_map{i}", torch.as_tensor(in_map), persistent=False)
            self.register_buffer(f"out_map{i}", torch.as_tensor(out_map), persistent=False)
            self.place_runs.append(Runs.from_gather(in_map, lay.n_in))
            self.crop_runs.append(Runs.from_gather(out_map, (len(in_map) - kernel) // stride + 1))
            c_in = c
        self.n_flat = channels[-1] * self.layouts[-1].n_out
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.fc = nn.Sequential(nn.Linear(self.n_flat + self.n_batch_input + n_extra, n_hidden),
                                nn.BatchNorm1d(n_hidden), nn.ReLU(), nn.Dropout(dropout))
        self.mean = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def _recompute_first(self, h: torch.Tensor) -> bool:
        """Whether the first layer's BatchNorm input is recomputed in the backward (training
        with gradients and batch statistics, no autocast; ordinary Conv1d layers, i.e. not
        Group 1, whose first-layer activations are S times smaller)."""
        bn, conv = self.post[0][0], self.convs[0]
        return (self.training and torch.is_grad_enabled() and bn.track_running_stats
                and not use_windows(conv.kernel_size[0], conv.stride[0])
                and bn.running_mean is not None and bn.affine
                and not torch.is_autocast_enabled(h.device.type))

    def _stack(self, h: torch.Tensor, tails: Sequence[torch.Tensor] | None) -> torch.Tensor:
        n = len(self.convs)
        h = copy_runs(h, self.place_runs[0])
        for i, (conv, post) in enumerate(zip(self.convs, self.post)):
            args: dict = {"place": self.place_runs[i + 1]} if i + 1 < n else {"tails": tails}
            if i == 0 and self._recompute_first(h):
                h = _bn_relu_dropout(post, h, conv=(conv, self.crop_runs[0]), **args)
                continue
            h = copy_runs(_conv(conv, h), self.crop_runs[i])
            h = _bn_relu_dropout(post, h, **args)
        return h

    def _inference_ready(self, h: torch.Tensor) -> bool:
        return (not self.training and not torch.is_grad_enabled()
                and h.dtype in (torch.float32, torch.float64)
                and all(p[0].running_mean is not None for p in self.post)
                and self.fc[1].running_mean is not None)  # the FC runs per chunk: row-wise

    @torch.no_grad()
    def _forward_inference(self, h: torch.Tensor, tails: Sequence[torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` in eval mode without gradients, ``INFERENCE_CHUNK`` cells at a time:
        each BatchNorm folded into its convolution, a layer's crop, ReLU and the next layer's
        placement in one pass (:meth:`Runs.then`), the features written into a chunk's FC input
        buffer and the FC layers (row-wise in eval mode) run per chunk, so memory stays bounded
        by the chunk whatever the minibatch (the FC input of 512 cells of conv-k11s3x1 at
        25,000 bins alone is 547 MB)."""
        n = len(self.convs)
        folded = [_folded(conv, post[0]) for conv, post in zip(self.convs, self.post)]
        moves = [self.crop_runs[i].then(self.place_runs[i + 1]) for i in range(n - 1)]
        c, length = self.convs[-1].out_channels, self.layouts[-1].n_out
        widths = [t.shape[1] for t in tails]
        n_cells = h.shape[0]
        feats = h.new_empty(min(INFERENCE_CHUNK, n_cells), self.n_flat + sum(widths))
        mean = h.new_empty(n_cells, self.mean.out_features)
        logvar = h.new_empty(n_cells, self.logvar.out_features)
        for r0 in range(0, n_cells, INFERENCE_CHUNK):
            r1 = min(r0 + INFERENCE_CHUNK, n_cells)
            f = feats[:r1 - r0]
            x = self.place_runs[0].apply(h[r0:r1])
            for i, (conv, (w, b)) in enumerate(zip(self.convs, folded)):
                k, s = conv.kernel_size[0], conv.stride[0]
                y = window_conv1d(x, w, b, s) if use_windows(k, s) else \
                    F.conv1d(x, w, b, stride=s)
                if i + 1 < n:
                    x = relu_runs(y, moves[i])
                else:
                    relu_runs(y, self.crop_runs[i],
                              out=f[:, :self.n_flat].unflatten(1, (c, length)))
            at = self.n_flat
            for t, wd in zip(tails, widths):
                f[:, at:at + wd].copy_(t[r0:r1])
                at += wd
            q = self.fc(f)
            mean[r0:r1] = self.mean(q)
            logvar[r0:r1] = self.logvar(q)
        return mean, logvar

    def conv_features(self, h: torch.Tensor) -> torch.Tensor:
        """Run the convolution stack on log-counts h (B, M, G); returns (B, C, L)."""
        return self._stack(h, None)

    def forward(self, h: torch.Tensor, batch_onehot: torch.Tensor | None,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tails = []
        if self.n_batch_input and batch_onehot is not None:
            tails.append(batch_onehot)
        if extra is not None:
            tails.append(extra)
        if self._inference_ready(h):
            return self._forward_inference(h, tails)
        # the features are written straight into the FC input buffer (no concatenation copy)
        q = self.fc(self._stack(h, tails))
        return self.mean(q), self.logvar(q)


class ConvDecoder(nn.Module):
    """Convolutional decoder: logits over bins per modality (B, M, G) from (z, b)."""

    def __init__(self, n_modalities: int, chrom_lengths: Sequence[int], kernel: int, stride: int,
                 channels: Sequence[int], n_batches: int, n_latent: int = 30,
                 dropout: float = 0.2, chrom_aware: bool = True) -> None:
        super().__init__()
        self.layouts = _layouts(chrom_lengths, chrom_aware, kernel, stride, len(channels))
        self.stride = stride
        self.channels = list(channels)
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.n_reduced = self.layouts[-1].n_out
        self.fc = nn.Linear(n_latent + self.n_batch_input, channels[-1] * self.n_reduced)
        # decoder layer j maps channels[L-1-j] -> channels[L-2-j] (or n_modalities at the end)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.post = nn.ModuleList()
        self.place_runs: list[Runs] = []
        self.crop_runs: list[Runs] = []
        n_layers = len(channels)
        k_eff = kernel + stride - 1
        for j in range(n_layers):
            c_in = channels[n_layers - 1 - j]
            c_out = channels[n_layers - 2 - j] if j < n_layers - 1 else n_modalities
            conv = nn.Conv1d(c_in, c_out, kernel_size=kernel)  # same init as the reference
            self.weights.append(nn.Parameter(conv.weight.detach().clone()))
            self.biases.append(nn.Parameter(conv.bias.detach().clone()))
            self.post.append(_Block(c_out, dropout) if j < n_layers - 1 else nn.Identity())
            lay = self.layouts[n_layers - 1 - j]
            in_map, out_map = lay.decoder_maps()
            self.register_buffer(f"in_map{j}", torch.as_tensor(in_map), persistent=False)
            self.register_buffer(f"out_map{j}", torch.as_tensor(out_map), persistent=False)
            self.place_runs.append(Runs.from_gather(in_map, lay.n_out))
            self.crop_runs.append(Runs.from_gather(out_map, (len(in_map) - 1) * stride + k_eff))

    def forward(self, z: torch.Tensor, batch_onehot: torch.Tensor | None) -> torch.Tensor:
        inp = torch.cat([z, batch_onehot], dim=1) if self.n_batch_input and \
            batch_onehot is not None else z
        h = self.fc(inp).view(z.shape[0], self.channels[-1], self.n_reduced)
        h = copy_runs(h, self.place_runs[0])
        n = len(self.post)
        for j, post in enumerate(self.post):
            w = upsample_conv_as_transposed_weight(self.weights[j], self.stride)
            if use_windows(w.shape[-1], self.stride):  # same result, faster on CPU
                h = window_conv_transpose1d(h, w, self.stride)
            else:
                h = conv_transpose1d(h, w, self.stride)
            h = copy_runs(h, self.crop_runs[j], self.biases[j])
            if j + 1 < n:
                h = _bn_relu_dropout(post, h, self.place_runs[j + 1])
        return h
