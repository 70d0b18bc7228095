"""Builders of the registered architecture families (see :mod:`.registry`).

A builder is ``build(arch, config, n_extra) -> (encoder, decoder)``:

* ``arch``: the parsed :class:`~.registry.Architecture`;
* ``config``: the :class:`~.vae.ModuleConfig` (modalities, chromosome lengths, batches, widths);
* ``n_extra``: width of the modality mask the encoder receives (0 when it receives none);
* the encoder is called as ``encoder(log1p_counts (B, M, G), batch_onehot or None, mask or
  None)`` and returns the mean and log-variance of q(z | x, b), each (B, n_latent);
* the decoder is called as ``decoder(z, batch_onehot or None)`` and returns logits over bins
  (B, M, G); the VAE adds batch offsets, takes the softmax and the likelihood.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..errors import ConvNetVAEError
from .convnet import ConvDecoder, ConvEncoder
from .fc_poe import FCPoEDecoder, FCPoEEncoder
from .registry import PAPER_ARCHITECTURES, Architecture, fitting_architecture, parse_architecture

if TYPE_CHECKING:  # pragma: no cover
    from .vae import ModuleConfig

__all__ = ["PAPER_ARCHITECTURES", "Architecture", "build_conv", "build_fc", "parse_architecture"]


def build_conv(arch: Architecture, config: ModuleConfig, n_extra: int
               ) -> tuple[nn.Module, nn.Module]:
    """ConvNet-VAE encoder and decoder (Group 1 and Group 2)."""
    g = int(sum(config.chrom_lengths))
    if g < arch.kernel:
        raise ConvNetVAEError(
            f"architecture {arch.name!r} has kernel {arch.kernel} but the data has only "
            f"{g} bins: {fitting_architecture(g)}")
    m = config.n_modalities
    encoder = ConvEncoder(m, config.chrom_lengths, arch.kernel, arch.stride, arch.channels,
                          config.n_batches, n_extra, config.n_hidden, config.n_latent,
                          config.dropout, config.chrom_aware)
    decoder = ConvDecoder(m, config.chrom_lengths, arch.kernel, arch.stride, arch.channels,
                          config.n_batches, config.n_latent, config.dropout, config.chrom_aware)
    return encoder, decoder


def build_fc(arch: Architecture, config: ModuleConfig, n_extra: int
             ) -> tuple[nn.Module, nn.Module]:
    """FC-VAE product-of-experts encoder and decoder (the mask selects the experts)."""
    g = int(sum(config.chrom_lengths))
    m = config.n_modalities
    encoder = FCPoEEncoder(m, g, config.n_batches, config.n_hidden, config.n_latent,
                           arch.n_layers, config.dropout)
    decoder = FCPoEDecoder(m, g, config.n_batches, config.n_hidden, config.n_latent,
                           arch.n_layers, config.dropout)
    return encoder, decoder
