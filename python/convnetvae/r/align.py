"""Per-modality count matrices with their own feature names -> one aligned AnnData contract.

Used by both directions of the R bridge (reticulate: :mod:`convnetvae.r.bridge`; rpy2:
:mod:`convnetvae.r.rds`). Parsing, rebinning and the bin grid are those of
:func:`convnetvae.data.readers.read_counts`, and bin selection that of
:func:`convnetvae.data.bins.select_top_bins`; this module adds the check that the modalities
share bins, keeps the caller's cell order and cell table, and selects the top bins; the result is
written by :func:`convnetvae.data.contract.build`, as every reader's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.bins import feature_windows, parse_bin_names, select_top_bins
from ..data.contract import MASK_KEY, build
from ..data.genome import check_bin_size
from ..data.readers import read_counts
from ..errors import ConvNetVAEError


def _parse(names: Sequence[str], modality: str) -> pd.DataFrame:
    try:
        return parse_bin_names(list(names))
    except ConvNetVAEError as err:
        raise ConvNetVAEError(f"modality {modality!r}: {err}") from None


def check_shared_bins(features: Mapping[str, pd.DataFrame], bin_size: int) -> None:
    """Raise if some modality shares no ``bin_size`` window with the first one.

    Windows are those holding a feature's midpoint (:func:`~convnetvae.data.bins.feature_windows`,
    the rebinning rule; R's ``.feature_windows`` applies the same). No shared window means
    another genome or chromosome naming (``chr1`` vs ``1``): an error, not an empty model.
    """
    keys = {m: pd.MultiIndex.from_arrays([f["chrom"].astype(str).to_numpy(),
                                          feature_windows(f, bin_size)]).unique()
            for m, f in features.items()}
    names = list(keys)
    for m in names[1:]:
        if len(keys[names[0]].intersection(keys[m])) == 0:
            c0 = features[names[0]]["chrom"].iloc[0]
            cm = features[m]["chrom"].iloc[0]
            raise ConvNetVAEError(
                f"modalities {names[0]!r} and {m!r} share no genomic bins after rebinning to "
                f"{bin_size} bp windows (e.g. chromosome {c0!r} vs {cm!r}); check that all "
                "modalities use the same genome and chromosome names")


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
        Cell table (index = cell names), kept as ``adata.obs`` in this order.
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
    inputs = {}
    cells = pd.Index([str(c) for c in obs.index])
    for m, x in matrices.items():
        names = [str(f) for f in feature_names[m]]
        if x.shape[1] != len(names):
            raise ConvNetVAEError(
                f"modality {m!r}: {x.shape[1]} matrix columns but {len(names)} feature names")
        if x.shape[0] != len(cells):
            raise ConvNetVAEError(
                f"modality {m!r}: {x.shape[0]} cells but the cell table has {len(cells)} rows")
        features[m] = _parse(names, m)
        var = features[m].reset_index(drop=True)
        var.index = pd.Index(names)
        inputs[str(m)] = ad.AnnData(X=sp.csr_matrix(x), obs=pd.DataFrame(index=cells), var=var)
    check_shared_bins(features, bin_size)
    counted = read_counts(inputs, bin_size=bin_size, blacklist=blacklist)[cells]  # caller's order
    extra = obs.drop(columns=[c for c in obs.columns if c in counted.obs.columns])
    extra.index = cells
    mods = list(counted.uns["modalities"])
    mask = np.asarray(counted.obsm[MASK_KEY])
    adata = build({m: counted.layers[m] for m in mods}, counted.var,
                  pd.concat([extra, counted.obs.drop(columns=[f"n_counts_{m}" for m in mods])],
                            axis=1),
                  None if mask.all() else mask,  # no mask when every cell has every modality
                  uns={**{k: v for k, v in counted.uns.items() if k != "modalities"},
                       "bin_size": int(bin_size)})
    if n_bins is not None:
        adata = select_top_bins(adata, mods, int(n_bins))
    return adata
