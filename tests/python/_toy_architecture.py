"""A toy architecture family for tests/python/test_registry.py: one module (this one) plus one
registration (``register(FAMILY)``) is all a new architecture needs.

``lin-d<D>``: a linear encoder over the flattened log-counts with a hidden width of D, and a
linear decoder back to every bin. Not a test module (the leading underscore).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from convnetvae.errors import ConvNetVAEError
from convnetvae.model.registry import Architecture, Family


def parse(key: str) -> Architecture:
    m = re.fullmatch(r"lin-d(\d+)", key)
    if not m or int(m.group(1)) < 1:
        raise ConvNetVAEError(f"architecture {key!r}: use lin-d<width>, e.g. lin-d16")
    return Architecture(name=key, kind="lin", n_layers=1, channels=(int(m.group(1)),))


class Encoder(nn.Module):
    def __init__(self, n_in: int, n_batches: int, n_extra: int, width: int, n_latent: int):
        super().__init__()
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.hidden = nn.Sequential(nn.Linear(n_in + self.n_batch_input + n_extra, width),
                                    nn.ReLU())
        self.mean = nn.Linear(width, n_latent)
        self.logvar = nn.Linear(width, n_latent)

    def forward(self, h, batch_onehot, mask=None):
        parts = [h.flatten(1)]
        if self.n_batch_input and batch_onehot is not None:
            parts.append(batch_onehot)
        if mask is not None:
            parts.append(mask)
        q = self.hidden(torch.cat(parts, dim=1))
        return self.mean(q), self.logvar(q)


class Decoder(nn.Module):
    def __init__(self, n_modalities: int, n_bins: int, n_batches: int, n_latent: int):
        super().__init__()
        self.shape = (n_modalities, n_bins)
        self.n_batch_input = n_batches if n_batches > 1 else 0
        self.out = nn.Linear(n_latent + self.n_batch_input, n_modalities * n_bins)

    def forward(self, z, batch_onehot):
        if self.n_batch_input and batch_onehot is not None:
            z = torch.cat([z, batch_onehot], dim=1)
        return self.out(z).view(z.shape[0], *self.shape)


def build(arch: Architecture, config, n_extra: int):
    g = int(sum(config.chrom_lengths))
    m = config.n_modalities
    return (Encoder(m * g, config.n_batches, n_extra, arch.channels[0], config.n_latent),
            Decoder(m, g, config.n_batches, config.n_latent))


FAMILY = Family(prefix="lin", syntax="lin-d<D>", parse=parse, build="_toy_architecture:build",
                presets=("lin-d16",), summary="toy linear VAE of hidden width D",
                bin_order_matters=False)
