"""Read Seurat / SingleCellExperiment ``.rds`` files as the AnnData contract, and write an
embedding back as a reduction, with rpy2 + anndata2ri (R runs inside this Python process).

>>> from convnetvae.r import read_seurat, write_reduction
>>> adata = read_seurat("obj.rds", assays=["ATAC", "H3K27ac", "H3K27me3"])
>>> # ... train, then hand the embedding back to R users:
>>> write_reduction("obj.rds", z, "obj_convnetvae.rds", name="convnetvae")

Sparse count matrices cross from R as ``dgCMatrix`` -> ``scipy.sparse.csc_matrix`` (anndata2ri)
without densifying; cell tables cross column by column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from ..io_utils import atomic_path
from .align import build_anndata

# R helpers, defined once per process in a private environment.
_R_HELPERS = r"""
local({
  env <- new.env()
  env$read_any <- function(path) {
    obj <- readRDS(path)
    if (inherits(obj, "Seurat")) {
      if (!requireNamespace("SeuratObject", quietly = TRUE)) stop("R package SeuratObject is not installed")
    } else if (inherits(obj, "SingleCellExperiment")) {
      if (!requireNamespace("SingleCellExperiment", quietly = TRUE)) stop("R package SingleCellExperiment is not installed")
    }
    obj
  }
  env$kind <- function(obj) {
    if (inherits(obj, "Seurat")) "Seurat" else if (inherits(obj, "SingleCellExperiment")) "SingleCellExperiment" else class(obj)[1]
  }
  env$as_dgc <- function(m) {
    if (!methods::is(m, "dgCMatrix")) {
      m <- methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
    }
    m
  }
  # a data.frame as a list of plain columns: numeric (NA -> NaN), logical, or character + levels
  env$columns <- function(df) {
    lapply(df, function(x) {
      if (is.factor(x)) list(type = "factor", values = as.character(x), levels = levels(x))
      else if (is.logical(x)) list(type = "logical", values = x)
      else if (is.numeric(x)) list(type = "numeric", values = as.double(x))
      else list(type = "character", values = as.character(x))
    })
  }
  env$seurat_parts <- function(obj, assays) {
    if (is.null(assays)) assays <- SeuratObject::Assays(obj)
    missing <- setdiff(assays, SeuratObject::Assays(obj))
    if (length(missing) > 0) {
      stop(sprintf("assay %s does not exist in the Seurat object (available: %s)",
        paste0("'", missing, "'", collapse = ", "),
        paste0("'", SeuratObject::Assays(obj), "'", collapse = ", ")))
    }
    counts <- lapply(assays, function(a) {
      m <- SeuratObject::GetAssayData(obj, assay = a, slot = "counts")
      if (length(dim(m)) != 2 || any(dim(m) == 0)) stop(sprintf("assay '%s' has no counts", a))
      env$as_dgc(m)
    })
    names(counts) <- assays
    feats <- lapply(assays, function(a) rownames(obj[[a]]))
    names(feats) <- assays
    reds <- lapply(SeuratObject::Reductions(obj), function(r) SeuratObject::Embeddings(obj, r))
    names(reds) <- SeuratObject::Reductions(obj)
    list(counts = counts, features = feats, cells = colnames(obj),
      meta = env$columns(obj[[]]), reductions = reds)
  }
  env$sce_parts <- function(obj, assays, assay_type) {
    main <- SingleCellExperiment::mainExpName(obj)
    if (is.null(main) || is.na(main) || !nzchar(main)) main <- "main"
    alts <- SingleCellExperiment::altExpNames(obj)
    named <- SummarizedExperiment::assayNames(obj)
    if (is.null(assays)) {
      if (length(alts) == 0) stop(paste0("assays= is required when the SingleCellExperiment has no altExps (assays: ",
        paste0("'", named, "'", collapse = ", "), ")"))
      assays <- c(main, alts)
    }
    counts <- list(); feats <- list()
    for (a in assays) {
      if (a == main || a %in% alts) {
        e <- if (a == main) obj else SingleCellExperiment::altExp(obj, a)
        if (!assay_type %in% SummarizedExperiment::assayNames(e)) {
          stop(sprintf("experiment '%s' has no assay '%s'", a, assay_type))
        }
        m <- SummarizedExperiment::assay(e, assay_type, withDimnames = TRUE); f <- rownames(e)
      } else if (a %in% named) {
        m <- SummarizedExperiment::assay(obj, a, withDimnames = TRUE); f <- rownames(obj)
      } else {
        stop(sprintf("'%s' is neither the main experiment ('%s'), an altExp (%s) nor an assay (%s)",
          a, main, paste0("'", alts, "'", collapse = ", "), paste0("'", named, "'", collapse = ", ")))
      }
      counts[[a]] <- env$as_dgc(m); feats[[a]] <- f
    }
    cells <- colnames(obj)
    if (is.null(cells)) cells <- paste0("cell", seq_len(ncol(obj)))
    rd <- SingleCellExperiment::reducedDims(obj)
    reds <- lapply(names(rd), function(r) as.matrix(rd[[r]]))
    names(reds) <- names(rd)
    list(counts = counts, features = feats, cells = cells,
      meta = env$columns(as.data.frame(SummarizedExperiment::colData(obj))), reductions = reds)
  }
  env$add_reduction <- function(obj, values, n, d, name, key, assay) {
    emb <- matrix(values, nrow = n, ncol = d)
    if (inherits(obj, "Seurat")) {
      if (nrow(emb) != ncol(obj)) stop(sprintf("the embedding has %d rows for %d cells", n, ncol(obj)))
      rownames(emb) <- colnames(obj)
      colnames(emb) <- paste0(key, seq_len(d))
      if (is.null(assay)) assay <- SeuratObject::DefaultAssay(obj)
      obj[[name]] <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = assay,
        misc = list(source = "convnetvae.r.write_reduction"))
    } else {
      rownames(emb) <- colnames(obj)
      colnames(emb) <- paste0(name, "_", seq_len(d))
      SingleCellExperiment::reducedDim(obj, name) <- emb
    }
    obj
  }
  env
})
"""

_helpers: Any = None


def _r() -> Any:
    """The R helper environment (starts R in this process on first use)."""
    global _helpers
    if _helpers is None:
        # rpy2 puts R's library folders (incl. the system's libpython) in LD_LIBRARY_PATH when
        # it starts R; R is loaded in-process by then, and leaving it set breaks every Python
        # subprocess started later (another libpython gets loaded), so restore it
        saved = os.environ.get("LD_LIBRARY_PATH")
        try:
            import rpy2.robjects as ro
        except Exception as err:  # ImportError, or R not found when rpy2 initialises
            raise ConvNetVAEError(
                "reading and writing .rds files needs R and rpy2: install R, then "
                f"pip install 'convnetvae[r]' ({type(err).__name__}: {err})") from None
        finally:
            if saved is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = saved
        _helpers = ro.r(_R_HELPERS)
    return _helpers


def _call(fn: str, *args: Any) -> Any:
    from rpy2.rinterface_lib.embedded import RRuntimeError

    env = _r()
    try:
        return env[fn](*args)
    except RRuntimeError as err:
        msg = str(err).strip().removeprefix("Error in").strip()
        raise ConvNetVAEError(f"R: {msg}") from None


def _null_or(x: Any) -> Any:
    import rpy2.robjects as ro

    if x is None:
        return ro.NULL
    if isinstance(x, str):
        return ro.StrVector([x])
    return ro.StrVector([str(v) for v in x])


def _check_path(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise ConvNetVAEError(f"{str(p)!r} does not exist or is not a file; give the path of an .rds file")
    return str(p)


def _to_scipy(m: Any) -> sp.csc_matrix:
    import anndata2ri
    import rpy2.robjects as ro
    from rpy2.robjects.conversion import localconverter

    with localconverter(ro.default_converter + anndata2ri.converter):
        out = ro.conversion.get_conversion().rpy2py(m)
    if not sp.issparse(out):
        raise ConvNetVAEError(f"expected a sparse matrix from R, got {type(out).__name__}")
    return sp.csc_matrix(out)


def _strings(v: Any) -> list[str | None]:
    from rpy2.rinterface import NA_Character

    return [None if x is NA_Character else str(x) for x in v]


def _frame(columns: Any, index: Sequence[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name, col in zip(columns.names, columns):
        kind = col.rx2("type")[0]
        values = col.rx2("values")
        if kind == "numeric":
            data[name] = np.asarray(values, dtype=np.float64)
        elif kind == "logical":
            raw = np.asarray(values)
            na = raw == np.iinfo(np.int32).min
            data[name] = pd.array([None if n else bool(x) for x, n in zip(raw, na)],
                                  dtype="boolean")
        elif kind == "factor":
            data[name] = pd.Categorical(_strings(values), categories=_strings(col.rx2("levels")))
        else:
            data[name] = _strings(values)
    return pd.DataFrame(data, index=pd.Index(list(index)))


def _parts_to_anndata(parts: Any, bin_size: int, n_bins: int | None, blacklist: Any
                      ) -> ad.AnnData:
    cells = _strings(parts.rx2("cells"))
    counts = parts.rx2("counts")
    feats = parts.rx2("features")
    mats = {name: _to_scipy(m).T.tocsr() for name, m in zip(counts.names, counts)}
    features = {name: _strings(f) for name, f in zip(feats.names, feats)}
    obs = _frame(parts.rx2("meta"), cells)
    adata = build_anndata(mats, features, obs, bin_size=bin_size, blacklist=blacklist,
                          n_bins=n_bins)
    reds = parts.rx2("reductions")
    if len(reds) > 0:
        for name, emb in zip(reds.names, reds):
            arr = np.asarray(emb, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[0] == len(cells):
                adata.obsm[f"X_{name}"] = arr
    return adata


def read_seurat(path: str | os.PathLike, assays: Sequence[str] | None = None,
                bin_size: int = 10_000, n_bins: int | None = None, blacklist: Any = None
                ) -> ad.AnnData:
    """Read a Seurat object saved with ``saveRDS`` as the AnnData data contract.

    Parameters
    ----------
    path
        The ``.rds`` file.
    assays
        Assays to read, one modality (layer) each; default all assays. Their features must be
        genomic ranges (``chr1-1-10000``; a Signac ChromatinAssay or a plain Assay).
    bin_size
        Window width the features are rebinned into.
    n_bins
        Keep the union of each modality's top bins up to this many; ``None`` keeps all.
    blacklist
        BED path or DataFrame of regions whose windows are dropped.

    Returns
    -------
    anndata.AnnData
        ``layers[assay]`` CSR counts over shared bins; ``obs`` = the object's meta data (cell
        order kept); ``obsm["X_<reduction>"]`` for each stored reduction.
    """
    obj = _call("read_any", _check_path(path))
    kind = _call("kind", obj)[0]
    if kind != "Seurat":
        raise ConvNetVAEError(f"{str(path)!r} holds a {kind}, not a Seurat object"
                              + ("; use read_sce()" if kind == "SingleCellExperiment" else ""))
    parts = _call("seurat_parts", obj, _null_or(assays))
    return _parts_to_anndata(parts, bin_size, n_bins, blacklist)


def read_sce(path: str | os.PathLike, assays: Sequence[str] | None = None,
             assay_type: str = "counts", bin_size: int = 10_000, n_bins: int | None = None,
             blacklist: Any = None) -> ad.AnnData:
    """Read a SingleCellExperiment saved with ``saveRDS`` as the AnnData data contract.

    Modalities are the main experiment (named by ``mainExpName``, or ``"main"``) plus the
    ``altExp``s by default, or any of those and named assays given in ``assays``.

    Parameters
    ----------
    path
        The ``.rds`` file.
    assays
        Modalities to read (see above).
    assay_type
        The assay holding raw counts in each experiment.
    bin_size, n_bins, blacklist
        As in :func:`read_seurat`.

    Returns
    -------
    anndata.AnnData
        As :func:`read_seurat`, with ``obs`` = ``colData`` and ``obsm`` = ``reducedDims``.
    """
    obj = _call("read_any", _check_path(path))
    kind = _call("kind", obj)[0]
    if kind != "SingleCellExperiment":
        raise ConvNetVAEError(f"{str(path)!r} holds a {kind}, not a SingleCellExperiment"
                              + ("; use read_seurat()" if kind == "Seurat" else ""))
    import rpy2.robjects as ro

    parts = _call("sce_parts", obj, _null_or(assays), ro.StrVector([assay_type]))
    return _parts_to_anndata(parts, bin_size, n_bins, blacklist)


def _default_key(name: str) -> str:
    import re

    core = re.sub(r"[^A-Za-z0-9]", "", name)
    if not core or not core[0].isalpha():
        core = "cnv" + core
    return core + "_"


def write_reduction(path_in: str | os.PathLike, embedding: Any, path_out: str | os.PathLike,
                    name: str = "convnetvae", key: str | None = None, assay: str | None = None
                    ) -> Path:
    """Add an embedding to a Seurat object (as a reduction) or SCE (``reducedDim``) on disk.

    Parameters
    ----------
    path_in
        The ``.rds`` file read (it is not modified unless ``path_out`` is the same path).
    embedding
        Cells x dimensions: a NumPy array in the object's cell order, or a DataFrame indexed by
        cell names (reordered to the object's cells; every cell must be present).
    path_out
        Where to save the new ``.rds`` (written to a temporary file, then renamed).
    name
        Reduction name (``obj[[name]]`` / ``reducedDim(sce, name)``).
    key
        Seurat key matching ``^[a-zA-Z][a-zA-Z0-9]*_$``; default from ``name``
        (``"convnetvae_"``).
    assay
        Seurat assay the reduction belongs to (default: the object's default assay).

    Returns
    -------
    pathlib.Path
        ``path_out``.
    """
    import re

    import rpy2.robjects as ro

    obj = _call("read_any", _check_path(path_in))
    kind = _call("kind", obj)[0]
    if kind not in ("Seurat", "SingleCellExperiment"):
        raise ConvNetVAEError(f"{str(path_in)!r} holds a {kind}, not a Seurat object or "
                              "SingleCellExperiment")
    if not isinstance(name, str) or not name:
        raise ConvNetVAEError("name must be a non-empty string")
    key = _default_key(name) if key is None else key
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9]*_", key):
        raise ConvNetVAEError(
            f"key {key!r} must match ^[a-zA-Z][a-zA-Z0-9]*_$ (letters and digits ending in one "
            "underscore), e.g. 'convnetvae_'")
    cells = _strings(ro.r["colnames"](obj))
    if isinstance(embedding, pd.DataFrame):
        missing = [c for c in cells if c not in embedding.index]
        if missing:
            raise ConvNetVAEError(
                f"the embedding has no row for {len(missing)} cells of the object (e.g. "
                f"{missing[:3]}); index it by the object's cell names")
        embedding = embedding.loc[cells].to_numpy()
    z = np.asarray(embedding, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != len(cells):
        raise ConvNetVAEError(
            f"the embedding has shape {z.shape}; expected ({len(cells)}, n_dims): one row per "
            "cell of the object, in its order")
    if not np.all(np.isfinite(z)):
        raise ConvNetVAEError("the embedding contains NaN or infinite values")
    new = _call("add_reduction", obj, ro.FloatVector(z.ravel(order="F")),
                ro.IntVector([z.shape[0]]), ro.IntVector([z.shape[1]]), ro.StrVector([name]),
                ro.StrVector([key]), _null_or(assay))
    out = Path(path_out)
    with atomic_path(out) as tmp:
        ro.r["saveRDS"](new, str(tmp))
    return out
