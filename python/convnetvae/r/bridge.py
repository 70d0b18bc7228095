"""The Python side of the R package (called through reticulate): train, embed, describe a model.

The R package keeps its code thin and calls three functions here:

* :func:`run_from_r` -- per-modality sparse counts + bin names -> aligned AnnData contract ->
  trained model -> embedding, loss history and configuration;
* :func:`project_from_r` -- embed cells with a saved model;
* :func:`model_info` -- what a saved model was trained on (modalities, bin size, batch columns).

Everything crossing the bridge is plain Python data (dict, list, str, int, float, bytes). Matrices
come from R as the CSC arrays of a ``dgCMatrix`` packed into little-endian bytes (``"encoded"``
dicts, see :func:`decode_sparse`), and the embedding goes back as column-major float64 bytes:
reticulate 1.28 cannot convert arrays when NumPy 2 is installed, and bytes also avoid any dense
copy. Python callers may pass ``scipy.sparse`` matrices (cells x features) instead.

This module must not import rpy2 (it runs inside R's own process through reticulate).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import model_format, settings
from ..errors import ConvNetVAEError
from ..settings import DataSettings, EmbedSettings, ModelSettings, TrainSettings
from .align import build_anndata

#: the R bridge's notes beside a saved model (r_bridge.json): how RunConvNetVAE was called
BRIDGE_SIDECAR = "r_bridge"
BATCH_COLUMN = "batch"


# ---------------------------------------------------------------------------- decoding


def _join_bytes(chunks: Any) -> bytes:
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        return bytes(chunks)
    return b"".join(bytes(c) for c in chunks)


def decode_sparse(obj: Any, name: str = "matrix") -> sp.csr_matrix:
    """Turn a matrix received from R (or given in Python) into a cells x features CSR matrix.

    Parameters
    ----------
    obj
        A ``scipy.sparse`` matrix or dense array (cells x features), or a dict sent by the R
        package: ``format="csc"``, ``shape=[nrow, ncol]``, ``indptr``/``indices`` (int32 bytes),
        ``data`` (float64 bytes), each a bytes object or a list of byte chunks, and
        ``orientation`` = ``"features_x_cells"`` (Seurat, SingleCellExperiment) or
        ``"cells_x_features"`` (a list of matrices).
    name
        The modality, for error messages.

    Returns
    -------
    scipy.sparse.csr_matrix
        Cells x features.
    """
    if sp.issparse(obj):
        return sp.csr_matrix(obj)
    if isinstance(obj, np.ndarray):
        return sp.csr_matrix(obj)
    if not isinstance(obj, Mapping) or obj.get("format") != "csc":
        raise ConvNetVAEError(
            f"matrix of modality {name!r}: expected a scipy.sparse matrix or an encoded CSC dict "
            f"from the R package, got {type(obj).__name__}")
    shape = tuple(int(s) for s in obj["shape"])
    indptr = np.frombuffer(_join_bytes(obj["indptr"]), dtype="<i4")
    indices = np.frombuffer(_join_bytes(obj["indices"]), dtype="<i4")
    data = np.frombuffer(_join_bytes(obj["data"]), dtype="<f8")
    if len(indptr) != shape[1] + 1 or len(indices) != len(data):
        raise ConvNetVAEError(
            f"matrix of modality {name!r} arrived corrupted from R: shape {shape}, "
            f"{len(indptr)} column pointers, {len(indices)} indices, {len(data)} values")
    csc = sp.csc_matrix((data, indices, indptr), shape=shape)
    orientation = obj.get("orientation", "features_x_cells")
    if orientation == "features_x_cells":
        return csc.T.tocsr()  # transpose of CSC is CSR: no copy of the values beyond tocsr
    if orientation == "cells_x_features":
        return csc.tocsr()
    raise ConvNetVAEError(f"matrix of modality {name!r}: unknown orientation {orientation!r}")


def encode_dense(x: np.ndarray) -> dict:
    """A 2-D float array as ``{"shape": [n, d], "data": bytearray}`` in column-major float64."""
    x = np.asarray(x, dtype="<f8")
    return {"shape": [int(x.shape[0]), int(x.shape[1])],
            "data": bytearray(np.asfortranarray(x).tobytes(order="F"))}


def _plain(obj: Any) -> Any:
    """JSON round trip: numpy scalars, arrays and paths become plain Python values."""
    from ..io_utils import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def _history_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    cols: dict[str, list] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, [])
    for k in cols:
        cols[k] = [r.get(k) for r in rows]
    return _plain(cols)


# ---------------------------------------------------------------------------- inputs


def _obs_frame(cell_names: Sequence[str], obs: Mapping[str, Sequence] | pd.DataFrame | None
               ) -> pd.DataFrame:
    index = pd.Index([str(c) for c in cell_names])
    if index.has_duplicates:
        dup = index[index.duplicated()][:3].tolist()
        raise ConvNetVAEError(f"cell names must be unique; duplicated: {dup}")
    if obs is None:
        return pd.DataFrame(index=index)
    frame = obs.copy() if isinstance(obs, pd.DataFrame) else pd.DataFrame(dict(obs))
    if len(frame) != len(index):
        raise ConvNetVAEError(f"obs has {len(frame)} rows for {len(index)} cells")
    frame.index = index
    return frame


def inputs_to_anndata(matrices: Mapping[str, Any], feature_names: Mapping[str, Sequence[str]],
                      cell_names: Sequence[str], obs: Any = None, bin_size: int = 10_000,
                      blacklist: Any = None, n_bins: int | None = None) -> ad.AnnData:
    """Decode the bridge inputs and build the aligned AnnData contract (see :func:`build_anndata`).
    """
    mats = {}
    for m, obj in matrices.items():
        x = decode_sparse(obj, m)
        if x.shape[0] != len(cell_names):
            raise ConvNetVAEError(
                f"modality {m!r} has {x.shape[0]} cells but {len(cell_names)} cell names were given")
        mats[str(m)] = x
    if not mats:
        raise ConvNetVAEError("no modalities given: pass at least one count matrix")
    feats = {str(m): [str(f) for f in feature_names[m]] for m in matrices}
    obs_df = _obs_frame(cell_names, obs)
    return build_anndata(mats, feats, obs_df, bin_size=bin_size, blacklist=_blacklist(blacklist),
                         n_bins=n_bins)


def _blacklist(bl: Any) -> Any:
    if bl is None:
        return None
    if isinstance(bl, Mapping):
        return pd.DataFrame({"chrom": [str(c) for c in bl["chrom"]],
                             "start": np.asarray(bl["start"], dtype=np.int64),
                             "end": np.asarray(bl["end"], dtype=np.int64)})
    return bl


#: keys of the configuration from R that are not settings
BRIDGE_KEYS = ("blacklist", "model_dir", "verbose", "assays", "group_by_vars", "extra", "adapt")


def _settings_from_r(cfg: Mapping[str, Any]) -> tuple[dict, dict, dict, dict]:
    """Model, training and data settings from the configuration R sends, checked by the schema.

    Settings come as top-level keys (the formals of the R methods, by Python name) and in
    ``extra`` (arguments passed through ``...``); names in messages are R's (``n.latent``).

    Returns
    -------
    (model, train, data, extra): validated values, those given in ``extra`` separately.
    """
    top = {k: v for k, v in cfg.items() if k not in BRIDGE_KEYS}
    extra = dict(cfg.get("extra") or {})
    twice = sorted(set(top) & set(extra))
    if twice:
        raise ConvNetVAEError(f"argument(s) {[k.replace('_', '.') for k in twice]} given twice "
                              "(as an argument and through ...)")
    model, train, data = settings.split({**top, **extra},
                                        [ModelSettings, TrainSettings, DataSettings], names="r")
    data = {**{s.name: s.default for s in settings.schema(DataSettings)}, **data}
    checked = {**model, **train, **data}
    return model, train, data, {k: checked[k] for k in extra}


# ---------------------------------------------------------------------------- entry points


def run_from_r(matrices: Mapping[str, Any], feature_names: Mapping[str, Sequence[str]],
               cell_names: Sequence[str], obs: Any = None, batch_key: str | None = None,
               config: Mapping[str, Any] | None = None,
               emit: Callable[[str], Any] | None = None) -> dict:
    """Train ConvNet-VAE on per-modality counts and return the embedding of every cell.

    Parameters
    ----------
    matrices
        Modality name -> counts (see :func:`decode_sparse`), all over the same cells.
    feature_names
        Modality name -> feature (bin or peak) names such as ``chr1-1-10000``.
    cell_names
        Cell names, in the order of the matrices' cells (kept in the output).
    obs
        Optional per-cell columns (dict of lists or DataFrame), e.g. the batch.
    batch_key
        Column of ``obs`` with the batch of each cell, or ``None``. R names it after the
        ``group.by.vars`` columns, so messages name the user's column.
    config
        Settings of :mod:`convnetvae.settings` by Python name (``architecture``, ``max_epochs``,
        ``lr``, ``bin_size``, ``n_bins``, ...: the formals of the R methods), ``extra`` (further
        settings passed through R's ``...``), and ``blacklist``, ``model_dir``, ``verbose``,
        ``assays``, ``group_by_vars``. Every setting is checked against the schema; messages
        use R's names (``n.latent``).
    emit
        ``emit(text)`` shows a message in R (an R function calling ``message()``); progress,
        the estimated training time and notes go through it (see :mod:`.report`).

    Returns
    -------
    dict
        ``embedding`` (encoded, see :func:`encode_dense`), ``history`` (column -> list),
        ``config`` (the full configuration, plain values), ``bins`` (selected bin names), and
        ``messages`` / ``warnings`` for R to signal.
    """
    from .report import Reporter

    cfg = dict(config or {})
    rep = Reporter(emit, cfg.get("verbose", True))
    with rep.capture(), one_blas_thread():
        out = _run(matrices, feature_names, cell_names, obs, batch_key, cfg, rep)
    return {**out, **rep.result()}


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the core with one BLAS thread (threadpoolctl), as it runs inside R.

    In R's process torch's matrix products resolve to the BLAS R has loaded (OpenBLAS after
    ``make setup``), and OpenBLAS's own threads then compete with torch's OpenMP threads for
    the same cores: default training on Paired-Tag took 1.7x as long as with one BLAS thread,
    with 27x the system time (docs/performance.md, "One BLAS thread while the core runs inside
    R"). Torch parallelises the rest itself; the previous limits are restored on exit.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _run(matrices: Mapping[str, Any], feature_names: Mapping[str, Sequence[str]],
         cell_names: Sequence[str], obs: Any, batch_key: str | None, cfg: dict,
         rep: Any) -> dict:
    from ..api import ConvNetVAE

    model_kw, train_kw, data, extra = _settings_from_r(cfg)
    bin_size, n_bins = data["bin_size"], data["n_bins"]
    model_dir = cfg.get("model_dir")
    if model_dir:
        check_model_dir(model_dir)  # before hours of training, not after
    adata = inputs_to_anndata(matrices, feature_names, cell_names, obs, bin_size=bin_size,
                              blacklist=cfg.get("blacklist"), n_bins=n_bins)
    if batch_key is not None and batch_key not in adata.obs.columns:
        raise ConvNetVAEError(f"batch_key {batch_key!r} is not one of the obs columns given")
    modalities = list(matrices.keys())
    ConvNetVAE.setup_anndata(adata, modalities=modalities, batch_key=batch_key)
    model = ConvNetVAE(adata, **model_kw)
    _train(model, adata, train_kw, rep)
    z = model.get_latent_representation()
    full_config = {
        "architecture": model.module.config.architecture,
        "likelihood": model.module.config.likelihood,
        "n_latent": int(model.module.config.n_latent),
        "modalities": modalities,
        "bin_size": bin_size,
        "n_bins_requested": n_bins,
        "n_bins": int(adata.n_vars),
        "n_cells": int(adata.n_obs),
        "n_parameters": int(model.n_parameters),
        "batch_key": batch_key,
        "batch_categories": list(model.registry["batch_categories"]),
        "group_by_vars": list(cfg.get("group_by_vars") or []),
        "seed": int(model.seed),
        "device": str(model.device),
        "model_dir": str(model_dir) if model_dir else None,
        "blacklist": cfg.get("blacklist") if isinstance(cfg.get("blacklist"), str) else (
            "regions" if cfg.get("blacklist") is not None else None),
        "train": dict(model.train_config),
        "extra": extra,
        "convnetvae_version": _version(),
    }
    if model_dir:
        _save(model, Path(model_dir), full_config)
    return {
        "embedding": encode_dense(z),
        "history": _history_columns(model.history_),
        "config": _plain(full_config),
        "bins": [str(b) for b in adata.var_names],
    }


def _train(model: Any, adata: ad.AnnData, train_kw: dict, rep: Any) -> None:
    """Train with R's progress: the estimated time, epochs as messages, how it ended."""
    cfg = settings.make(TrainSettings, **train_kw)
    c = model.module.config
    rep.message(
        f"training {c.architecture} ({model.n_parameters:,} parameters) on {adata.n_obs:,} cells "
        f"x {adata.n_vars:,} bins x {len(model.modalities)} "
        f"{'modality' if len(model.modalities) == 1 else 'modalities'} "
        f"({', '.join(model.modalities)})"
        + (f", up to {cfg.max_epochs} epoch{'s' if cfg.max_epochs != 1 else ''}."
           if cfg.max_epochs else "."))
    callback, strategy = rep.training(cfg.max_epochs)
    model.train(**{**train_kw, "progress": False}, callback=callback, strategy=strategy)
    tc = model.train_config
    if tc.get("stopped_early"):
        rep.message(f"stopped early after epoch {tc['epochs_trained']}: the validation loss did "
                    f"not improve for {cfg.patience} epochs; kept epoch {tc['best_epoch']}.")


def check_model_dir(path: str | os.PathLike) -> str:
    """Check that R's ``model.dir`` can receive a model, before any work; returns its path.

    It must be new, empty or hold a saved model (replaced), under a writable parent; otherwise a
    :class:`ConvNetVAEError` says why (a file, another directory's contents, a read-only or
    full disk). Nothing is created (a probe file is written and removed).
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConvNetVAEError("model_dir must be a directory path (a character string)")
    return str(model_format.check_destination(path, overwrite=True, what="model_dir"))


def _version() -> str:
    from .. import __version__

    return str(__version__)


def _save(model: Any, d: Path, full_config: dict) -> None:
    model.save(d, overwrite=True)  # checks d again (save refuses a non-model directory)
    model_format.write_sidecar(d, BRIDGE_SIDECAR, full_config)


def model_info(model_dir: str | os.PathLike) -> dict:
    """What a model saved by :func:`run_from_r` (or ``ConvNetVAE.save``) was trained on.

    Returns
    -------
    dict
        ``modalities``, ``bin_size``, ``n_bins``, ``n_latent``, ``architecture``, ``batch_key``,
        ``batch_categories``, ``group_by_vars``.
    """
    d = Path(model_dir)
    if not model_format.is_model_dir(d):
        raise ConvNetVAEError(
            f"{str(d)!r} is not a saved ConvNetVAE model (no {model_format.CONFIG_FILE}); save one "
            "with RunConvNetVAE(..., model.dir = ) or ConvNetVAE.save()")
    saved = model_format.read(d)
    bridge = saved.sidecar(BRIDGE_SIDECAR)
    reg, bins, module = saved.registry, saved.bins(), saved.config["module"]
    widths = (bins["end"] - bins["start"]).to_numpy()
    bin_size = int(bridge.get("bin_size") or (int(np.max(widths)) if len(widths) else 10_000))
    return _plain({
        "modalities": list(reg["modalities"]),
        "bin_size": bin_size,
        "n_bins": len(bins),
        "n_latent": module.get("n_latent"),
        "architecture": module.get("architecture"),
        "batch_key": reg.get("batch_key"),
        "batch_categories": list(reg.get("batch_categories", [])),
        "group_by_vars": list(bridge.get("group_by_vars") or []),
    })


def project_from_r(matrices: Mapping[str, Any], feature_names: Mapping[str, Sequence[str]],
                   cell_names: Sequence[str], obs: Any = None, batch_key: str | None = None,
                   model_dir: str | os.PathLike = "", config: Mapping[str, Any] | None = None,
                   emit: Callable[[str], Any] | None = None) -> dict:
    """Embed cells with a saved model: rebin onto the model's bins, then take the latent means.

    Bins of the model that the new data does not cover count as zero; data outside the model's
    bins is ignored. Batch labels must be among those the model was trained with, unless
    ``config["adapt"]`` is true: then new batches are mapped onto the model as queries
    (:meth:`ConvNetVAE.load_query_data`: only the new batches' parameters train, on these cells;
    training settings come in ``config["extra"]``). The saved model is never changed.

    Returns
    -------
    dict
        ``embedding`` (encoded), ``history`` (the adaptation's, else empty), ``config`` (the
        model's, plus ``query`` when adapted), ``bins``, ``messages``, ``warnings``.
    """
    from .report import Reporter

    cfg = dict(config or {})
    rep = Reporter(emit, cfg.get("verbose", True))
    with rep.capture(), one_blas_thread():
        out = _project(matrices, feature_names, cell_names, obs, batch_key, model_dir, cfg, rep)
    return {**out, **rep.result()}


def _project(matrices: Mapping[str, Any], feature_names: Mapping[str, Sequence[str]],
             cell_names: Sequence[str], obs: Any, batch_key: str | None,
             model_dir: str | os.PathLike, cfg: dict, rep: Any) -> dict:
    from ..api import ConvNetVAE

    info = model_info(model_dir)
    modalities = [str(m) for m in matrices]
    if modalities != info["modalities"]:
        raise ConvNetVAEError(
            f"the model in {str(model_dir)!r} was trained on modalities {info['modalities']} "
            f"(in that order) but {modalities} were given")
    adapt = bool(cfg.get("adapt", False))
    extra = dict(cfg.get("extra") or {})
    if adapt:
        (train_kw,) = settings.split(extra, [TrainSettings], names="r")
        embed = EmbedSettings(device=train_kw.get("device", "auto"))
    else:
        embed, train_kw = settings.make(EmbedSettings, names="r", **extra), {}
    full = inputs_to_anndata(matrices, feature_names, cell_names, obs, bin_size=info["bin_size"])
    saved = model_format.read(model_dir).config["bins"]
    adata = _reindex_bins(full, saved, modalities, model_dir)
    key, new = _project_batches(adata, batch_key, info, adapt)
    if not new:
        model = ConvNetVAE.load(model_dir, adata, device=embed.device)
        z = model.get_latent_representation(adata, batch_size=embed.batch_size)
        return {"embedding": encode_dense(z), "history": {}, "config": _plain(info),
                "bins": [str(b) for b in adata.var_names]}
    reference = ConvNetVAE.load(model_dir, device=embed.device)
    model = ConvNetVAE.load_query_data(adata, reference, batch_key=key, device=embed.device)
    rep.message(f"adapting the model to the new batches {new}: training only their "
                f"{model.query_['trainable_parameters']:,} parameters on these cells; the "
                "model's own weights stay as they are.")
    _train(model, adata, train_kw, rep)
    z = model.get_latent_representation(batch_size=embed.batch_size)
    return {"embedding": encode_dense(z), "history": _history_columns(model.history_),
            "config": _plain({**info, "query": model.query_, "train": model.train_config}),
            "bins": [str(b) for b in adata.var_names]}


def _project_batches(adata: ad.AnnData, batch_key: str | None, info: dict, adapt: bool
                     ) -> tuple[str | None, list[str]]:
    """Put the cells' batches in the model's batch column; returns that column and the batches
    the model does not know (an error unless ``adapt``)."""
    model_key, known = info["batch_key"], list(info["batch_categories"])
    if batch_key is None or batch_key not in adata.obs.columns:
        if model_key is not None and len(known) > 1:
            raise ConvNetVAEError(
                f"the model was trained with batches {known} (columns "
                f"{info['group_by_vars'] or [model_key]}); give the batch of each cell "
                "(group.by.vars)")
        if model_key is not None:
            adata.obs[model_key] = known[0]
        return model_key, []
    labels = adata.obs[batch_key].astype(str)
    new = sorted(set(labels) - set(known))
    if model_key is not None and model_key != batch_key:
        adata.obs[model_key] = labels.to_numpy()
    key = model_key if model_key is not None else batch_key
    if new and not adapt:
        raise ConvNetVAEError(
            f"batch labels {new[:5]} in the group.by.vars column {batch_key!r} were not seen when "
            f"the model was trained (known: {known or 'none: trained without batches'}). To "
            "map new samples onto the model, use adapt = TRUE: it trains only the new batches' "
            "parameters on these cells and leaves the model's weights as they are")
    if not adapt and model_key is None:
        return None, []  # a model without batches ignores them
    return key, new


def _reindex_bins(full: ad.AnnData, saved_bins: Mapping[str, list], modalities: Sequence[str],
                  model_dir: Any) -> ad.AnnData:
    """Put ``full``'s counts onto the model's bins (missing bins = zero columns)."""
    key_full = pd.Index(list(zip(full.var["chrom"].astype(str), full.var["start"].astype(np.int64))))
    key_model = pd.Index(list(zip([str(c) for c in saved_bins["chrom"]],
                                  [int(s) for s in saved_bins["start"]])))
    pos = key_full.get_indexer(key_model)
    found = pos >= 0
    if not found.any():
        raise ConvNetVAEError(
            f"the data shares no bins with the model in {str(model_dir)!r}; use the same genome, "
            "chromosome names and bin size")
    n_model = len(key_model)
    sel = sp.csr_matrix((np.ones(int(found.sum())), (pos[found], np.flatnonzero(found))),
                        shape=(full.n_vars, n_model))
    var = pd.DataFrame({"chrom": [str(c) for c in saved_bins["chrom"]],
                        "start": np.asarray(saved_bins["start"], dtype=np.int64),
                        "end": np.asarray(saved_bins["end"], dtype=np.int64)})
    names = saved_bins.get("names") or [f"{c}:{s}-{e}" for c, s, e in
                                        zip(var["chrom"], var["start"], var["end"])]
    var.index = pd.Index([str(n) for n in names])
    layers = {m: sp.csr_matrix(full.layers[m] @ sel) for m in modalities}
    return ad.AnnData(obs=full.obs.copy(), var=var, layers=layers)
