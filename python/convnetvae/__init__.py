"""convnetvae: batch-corrected cell embeddings of single-cell multimodal epigenomic data.

A convolutional variational autoencoder over genomic bins (ConvNet-VAE, Gao & Welch,
Bioinformatics 2025), with an scvi-tools-like API, an R bridge and a notebook workbench.
"""

import os as _os
from importlib.metadata import PackageNotFoundError, version

# OpenMP threads that spin while waiting starve each other on few, shared cores (measured: a
# training step 3x slower, single convolutions up to 40x, see docs/performance.md); wait
# passively unless the user chose otherwise. Takes effect when convnetvae is imported before
# torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .data import simulate  # noqa: E402
from .errors import ConvNetVAEError  # noqa: E402

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
