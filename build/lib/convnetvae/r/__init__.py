"""The R bridge.

* :mod:`convnetvae.r.bridge` -- called by the R package through reticulate (no rpy2 here);
* :mod:`convnetvae.r.rds` -- the other direction, with rpy2 + anndata2ri:
  :func:`read_seurat`, :func:`read_sce` (``.rds`` -> AnnData contract) and
  :func:`write_reduction` (an embedding back into the ``.rds`` as a reduction).

Importing this package does not start R: the rpy2 functions are loaded on first use.
"""

from __future__ import annotations

__all__ = ["read_seurat", "read_sce", "write_reduction"]


def __getattr__(name: str):
    if name in __all__:
        from . import rds

        return getattr(rds, name)
    raise AttributeError(name)
