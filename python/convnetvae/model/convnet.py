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

import torch
from torch import nn

from .layout import ConvLayout, place_positions, placement, segment_lengths, upsample_conv_as_transposed_weight
from .window import use_windows, window_conv1d, window_conv_transpose1d


class _Block(nn.Sequential):
    def __init__(self, n: int, dropout: float) -> None:
        super().__init__(nn.BatchNorm1d(n), nn.ReLU(), nn.Dropout(dropout))


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
        c_in = n_modalities
        for i, (c, lay) in enumerate(zip(channels, self.layouts)):
            self.convs.append(nn.Conv1d(c_in, c, kernel_size=kernel, stride=stride))
            self.post.append(_Block(c, dropout))
            in_map, out_map = lay.encoder_maps()
            self.register_buffer(f"in_map{i}", torch.as_tensor(in_map), persistent=False)
            self.register_buffer(f"place{i}", torch.as_tensor(placement(in_map, lay.n_in)),
                                 persistent=False)
            self.register_buffer(f"out_map{i}", torch.as_tensor(out_map), persistent=False)
            c_in = c
        self.n_flat = channels[-1] * self.layouts[-1].n_out
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.fc = nn.Sequential(nn.Linear(self.n_flat + self.n_batch_input + n_extra, n_hidden),
                                nn.BatchNorm1d(n_hidden), nn.ReLU(), nn.Dropout(dropout))
        self.mean = nn.Linear(n_hidden, n_latent)
        self.logvar = nn.Linear(n_hidden, n_latent)

    def conv_features(self, h: torch.Tensor) -> torch.Tensor:
        """Run the convolution stack on log-counts h (B, M, G); returns (B, C, L)."""
        for i, (conv, post) in enumerate(zip(self.convs, self.post)):
            h = place_positions(h, getattr(self, f"place{i}"), len(getattr(self, f"in_map{i}")))
            if use_windows(conv.kernel_size[0], conv.stride[0]):  # same result, faster on CPU
                h = window_conv1d(h, conv.weight, conv.bias, conv.stride[0])
            else:
                h = conv(h)
            h = h.index_select(2, getattr(self, f"out_map{i}"))
            h = post(h)
        return h

    def forward(self, h: torch.Tensor, batch_onehot: torch.Tensor | None,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [self.conv_features(h).flatten(1)]
        if self.n_batch_input and batch_onehot is not None:
            feats.append(batch_onehot)
        if extra is not None:
            feats.append(extra)
        q = self.fc(torch.cat(feats, dim=1) if len(feats) > 1 else feats[0])
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
        n_layers = len(channels)
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
            self.register_buffer(f"place{j}", torch.as_tensor(placement(in_map, lay.n_out)),
                                 persistent=False)
            self.register_buffer(f"out_map{j}", torch.as_tensor(out_map), persistent=False)

    def forward(self, z: torch.Tensor, batch_onehot: torch.Tensor | None) -> torch.Tensor:
        inp = torch.cat([z, batch_onehot], dim=1) if self.n_batch_input and \
            batch_onehot is not None else z
        h = self.fc(inp).view(z.shape[0], self.channels[-1], self.n_reduced)
        for j, post in enumerate(self.post):
            w = upsample_conv_as_transposed_weight(self.weights[j], self.stride)
            h = place_positions(h, getattr(self, f"place{j}"), len(getattr(self, f"in_map{j}")))
            if use_windows(w.shape[-1], self.stride):  # same result, faster on CPU
                h = window_conv_transpose1d(h, w, self.stride)
            else:
                h = nn.functional.conv_transpose1d(h, w, stride=self.stride)
            h = h.index_select(2, getattr(self, f"out_map{j}")) + self.biases[j].view(1, -1, 1)
            h = post(h)
        return h
