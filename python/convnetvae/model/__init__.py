"""Models: ConvNet-VAE (convolutional) and the FC-VAE product-of-experts baseline.

The architecture registry (:mod:`.registry`) does not import torch; the modules (``VAE``...) are
imported on first use, so listing or checking architectures stays light.
"""

from .registry import (
    DEFAULT_ARCHITECTURE,
    PAPER_ARCHITECTURES,
    Architecture,
    Family,
    parse_architecture,
    preset_names,
    register,
)

__all__ = ["VAE", "ModuleConfig", "Architecture", "Family", "DEFAULT_ARCHITECTURE",
           "PAPER_ARCHITECTURES", "count_parameters", "parse_architecture", "preset_names",
           "register"]


def __getattr__(name: str):
    if name in ("VAE", "ModuleConfig", "count_parameters"):
        from . import vae

        return getattr(vae, name)
    raise AttributeError(name)
