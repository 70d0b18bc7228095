"""Chromosome-aware segment layout for strided 1D convolutions.

The bins of each chromosome form a *segment*. With ``chrom_aware=True`` every segment is padded on
its own, so no encoder window and no decoder kernel ever covers bins of two chromosomes; with
``chrom_aware=False`` all bins form one segment (the paper's behaviour: kernels run across
chromosome boundaries).

Encoder layer (Conv1d, kernel K, stride S): window ``i`` of a segment of ``n`` bins covers the
segment-local bins ``[i*S - pad, i*S - pad + K)`` with ``pad = max(0, (K - S) // 2)`` (zeros
outside the segment), ``i = 0 .. ceil(n / S) - 1``. The segments are laid out in one padded buffer
(each at an offset that is a multiple of S), one ordinary strided convolution runs over it, and
the valid outputs are gathered back.

Decoder layer (the reference's nearest upsampling by S then a stride-1 Conv1d of width K): output
bin ``t`` of a segment reads the upsampled input at ``t - P .. t - P + K - 1`` with
``P = (K - 1) // 2``. It is computed exactly as one transposed convolution with stride S and a
kernel of width ``K + S - 1`` (the flipped kernel summed over windows of S), segments separated by
zero gaps so they cannot mix, at about S times fewer operations than upsampling first.

The index maps (``encoder_maps``, ``decoder_maps``) are the readable definition: a layer is
``gather(x, in_map) -> convolution -> gather(., out_map)``. The models run the same copies as
:class:`Runs`: every map is a few contiguous runs (one or two per chromosome), so a layout copy is
one slice copy per run (memory speed) instead of an ``index_select`` along the last axis (a slow
strided gather: 20 % of a training step before). :func:`relu_dropout_place` fuses a layer's ReLU,
dropout and the next layer's layout copy into one pass, and its backward is one pass too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvLayout:
    """Index maps of one strided convolution over segments.

    Attributes
    ----------
    in_lengths
        Number of positions of each segment at the layer input.
    out_lengths
        Number of positions of each segment at the layer output (``ceil(n / stride)``).
    kernel, stride
        Convolution geometry.
    """

    in_lengths: tuple[int, ...]
    kernel: int
    stride: int

    @property
    def out_lengths(self) -> tuple[int, ...]:
        return tuple(int(math.ceil(n / self.stride)) for n in self.in_lengths)

    @property
    def n_in(self) -> int:
        return int(sum(self.in_lengths))

    @property
    def n_out(self) -> int:
        return int(sum(self.out_lengths))

    # ------------------------------------------------------------------ encoder direction
    def encoder_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(input gather index into [x, 0], output gather index) for the strided conv.

        The input index has one entry per buffer position: the input position it holds, or
        ``n_in`` for a zero. The output index lists, per valid window, its conv output position.
        """
        k, s = self.kernel, self.stride
        pad = max(0, (k - s) // 2)
        in_idx: list[np.ndarray] = []
        out_idx: list[np.ndarray] = []
        offset = 0  # in buffer positions (multiple of s)
        src = 0
        for n, m in zip(self.in_lengths, self.out_lengths):
            span = max((m - 1) * s + k, pad + n)
            span = int(math.ceil(span / s) * s)
            buf = np.full(span, self.n_in, dtype=np.int64)
            buf[pad:pad + n] = np.arange(src, src + n)
            in_idx.append(buf)
            out_idx.append(offset // s + np.arange(m))
            offset += span
            src += n
        in_map = np.concatenate(in_idx)
        # the last window must fit the buffer
        total = len(in_map)
        last_needed = (out_idx[-1][-1]) * s + k
        if last_needed > total:
            in_map = np.concatenate([in_map, np.full(last_needed - total, self.n_in)])
        return in_map, np.concatenate(out_idx)

    # ------------------------------------------------------------------ decoder direction
    def decoder_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """(input gather index into [y, 0] for the transposed conv, output gather index).

        The transposed convolution reads ``n_out`` positions (one per segment window) laid out with
        zero gaps and produces the ``n_in`` positions of the segments.
        """
        k, s = self.kernel, self.stride
        p = (k - 1) // 2
        in_idx: list[np.ndarray] = []
        out_idx: list[np.ndarray] = []
        offset = 0
        src = 0
        for n, m in zip(self.in_lengths, self.out_lengths):
            width = int(math.ceil((n + k - 1 - p) / s)) + 1
            width = max(width, m + 1)
            buf = np.full(width, self.n_out, dtype=np.int64)
            buf[:m] = np.arange(src, src + m)
            in_idx.append(buf)
            out_idx.append(offset * s + np.arange(n) + k - 1 - p)
            offset += width
            src += m
        return np.concatenate(in_idx), np.concatenate(out_idx)


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather positions of the last axis of ``x`` (B, C, L); index value ``L`` reads a zero.

    The readable definition of a layout; the models run the same copy as :class:`Runs`.
    """
    zero = x.new_zeros(x.shape[0], x.shape[1], 1)
    return torch.cat([x, zero], dim=2).index_select(2, index)


def upsample_conv_as_transposed_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """Turn a stride-1 Conv1d weight (C_out, C_in, K) applied after nearest upsampling by
    ``stride`` into the equivalent ConvTranspose1d weight (C_in, C_out, K + stride - 1)."""
    c_out, c_in, k = weight.shape
    w = weight.flip(-1).permute(1, 0, 2).reshape(c_in * c_out, 1, k)
    box = weight.new_ones(1, 1, stride)
    eff = F.conv1d(F.pad(w, (stride - 1, stride - 1)), box)  # full convolution with ones(S)
    return eff.reshape(c_in, c_out, k + stride - 1)


def segment_lengths(chromosome_lengths: list[int], chrom_aware: bool) -> tuple[int, ...]:
    """Segments of the first layer: one per chromosome, or one for all bins."""
    if chrom_aware:
        return tuple(int(n) for n in chromosome_lengths)
    return (int(sum(chromosome_lengths)),)


# ---------------------------------------------------------------------- runs: the fast copies
@dataclass(frozen=True)
class Runs:
    """A layout copy along the last axis as contiguous runs.

    ``out[..., d:d + n] = x[..., s:s + n]`` for every run ``(s, d, n)``; the positions of ``out``
    no run covers (``gaps``) are zeros. Built from a gather index (:meth:`from_gather`), it
    computes exactly ``gather_positions(x, index)``; each source position is read at most once,
    so the backward is the inverse copy (:meth:`inverse`).
    """

    n_src: int
    n_dst: int
    runs: tuple[tuple[int, int, int], ...]
    gaps: tuple[tuple[int, int], ...]

    @staticmethod
    def from_gather(index: np.ndarray, n_src: int) -> Runs:
        """The runs of a gather index into ``[x, 0]`` (value ``n_src`` reads a zero)."""
        index = np.asarray(index, dtype=np.int64)
        pos = np.flatnonzero(index < n_src)
        src = index[pos]
        if len(np.unique(src)) != len(src) or (len(src) and src.min() < 0):
            raise ValueError("Runs: every source position may be read at most once")
        brk = np.flatnonzero((np.diff(pos) != 1) | (np.diff(src) != 1)) + 1
        starts = np.concatenate([[0], brk]).astype(int) if len(pos) else np.zeros(0, int)
        ends = np.concatenate([brk, [len(pos)]]).astype(int) if len(pos) else np.zeros(0, int)
        runs = tuple((int(src[a]), int(pos[a]), int(b - a)) for a, b in zip(starts, ends))
        return Runs.build(n_src, len(index), runs)

    @staticmethod
    def build(n_src: int, n_dst: int, runs: tuple[tuple[int, int, int], ...]) -> Runs:
        covered = sorted((d, d + n) for _, d, n in runs)
        gaps, at = [], 0
        for a, b in covered:
            if a > at:
                gaps.append((at, a))
            at = b
        if at < n_dst:
            gaps.append((at, n_dst))
        return Runs(int(n_src), int(n_dst), tuple(runs), tuple(gaps))

    def inverse(self) -> Runs:
        """The copy back (source and destination swapped): the backward of this copy."""
        return Runs.build(self.n_dst, self.n_src, tuple((d, s, n) for s, d, n in self.runs))

    def then(self, other: Runs) -> Runs:
        """The copy ``other.apply(self.apply(x))`` as one copy (positions this copy leaves zero
        stay zero)."""
        runs = []
        for s1, d1, n1 in self.runs:
            for s2, d2, n2 in other.runs:
                lo, hi = max(d1, s2), min(d1 + n1, s2 + n2)
                if lo < hi:
                    runs.append((s1 + lo - d1, d2 + lo - s2, hi - lo))
        return Runs.build(self.n_src, other.n_dst, tuple(sorted(runs, key=lambda r: r[1])))

    def gather_index(self) -> np.ndarray:
        """The equivalent gather index into ``[x, 0]`` (the readable definition)."""
        index = np.full(self.n_dst, self.n_src, dtype=np.int64)
        for s, d, n in self.runs:
            index[d:d + n] = np.arange(s, s + n)
        return index

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``gather_positions(x, self.gather_index())`` as slice copies (no autograd graph)."""
        out = x.new_empty(*x.shape[:-1], self.n_dst)
        for a, b in self.gaps:
            out[..., a:b].zero_()
        for s, d, n in self.runs:
            out[..., d:d + n].copy_(x[..., s:s + n])
        return out


def relu_runs(x: torch.Tensor, runs: Runs, out: torch.Tensor | None = None) -> torch.Tensor:
    """``runs.apply(relu(x))`` in one pass, into ``out`` if given (no autograd: inference)."""
    if out is None:
        out = x.new_empty(*x.shape[:-1], runs.n_dst)
    for a, b in runs.gaps:
        out[..., a:b].zero_()
    for s, d, n in runs.runs:
        torch.clamp(x[..., s:s + n], min=0, out=out[..., d:d + n])
    return out


class _RunCopy(torch.autograd.Function):
    """``Runs.apply`` with an optional per-channel bias added to the copied positions (B, C, L)."""

    @staticmethod
    def forward(ctx, x, runs: Runs, bias):  # type: ignore[override]
        ctx.runs = runs
        ctx.has_bias = bias is not None
        if bias is None:
            return runs.apply(x)
        if runs.gaps:
            raise ValueError("a copy with bias must cover every output position")
        out = x.new_empty(*x.shape[:-1], runs.n_dst)
        b = bias.view(1, -1, 1)
        for s, d, n in runs.runs:
            torch.add(x[..., s:s + n], b, out=out[..., d:d + n])
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        gx = ctx.runs.inverse().apply(g) if ctx.needs_input_grad[0] else None
        gb = g.sum((0, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, None, gb


def copy_runs(x: torch.Tensor, runs: Runs, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable layout copy of ``x`` (B, C, L) by ``runs`` (plus ``bias`` per channel)."""
    return _RunCopy.apply(x, runs, bias)


class _ReluDropoutPlace(torch.autograd.Function):
    """``place(relu(y) * keep)`` in two passes; the backward is one pass.

    ``keep`` is a float 0/1 mask of ``y``'s shape. The output is saved for the backward
    (``relu(y) * keep > 0`` exactly where the gradient passes); the next convolution saves the
    same tensor, so this costs no memory.
    """

    @staticmethod
    def forward(ctx, y, keep, runs: Runs | None):  # type: ignore[override]
        if runs is None:
            out = torch.clamp(y, min=0)
        else:
            out = y.new_empty(*y.shape[:-1], runs.n_dst)
            for a, b in runs.gaps:
                out[..., a:b].zero_()
            for s, d, n in runs.runs:
                o = out[..., d:d + n]
                torch.clamp(y[..., s:s + n], min=0, out=o)
                if keep is not None:
                    o.mul_(keep[..., s:s + n])
        if runs is None and keep is not None:
            out.mul_(keep)
        ctx.save_for_backward(out)
        ctx.runs = runs
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        runs = ctx.runs
        if runs is None:
            return torch.ops.aten.threshold_backward(g, out, 0), None, None
        gy = g.new_empty(*g.shape[:-1], runs.n_src)
        for a, b in runs.inverse().gaps:  # source positions no run reads: zero gradient
            gy[..., a:b].zero_()
        for s, d, n in runs.runs:
            torch.ops.aten.threshold_backward.grad_input(g[..., d:d + n], out[..., d:d + n], 0,
                                                         grad_input=gy[..., s:s + n])
        return gy, None, None


def relu_dropout_place(y: torch.Tensor, keep: torch.Tensor | None,
                       runs: Runs | None) -> torch.Tensor:
    """``copy_runs(relu(y), runs) * keep``: ReLU, dropout and a layout copy (``runs`` None for
    no copy) in one autograd node. ``keep`` is a float 0/1 mask of ``y``'s shape or None.
    The dropout scale 1 / (1 - p) is not applied here: the caller folds it into the preceding
    BatchNorm's affine weights (ReLU commutes with a positive scale)."""
    return _ReluDropoutPlace.apply(y, keep, runs)


class _ReluDropoutFlatten(torch.autograd.Function):
    """``cat([(relu(y) * keep).flatten(1), *tails], 1)`` written into one buffer: the linear
    layer that follows saves that buffer, and this node saves the same tensor (no second copy of
    the features, no ``cat``)."""

    @staticmethod
    def forward(ctx, y, keep, *tails):  # type: ignore[override]
        b, n = y.shape[0], y[0].numel()
        widths = [t.shape[1] for t in tails]
        out = y.new_empty(b, n + sum(widths))
        feat = out[:, :n].unflatten(1, y.shape[1:])
        torch.clamp(y, min=0, out=feat)
        if keep is not None:
            feat.mul_(keep)
        at = n
        for t, w in zip(tails, widths):
            out[:, at:at + w].copy_(t)
            at += w
        ctx.save_for_backward(out)
        ctx.shape, ctx.widths = y.shape, widths
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        n = out.shape[1] - sum(ctx.widths)
        gy = torch.ops.aten.threshold_backward(g[:, :n].unflatten(1, ctx.shape[1:]),
                                               out[:, :n].unflatten(1, ctx.shape[1:]), 0)
        grads, at = [], n
        for i, w in enumerate(ctx.widths):
            grads.append(g[:, at:at + w] if ctx.needs_input_grad[2 + i] else None)
            at += w
        return (gy, None, *grads)


def relu_dropout_flatten(y: torch.Tensor, keep: torch.Tensor | None,
                         tails: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """``torch.cat([(relu(y) * keep).flatten(1), *tails], dim=1)`` as one autograd node."""
    return _ReluDropoutFlatten.apply(y, keep, *tails)
