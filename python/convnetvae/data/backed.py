"""Count sources for in-memory and on-disk (backed h5ad) AnnData."""

from __future__ import annotations

from typing import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .loader import CountSource, InMemorySource


class H5CSRSource:
    """CSR layers read from an h5ad file on disk, a minibatch of rows at a time.

    Only ``indptr`` is held in memory (8 bytes per cell per modality); ``indices`` and ``data``
    are read for the requested rows, as one contiguous slice per run of consecutive rows.
    """

    def __init__(self, path: str, modalities: Sequence[str]) -> None:
        import h5py

        self.path = str(path)
        self._file = h5py.File(self.path, "r")
        self.groups = []
        self.indptrs = []
        shape = None
        for m in modalities:
            key = f"layers/{m}"
            if key not in self._file:
                raise ConvNetVAEError(f"layer {m!r} not found in {self.path}")
            g = self._file[key]
            enc = g.attrs.get("encoding-type", "")
            if isinstance(enc, bytes):
                enc = enc.decode()
            if enc != "csr_matrix":
                raise ConvNetVAEError(
                    f"layer {m!r} in {self.path} is stored as {enc or 'dense'}, not CSR; rewrite "
                    "it as a scipy.sparse.csr_matrix to train from disk")
            self.groups.append(g)
            self.indptrs.append(np.asarray(g["indptr"][:], dtype=np.int64))
            shp = tuple(int(v) for v in g.attrs["shape"])
            if shape is not None and shp != shape:
                raise ConvNetVAEError(f"layers in {self.path} have different shapes")
            shape = shp
        assert shape is not None
        self.n_obs, self.n_bins = shape
        self.n_modalities = len(self.groups)

    def csr_rows(self, modality: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
        g = self.groups[modality]
        ip = self.indptrs[modality]
        rows = np.asarray(rows, dtype=np.int64)
        lengths = ip[rows + 1] - ip[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        idx_parts, dat_parts = [], []
        # group consecutive rows into runs: one contiguous read per run
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(rows, breaks):
            if run.size == 0:
                continue
            a, b = ip[run[0]], ip[run[-1] + 1]
            idx_parts.append(g["indices"][a:b])
            dat_parts.append(g["data"][a:b])
        indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64)
        data = np.concatenate(dat_parts) if dat_parts else np.zeros(0, dtype=np.float32)
        return indptr, indices, data


def source_from_anndata(adata: ad.AnnData, modalities: Sequence[str]) -> CountSource:
    """The fastest row source for ``adata``: in memory, or the h5ad file of a backed AnnData."""
    if adata.isbacked and not adata.is_view:
        return H5CSRSource(str(adata.filename), modalities)
    mats = []
    for m in modalities:
        x = adata.layers[m]
        if not sp.issparse(x):
            x = sp.csr_matrix(np.asarray(x))
        mats.append(x if sp.isspmatrix_csr(x) else x.tocsr())
    return InMemorySource(mats)
