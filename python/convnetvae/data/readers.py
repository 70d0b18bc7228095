"""Count-matrix inputs -> the AnnData contract.

Accepted per modality: an AnnData (in memory or ``.h5ad``), a 10x HDF5 matrix (``.h5``), a
MatrixMarket file (``.mtx``/``.mtx.gz`` with features and barcodes files), or a
``(matrix, features, barcodes)`` triple; a MuData gives all modalities at once. Features are
genomic ranges: ``var`` columns ``chrom``/``start``/``end`` when present, else parsed from the
names (Signac ``chr1-1-10000``, SnapATAC2 ``chr1:0-10000``, ``chr1_0_10000``; see
:mod:`convnetvae.data.bins`). Every modality is put on one shared grid of fixed windows:
fixed-width bins pass through (or merge into a coarser grid), variable-width peaks are rebinned
by their midpoint (:func:`convnetvae.data.bins.rebin_matrix`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .bins import blacklist_bins, infer_bin_size, parse_bin_names, rebin_matrix
from .contract import build, check_counts
from .genome import BedLike, ChromSizesLike, check_bin_size, is_main_chromosome, make_bins, read_chrom_sizes

COUNTS_KEY = "convnetvae_counts"


def reads_to_fragments(x: sp.spmatrix | np.ndarray):
    """Convert read (fragment-end) counts to fragment counts: ``ceil(x / 2)``.

    Odd counts ``x`` become ``(x + 1) / 2`` and even counts ``x / 2``, as in the paper
    (following Martens et al. 2024). Returns a new matrix of the same kind.
    """
    if sp.issparse(x):
        y = sp.csr_matrix(x, copy=True)
        y.data = np.ceil(y.data / 2).astype(y.data.dtype if y.data.dtype.kind in "iu" else np.int64)
        return y
    arr = np.asarray(x)
    return np.ceil(arr / 2).astype(arr.dtype if arr.dtype.kind in "iu" else np.int64)


# --------------------------------------------------------------------------------------------
# single-input loaders: (cells x features CSR, features DataFrame, barcodes Index, obs or None)
# --------------------------------------------------------------------------------------------


def read_10x_h5(path: str | os.PathLike):
    """Read a 10x Genomics HDF5 feature-barcode matrix (Cell Ranger ATAC / ARC) as AnnData.

    Only ``Peaks`` features are kept when a ``feature_type`` field is present (ARC files also
    hold genes). Feature names come from ``features/id`` (``chr1:10109-10357``).
    """
    import anndata as ad
    import h5py

    path = Path(path)
    if not path.exists():
        raise ConvNetVAEError(f"10x HDF5 file not found: {str(path)!r}")
    try:
        with h5py.File(path, "r") as f:
            if "matrix" not in f:
                raise ConvNetVAEError(
                    f"{str(path)!r} is not a 10x HDF5 matrix (no 'matrix' group)")
            g = f["matrix"]
            shape = tuple(int(v) for v in g["shape"][:])
            X = sp.csc_matrix((g["data"][:], g["indices"][:], g["indptr"][:]), shape=shape)
            barcodes = [b.decode() if isinstance(b, bytes) else str(b) for b in g["barcodes"][:]]
            if "features" in g:
                fg = g["features"]
                ids = [b.decode() for b in fg["id"][:]]
                ftype = [b.decode() for b in fg["feature_type"][:]] if "feature_type" in fg else None
            else:  # Cell Ranger ATAC 1.x
                ids = [b.decode() for b in g["peaks"][:]] if "peaks" in g else \
                      [b.decode() for b in g["genes"][:]]
                ftype = None
    except OSError as exc:
        raise ConvNetVAEError(f"cannot read 10x HDF5 file {str(path)!r}: {exc}") from None
    X = X.T.tocsr()  # cells x features
    ids = np.asarray(ids, dtype=object)
    if ftype is not None and "Peaks" in ftype:
        keep = np.asarray(ftype) == "Peaks"
        X = X[:, keep]
        ids = ids[keep]
    return ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes)),
                      var=pd.DataFrame(index=pd.Index(ids.astype(str))))


def read_mtx(matrix: str | os.PathLike, features: str | os.PathLike | None = None,
             barcodes: str | os.PathLike | None = None):
    """Read a MatrixMarket count matrix with its feature and barcode files as AnnData.

    ``features`` may be a BED-like file (chrom, start, end, ...: coordinates used directly,
    0-based) or a names file (first column = names such as ``chr1-1-10000``; 10x
    ``features.tsv``). When not given, ``features.tsv[.gz]``, ``peaks.bed[.gz]``,
    ``bins.bed``, ``features.bed[.gz]`` and ``barcodes.tsv[.gz]`` next to the matrix are used.
    The matrix may be features x cells (10x, Signac exports) or cells x features: the
    orientation is taken from the file lengths.
    """
    import anndata as ad
    import scipy.io

    matrix = Path(matrix)
    if not matrix.exists():
        raise ConvNetVAEError(f"MatrixMarket file not found: {str(matrix)!r}")
    d = matrix.parent

    def _find(cands: Sequence[str], what: str) -> Path:
        for c in cands:
            for ext in ("", ".gz"):
                if (d / (c + ext)).exists():
                    return d / (c + ext)
        raise ConvNetVAEError(
            f"no {what} file given for {str(matrix)!r} and none of {list(cands)} found next to it")

    fpath = Path(features) if features is not None else _find(
        ["features.tsv", "features.bed", "peaks.bed", "bins.bed", "peaks.tsv", "genes.tsv"], "features")
    bpath = Path(barcodes) if barcodes is not None else _find(["barcodes.tsv"], "barcodes")
    try:
        with (gzip.open(matrix, "rb") if matrix.suffix == ".gz" else open(matrix, "rb")) as fh:
            X = scipy.io.mmread(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise ConvNetVAEError(f"cannot read MatrixMarket file {str(matrix)!r}: {exc}") from None
    X = sp.csr_matrix(X)
    fdf = pd.read_csv(fpath, sep="\t", header=None, comment=None, dtype=str)
    if fdf.iloc[0, 0] in ("chrom", "chr", "seqnames") and fdf.shape[1] >= 3:
        fdf = fdf.iloc[1:].reset_index(drop=True)
    var = _features_table(fdf)
    sep = "," if bpath.name.lower().endswith((".csv", ".csv.gz")) else "\t"
    bdf = pd.read_csv(bpath, sep=sep, header=None, dtype=str, keep_default_na=False)
    obs = None
    if len(bdf) - 1 in X.shape and len(bdf) not in X.shape:  # a header line
        obs = pd.DataFrame(bdf.iloc[1:, 1:].to_numpy(), columns=bdf.iloc[0, 1:].to_numpy())
        bdf = bdf.iloc[1:]
    bcs = bdf.iloc[:, 0].astype(str).tolist()
    nf, nb = len(var), len(bcs)
    if X.shape == (nf, nb):
        X = X.T.tocsr()
    elif X.shape != (nb, nf):
        raise ConvNetVAEError(
            f"{str(matrix)!r} has shape {X.shape} but {str(fpath)!r} lists {nf} features and "
            f"{str(bpath)!r} {nb} barcodes")
    if obs is None:
        obs = pd.DataFrame(index=pd.Index(bcs))
    else:
        obs.index = pd.Index(bcs)
    return ad.AnnData(X=X, obs=obs, var=var)


def _features_table(fdf: pd.DataFrame) -> pd.DataFrame:
    """Features from a BED-like table (coordinates) or a names column."""
    if fdf.shape[1] >= 3 and fdf.iloc[:, 1].str.fullmatch(r"\d+").all() and \
            fdf.iloc[:, 2].str.fullmatch(r"\d+").all():
        var = pd.DataFrame({"chrom": fdf.iloc[:, 0].astype(str).to_numpy(),
                            "start": fdf.iloc[:, 1].astype(np.int64).to_numpy(),
                            "end": fdf.iloc[:, 2].astype(np.int64).to_numpy()})
        names = fdf.iloc[:, 3].astype(str).to_numpy() if fdf.shape[1] >= 4 else (
            var["chrom"] + ":" + var["start"].astype(str) + "-" + var["end"].astype(str)).to_numpy()
        var.index = pd.Index(names)
        if not var.index.is_unique:
            var.index = pd.Index(var["chrom"] + ":" + var["start"].astype(str) + "-"
                                 + var["end"].astype(str))
        return var
    return pd.DataFrame(index=pd.Index(fdf.iloc[:, 0].astype(str)))


def _load_one(x: Any, modality: str, layer: str | None):
    """Any supported input -> AnnData with counts in X (cells x features)."""
    import anndata as ad

    if isinstance(x, tuple):
        if len(x) != 3:
            raise ConvNetVAEError(
                f"input for {modality!r}: a tuple must be (matrix.mtx, features, barcodes)")
        return read_mtx(*x)
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        if not p.exists():
            raise ConvNetVAEError(f"input for modality {modality!r} not found: {str(p)!r}")
        name = p.name.lower()
        if name.endswith(".h5ad"):
            x = ad.read_h5ad(p)
        elif name.endswith(".h5"):
            return read_10x_h5(p)
        elif name.endswith((".mtx", ".mtx.gz")):
            return read_mtx(p)
        elif p.is_dir():
            mats = sorted(p.glob("*.mtx*"))
            if len(mats) != 1:
                raise ConvNetVAEError(
                    f"directory {str(p)!r} must hold exactly one .mtx[.gz] matrix, found {len(mats)}")
            return read_mtx(mats[0])
        else:
            raise ConvNetVAEError(
                f"input for {modality!r}: unsupported file {str(p)!r}; give .h5ad, 10x .h5, "
                ".mtx[.gz] (with features/barcodes files) or an AnnData")
    if not isinstance(x, ad.AnnData):
        raise ConvNetVAEError(
            f"input for {modality!r} must be an AnnData, a path or a (matrix, features, "
            f"barcodes) tuple, got {type(x).__name__}")
    if layer is not None:
        if layer not in x.layers:
            raise ConvNetVAEError(
                f"input for {modality!r} has no layer {layer!r} (layers: {list(x.layers)})")
        X = x.layers[layer]
    elif modality in x.layers and x.X is None:
        X = x.layers[modality]
    else:
        X = x.X
        if X is None:
            raise ConvNetVAEError(
                f"input for {modality!r} has no X; pass layer= naming the count layer")
    return ad.AnnData(X=sp.csr_matrix(X), obs=x.obs.copy(), var=x.var.copy())


def _coords(a, modality: str, style: str) -> pd.DataFrame:
    v = a.var
    if {"chrom", "start", "end"} <= set(v.columns):
        df = pd.DataFrame({"chrom": v["chrom"].astype(str).to_numpy(),
                           "start": np.asarray(v["start"], dtype=np.int64),
                           "end": np.asarray(v["end"], dtype=np.int64)}, index=v.index)
        return df
    try:
        return parse_bin_names(v.index, style=style)
    except ConvNetVAEError as exc:
        raise ConvNetVAEError(f"modality {modality!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# the public reader
# --------------------------------------------------------------------------------------------


def read_counts(
    inputs: Mapping[str, Any] | Any,
    bin_size: int | None = None,
    chrom_sizes: ChromSizesLike | None = None,
    blacklist: BedLike | None = None,
    reads_to_fragment_counts: bool | Sequence[str] = False,
    feature_style: str = "auto",
    layer: str | None = None,
    drop_incomplete: bool = False,
    keep_empty_bins: bool = False,
    main_chromosomes_only: bool = False,
):
    """Put count matrices of one or several modalities on one bin grid (the data contract).

    Parameters
    ----------
    inputs
        ``{modality: AnnData | path | (matrix, features, barcodes)}``, or a MuData (its
        modalities are used).
    bin_size
        Target window width. ``None``: the inputs must all be fixed-width bins of one size,
        which is kept; peaks need a ``bin_size``. Fixed-width bins can be merged into a
        multiple of their width but never split.
    chrom_sizes
        Chromosome sizes fixing the grid; without it each chromosome ends at the last
        feature's end.
    blacklist
        BED of regions whose overlapping bins are dropped.
    reads_to_fragment_counts
        Convert read (fragment-end) counts to fragment counts, ``ceil(x / 2)``, for all
        modalities (True) or the named ones.
    feature_style
        How to parse feature names: ``"auto"``, ``"signac"``, ``"snapatac"``, ``"underscore"``.
    layer
        Layer of AnnData inputs holding the counts (default ``X``).
    drop_incomplete
        Keep only cells present in every modality (default: keep all, mask missing ones).
    keep_empty_bins
        Keep grid bins that no feature of any modality falls in (default: drop them; with
        genome-wide fixed-width inputs nothing is dropped).
    main_chromosomes_only
        Drop features on chrM, unplaced, random and alt contigs.

    Returns
    -------
    anndata.AnnData
        As :func:`convnetvae.data.read_fragments`: ``layers[modality]`` CSR int32, ``var``
        chrom/start/end in genome order, ``obsm["modality_mask"]``, ``uns["modalities"]``,
        ``obs["n_counts_<modality>"]`` plus the inputs' obs columns, and
        ``uns["convnetvae_counts"]`` recording the rebinning.
    """
    if hasattr(inputs, "mod") and not isinstance(inputs, Mapping):
        inputs = dict(inputs.mod)
    if not isinstance(inputs, Mapping) or not inputs:
        raise ConvNetVAEError(
            "inputs must be a non-empty mapping {modality: AnnData or path} or a MuData")
    modalities = [str(m) for m in inputs]
    r2f = set(modalities) if reads_to_fragment_counts is True else set(reads_to_fragment_counts or [])
    unknown = r2f - set(modalities)
    if unknown:
        raise ConvNetVAEError(f"reads_to_fragment_counts names unknown modalities {sorted(unknown)}")
    # 1. load every input and read its feature coordinates
    loaded, coords = {}, {}
    for m, x in inputs.items():
        loaded[str(m)], coords[str(m)] = _load_features(x, str(m), layer, feature_style,
                                                        main_chromosomes_only)
    # 2. the bin grid
    widths = {m: infer_bin_size(c) for m, c in coords.items()}
    bin_size = _grid_bin_size(bin_size, widths)
    grid = make_bins(_grid_sizes(coords, chrom_sizes, main_chromosomes_only), bin_size)
    # 3. the cells, then every modality's counts on the grid
    cell_index = _cell_index(loaded, modalities, drop_incomplete)
    layers, report = {}, {}
    mask = np.zeros((len(cell_index), len(modalities)), dtype=bool)
    for mi, m in enumerate(modalities):
        layers[m], report[m], mask[:, mi] = _rebin_one(loaded[m], coords[m], grid, cell_index,
                                                       m, m in r2f)
        report[m]["bin_width_in"] = int(widths[m] or 0)  # 0 = variable-width features (peaks)
    # 4. drop bins no feature reaches and blacklisted ones
    present = np.zeros(len(grid), dtype=bool)
    for m in modalities:
        present |= np.asarray(layers[m].getnnz(axis=0) > 0).ravel()
        present |= _bins_hit(coords[m], grid)  # bins some feature maps to count as measured
    black = blacklist_bins(grid, blacklist)
    keep = (present | keep_empty_bins) & ~black
    if not keep.any():
        raise ConvNetVAEError("no bin left after removing blacklisted and empty bins")
    obs = pd.DataFrame(index=cell_index)
    for m in modalities:
        o = loaded[m].obs
        extra = o.columns.difference(obs.columns)
        if len(extra):
            obs = obs.join(o[extra], how="left")
    return build({m: layers[m][:, keep] for m in modalities}, grid[keep], obs, mask, uns={
        COUNTS_KEY: {
            "bin_size": int(bin_size),
            "rule": "each feature assigned to the bin containing floor((start + end) / 2)",
            "reads_to_fragment_counts": sorted(r2f),
            "n_bins_blacklisted": int((present & black).sum()) if blacklist is not None else 0,
            "per_modality": report,
        }})


def _load_features(x: Any, m: str, layer: str | None, feature_style: str,
                   main_chromosomes_only: bool) -> tuple[Any, pd.DataFrame]:
    """One input as (AnnData with counts in X, feature coordinates)."""
    a = _load_one(x, m, layer)
    if a.n_vars == 0 or a.n_obs == 0:
        raise ConvNetVAEError(f"input for modality {m!r} is empty ({a.n_obs} x {a.n_vars})")
    c = _coords(a, m, feature_style)
    if main_chromosomes_only:
        keep = c["chrom"].map(is_main_chromosome).to_numpy(bool)
        a, c = a[:, keep].copy(), c[keep]
    if not a.obs_names.is_unique:
        raise ConvNetVAEError(f"modality {m!r} has duplicated cell barcodes")
    return a, c


def _grid_bin_size(bin_size: int | None, widths: Mapping[str, int | None]) -> int:
    """The grid's window: ``bin_size``, or the inputs' common fixed width; checked against them."""
    if bin_size is None:
        if any(w is None for w in widths.values()):
            peaks = [m for m, w in widths.items() if w is None]
            raise ConvNetVAEError(
                f"modalities {peaks} have variable-width features (peaks); pass bin_size "
                "(e.g. 10000) to rebin them into windows")
        if len(set(widths.values())) > 1:
            raise ConvNetVAEError(
                "mismatched bin sizes across inputs: "
                + ", ".join(f"{m}: {w} bp" for m, w in widths.items())
                + f"; pass bin_size={max(widths.values())} (a multiple of every width) to merge "
                "them onto one grid")
        bin_size = next(iter(widths.values()))
    bin_size = check_bin_size(bin_size)
    for m, w in widths.items():
        if w is not None and (w > bin_size or bin_size % w != 0):
            raise ConvNetVAEError(
                f"modality {m!r} has fixed {w} bp bins, which cannot be put on a {bin_size} bp "
                f"grid (bins can be merged into a multiple of their width, never split); pass "
                f"bin_size as a multiple of {w}")
    return bin_size


def _grid_sizes(coords: Mapping[str, pd.DataFrame], chrom_sizes: ChromSizesLike | None,
                main_chromosomes_only: bool) -> pd.Series:
    """Chromosome sizes of the grid: ``chrom_sizes`` (checked against the features), or each
    chromosome's last feature end."""
    if chrom_sizes is None:
        allc = pd.concat(list(coords.values()))
        return read_chrom_sizes(allc.groupby("chrom")["end"].max())
    sizes = read_chrom_sizes(chrom_sizes, main_only=main_chromosomes_only)
    for m, c in coords.items():
        unknown_c = sorted(set(c["chrom"]) - set(sizes.index))
        if unknown_c:
            raise ConvNetVAEError(
                f"modality {m!r}: chromosomes {unknown_c[:5]} are not in chrom_sizes; use the "
                "chrom sizes of the genome build of the data, or main_chromosomes_only=True")
        over = c["end"].to_numpy() > sizes.reindex(c["chrom"]).to_numpy()
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise ConvNetVAEError(
                f"modality {m!r}: feature {c.index[i]!r} ends beyond its chromosome in "
                "chrom_sizes (wrong genome build?)")
    return sizes


def _cell_index(loaded: Mapping[str, Any], modalities: Sequence[str], drop_incomplete: bool
                ) -> pd.Index:
    """The cells: those of every modality (drop_incomplete) or of any, in order of appearance."""
    if drop_incomplete:
        cells = list(loaded[modalities[0]].obs_names)
        for m in modalities[1:]:
            present = set(loaded[m].obs_names)
            cells = [c for c in cells if c in present]
    else:
        seen: set[str] = set()
        cells = []
        for m in modalities:
            for c in loaded[m].obs_names:
                if c not in seen:
                    seen.add(c)
                    cells.append(c)
    if not cells:
        raise ConvNetVAEError(
            "no cell is present in every modality (drop_incomplete=True); check that the "
            "modalities use the same cell barcodes")
    return pd.Index(cells)


def _rebin_one(a: Any, c: pd.DataFrame, grid: pd.DataFrame, cell_index: pd.Index, m: str,
               reads_to_fragment_counts: bool) -> tuple[sp.csr_matrix, dict, np.ndarray]:
    """One modality's counts on the grid, rows in ``cell_index`` order; returns (counts,
    rebinning report, which cells have the modality)."""
    X = check_counts(a.X, m)
    if reads_to_fragment_counts:
        X = reads_to_fragments(X)
    Xb, rep = rebin_matrix(X, c, grid, name=m)
    if rep["n_features_outside"] == rep["n_features"]:
        raise ConvNetVAEError(f"modality {m!r}: no feature falls on the bin grid")
    pos = cell_index.get_indexer(a.obs_names)
    ok = pos >= 0
    rows = np.flatnonzero(ok)
    P = sp.csr_matrix((np.ones(len(rows), dtype=np.int64), (pos[ok], rows)),
                      shape=(len(cell_index), a.n_obs))
    has = np.zeros(len(cell_index), dtype=bool)
    has[pos[ok]] = True
    return (P @ Xb).tocsr(), rep, has


def _bins_hit(c: pd.DataFrame, grid: pd.DataFrame) -> np.ndarray:
    """Grid bins containing the midpoint of at least one feature."""
    one = sp.csr_matrix(np.ones((1, len(c)), dtype=np.int8))
    hit, _ = rebin_matrix(one, c, grid)
    return np.asarray(hit.toarray()).ravel() > 0


def rebin(adata, bin_size: int, chrom_sizes: ChromSizesLike | None = None,
          blacklist: BedLike | None = None, modalities: Sequence[str] | None = None):
    """Rebin an AnnData's modality layers (features = genomic ranges) onto fixed windows.

    A convenience over :func:`read_counts` for an AnnData with one layer per modality
    (``modalities`` default: ``adata.uns["modalities"]`` or all layers).
    """
    import anndata as ad

    mods = list(modalities or adata.uns.get("modalities", list(adata.layers)))
    if not mods:
        raise ConvNetVAEError("rebin: the AnnData has no layers to rebin")
    inputs = {m: ad.AnnData(X=adata.layers[m], obs=adata.obs, var=adata.var) for m in mods}
    out = read_counts(inputs, bin_size=bin_size, chrom_sizes=chrom_sizes, blacklist=blacklist)
    if "modality_mask" in adata.obsm:
        out.obsm["modality_mask"] = np.asarray(adata.obsm["modality_mask"])
    return out
