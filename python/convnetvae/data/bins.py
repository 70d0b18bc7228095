"""Genomic features as bins: name parsing/formatting, rebinning peaks into windows, bin selection.

Three feature-name styles are understood (all converted to 0-based half-open coordinates):

========== ================= ==========================================
style      example           coordinates
========== ================= ==========================================
signac     ``chr1-1-10000``  1-based, closed (Signac / Seurat / ArchR)
snapatac   ``chr1:0-10000``  0-based, half-open (SnapATAC2, 10x, BED)
underscore ``chr1_0_10000``  0-based, half-open (ChromSCape, GEO tables)
========== ================= ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .genome import (
    BedLike,
    ChromSizesLike,
    check_bin_size,
    chrom_sort_key,
    make_bins,
    overlaps_intervals,
    read_blacklist,
    read_chrom_sizes,
)

BinStyle = Literal["signac", "snapatac", "underscore"]
STYLES: tuple[str, ...] = ("snapatac", "signac", "underscore")
_PATTERNS = {
    "snapatac": r"^(?P<chrom>.+):(?P<start>\d+)-(?P<end>\d+)$",
    "signac": r"^(?P<chrom>.+)-(?P<start>\d+)-(?P<end>\d+)$",
    "underscore": r"^(?P<chrom>.+)_(?P<start>\d+)_(?P<end>\d+)$",
}
SELECTION_KEY = "convnetvae_bin_selection"


def parse_bin_names(names: Sequence[str] | pd.Index, style: str = "auto") -> pd.DataFrame:
    """Parse genomic feature names into ``chrom``, ``start``, ``end`` (0-based half-open).

    Parameters
    ----------
    names
        Feature names such as ``chr1-1-10000`` (Signac, 1-based closed), ``chr1:0-10000``
        (SnapATAC2) or ``chr1_0_10000``.
    style
        ``"auto"`` (each name: colon form first, then dash form, then underscore form),
        or one of ``"signac"``, ``"snapatac"``, ``"underscore"``.

    Returns
    -------
    pandas.DataFrame
        Index = the original names; columns ``chrom`` (str), ``start``, ``end`` (int64).

    Raises
    ------
    ConvNetVAEError
        Naming the first name that is not a genomic range, or has end <= start.
    """
    idx = pd.Index(names).astype(str)
    s = pd.Series(idx, index=idx)
    if style == "auto":
        order = list(STYLES)
    elif style in _PATTERNS:
        order = [style]
    else:
        raise ConvNetVAEError(f"style must be 'auto' or one of {STYLES}, got {style!r}")
    chrom = pd.Series(np.full(len(s), None, dtype=object), index=idx)
    start = np.zeros(len(s), dtype=np.int64)
    end = np.zeros(len(s), dtype=np.int64)
    done = np.zeros(len(s), dtype=bool)
    for st in order:
        todo = ~done
        if not todo.any():
            break
        ext = s[todo].str.extract(_PATTERNS[st])
        hit = ext["chrom"].notna().to_numpy()
        if not hit.any():
            continue
        pos = np.flatnonzero(todo)[hit]
        chrom.iloc[pos] = ext["chrom"].to_numpy()[hit]
        st_ = ext["start"].to_numpy()[hit].astype(np.int64)
        en_ = ext["end"].to_numpy()[hit].astype(np.int64)
        if st == "signac":
            st_ = st_ - 1
        start[pos] = st_
        end[pos] = en_
        done[pos] = True
    if not done.all():
        bad = idx[np.flatnonzero(~done)[0]]
        raise ConvNetVAEError(
            f"feature name {bad!r} is not a genomic range; expected one of 'chr1-1-10000' "
            f"(Signac), 'chr1:0-10000' (SnapATAC2) or 'chr1_0_10000'"
            + ("" if style == "auto" else f" in style {style!r}")
            + ". Pass features as a BED-like table (chrom, start, end) if names are not ranges."
        )
    badr = (end <= start) | (start < 0)
    if badr.any():
        bad = idx[np.flatnonzero(badr)[0]]
        raise ConvNetVAEError(f"feature name {bad!r}: end must be greater than start")
    return pd.DataFrame({"chrom": chrom.astype(str).to_numpy(), "start": start, "end": end}, index=idx)


def format_bin_names(df: pd.DataFrame, style: BinStyle = "snapatac") -> pd.Index:
    """Format ``chrom``/``start``/``end`` (0-based half-open) as feature names.

    Parameters
    ----------
    df
        Table with ``chrom``, ``start``, ``end``.
    style
        ``"snapatac"`` (``chr1:0-10000``, the package's own var_names), ``"signac"``
        (``chr1-1-10000``) or ``"underscore"`` (``chr1_0_10000``).
    """
    c = df["chrom"].astype(str).to_numpy(dtype=object)
    s = df["start"].to_numpy(dtype=np.int64)
    e = df["end"].to_numpy(dtype=np.int64).astype(str).astype(object)
    if style == "snapatac":
        out = c + ":" + s.astype(str).astype(object) + "-" + e
    elif style == "signac":
        out = c + "-" + (s + 1).astype(str).astype(object) + "-" + e
    elif style == "underscore":
        out = c + "_" + s.astype(str).astype(object) + "_" + e
    else:
        raise ConvNetVAEError(f"style must be one of {STYLES}, got {style!r}")
    return pd.Index(out.astype(str))


def genome_order(df: pd.DataFrame) -> np.ndarray:
    """Positions that sort a chrom/start/end table into natural genome order (stable)."""
    chroms = pd.unique(df["chrom"].astype(str))
    rank = {c: i for i, c in enumerate(sorted(chroms, key=chrom_sort_key))}
    r = df["chrom"].astype(str).map(rank).to_numpy()
    return np.lexsort((df["end"].to_numpy(), df["start"].to_numpy(), r))


def infer_bin_size(features: pd.DataFrame) -> int | None:
    """The window width if ``features`` are fixed-width windows aligned to multiples of it.

    The last window of a chromosome may be shorter (truncated at the chromosome end).
    Returns ``None`` for variable-width features (peaks).
    """
    if len(features) == 0:
        return None
    w = (features["end"] - features["start"]).to_numpy()
    width = int(np.bincount(w[w > 0]).argmax()) if len(w) else 0
    if width <= 0:
        return None
    start = features["start"].to_numpy()
    aligned = (start % width == 0) & (w <= width)
    # all features aligned; shorter widths allowed only at chromosome ends (at most one per chrom)
    if not aligned.all():
        return None
    n_short = int((w < width).sum())
    if n_short > features["chrom"].nunique():
        return None
    return width


def feature_windows(features: pd.DataFrame, bin_size: int) -> np.ndarray:
    """Index of the ``bin_size`` window of each feature: the window holding its midpoint
    ``floor((start + end) / 2)`` (0-based coordinates), the rule of :func:`rebin_matrix`.

    R's ``.feature_windows`` applies the same rule; ``tests/testthat/feature_bins.tsv`` holds
    the cases both are tested on.
    """
    mid = (features["start"].to_numpy(np.int64) + features["end"].to_numpy(np.int64)) // 2
    return mid // int(bin_size)


def rebin_matrix(
    counts: sp.spmatrix,
    features: pd.DataFrame,
    bins: pd.DataFrame,
    name: str = "counts",
) -> tuple[sp.csr_matrix, dict]:
    """Sum feature counts (cells x features) into target bins by the feature midpoint.

    Each feature goes to the one bin containing ``floor((start + end) / 2)``: a sparse matrix
    product ``counts @ A`` with ``A`` (features x bins) one-hot, so every count lands in
    exactly one bin and totals are conserved for features inside the bins. Features whose
    midpoint falls in no bin (an excluded chromosome, a blacklisted bin) are dropped and
    reported.

    Parameters
    ----------
    counts
        Sparse or dense cells x features counts.
    features
        ``chrom``, ``start``, ``end`` of each column of ``counts``.
    bins
        Target bins, sorted and non-overlapping per chromosome (``make_bins``).
    name
        Input name for messages.

    Returns
    -------
    (csr_matrix, dict)
        Cells x bins counts and a report ``{"n_features", "n_features_outside",
        "counts_outside"}``.
    """
    counts = sp.csr_matrix(counts)
    if counts.shape[1] != len(features):
        raise ConvNetVAEError(
            f"{name}: {counts.shape[1]} matrix columns but {len(features)} feature coordinates"
        )
    mid = (features["start"].to_numpy(np.int64) + features["end"].to_numpy(np.int64)) // 2
    target = np.full(len(features), -1, dtype=np.int64)
    bin_pos = np.arange(len(bins))
    bchrom = bins["chrom"].astype(str).to_numpy()
    fchrom = features["chrom"].astype(str).to_numpy()
    for chrom in pd.unique(fchrom):
        fsel = np.flatnonzero(fchrom == chrom)
        bsel = bin_pos[bchrom == chrom]
        if len(bsel) == 0:
            continue
        bstart = bins["start"].to_numpy()[bsel]
        bend = bins["end"].to_numpy()[bsel]
        j = np.searchsorted(bstart, mid[fsel], side="right") - 1
        ok = (j >= 0) & (mid[fsel] < bend[np.clip(j, 0, None)])
        target[fsel[ok]] = bsel[j[ok]]
    inside = target >= 0
    A = sp.csr_matrix(
        (np.ones(int(inside.sum()), dtype=counts.dtype if counts.dtype.kind in "iuf" else np.float64),
         (np.flatnonzero(inside), target[inside])),
        shape=(len(features), len(bins)),
    )
    out = (counts @ A).tocsr()
    out.sum_duplicates()
    col_tot = np.asarray(counts.sum(axis=0)).ravel()
    report = {
        "n_features": int(len(features)),
        "n_features_outside": int((~inside).sum()),
        "counts_outside": float(col_tot[~inside].sum()),
    }
    return out, report


def blacklist_bins(bins: pd.DataFrame, blacklist: BedLike | None) -> np.ndarray:
    """Boolean mask of bins overlapping any blacklist interval (False everywhere if None)."""
    if blacklist is None:
        return np.zeros(len(bins), dtype=bool)
    bl = read_blacklist(blacklist)
    return overlaps_intervals(bins, bl)


def target_bins(
    chrom_sizes: ChromSizesLike,
    bin_size: int,
    blacklist: BedLike | None = None,
    main_only: bool = False,
) -> tuple[pd.DataFrame, int]:
    """Genome-wide windows minus blacklist-overlapping ones. Returns (bins, n_blacklisted)."""
    sizes = read_chrom_sizes(chrom_sizes, main_only=main_only)
    bins = make_bins(sizes, check_bin_size(bin_size))
    drop = blacklist_bins(bins, blacklist)
    return bins[~drop].copy(), int(drop.sum())


def _total_counts(adata, modality: str) -> np.ndarray:
    X = adata.layers[modality] if modality in adata.layers else None
    if X is None:
        raise ConvNetVAEError(
            f"modality {modality!r} is not a layer of the AnnData; layers are {list(adata.layers)}"
        )
    return np.asarray(X.sum(axis=0)).ravel().astype(np.float64)


def top_bins_union(totals: Sequence[np.ndarray], n_bins: int) -> tuple[np.ndarray, int]:
    """The paper's rule: union of each modality's top-k bins, k grown until the union has n_bins.

    Each modality ranks bins by total count (descending; ties by genome position). The same k
    is used for all modalities and is the smallest k whose union reaches ``n_bins``. If the
    union at k overshoots, the bins added at rank k are taken in modality order (first
    modality's k-th bin, then the second's...) until exactly ``n_bins`` are selected. Bins
    with zero count in every modality are never selected.

    Parameters
    ----------
    totals
        One array of per-bin totals per modality (same length).
    n_bins
        Number of bins wanted.

    Returns
    -------
    (indices, k)
        Selected bin positions in ascending (genome) order, and the k reached.
    """
    G = len(totals[0])
    ranks = [np.lexsort((np.arange(G), -t))[: int((t > 0).sum())] for t in totals]
    n_avail = len(np.unique(np.concatenate(ranks))) if ranks else 0
    n_bins = min(int(n_bins), n_avail)
    if n_bins <= 0:
        return np.array([], dtype=np.int64), 0
    # key = (first rank at which the bin enters the union) * M + (modality giving that rank)
    key = np.full(G, np.iinfo(np.int64).max, dtype=np.int64)
    M = len(totals)
    for m, r in enumerate(ranks):
        k_of = np.arange(len(r), dtype=np.int64)
        cand = k_of * M + m
        better = cand < key[r]
        key[r[better]] = cand[better]
    ordered = np.argsort(key, kind="stable")[:n_bins]
    k = int(key[ordered[-1]] // M) + 1
    return np.sort(ordered), k


def select_top_bins(
    adata,
    modalities: Sequence[str] | None = None,
    n_bins: int | None = 25_000,
    copy: bool = True,
):
    """Keep the union of each modality's highest-count bins, ``n_bins`` in total, in genome order.

    This is the paper's selection ("the union of bins of the highest fragment count of each
    modality", 25,000 bins): see :func:`top_bins_union` for the exact rule. The choice is
    recorded in ``adata.uns["convnetvae_bin_selection"]``.

    Parameters
    ----------
    adata
        AnnData following the data contract (one layer per modality, bins as var).
    modalities
        Layers to rank by; default ``adata.uns["modalities"]`` or all layers.
    n_bins
        Number of bins to keep; ``None`` keeps all bins (the record is still written).
    copy
        Return a copy (default) rather than a view.

    Returns
    -------
    anndata.AnnData
        The selected bins, in the original (genome) order.
    """
    if modalities is None:
        modalities = list(adata.uns.get("modalities", list(adata.layers.keys())))
    modalities = list(modalities)
    if not modalities:
        raise ConvNetVAEError("select_top_bins: no modalities (layers) to rank bins by")
    totals = [_total_counts(adata, m) for m in modalities]
    if n_bins is None:
        idx = np.arange(adata.n_vars)
        k = None
    else:
        if int(n_bins) <= 0:
            raise ConvNetVAEError(f"n_bins must be a positive integer or None, got {n_bins!r}")
        idx, k = top_bins_union(totals, int(n_bins))
        if len(idx) == 0:
            raise ConvNetVAEError(
                "select_top_bins: every bin has zero counts in every modality "
                f"({modalities}); nothing to select"
            )
    out = adata[:, idx]
    out = out.copy() if copy else out
    per_mod = {}
    for m, t in zip(modalities, totals):
        top_k = set(np.lexsort((np.arange(len(t)), -t))[: k].tolist()) if k else set()
        per_mod[m] = {
            "n_in_own_top_k": int(len(top_k.intersection(idx.tolist()))) if k else -1,
            "counts_kept": float(t[idx].sum()),
            "counts_total": float(t.sum()),
        }
    out.uns[SELECTION_KEY] = {
        "n_bins_requested": "all" if n_bins is None else int(n_bins),
        "n_bins": int(len(idx)),
        "n_bins_before": int(adata.n_vars),
        "k": -1 if k is None else int(k),
        "rule": (
            "all bins kept" if n_bins is None else
            "union of each modality's top-k bins by total count, smallest k reaching n_bins; "
            "rank-k additions taken in modality order to trim to exactly n_bins; genome order kept"
        ),
        "modalities": modalities,
        "per_modality": per_mod,
    }
    return out


def sort_bins(adata, copy: bool = True):
    """Return ``adata`` with its bins (var) in natural genome order.

    Coordinates come from ``var`` columns ``chrom``/``start``/``end`` or, when absent, from the
    var names (any style of :func:`parse_bin_names`; the columns are then added).
    """
    var = adata.var
    if {"chrom", "start", "end"} <= set(var.columns):
        coords = pd.DataFrame({"chrom": var["chrom"].astype(str).to_numpy(),
                               "start": np.asarray(var["start"], dtype=np.int64),
                               "end": np.asarray(var["end"], dtype=np.int64)}, index=var.index)
    else:
        coords = parse_bin_names(adata.var_names)
    order = genome_order(coords)
    out = adata[:, order]
    out = out.copy() if copy else out
    for c in ("chrom", "start", "end"):
        out.var[c] = coords[c].to_numpy()[order]
    return out
