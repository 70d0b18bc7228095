"""Per-modality count matrices with their own feature names -> one aligned AnnData contract.

Used by both directions of the R bridge (reticulate: :mod:`convnetvae.r.bridge`; rpy2:
:mod:`convnetvae.r.rds`). Name parsing, rebinning and bin selection are those of
:mod:`convnetvae.data.bins`; this module only decides the shared window grid.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.bins import (
    blacklist_bins,
    format_bin_names,
    genome_order,
    parse_bin_names,
    rebin_matrix,
    select_top_bins,
)
from ..data.genome import check_bin_size
from ..errors import ConvNetVAEError


def _parse(names: Sequence[str], modality: str) -> pd.DataFrame:
    try:
        return parse_bin_names(list(names))
    except ConvNetVAEError as err:
        raise ConvNetVAEError(f"modality {modality!r}: {err}") from None


def window_grid(features: Mapping[str, pd.DataFrame], bin_size: int) -> pd.DataFrame:
    """The windows of width ``bin_size`` holding any feature's midpoint, in genome order.

    Raises
    ------
    ConvNetVAEError
        If some modality shares no window with the first one (different genome or chromosome
        naming, e.g. ``chr1`` vs ``1``).
    """
    keys: dict[str, pd.MultiIndex] = {}
    for m, f in features.items():
        mid = (f["start"].to_numpy(np.int64) + f["end"].to_numpy(np.int64)) // 2
        keys[m] = pd.MultiIndex.from_arrays(
            [f["chrom"].astype(str).to_numpy(), mid // bin_size]).unique()
    names = list(keys)
    first = keys[names[0]]
    for m in names[1:]:
        if len(first.intersection(keys[m])) == 0:
            c0 = features[names[0]]["chrom"].iloc[0]
            cm = features[m]["chrom"].iloc[0]
            raise ConvNetVAEError(
                f"modalities {names[0]!r} and {m!r} share no genomic bins after rebinning to "
                f"{bin_size} bp windows (e.g. chromosome {c0!r} vs {cm!r}); check that all "
                "modalities use the same genome and chromosome names")
    union = first
    for m in names[1:]:
        union = union.union(keys[m])
    chrom = union.get_level_values(0).astype(str).to_numpy()
    start = union.get_level_values(1).to_numpy(np.int64) * bin_size
    grid = pd.DataFrame({"chrom": chrom, "start": start, "end": start + bin_size})
    grid = grid.iloc[genome_order(grid)].reset_index(drop=True)
    grid.index = format_bin_names(grid, "snapatac")
    return grid


def build_anndata(
    matrices: Mapping[str, sp.spmatrix],
    feature_names: Mapping[str, Sequence[str]],
    obs: pd.DataFrame,
    bin_size: int = 10_000,
    blacklist: Any = None,
    n_bins: int | None = None,
) -> ad.AnnData:
    """Rebin every modality into shared ``bin_size`` windows and stack them as layers.

    Parameters
    ----------
    matrices
        Modality -> cells x features counts (all with the cells of ``obs``, in that order).
    feature_names
        Modality -> names of its features (``chr1-1-10000``, ``chr1:0-10000``, ``chr1_0_10000``;
        fixed windows or variable-width peaks, assigned to a window by their midpoint).
    obs
        Cell table (index = cell names), kept as ``adata.obs``.
    bin_size
        Window width in bp.
    blacklist
        ``None``, a BED path or a DataFrame (chrom, start, end): overlapping windows are dropped.
    n_bins
        Keep the union of each modality's top bins up to this many (``select_top_bins``);
        ``None`` keeps all windows.

    Returns
    -------
    anndata.AnnData
        The data contract: ``layers[m]`` CSR counts, ``var`` chrom/start/end in genome order,
        ``obs`` with ``n_counts_<m>``, ``uns["modalities"]``.
    """
    bin_size = check_bin_size(bin_size)
    if not matrices:
        raise ConvNetVAEError("no modalities given: pass at least one count matrix")
    features = {}
    for m, x in matrices.items():
        names = list(feature_names[m])
        if x.shape[1] != len(names):
            raise ConvNetVAEError(
                f"modality {m!r}: {x.shape[1]} matrix columns but {len(names)} feature names")
        if x.shape[0] != len(obs):
            raise ConvNetVAEError(
                f"modality {m!r}: {x.shape[0]} cells but the cell table has {len(obs)} rows")
        features[m] = _parse(names, m)
    grid = window_grid(features, bin_size)
    drop = blacklist_bins(grid, blacklist)
    if drop.all():
        raise ConvNetVAEError("every bin overlaps the blacklist; check the blacklist file")
    grid = grid[~drop]
    layers = {}
    for m, x in matrices.items():
        out, _ = rebin_matrix(sp.csr_matrix(x), features[m], grid, name=f"modality {m!r}")
        if out.dtype.kind == "f" and np.all(out.data == np.round(out.data)):
            out = out.astype(np.int64) if out.nnz and out.data.max() > 2**31 - 1 else \
                out.astype(np.int32)
        layers[m] = out
    obs = obs.copy()
    for m, x in layers.items():
        obs[f"n_counts_{m}"] = np.asarray(x.sum(axis=1)).ravel()
    adata = ad.AnnData(obs=obs, var=grid.copy(), layers=layers)
    adata.uns["modalities"] = list(layers)
    adata.uns["bin_size"] = int(bin_size)
    if n_bins is not None:
        adata = select_top_bins(adata, list(layers), int(n_bins))
    return adata
