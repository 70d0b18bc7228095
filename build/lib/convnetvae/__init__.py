"""convnetvae: batch-corrected cell embeddings of single-cell multimodal epigenomic data.

A convolutional variational autoencoder over genomic bins (ConvNet-VAE, Gao & Welch,
Bioinformatics 2025), with an scvi-tools-like API, an R bridge and a notebook workbench.
"""

from importlib.metadata import PackageNotFoundError, version

from .data import simulate
from .errors import ConvNetVAEError

try:
    __version__ = version("convnetvae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["ConvNetVAE", "ConvNetVAEError", "simulate", "__version__"]


def __getattr__(name: str):
    # import torch only when the model is used, so `import convnetvae` stays light
    if name == "ConvNetVAE":
        from .api import ConvNetVAE

        return ConvNetVAE
    raise AttributeError(name)
