"""How high is the bar? Signac-style LSI and its common variants on the benchmark sets.

Issue 14's target is LSI (Signac: TF-IDF, 30 SVD components, each standardised, the first
dropped when it tracks depth) + 0.05 in best Louvain ARI. This script measures what the LSI
family itself reaches on the same cells and bins: 10 / 20 / 30 / 50 components, standardised
(Signac's default) or not, LSI of binarised counts, unscaled LSI coordinates (not centred) with
each cell's row L2-normalised (cosine geometry), and PCA of log-normalised counts (scanpy's
``normalize_total`` + ``log1p`` + ``pca``, 30 components); where a dataset ships a published
clustering of its own (Paired-Tag: IDclust's ``IDcluster``), that partition's ARI against the
labels as well (one partition, not a resolution sweep). And a supervised reference: the ARI of
held-out predictions of classifiers *trained on the labels* (5-fold, stratified) from the
unscaled LSI coordinates -- what the features tell about the labels when the labels are given,
which an unsupervised clustering is not expected to reach (:func:`supervised_ari`). Not part of
the test suite; the real sets need ../shared/data. Writes one JSON file.

    .venv/bin/python benchmarks/lsi_variants.py --out benchmarks/results/lsi_variants.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

from convnetvae.evaluate.baselines import LSIModel  # noqa: E402
from convnetvae.evaluate.clustering import ari  # noqa: E402
from convnetvae.io_utils import write_json  # noqa: E402
from curves import _best_ari  # noqa: E402
from quality import ALL, load_dataset, shared_data  # noqa: E402

#: partitions shipped with a dataset by its authors' own clustering method (obs columns)
PUBLISHED_PARTITIONS = {"pairedtag": ("IDcluster",)}


def binarised(adata: ad.AnnData, modalities: list[str]) -> ad.AnnData:
    """A copy of ``adata`` whose count layers are 1 wherever the count is positive."""
    out = adata.copy()
    for m in modalities:
        x = sp.csr_matrix(out.layers[m], dtype=np.float32)
        x.data = (x.data > 0).astype(np.float32)
        x.eliminate_zeros()
        out.layers[m] = x
    return out


def lsi_cosine(model: LSIModel, adata: ad.AnnData) -> np.ndarray:
    """The cells of ``adata`` in a fitted *unscaled* ``model``'s LSI coordinates, not centred
    (``U S``, the first component dropped where the model drops it), each cell's row of every
    modality's block scaled to unit length: the cosine geometry of the LSI coordinates (rows of
    zeros stay zero)."""
    if model.scale:
        raise ValueError("lsi_cosine needs an LSIModel fitted with scale=False (standardised "
                         "components have lost the singular values the cosine is taken over)")
    z = model.transform(adata)  # per block (U S - mean) / sd of its first kept component
    out, at = [], 0
    for m in model.modalities:
        p = model.parts_[m]
        first = 1 if p["dropped_first"] else 0
        width = min(model.n_components, p["mean"].size - first)
        b = z[:, at:at + width] + p["mean"][first:first + width] / p["sd"][first]
        at += width
        norm = np.linalg.norm(b, axis=1, keepdims=True)
        out.append(np.divide(b, norm, out=np.zeros_like(b), where=norm > 0))
    return np.concatenate(out, axis=1)


def lognorm_pca(adata: ad.AnnData, modalities: list[str], n_components: int = 30) -> np.ndarray:
    """Per modality: counts scaled to 10,000 per cell, ``log1p``, PCA (scanpy, centred), the
    modalities' components side by side."""
    import scanpy as sc

    out = []
    for m in modalities:
        # a copy: AnnData shares a float32 layer's arrays, and scanpy may normalise in place
        b = ad.AnnData(sp.csr_matrix(adata.layers[m], dtype=np.float32, copy=True))
        sc.pp.normalize_total(b, target_sum=1e4)
        sc.pp.log1p(b)
        n = min(n_components, b.n_obs - 1, b.n_vars - 1)
        sc.pp.pca(b, n_comps=n, random_state=0)
        out.append(b.obsm["X_pca"])
    return np.concatenate(out, axis=1)


def supervised_ari(z: np.ndarray, labels: np.ndarray, classifier: str = "logreg",
                   folds: int = 5, seed: int = 0) -> dict[str, float]:
    """ARI and accuracy of cross-validated predictions of ``labels`` from ``z``.

    Every cell is predicted by a classifier fitted on the other folds (stratified ``folds``-fold
    split, shuffled with ``seed``): ``"logreg"`` is a multinomial logistic regression on the
    standardised columns (L2, ``C = 0.1``, not tuned); ``"knn20"`` is a majority vote of the 20
    nearest training cells (Euclidean), the neighbourhood the Louvain graph of the sweep is
    built from. Labels with fewer cells than ``folds`` are an error (they cannot be split).

    Returns ``{"ari": ..., "accuracy": ...}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels).astype(str)
    values, counts = np.unique(labels, return_counts=True)
    if counts.min() < folds:
        raise ValueError(f"label {str(values[counts.argmin()])!r} has {counts.min()} cells, fewer "
                         f"than folds={folds}: pass fewer folds or drop that label")
    if classifier == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    elif classifier == "knn20":
        clf = KNeighborsClassifier(n_neighbors=20)
    else:
        raise ValueError(f"classifier must be 'logreg' or 'knn20', not {classifier!r}")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(clf, np.asarray(z, dtype=np.float64), labels, cv=cv)
    return {"ari": ari(labels, pred), "accuracy": float(np.mean(pred == labels))}


def supervised_references(adata: ad.AnnData, modalities: list[str], labels: np.ndarray,
                          folds: int = 5) -> dict[str, dict[str, float]]:
    """:func:`supervised_ari` on the unscaled LSI coordinates (30 and 50 components, fitted on
    all cells) with ``"logreg"``, and on 30 with ``"knn20"``. Keys
    ``lsi<n>-unscaled:<classifier>``; each value also has ``cells``, the cells predicted: those
    of labels with at least ``folds`` cells (a smaller label cannot be split into the folds)."""
    labels = np.asarray(labels).astype(str)
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= folds
    out = {}
    for n, classifiers in ((30, ("logreg", "knn20")), (50, ("logreg",))):
        z = LSIModel(modalities, n_components=n, scale=False).fit(adata).transform(adata)
        for c in classifiers:
            r = supervised_ari(z[keep], labels[keep], c, folds=folds)
            out[f"lsi{n}-unscaled:{c}"] = {**r, "cells": int(keep.sum())}
    return out


def lsi_variants(adata: ad.AnnData, modalities: list[str], labels: np.ndarray,
                 components: tuple[int, ...] = (10, 20, 30, 50),
                 published: tuple[str, ...] = ()) -> dict[str, float]:
    """Best ARI (Louvain sweep, k = 20) of each LSI variant, and of published partitions.

    Keys: ``lsi<n>`` (standardised components, Signac's default; ``lsi30`` is the issue's
    baseline), ``lsi<n>-unscaled``, ``lsi30-binarised``, ``lsi30-cosine`` (:func:`lsi_cosine`),
    ``pca30-lognorm`` (:func:`lognorm_pca`) and ``published:<column>``.
    """
    out: dict[str, float] = {}
    unscaled30 = None  # reused for the cosine variant: one SVD, not two
    for n in components:
        for scale, suffix in ((True, ""), (False, "-unscaled")):
            model = LSIModel(modalities, n_components=n, scale=scale).fit(adata)
            if n == 30 and not scale:
                unscaled30 = model
            out[f"lsi{n}{suffix}"] = _best_ari(model.transform(adata), labels)
    b = binarised(adata, modalities)
    out["lsi30-binarised"] = _best_ari(LSIModel(modalities, n_components=30).fit(b).transform(b),
                                       labels)
    if unscaled30 is None:
        unscaled30 = LSIModel(modalities, n_components=30, scale=False).fit(adata)
    out["lsi30-cosine"] = _best_ari(lsi_cosine(unscaled30, adata), labels)
    out["pca30-lognorm"] = _best_ari(lognorm_pca(adata, modalities), labels)
    for col in published:
        if col not in adata.obs.columns:
            raise ValueError(f"published partition {col!r} is not a column of adata.obs "
                             f"(columns: {list(adata.obs.columns)})")
        out[f"published:{col}"] = ari(labels, adata.obs[col].astype(str).to_numpy())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(d for d in ALL if d != "simulator"))
    p.add_argument("--max-bins", type=int, default=25_000)
    p.add_argument("--sim-cells", type=int, default=1500)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lsi_variants.json"))
    args = p.parse_args(argv)
    root = shared_data()
    command = " ".join(["benchmarks/lsi_variants.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"date": dt.date.today().isoformat(), "command": command,
              "max_bins": args.max_bins, "datasets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        if name != "simulator" and root is None:
            print(f"{name}: ../shared/data not found, skipped", file=sys.stderr)
            continue
        a, labels_key, _ = load_dataset(name, root or Path("."), args.max_bins, args.sim_cells)
        mods = list(a.uns["modalities"])
        t0 = time.perf_counter()
        labels = a.obs[labels_key].astype(str).to_numpy()
        scores = lsi_variants(a, mods, labels, published=PUBLISHED_PARTITIONS.get(name, ()))
        supervised = supervised_references(a, mods, labels)
        result["datasets"][name] = {
            "cells": a.n_obs, "bins": a.n_vars, "labels": labels_key,
            "seconds": round(time.perf_counter() - t0, 1),
            "best_ari": {k: round(v, 4) for k, v in scores.items()},
            "supervised": {k: {s: round(float(v), 4) if s != "cells" else v for s, v in r.items()}
                           for k, r in supervised.items()}}
        print(name, result["datasets"][name]["best_ari"], file=sys.stderr, flush=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
