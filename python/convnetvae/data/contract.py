"""The AnnData data contract: validation and the registry written by ``setup_anndata``.

:func:`build` is the one writer of the contract (every reader and the simulator end in it);
:func:`setup_anndata` validates an AnnData and writes the registry a model uses.

Contract: ``layers[modality]`` are sparse integer counts (cells x bins, all over the same bins),
``var`` has ``chrom``/``start``/``end`` (0-based half-open) in genome order without overlaps,
``obs[batch_key]`` holds batch labels without missing values, and
``obsm["modality_mask"]`` (optional, cells x modalities, True = observed) marks missing modalities.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .backed import disk_sums, is_disk_matrix, iter_csr_chunks
from .genome import chrom_sort_key as natural_chrom_key

REGISTRY_KEY = "convnetvae"
MASK_KEY = "modality_mask"


def check_var_coordinates(var: pd.DataFrame, what: str = "adata.var") -> list[str]:
    """Check ``chrom``/``start``/``end`` columns: present, integer, sorted, non-overlapping.

    Returns
    -------
    The chromosome names in the order they appear.
    """
    missing = [c for c in ("chrom", "start", "end") if c not in var.columns]
    if missing:
        raise ConvNetVAEError(
            f"{what} lacks column(s) {missing}: bins need chrom/start/end (0-based, half-open). "
            "Parse bin names with convnetvae.data.parse_bin_names or read the data with "
            "convnetvae.data.read_counts / read_fragments.")
    if len(var) == 0:
        raise ConvNetVAEError(f"{what} has no bins")
    chrom = var["chrom"].astype(str).to_numpy()
    try:
        start = np.asarray(var["start"], dtype=np.float64)
        end = np.asarray(var["end"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConvNetVAEError(f"{what}.start/end must be integers: {err}") from None
    if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end))):
        raise ConvNetVAEError(f"{what}.start/end contain missing or infinite values")
    bad = np.flatnonzero((start < 0) | (end <= start))
    if bad.size:
        i = bad[0]
        raise ConvNetVAEError(
            f"bin {var.index[i]!r} ({chrom[i]}:{int(start[i])}-{int(end[i])}) has end <= start or a "
            "negative start; bins must be 0-based half-open intervals")
    change = np.flatnonzero(chrom[1:] != chrom[:-1]) + 1
    seg_starts = np.r_[0, change]
    chroms = [chrom[i] for i in seg_starts]
    if len(set(chroms)) != len(chroms):
        dup = next(c for c in chroms if chroms.count(c) > 1)
        raise ConvNetVAEError(
            f"bins of chromosome {dup!r} are not contiguous in {what}: sort bins in genome order "
            "(adata = adata[:, order]; see convnetvae.data.sort_bins)")
    keys = [natural_chrom_key(c) for c in chroms]
    if keys != sorted(keys):
        warnings.warn(f"chromosomes in {what} are not in natural order ({chroms[:5]}...); the "
                      "model treats them in the given order", stacklevel=3)
    same = chrom[1:] == chrom[:-1]
    unsorted = np.flatnonzero(same & (start[1:] < start[:-1]))
    if unsorted.size:
        i = unsorted[0] + 1
        raise ConvNetVAEError(
            f"bins are not sorted by position: bin {var.index[i]!r} ({chrom[i]}:{int(start[i])}) "
            f"comes after {var.index[i - 1]!r} ({chrom[i - 1]}:{int(start[i - 1])}); sort bins in "
            "genome order first")
    overlap = np.flatnonzero(same & (start[1:] < end[:-1]))
    if overlap.size:
        i = overlap[0] + 1
        raise ConvNetVAEError(
            f"bins overlap: {var.index[i - 1]!r} ({chrom[i - 1]}:{int(start[i - 1])}-{int(end[i - 1])})"
            f" and {var.index[i]!r} ({chrom[i]}:{int(start[i])}-{int(end[i])}); merge or rebin "
            "overlapping features (convnetvae.data.rebin)")
    return chroms


def _check_values(data: np.ndarray, name: str) -> None:
    """Raise a clear error unless ``data`` are finite non-negative integers."""
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise ConvNetVAEError(f"layer {name!r} is not real numbers (dtype {data.dtype})")
    if not data.size:
        return
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise ConvNetVAEError(
                f"layer {name!r} contains NaN or infinite values; counts must be finite "
                "non-negative integers")
        if np.any(data != np.round(data)):
            raise ConvNetVAEError(
                f"layer {name!r} contains non-integer values (e.g. {data[data != np.round(data)][0]:g}): "
                "ConvNet-VAE models raw counts, not normalised data; pass the raw count layer")
    if data.min() < 0:
        raise ConvNetVAEError(f"layer {name!r} contains negative values; counts must be >= 0")


def check_counts(x: Any, name: str) -> Any:
    """Validate one modality's counts and return them as CSR (no copy when already CSR).

    Raises a :class:`ConvNetVAEError` naming the layer for non-numeric, negative, NaN, infinite or
    non-integer values. A layer on disk (see :func:`convnetvae.data.read_backed`) is checked
    block by block and returned as it is.
    """
    if is_disk_matrix(x):
        disk_row_sums(x, name)
        return x
    data = np.asarray(x.data if sp.issparse(x) else x)
    _check_values(data, name)
    if data.dtype == np.float16:  # scipy.sparse has no float16; counts fit float32 exactly
        data = data.astype(np.float32)
    if sp.issparse(x):
        csr = x.tocsr() if not sp.isspmatrix_csr(x) else x
        if not csr.has_canonical_format:  # duplicate (cell, bin) entries are summed, not lost
            csr = csr.copy() if csr is x else csr
            csr.sum_duplicates()
        return csr
    return sp.csr_matrix(data)


def disk_row_sums(x: Any, name: str) -> np.ndarray:
    """Validate a CSR layer on disk block by block and return its row sums (float64).

    Memory: one block of rows' non-zeros at a time.
    """
    sums = np.zeros(x.shape[0], dtype=np.float64)
    for first, indptr, data in iter_csr_chunks(x):
        _check_values(data, name)
        n = len(indptr) - 1
        rows = np.repeat(np.arange(n), np.diff(indptr))
        sums[first:first + n] = np.bincount(rows, weights=data, minlength=n)
    return sums


def count_sums(adata: ad.AnnData, modality: str, observed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(library size per cell, total per bin) of one registered count layer (float64), in
    memory or on disk (read block by block).

    ``observed``: boolean per cell; cells where the modality is not observed (masked) count as
    empty in both sums, whatever their layer holds.
    """
    layer = adata.layers[modality]
    w = None if observed is None or np.all(observed) else np.asarray(observed, dtype=np.float64)
    if is_disk_matrix(layer):
        return disk_sums(layer, row_weights=w)
    rows = np.asarray(layer.sum(axis=1), dtype=np.float64).ravel()
    if w is None:
        return rows, np.asarray(layer.sum(axis=0), dtype=np.float64).ravel()
    return rows * w, np.asarray(layer.T @ w, dtype=np.float64).ravel()


def _row_nonzeros(indptr: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Non-zero entries per row of CSR arrays: stored entries less stored zeros (found without
    an array per stored entry but the comparison's)."""
    indptr = np.asarray(indptr)
    per_row = np.diff(indptr).astype(np.int64)
    zeros = np.flatnonzero(np.asarray(data) == 0)
    if zeros.size:
        per_row -= np.bincount(np.searchsorted(indptr, zeros, side="right") - 1,
                               minlength=len(per_row))
    return per_row


def nonzero_entries(adata: ad.AnnData, modality: str, observed: np.ndarray | None = None
                    ) -> tuple[int, int]:
    """(non-zero counts, entries) of one registered count layer over the cells where it is
    observed (``observed``: boolean per cell, None: all), in memory or on disk (read block by
    block); stored zeros do not count."""
    layer = adata.layers[modality]
    n, g = adata.n_obs, adata.n_vars
    keep = np.ones(n, dtype=bool) if observed is None else np.asarray(observed, dtype=bool)
    if is_disk_matrix(layer):
        per_row = np.zeros(n, dtype=np.int64)
        for a, indptr, data in iter_csr_chunks(layer):
            per_row[a:a + len(indptr) - 1] = _row_nonzeros(indptr, data)
    elif sp.issparse(layer):
        x = sp.csr_matrix(layer)
        per_row = _row_nonzeros(x.indptr, x.data)
    else:
        per_row = np.count_nonzero(np.asarray(layer), axis=1)
    return int(per_row[keep].sum()), int(keep.sum()) * g


# ---------------------------------------------------------------------------- the writer
def build(layers: Mapping[str, Any], var: pd.DataFrame, obs: pd.DataFrame,
          mask: np.ndarray | None = None, uns: Mapping[str, Any] | None = None) -> ad.AnnData:
    """The one writer of the data contract: every reader and the simulator end here.

    Parameters
    ----------
    layers
        Modality -> cells x bins counts (sparse or dense; integer values), in channel order.
    var
        The bins: ``chrom``, ``start``, ``end`` (0-based half-open), in genome order.
    obs
        The cells (index = cell names) and their columns; ``n_counts_<modality>`` is added.
    mask
        Boolean cells x modalities array of observed modalities (``obsm["modality_mask"]``), or
        ``None`` when every cell has every modality.
    uns
        Further ``uns`` entries (provenance of the reader).

    Returns
    -------
    anndata.AnnData
        ``layers[m]`` CSR integer counts (int32, int64 beyond 2**31 - 1) with sorted indices,
        ``obs["n_counts_<m>"]`` (int64), ``uns["modalities"]`` and the mask when given.
    """
    modalities = [str(m) for m in layers]
    if not modalities:
        raise ConvNetVAEError("no modalities given: pass at least one count layer")
    check_var_coordinates(var, "the bins (var)")
    obs = obs.copy()
    out = {}
    for m, x in layers.items():
        csr = _count_csr(x, str(m))
        if csr.shape != (len(obs), len(var)):
            raise ConvNetVAEError(f"layer {m!r} has shape {csr.shape}, expected "
                                  f"{(len(obs), len(var))} (cells x bins)")
        out[str(m)] = csr
        obs[f"n_counts_{m}"] = np.asarray(csr.sum(axis=1), dtype=np.int64).ravel()
    adata = ad.AnnData(obs=obs, var=var.copy(), layers=out)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(obs), len(modalities)):
            raise ConvNetVAEError(f"the modality mask has shape {mask.shape}, expected "
                                  f"{(len(obs), len(modalities))} (cells x modalities)")
        adata.obsm[MASK_KEY] = mask
    adata.uns["modalities"] = modalities
    for k, v in (uns or {}).items():
        adata.uns[k] = v
    return adata


def _count_csr(x: Any, name: str) -> sp.csr_matrix:
    """Checked counts as CSR with an integer dtype and sorted indices."""
    csr = sp.csr_matrix(check_counts(x, name))
    big = csr.nnz and csr.data.max() >= 2**31
    dtype = np.int64 if big else np.int32
    if csr.dtype != dtype:
        csr = csr.astype(dtype)
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


# ---------------------------------------------------------------------------- the registry
def setup_anndata(
    adata: ad.AnnData,
    modalities: Sequence[str] | None = None,
    batch_key: str | None = None,
    labels_key: str | None = None,
    mask_key: str | None = None,
) -> dict:
    """Validate ``adata`` against the data contract and register the fields a model uses.

    Parameters
    ----------
    adata
        Cells x bins, one count layer per modality.
    modalities
        Layer names, in the channel order the model uses. Defaults to ``adata.uns["modalities"]``.
    batch_key
        Column of ``adata.obs`` with the batch (sample) of each cell, or ``None``.
    labels_key
        Column of ``adata.obs`` with cell labels (used only for evaluation), or ``None``.
    mask_key
        Key of ``adata.obsm`` holding a boolean cells x modalities mask of observed modalities
        (default ``"modality_mask"`` when present).

    Returns
    -------
    The registry dict, also stored in ``adata.uns["convnetvae"]``.
    """
    if not isinstance(adata, ad.AnnData):
        raise ConvNetVAEError(f"expected an AnnData, got {type(adata).__name__}")
    modalities = _check_modalities(adata, modalities)
    if adata.n_obs == 0:
        raise ConvNetVAEError("adata has no cells")
    chroms = check_var_coordinates(adata.var)
    lib = np.stack([_library_sizes(adata, m) for m in modalities], axis=1)
    batch_categories = _check_obs_keys(adata, batch_key, labels_key)
    mask = get_mask(adata, modalities, mask_key)
    has_missing = bool(mask is not None and not mask.all())
    observed_zero = (lib == 0) & (mask if mask is not None else True)
    if observed_zero.any():
        bad = {m: int(observed_zero[:, j].sum()) for j, m in enumerate(modalities)
               if observed_zero[:, j].any()}
        warnings.warn(
            f"cells with zero counts in an observed modality: {bad}. They are treated as missing "
            "that modality (masked from the encoder and the loss); filter them out if unintended.",
            stacklevel=2)
        has_missing = True
    registry = {
        "modalities": modalities,
        "batch_key": batch_key,
        "labels_key": labels_key,
        "mask_key": mask_key if mask is not None else None,
        "batch_categories": batch_categories,
        "chromosomes": chroms,
        "n_bins": int(adata.n_vars),
        "has_missing": has_missing,
    }
    adata.uns[REGISTRY_KEY] = registry
    return registry


def _check_modalities(adata: ad.AnnData, modalities: Sequence[str] | str | None) -> list[str]:
    if modalities is None:
        modalities = list(adata.uns.get("modalities", []))
        if not modalities:
            raise ConvNetVAEError(
                "modalities= is required: name the count layers to model, e.g. "
                f"modalities=['ATAC', 'H3K27ac']; available layers: {list(adata.layers.keys())}")
    if isinstance(modalities, str):
        modalities = [modalities]
    modalities = [str(m) for m in modalities]
    if not modalities:
        raise ConvNetVAEError(
            "modalities is empty: name at least one count layer, e.g. modalities=['ATAC']; "
            f"available layers: {list(adata.layers.keys())}")
    if len(set(modalities)) != len(modalities):
        raise ConvNetVAEError(f"modalities contain duplicates: {modalities}")
    for m in modalities:
        if m not in adata.layers:
            raise ConvNetVAEError(
                f"layer {m!r} not found in adata.layers (available: {list(adata.layers.keys())}); "
                "each modality must be a count layer over the same bins")
    return modalities


def _library_sizes(adata: ad.AnnData, m: str) -> np.ndarray:
    """Check one layer's shape and counts (converted to CSR in place) and return its row sums."""
    layer = adata.layers[m]
    if layer.shape != (adata.n_obs, adata.n_vars):
        raise ConvNetVAEError(
            f"layer {m!r} has shape {layer.shape}, expected {(adata.n_obs, adata.n_vars)}: "
            "all modalities must share the same bins")
    if is_disk_matrix(layer):  # stays on disk: validated and summed block by block
        return disk_row_sums(layer, m)
    csr = check_counts(layer, m)
    if csr is not layer and not adata.is_view:
        adata.layers[m] = csr
    return np.asarray(csr.sum(axis=1), dtype=np.float64).ravel()


def _check_obs_keys(adata: ad.AnnData, batch_key: str | None, labels_key: str | None
                    ) -> list[str]:
    """Check the batch and label columns; returns the batch categories."""
    batch_categories: list[str] = []
    if batch_key is not None:
        if batch_key not in adata.obs.columns:
            raise ConvNetVAEError(
                f"batch_key {batch_key!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)})")
        col = adata.obs[batch_key]
        if col.isna().any():
            n = int(col.isna().sum())
            raise ConvNetVAEError(
                f"batch column {batch_key!r} has {n} missing (NaN) values; assign every cell a "
                "batch or drop those cells")
        batch_categories = [str(c) for c in pd.Categorical(col.astype(str)).categories]
    if labels_key is not None and labels_key not in adata.obs.columns:
        raise ConvNetVAEError(
            f"labels_key {labels_key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)})")
    return batch_categories


def get_registry(adata: ad.AnnData) -> dict:
    """Return the registry written by :func:`setup_anndata` or raise a clear error."""
    reg = adata.uns.get(REGISTRY_KEY)
    if not isinstance(reg, dict) or "modalities" not in reg:
        raise ConvNetVAEError(
            "adata is not set up: call ConvNetVAE.setup_anndata(adata, modalities=[...], "
            "batch_key=...) first")
    reg = dict(reg)
    reg["modalities"] = [str(m) for m in reg["modalities"]]
    reg["batch_categories"] = [str(c) for c in reg.get("batch_categories", [])]
    reg["chromosomes"] = [str(c) for c in reg.get("chromosomes", [])]
    return reg


def get_mask(adata: ad.AnnData, modalities: Sequence[str], mask_key: str | None = None
             ) -> np.ndarray | None:
    """Boolean cells x modalities mask of observed modalities, or ``None`` if all observed."""
    key = mask_key if mask_key is not None else (MASK_KEY if MASK_KEY in adata.obsm else None)
    if key is None:
        return None
    if key not in adata.obsm:
        raise ConvNetVAEError(
            f"mask_key {key!r} not found in adata.obsm (keys: {list(adata.obsm.keys())})")
    mask = adata.obsm[key]
    if isinstance(mask, pd.DataFrame):
        all_mods = [str(c) for c in mask.columns]
        missing = [m for m in modalities if m not in all_mods]
        if missing:
            raise ConvNetVAEError(f"modality mask {key!r} has no column for {missing}")
        mask = mask[list(modalities)].to_numpy()
    else:
        mask = np.asarray(mask)
        all_mods = [str(m) for m in adata.uns.get("modalities", modalities)]
        if mask.ndim != 2 or mask.shape[0] != adata.n_obs or mask.shape[1] != len(all_mods):
            raise ConvNetVAEError(
                f"adata.obsm[{key!r}] must be a cells x modalities boolean array with columns "
                f"{all_mods}; got shape {mask.shape}")
        cols = []
        for m in modalities:
            if m not in all_mods:
                raise ConvNetVAEError(f"modality {m!r} has no column in adata.obsm[{key!r}]")
            cols.append(all_mods.index(m))
        mask = mask[:, cols]
    if mask.dtype != bool:
        if not np.isin(np.unique(mask), [0, 1]).all():
            raise ConvNetVAEError(f"adata.obsm[{key!r}] must be boolean (True = observed)")
        mask = mask.astype(bool)
    return mask


def batch_codes(adata: ad.AnnData, registry: dict) -> np.ndarray:
    """Integer batch code of every cell under the registry's batch categories.

    Raises a clear error for batch labels the model has not seen.
    """
    key = registry.get("batch_key")
    cats = registry.get("batch_categories", [])
    if key is None or not cats:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if key not in adata.obs.columns:
        raise ConvNetVAEError(f"batch column {key!r} not found in adata.obs")
    col = adata.obs[key]
    if col.isna().any():
        raise ConvNetVAEError(f"batch column {key!r} has missing (NaN) values")
    values = col.astype(str).to_numpy()
    lookup = {c: i for i, c in enumerate(cats)}
    codes = np.fromiter((lookup.get(v, -1) for v in values), dtype=np.int64, count=len(values))
    if (codes < 0).any():
        unknown = sorted(set(values[codes < 0]))[:5]
        raise ConvNetVAEError(
            f"batch labels {unknown} in column {key!r} were not seen when the model was trained "
            f"(known: {cats})")
    return codes


def chromosome_lengths(var: pd.DataFrame) -> list[int]:
    """Number of bins of each chromosome segment, in order."""
    chrom = var["chrom"].astype(str).to_numpy()
    change = np.flatnonzero(chrom[1:] != chrom[:-1]) + 1
    bounds = np.r_[0, change, len(chrom)]
    return [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def check_same_bins(adata: ad.AnnData, bins: pd.DataFrame, modalities: Sequence[str],
                    registry_modalities: Sequence[str]) -> None:
    """Check that ``adata`` has the bins and modalities a model was trained on."""
    if list(modalities) != list(registry_modalities):
        raise ConvNetVAEError(
            f"the model was trained on modalities {list(registry_modalities)} but the data has "
            f"{list(modalities)}")
    if adata.n_vars != len(bins):
        raise ConvNetVAEError(
            f"the model was trained on {len(bins)} bins but the data has {adata.n_vars}; select "
            "the same bins (e.g. adata[:, model.bins.index]) before embedding")
    v = adata.var
    same = (v["chrom"].astype(str).to_numpy() == bins["chrom"].astype(str).to_numpy()) & \
           (np.asarray(v["start"], dtype=np.int64) == np.asarray(bins["start"], dtype=np.int64)) & \
           (np.asarray(v["end"], dtype=np.int64) == np.asarray(bins["end"], dtype=np.int64))
    if not same.all():
        i = int(np.flatnonzero(~same)[0])
        raise ConvNetVAEError(
            f"bin {i} differs from the model's: data has {v['chrom'].iloc[i]}:{v['start'].iloc[i]}-"
            f"{v['end'].iloc[i]}, model has {bins['chrom'].iloc[i]}:{bins['start'].iloc[i]}-"
            f"{bins['end'].iloc[i]}; use the same bins the model was trained on")
