"""Models: ConvNet-VAE (convolutional) and the FC-VAE product-of-experts baseline."""

from .architectures import PAPER_ARCHITECTURES, Architecture, parse_architecture
from .vae import VAE, ModuleConfig, build_module, count_parameters

__all__ = ["VAE", "ModuleConfig", "Architecture", "PAPER_ARCHITECTURES", "build_module",
           "count_parameters", "parse_architecture"]
