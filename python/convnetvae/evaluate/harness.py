"""The benchmark harness: cross-validated training and scoring of several models on one dataset.

For every fold and model it trains on the training cells, embeds training and validation cells,
and records per split: the clustering sweep (clusters, ARI, NMI per resolution), the scIB metrics,
the held-out marginal log-likelihood (neural models), parameter count and training time.

Model names
-----------
``conv-k51s51``, ``conv-k11s3x2``, ... and ``fc-l1`` .. ``fc-l3``
    :class:`~convnetvae.api.ConvNetVAE` architectures: any name of the architecture registry
    (:mod:`convnetvae.model.registry`; the FC-VAE product of experts is ``fc-lN``).
``lsi``
    Signac-style TF-IDF + truncated SVD per modality (fitted on training cells, validation
    cells projected).
``lsi-unscaled``
    The same LSI without Signac's per-component scaling (components keep their singular-value
    weights); a stronger baseline when noise components would otherwise weigh as much as signal.
``mofa``
    MOFA+ (optional, needs ``mofapy2``); transductive: fitted on all cells of the fold (no labels
    are used), then scored per split.
``<name>+shuffle``
    The bin-shuffle control: the same model on data whose bins are randomly permuted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import ConvNetVAEError
from ..settings import ModelSettings, TrainSettings, default
from .clustering import DEFAULT_RESOLUTIONS, clustering_sweep
from .crossval import kfold_indices, shuffle_bins
from .models import NON_NEURAL, SHUFFLE_SUFFIX, parse_model_name  # noqa: F401
from .scib import BATCH_METRICS, BIO_METRICS, scib_metrics


@dataclass
class BenchmarkConfig:
    """Settings of one benchmark run (all recorded in ``config.json``).

    Parameters
    ----------
    models
        Model names (see the module docstring).
    labels_key
        ``obs`` column with reference labels.
    batch_key
        ``obs`` column with the batch, or ``None``.
    modalities
        Count layers (default: ``adata.uns["modalities"]``, else all layers).
    folds
        Cross-validation folds (1 = train and score on all cells, no validation split).
    epochs
        Training epochs of the neural models (no early stopping, as the paper).
    seed
        Seed of folds, models, clustering and importance sampling.
    resolutions
        Louvain resolution grid.
    k
        Neighbours of the clustering kNN graph (paper: 20).
    n_starts
        Louvain random starts per resolution (paper: 5).
    methods
        Clustering methods (``louvain``, ``leiden``).
    n_importance
        Importance samples for the marginal likelihood (paper: 100; 0 = skip).
    scib
        Compute the scIB metrics.
    n_latent, n_hidden, batch_size, lr, likelihood, device
        Neural-model settings.
    lsi_components
        LSI components per modality.
    """

    models: list[str]
    labels_key: str
    batch_key: str | None = None
    modalities: list[str] | None = None
    folds: int = 5
    epochs: int = 50
    seed: int = 0
    resolutions: list[float] = field(default_factory=lambda: list(DEFAULT_RESOLUTIONS))
    k: int = 20
    n_starts: int = 5
    methods: list[str] = field(default_factory=lambda: ["louvain"])
    n_importance: int = 100
    scib: bool = True
    n_latent: int = default(ModelSettings, "n_latent")
    n_hidden: int = default(ModelSettings, "n_hidden")
    batch_size: int = default(TrainSettings, "batch_size")
    lr: float = default(TrainSettings, "lr")
    likelihood: str = default(ModelSettings, "likelihood")
    device: str = default(TrainSettings, "device")
    lsi_components: int = 30


@dataclass
class BenchmarkResult:
    """Tables of a benchmark run.

    Attributes
    ----------
    results
        One row per (model, fold, split) with summary scores.
    sweep
        One row per (model, fold, split, method, resolution).
    config
        The settings used.
    data
        Description of the data (cells, bins, modalities, labels, batches).
    """

    results: pd.DataFrame
    sweep: pd.DataFrame
    config: BenchmarkConfig
    data: dict


def validate_inputs(adata: ad.AnnData, config: BenchmarkConfig) -> list[str]:
    """Check columns, layers, models and fold sizes before any training; returns the modalities."""
    if not isinstance(adata, ad.AnnData):
        raise ConvNetVAEError(f"expected an AnnData, got {type(adata).__name__}")
    cols = list(adata.obs.columns)
    if config.labels_key not in adata.obs.columns:
        raise ConvNetVAEError(f"labels column {config.labels_key!r} is not in adata.obs (columns: {cols}); "
                              "pass --labels-key with one of them")
    if adata.obs[config.labels_key].isna().any():
        n = int(adata.obs[config.labels_key].isna().sum())
        raise ConvNetVAEError(f"labels column {config.labels_key!r} has {n} missing values; drop those cells "
                              "(adata = adata[adata.obs[key].notna()]) before benchmarking")
    if config.batch_key is not None:
        if config.batch_key not in adata.obs.columns:
            raise ConvNetVAEError(f"batch column {config.batch_key!r} is not in adata.obs (columns: {cols}); "
                                  "pass --batch-key with one of them or omit it")
        if adata.obs[config.batch_key].isna().any():
            raise ConvNetVAEError(f"batch column {config.batch_key!r} has missing values; assign or drop them")
    mods = config.modalities
    if not mods:
        mods = [str(m) for m in adata.uns.get("modalities", [])] or list(adata.layers.keys())
    if not mods:
        raise ConvNetVAEError("adata has no count layers: put one layer per modality in adata.layers")
    for m in mods:
        if m not in adata.layers:
            raise ConvNetVAEError(f"modality layer {m!r} not in adata.layers (available: {list(adata.layers)})")
    if not config.models:
        raise ConvNetVAEError("no models given: e.g. --models conv-k51s51,fc-l1,lsi")
    for name in config.models:
        base, _ = parse_model_name(name)
        if base == "mofa":
            from .baselines import mofa_available

            if not mofa_available():
                raise ConvNetVAEError("model 'mofa' needs the optional package mofapy2 (pip install mofapy2)")
    if config.epochs < 1:
        raise ConvNetVAEError(f"epochs must be at least 1, got {config.epochs}")
    if adata.n_obs <= config.k:
        raise ConvNetVAEError(f"{adata.n_obs} cells is not more than k={config.k} neighbours: the kNN graph "
                              "needs more cells (or a smaller k)")
    # every split must hold more than k cells for its kNN graph
    kfold_indices(adata.n_obs, config.folds, config.seed, min_validation=config.k + 1)
    return mods


def _embed_neural(arch: str, tr: ad.AnnData, va: ad.AnnData | None, mods: list[str], cfg: BenchmarkConfig
                  ) -> dict:
    from ..api import ConvNetVAE
    from .likelihood import marginal_log_likelihood

    ConvNetVAE.setup_anndata(tr, modalities=mods, batch_key=cfg.batch_key)
    model = ConvNetVAE(tr, architecture=arch, likelihood=cfg.likelihood, n_latent=cfg.n_latent,
                       n_hidden=cfg.n_hidden, seed=cfg.seed)
    t0 = time.perf_counter()
    model.train(max_epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, validation_size=0.0,
                early_stopping=False, seed=cfg.seed, device=cfg.device, progress=False)
    train_time = time.perf_counter() - t0
    out = {"train": model.get_latent_representation(tr), "n_parameters": model.n_parameters,
           "train_time_s": train_time, "mll": {}}
    if va is not None:
        out["validation"] = model.get_latent_representation(va)
    if cfg.n_importance > 0:
        scored = ("validation", va) if va is not None else ("train", tr)
        out["mll"][scored[0]] = float(np.mean(marginal_log_likelihood(
            model, scored[1], n_samples=cfg.n_importance, seed=cfg.seed)))
    return out


def _embed_lsi(tr: ad.AnnData, va: ad.AnnData | None, mods: list[str], cfg: BenchmarkConfig,
               scale: bool = True) -> dict:
    from .baselines import LSIModel

    t0 = time.perf_counter()
    lsi = LSIModel(mods, n_components=cfg.lsi_components, seed=cfg.seed, scale=scale).fit(tr)
    out = {"train": lsi.transform(tr), "n_parameters": lsi.n_parameters, "mll": {}}
    out["train_time_s"] = time.perf_counter() - t0
    if va is not None:
        out["validation"] = lsi.transform(va)
    return out


def _embed_mofa(tr: ad.AnnData, va: ad.AnnData | None, mods: list[str], cfg: BenchmarkConfig) -> dict:
    from .baselines import mofa_embedding

    both = tr if va is None else ad.concat([tr, va], merge="same")
    t0 = time.perf_counter()
    z = mofa_embedding(both, mods, seed=cfg.seed)
    out = {"train": z[: tr.n_obs], "n_parameters": None, "mll": {}, "train_time_s": time.perf_counter() - t0}
    if va is not None:
        out["validation"] = z[tr.n_obs:]
    return out


def run_benchmark(adata: ad.AnnData, config: BenchmarkConfig,
                  log: Callable[[str], None] | None = None) -> BenchmarkResult:
    """Cross-validate every model of ``config`` on ``adata`` and score train and validation cells.

    Parameters
    ----------
    adata
        Cells x bins with one count layer per modality, the labels column and (optionally) the
        batch column.
    config
        The settings.
    log
        Called with one line of progress per step (e.g. ``print``); default silent.

    Returns
    -------
    BenchmarkResult
    """
    log = log or (lambda _msg: None)
    mods = validate_inputs(adata, config)
    splits = kfold_indices(adata.n_obs, config.folds, config.seed, min_validation=config.k + 1)
    labels_all = adata.obs[config.labels_key].astype(str).to_numpy()
    batches_all = None if config.batch_key is None else adata.obs[config.batch_key].astype(str).to_numpy()
    if batches_all is not None:
        for fold, (tr_idx, va_idx) in enumerate(splits):
            unseen = sorted(set(batches_all[va_idx]) - set(batches_all[tr_idx]))
            if unseen:
                raise ConvNetVAEError(
                    f"fold {fold + 1}: batch(es) {unseen[:5]} of column {config.batch_key!r} have no cells in the "
                    "training folds, so a model cannot embed them; use fewer folds, merge tiny batches, or omit "
                    "--batch-key")
    base = ad.AnnData(obs=adata.obs.copy(), var=adata.var.copy(),
                      layers={m: adata.layers[m] for m in mods}, obsm=dict(adata.obsm), uns={"modalities": mods})
    shuffled_data: ad.AnnData | None = None
    result_rows: list[dict] = []
    sweep_frames: list[pd.DataFrame] = []
    for name in config.models:
        model_base, shuffled = parse_model_name(name)
        data = base
        if shuffled:
            if shuffled_data is None:
                shuffled_data = shuffle_bins(base, mods, seed=config.seed)
            data = shuffled_data
        for fold, (tr_idx, va_idx) in enumerate(splits):
            log(f"[{name}] fold {fold + 1}/{len(splits)}: training on {len(tr_idx)} cells")
            tr = data[tr_idx].copy()
            va = data[va_idx].copy() if len(va_idx) else None
            if model_base in ("lsi", "lsi-unscaled"):
                emb = _embed_lsi(tr, va, mods, config, scale=model_base == "lsi")
            elif model_base == "mofa":
                emb = _embed_mofa(tr, va, mods, config)
            else:
                emb = _embed_neural(model_base, tr, va, mods, config)
            for split, idx in (("train", tr_idx), ("validation", va_idx)):
                if split not in emb:
                    continue
                z = emb[split]
                lab = labels_all[idx]
                bat = None if batches_all is None else batches_all[idx]
                sw = clustering_sweep(z, lab, resolutions=config.resolutions, k=config.k,
                                      n_starts=config.n_starts, methods=config.methods, seed=config.seed)
                sw.insert(0, "split", split)
                sw.insert(0, "fold", fold)
                sw.insert(0, "model", name)
                sweep_frames.append(sw)
                row = _summarise(name, model_base, shuffled, fold, split, idx, sw, emb, config)
                if config.scib:
                    row.update(_scib_row(z, lab, bat, config))
                result_rows.append(row)
                log(f"[{name}] fold {fold + 1} {split}: best ARI {_fmt(row['best_ari'])} "
                    f"({row['n_clusters_at_best']} clusters), overall scIB {_fmt(row.get('overall'))}")
    results = pd.DataFrame(result_rows)
    sweep = pd.concat(sweep_frames, ignore_index=True) if sweep_frames else pd.DataFrame()
    info = {"n_cells": int(adata.n_obs), "n_bins": int(adata.n_vars), "modalities": mods,
            "labels_key": config.labels_key, "n_labels": int(len(np.unique(labels_all))),
            "batch_key": config.batch_key,
            "n_batches": None if batches_all is None else int(len(np.unique(batches_all)))}
    return BenchmarkResult(results, sweep, config, info)


def _fmt(v) -> str:
    return "undefined" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def _summarise(name: str, model_base: str, shuffled: bool, fold: int, split: str, idx: np.ndarray,
               sw: pd.DataFrame, emb: dict, cfg: BenchmarkConfig) -> dict:
    main = sw[sw["method"] == cfg.methods[0]]
    row = {"model": name, "base_model": model_base, "shuffled": shuffled, "fold": fold, "split": split,
           "n_cells": int(len(idx)), "n_parameters": emb.get("n_parameters"),
           "train_time_s": emb.get("train_time_s"), "mll": emb["mll"].get(split),
           "neg_mll": None if emb["mll"].get(split) is None else -emb["mll"][split]}
    aris = main["ari"].astype(float)
    if aris.notna().any():
        best = main.loc[aris.idxmax()]
        row.update({"best_ari": float(best["ari"]), "best_resolution": float(best["resolution"]),
                    "n_clusters_at_best": int(best["n_clusters"]),
                    "best_nmi": float(main["nmi"].astype(float).max())})
    else:
        row.update({"best_ari": None, "best_resolution": None, "n_clusters_at_best": None, "best_nmi": None})
    return row


def _scib_row(z: np.ndarray, lab: np.ndarray, bat: np.ndarray | None, cfg: BenchmarkConfig) -> dict:
    res = scib_metrics(z, lab, bat, seed=cfg.seed, nmi_resolutions=cfg.resolutions)
    d = res.to_dict()
    return {k: d[k] for k in (*BATCH_METRICS, *BIO_METRICS, "batch", "bio", "overall", "undefined")}


def config_dict(config: BenchmarkConfig) -> dict:
    """JSON-serialisable settings."""
    return asdict(config)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and SD over folds per (model, split) of the headline scores."""
    cols = [c for c in ("best_ari", "best_nmi", "n_clusters_at_best", "overall", "batch", "bio", "neg_mll",
                        "n_parameters", "train_time_s") if c in results.columns]
    num = results[["model", "split", *cols]].copy()
    for c in cols:
        num[c] = pd.to_numeric(num[c], errors="coerce")
    order = list(dict.fromkeys(results["model"]))
    g = num.groupby(["model", "split"], sort=False)
    mean = g.mean().add_suffix("_mean")
    sd = g.std(ddof=0).add_suffix("_sd")
    out = pd.concat([mean, sd], axis=1).reset_index()
    out["model"] = pd.Categorical(out["model"], order, ordered=True)
    return out.sort_values(["model", "split"]).reset_index(drop=True)


def load_inputs(path: str) -> ad.AnnData:
    """Read an ``.h5ad`` file for the benchmark with a clear error when it is missing."""
    import os

    if not os.path.exists(path):
        raise ConvNetVAEError(f"--data {path!r} does not exist")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # anndata raises several types for corrupt files
        raise ConvNetVAEError(f"could not read {path!r} as an .h5ad file: {err}") from None


__all__: Sequence[str] = ("BenchmarkConfig", "BenchmarkResult", "run_benchmark", "summary_table",
                          "parse_model_name", "validate_inputs", "config_dict", "load_inputs")
