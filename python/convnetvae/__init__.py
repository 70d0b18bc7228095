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
# Large tensors on 2 MB transparent huge pages: torch frees every activation after use and the
# next step's fresh allocation is page-faulted 4 kB at a time; with huge pages a training step
# took 2/3 of the CPU time (conv-k11s3x2, docs/performance.md). torch reads this at its first
# large allocation; a no-op where the kernel has no transparent huge pages.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

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
