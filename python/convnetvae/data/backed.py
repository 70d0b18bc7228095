"""Count sources for in-memory and on-disk (backed h5ad) AnnData.

``anndata.read_h5ad(path, backed="r")`` leaves only ``X`` on disk and reads every layer into
memory; :func:`read_backed` keeps the count layers on disk (as anndata's backed CSR datasets) and
loads only the cell and bin tables, so a file larger than RAM can be set up, trained on and
embedded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..errors import ConvNetVAEError

if TYPE_CHECKING:  # the loader imports torch; the data pipeline must not need it
    from .loader import CountSource


def _encoding(node: Any) -> str:
    """The anndata ``encoding-type`` of an h5ad group or dataset ("" when absent)."""
    enc = node.attrs.get("encoding-type", "")
    return enc.decode() if isinstance(enc, bytes) else str(enc)


def _require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ConvNetVAEError(f"{path} does not exist")


class H5CSRSource:
    """CSR layers read from an h5ad file on disk, a minibatch of rows at a time.

    Only ``indptr`` is held in memory (8 bytes per cell per modality); ``indices`` and ``data``
    are read for the requested rows, as one contiguous slice per run of consecutive rows.
    """

    def __init__(self, path: str, modalities: Sequence[str]) -> None:
        import h5py

        self.path = str(path)
        self._file = h5py.File(self.path, "r")
        groups = []
        for m in modalities:
            key = f"layers/{m}"
            if key not in self._file:
                raise ConvNetVAEError(f"layer {m!r} not found in {self.path}")
            groups.append(self._file[key])
        self._init_groups(groups, list(modalities))

    @classmethod
    def from_groups(cls, groups: Sequence[Any], names: Sequence[str]) -> H5CSRSource:
        """A source over already open h5py groups (one CSR matrix per modality)."""
        self = cls.__new__(cls)
        self.path = str(groups[0].file.filename)
        self._file = groups[0].file
        self._init_groups(list(groups), list(names))
        return self

    def _init_groups(self, groups: list, names: list[str]) -> None:
        self.groups = []
        self.indptrs = []
        shape = None
        for m, g in zip(names, groups):
            enc = _encoding(g)
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


def is_disk_matrix(x: Any) -> bool:
    """True for anndata's backed sparse datasets (layers read by :func:`read_backed`)."""
    from anndata.abc import CSCDataset, CSRDataset

    return isinstance(x, (CSRDataset, CSCDataset))


def iter_csr_chunks(x: Any, chunk_rows: int = 8192, indices: bool = False
                    ) -> Iterator[tuple[Any, ...]]:
    """Yield ``(first_row, indptr, data)`` for consecutive row blocks of a CSR layer on disk
    (``(first_row, indptr, data, indices)`` with ``indices=True``).

    The blocks are read one at a time (memory: one block's non-zeros); ``indptr`` is relative to
    the block.
    """
    if _encoding(x.group) != "csr_matrix":
        raise ConvNetVAEError(
            "a count layer on disk is stored as CSC; rewrite it as CSR "
            "(adata.layers[m] = adata.layers[m].tocsr()) to train from disk")
    ip = np.asarray(x.group["indptr"][:], dtype=np.int64)
    data = x.group["data"]
    n = len(ip) - 1
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        block = (a, ip[a:b + 1] - ip[a], np.asarray(data[ip[a]:ip[b]]))
        if indices:
            block += (np.asarray(x.group["indices"][ip[a]:ip[b]], dtype=np.int64),)
        yield block


def disk_sums(x: Any, chunk_rows: int = 8192, row_weights: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Row sums and column sums (float64) of a CSR layer on disk, read block by block
    (``row_weights``: each row's weight in both sums, e.g. 0 for a masked cell)."""
    n, g = x.shape
    rows, cols = np.zeros(n, dtype=np.float64), np.zeros(g, dtype=np.float64)
    for a, indptr, data, idx in iter_csr_chunks(x, chunk_rows, indices=True):
        per_row = np.diff(indptr)
        b = a + len(per_row)
        data = data.astype(np.float64)
        rows[a:b] = np.bincount(np.repeat(np.arange(b - a), per_row), weights=data,
                                minlength=b - a)
        if row_weights is not None:
            data = data * np.repeat(row_weights[a:b], per_row)
        cols += np.bincount(idx, weights=data, minlength=g)
    if row_weights is not None:
        rows *= row_weights
    return rows, cols


def read_backed(path: str | os.PathLike) -> ad.AnnData:
    """Read an h5ad with its count layers left on disk.

    ``obs``, ``var``, ``obsm`` and ``uns`` are read into memory; every sparse CSR layer stays
    in the file and is read a minibatch at a time during training and embedding (other layers
    are read into memory). anndata's own ``read_h5ad(path, backed="r")`` keeps only ``X`` on
    disk and loads the layers. The file stays open while the AnnData is in use; do not write to
    it meanwhile.

    Parameters
    ----------
    path
        An ``.h5ad`` file following the data contract.

    Returns
    -------
    An AnnData whose ``layers`` are anndata backed CSR datasets.
    """
    import h5py
    from anndata.io import read_elem, sparse_dataset

    path = str(path)
    _require_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ConvNetVAEError(f"{path} is not a readable h5ad (HDF5) file: {err}") from None
    if "obs" not in f or "var" not in f:
        raise ConvNetVAEError(f"{path} is not an h5ad file (no obs/var groups)")
    layers = {}
    for name, node in (f["layers"].items() if "layers" in f else []):
        # CSR count layers stay on disk; other layers (dense, CSC) are small or not counts
        layers[name] = sparse_dataset(node) if _encoding(node) == "csr_matrix" else read_elem(node)
    parts = {k: read_elem(f[k]) for k in ("obs", "var", "obsm", "uns") if k in f}
    return ad.AnnData(obs=parts["obs"], var=parts["var"], obsm=parts.get("obsm"),
                      uns=parts.get("uns"), layers=layers)


def read_h5ad(path: str | os.PathLike, backed: bool = False) -> ad.AnnData:
    """Read an h5ad for training: into memory, or with its count layers on disk.

    Parameters
    ----------
    path
        The file.
    backed
        ``True``: :func:`read_backed` (count layers stay on disk); ``False``: ``anndata.read_h5ad``.
    """
    if backed:
        return read_backed(path)
    _require_file(str(path))
    if _float16_layers(str(path)):  # scipy.sparse has no float16: anndata cannot read them
        return _read_converting_float16(str(path))
    try:
        return ad.read_h5ad(path)
    except OSError as err:
        raise ConvNetVAEError(f"{path} is not a readable h5ad (HDF5) file: {err}") from None


def _float16_layers(path: str) -> list[str]:
    """Sparse layers of an h5ad whose values are stored as float16."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            layers = f["layers"] if "layers" in f else {}
            return [k for k, g in layers.items() if isinstance(g, h5py.Group)
                    and "data" in g and g["data"].dtype == np.float16]
    except OSError as err:
        raise ConvNetVAEError(f"{path} is not a readable h5ad (HDF5) file: {err}") from None


def _read_converting_float16(path: str) -> ad.AnnData:
    """Read an h5ad into memory, converting float16 sparse layers to float32 (exact for counts)."""
    adata = read_backed(path)
    for name, x in list(adata.layers.items()):
        if is_disk_matrix(x):
            g = x.group
            cls = sp.csr_matrix if _encoding(g) == "csr_matrix" else sp.csc_matrix
            adata.layers[name] = cls((np.asarray(g["data"][:], dtype=np.float32), g["indices"][:],
                                      g["indptr"][:]), shape=tuple(int(v) for v in g.attrs["shape"]))
    return adata


def source_from_anndata(adata: ad.AnnData, modalities: Sequence[str]) -> CountSource:
    """The fastest row source for ``adata``: in memory, or the file of on-disk layers."""
    from .loader import InMemorySource

    layers = [adata.layers[m] for m in modalities]
    if not adata.is_view and all(is_disk_matrix(x) for x in layers):
        return H5CSRSource.from_groups([x.group for x in layers], modalities)
    if adata.isbacked and not adata.is_view:
        return H5CSRSource(str(adata.filename), modalities)
    mats = []
    for x in layers:
        if is_disk_matrix(x):
            x = x.to_memory()
        if not sp.issparse(x):
            x = sp.csr_matrix(np.asarray(x))
        mats.append(x if sp.isspmatrix_csr(x) else x.tocsr())
    return InMemorySource(mats)
