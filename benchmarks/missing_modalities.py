"""Missing modalities: bi-modal and tri-modal cells trained together, ATAC imputed.

Mirrors the paper's nano-CUT&Tag data: about 12,000 cells with H3K27ac + H3K27me3, of which about
4,400 also have ATAC. One model is trained on all cells (the encoder sees the masked input plus
the mask; the loss covers observed modalities only). Reported, as JSON:

* ARI of the best Louvain partition of the joint embedding (one partition of all cells), scored
  separately in the bi-modal and the tri-modal cells (acceptance: >= 0.8 in both);
* mixing of bi-modal and tri-modal cells within each cell type: among a cell's k nearest
  neighbours of the same type, the fraction from the other group divided by the fraction
  expected under perfect mixing (1 = mixed, 0 = separated), averaged over cells;
* imputation: ATAC of held-out tri-modal cells is hidden (mask False, counts removed) before
  training; ``get_normalized_signal(modality="ATAC")`` is correlated (Pearson, per cell, over
  bins) with their true ATAC counts, next to two references computed from the training tri-modal
  cells: the average ATAC profile of all of them (a label-free baseline the imputation must beat)
  and the average profile of the cell's own type (an oracle that knows the labels).

    .venv/bin/python benchmarks/missing_modalities.py                 # full size (~12,000 cells)
    .venv/bin/python benchmarks/missing_modalities.py --n-cells 1500 --n-bins 2000 --epochs 30

The test suite runs a small version of :func:`run` (tests/python/test_missing_modalities.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

import convnetvae as cv  # noqa: E402
from convnetvae.evaluate import ari, clustering_sweep, fuzzy_connectivities, knn, louvain  # noqa: E402,E501
from convnetvae.io_utils import write_json  # noqa: E402

MODALITIES = ("ATAC", "H3K27ac", "H3K27me3")


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return (a * b).sum(1) / np.where(den > 0, den, np.nan)


def group_mixing(z: np.ndarray, labels: np.ndarray, group: np.ndarray, k: int = 15) -> float:
    """Mixing of two groups within each label (1 = as mixed as chance, 0 = separated)."""
    scores = []
    for t in np.unique(labels):
        idx = np.flatnonzero(labels == t)
        g = group[idx]
        if len(idx) <= k + 1 or g.all() or not g.any():
            continue
        nb = knn(z[idx], k=k).indices
        other = (g[nb] != g[:, None]).mean(1)
        # expected fraction of the other group among neighbours under perfect mixing
        n1 = g.sum()
        n0 = len(g) - n1
        expected = np.where(g, n0 / (len(g) - 1), n1 / (len(g) - 1))
        scores.append(np.minimum(other / expected, 1.0))
    return float(np.mean(np.concatenate(scores))) if scores else float("nan")


def make_data(n_cells: int, n_bins: int, n_tri: int, n_holdout: int, seed: int, **sim_kw):
    """Simulated tri-modal data with ATAC missing in all but ``n_tri`` cells, and ``n_holdout``
    of the tri-modal cells' ATAC hidden; returns ``(adata, holdout_rows, true_atac)``."""
    adata = cv.simulate(n_cells=n_cells, n_bins=n_bins, modalities=MODALITIES,
                        missing={"ATAC": 1.0 - n_tri / n_cells}, seed=seed, **sim_kw)
    mask = adata.obsm["modality_mask"].copy()
    tri = np.flatnonzero(mask[:, 0])
    rng = np.random.default_rng(seed + 101)
    hold = np.sort(rng.choice(tri, size=min(n_holdout, len(tri) // 4), replace=False))
    atac = adata.layers["ATAC"].tocsr()
    true_atac = atac[hold].toarray().astype(np.float64)
    keep = np.ones(adata.n_obs, dtype=bool)
    keep[hold] = False
    # the model never sees the hidden counts
    atac = (sp.diags(keep.astype(np.float64)) @ atac).astype(atac.dtype)
    atac.eliminate_zeros()
    adata.layers["ATAC"] = atac.tocsr()
    mask[hold, 0] = False
    adata.obsm["modality_mask"] = mask
    adata.obs["n_counts_ATAC"] = np.asarray(atac.sum(1)).ravel()
    adata.obs["group"] = np.where(mask[:, 0], "tri-modal", "bi-modal")
    adata.obs.loc[adata.obs_names[hold], "group"] = "tri-modal (ATAC held out)"
    return adata, hold, true_atac


def run(n_cells: int = 12_000, n_bins: int = 25_000, n_tri: int = 4_400, n_holdout: int = 400,
        epochs: int = 100, architecture: str = "conv-k31s31", seed: int = 0,
        batch_size: int = 128, patience: int = 10, progress: bool = False,
        sim_kwargs: dict | None = None, n_threads: int | None = None) -> dict:
    """Train one model on bi- and tri-modal cells together and score it (see module docstring).

    Returns
    -------
    A JSON-serialisable dict of settings, timings and metrics.
    """
    t0 = time.perf_counter()
    adata, hold, true_atac = make_data(n_cells, n_bins, n_tri, n_holdout, seed,
                                       **(sim_kwargs or {}))
    t_sim = time.perf_counter() - t0
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(MODALITIES), batch_key="batch",
                                labels_key="cell_type")
    model = cv.ConvNetVAE(adata, architecture=architecture, seed=seed)
    t1 = time.perf_counter()
    model.train(max_epochs=epochs, batch_size=batch_size, patience=patience, progress=progress,
                seed=seed, n_threads=n_threads)
    t_train = time.perf_counter() - t1

    z = model.get_latent_representation()
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    has_atac = adata.obsm["modality_mask"][:, 0].copy()
    has_atac[hold] = True  # the held-out cells are tri-modal cells; their ATAC is just hidden
    sweep = clustering_sweep(z, labels, resolutions=np.round(np.arange(0.1, 1.55, 0.1), 2),
                             n_starts=3, seed=seed)
    best = sweep.loc[sweep["ari"].astype(float).idxmax()]
    # the same partition (same graph, resolution, starts and seed), to score each group
    memb, _ = louvain(fuzzy_connectivities(knn(z, k=20, seed=seed)),
                      resolution=float(best["resolution"]), n_starts=3, seed=seed)

    # imputation of the held-out cells' ATAC
    imputed = model.get_normalized_signal(modality="ATAC")[hold].astype(np.float64)
    train_tri = np.flatnonzero(adata.obsm["modality_mask"][:, 0])
    atac = adata.layers["ATAC"].tocsr()[train_tri].astype(np.float64)
    lib = np.asarray(atac.sum(1)).ravel()
    norm = sp.diags(1.0 / lib) @ atac
    avg_all = np.asarray(norm.mean(0)).ravel()
    tri_labels = labels[train_tri]
    per_type = {t: np.asarray(norm[np.flatnonzero(tri_labels == t)].mean(0)).ravel()
                for t in np.unique(tri_labels)}
    oracle = np.stack([per_type.get(t, avg_all) for t in labels[hold]])
    r_imp = row_pearson(imputed, true_atac)
    r_avg = row_pearson(np.broadcast_to(avg_all, true_atac.shape), true_atac)
    r_orc = row_pearson(oracle, true_atac)

    res = {
        "benchmark": "missing_modalities",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": {"n_cells": n_cells, "n_bins": n_bins, "n_tri_modal": int(has_atac.sum()),
                     "n_bi_modal": int((~has_atac).sum()), "n_holdout": int(len(hold)),
                     "architecture": architecture, "max_epochs": epochs, "seed": seed,
                     "batch_size": batch_size, "patience": patience, "threads": n_threads,
                     "simulate": {k: v for k, v in adata.uns["simulation"].items()
                                  if k != "missing"}},
        "epochs_trained": len(model.history),
        "seconds": {"simulate": t_sim, "train": t_train,
                    "per_epoch": t_train / max(1, len(model.history))},
        "best_resolution": float(best["resolution"]),
        "ari_all": float(best["ari"]),
        "ari_bi_modal": ari(labels[~has_atac], memb[~has_atac]),
        "ari_tri_modal": ari(labels[has_atac], memb[has_atac]),
        "mixing_bi_tri_within_type": group_mixing(z, labels, has_atac),
        "imputation_pearson": {"imputed": float(np.nanmean(r_imp)),
                               "average_profile_baseline": float(np.nanmean(r_avg)),
                               "per_type_average_oracle": float(np.nanmean(r_orc)),
                               "fraction_cells_imputed_beats_baseline":
                                   float(np.nanmean(r_imp > r_avg))},
    }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-cells", type=int, default=12_000)
    p.add_argument("--n-bins", type=int, default=25_000)
    p.add_argument("--n-tri", type=int, default=4_400)
    p.add_argument("--n-holdout", type=int, default=400)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--architecture", default="conv-k31s31")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" /
                                         "missing_modalities.json"))
    p.add_argument("--progress", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args(argv)
    res = run(a.n_cells, a.n_bins, a.n_tri, a.n_holdout, a.epochs, a.architecture, a.seed,
              patience=a.patience, progress=a.progress, n_threads=a.threads)
    write_json(a.out, res)
    imp = res["imputation_pearson"]
    print(f"ARI bi-modal {res['ari_bi_modal']:.3f}, tri-modal {res['ari_tri_modal']:.3f}; "
          f"mixing {res['mixing_bi_tri_within_type']:.2f}; imputed ATAC r={imp['imputed']:.3f} vs "
          f"average profile {imp['average_profile_baseline']:.3f} (oracle per-type "
          f"{imp['per_type_average_oracle']:.3f}); {res['epochs_trained']} epochs, "
          f"{res['seconds']['train']:.0f} s -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
