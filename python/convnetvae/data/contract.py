"""The AnnData data contract: validation and the registry written by ``setup_anndata``.

Contract: ``layers[modality]`` are sparse integer counts (cells x bins, all over the same bins),
``var`` has ``chrom``/``start``/``end`` (0-based half-open) in genome order without overlaps,
``obs[batch_key]`` holds batch labels without missing values, and
``obsm["modality_mask"]`` (optional, cells x modalities, True = observed) marks missing modalities.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .backed import is_disk_matrix, iter_csr_chunks
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
    if not np.issubdtype(data.dtype, np.number):
        raise ConvNetVAEError(f"layer {name!r} is not numeric (dtype {data.dtype})")
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
    if sp.issparse(x):
        return x.tocsr() if not sp.isspmatrix_csr(x) else x
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
        (default ``"modality_mask"`` when present), or an ``obs`` column name prefix is not used.

    Returns
    -------
    The registry dict, also stored in ``adata.uns["convnetvae"]``.
    """
    if not isinstance(adata, ad.AnnData):
        raise ConvNetVAEError(f"expected an AnnData, got {type(adata).__name__}")
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
    if adata.n_obs == 0:
        raise ConvNetVAEError("adata has no cells")
    chroms = check_var_coordinates(adata.var)
    lib_cols: list[np.ndarray] = []
    for m in modalities:
        layer = adata.layers[m]
        if layer.shape != (adata.n_obs, adata.n_vars):
            raise ConvNetVAEError(
                f"layer {m!r} has shape {layer.shape}, expected {(adata.n_obs, adata.n_vars)}: "
                "all modalities must share the same bins")
        if is_disk_matrix(layer):  # stays on disk: validated and summed block by block
            lib_cols.append(disk_row_sums(layer, m))
            continue
        csr = check_counts(layer, m)
        if csr is not layer and not adata.is_view:
            adata.layers[m] = csr
        lib_cols.append(np.asarray(csr.sum(axis=1), dtype=np.float64).ravel())

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

    mask = get_mask(adata, modalities, mask_key)
    has_missing = bool(mask is not None and not mask.all())
    lib = np.stack(lib_cols, axis=1)
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


def check_saved_config(config: dict, where: str) -> None:
    """Check the structure of a saved model's ``config.json`` (see ``ConvNetVAE.save``).

    A damaged or hand-edited config raises a :class:`ConvNetVAEError` naming the field, instead
    of failing later with an unrelated error.

    Parameters
    ----------
    config
        The parsed JSON object.
    where
        The file, for messages.
    """
    def bad(field: str, want: str) -> ConvNetVAEError:
        return ConvNetVAEError(f"{where} is damaged: {field} must be {want}; re-save the model")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def str_list(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(s, str) for s in v)

    module, reg, bins = config.get("module"), config.get("registry"), config.get("bins")
    if not isinstance(module, dict):
        raise bad("'module'", "an object")
    if not isinstance(reg, dict):
        raise bad("'registry'", "an object")
    if not isinstance(bins, dict):
        raise bad("'bins'", "an object")
    mods = reg.get("modalities")
    if not str_list(mods) or not mods or len(set(mods)) != len(mods):
        raise bad("registry.modalities", "a non-empty list of distinct layer names")
    for key in ("batch_key", "labels_key", "mask_key"):
        if reg.get(key) is not None and not isinstance(reg.get(key), str):
            raise bad(f"registry.{key}", "a column name or null")
    cats = reg.get("batch_categories", [])
    if not str_list(cats) or len(set(cats)) != len(cats):
        raise bad("registry.batch_categories", "a list of distinct batch names")
    if not isinstance(reg.get("has_missing", False), bool):
        raise bad("registry.has_missing", "true or false")
    lengths = module.get("chrom_lengths")
    if not isinstance(lengths, list) or not lengths or not all(
            is_int(n) and n > 0 for n in lengths):
        raise bad("module.chrom_lengths", "a non-empty list of positive bin counts")
    if module.get("n_modalities") != len(mods):
        raise bad("module.n_modalities", f"the number of modalities ({len(mods)})")
    if module.get("n_batches") != max(1, len(cats)):
        raise bad("module.n_batches", f"the number of batches ({max(1, len(cats))})")
    chrom, start, end = bins.get("chrom"), bins.get("start"), bins.get("end")
    n = sum(lengths)
    if not str_list(chrom) or len(chrom) != n:
        raise bad("bins.chrom", f"a list of {n} chromosome names")
    for field, v in (("start", start), ("end", end)):
        if not isinstance(v, list) or len(v) != n or not all(is_int(x) for x in v):
            raise bad(f"bins.{field}", f"a list of {n} integers")
    names = bins.get("names")
    if names is not None and (not str_list(names) or len(names) != n):
        raise bad("bins.names", f"a list of {n} bin names or null")
    if any(s < 0 or e <= s for s, e in zip(start, end)):
        raise bad("bins.start/end", "0-based half-open intervals (0 <= start < end)")
    hist = config.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
        raise bad("'history'", "a list of per-epoch objects")
    if not isinstance(config.get("train_config", {}), dict):
        raise bad("'train_config'", "an object")
    if not is_int(config.get("seed", 0)):
        raise bad("'seed'", "an integer")
