"""The main job on built-in simulated data: simulate, train, embed, cluster, plot.

``make demo`` and ``convnetvae demo --out DIR`` run :func:`run_demo`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .io_utils import atomic_path, write_json
from .model.registry import DEFAULT_ARCHITECTURE

MODALITIES = ("ATAC", "H3K27ac", "H3K27me3")


def run_demo(out: str | os.PathLike = "demo_output", n_cells: int = 3000, n_bins: int = 10_000,
             epochs: int = 30, architecture: str = DEFAULT_ARCHITECTURE, seed: int = 0,
             progress: bool = True) -> dict:
    """Simulate a tri-modal, two-batch dataset, train ConvNet-VAE, embed, cluster and plot.

    Writes ``embedding.csv`` (cells x 30), ``umap_cell_type.png``, ``umap_batch.png``,
    ``loss.png``, ``sweep.csv`` (Louvain and Leiden over a resolution grid with ARI/NMI),
    ``metrics.json`` and the trained model under ``model/``.

    Returns
    -------
    The summary written to ``metrics.json``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    from .api import ConvNetVAE
    from .data import simulate
    from .evaluate.clustering import clustering_sweep
    from .evaluate.embedding import embed_and_cluster

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    adata = simulate(n_cells=n_cells, n_bins=n_bins, modalities=MODALITIES, seed=seed)
    t_sim = time.perf_counter() - t0
    ConvNetVAE.setup_anndata(adata, modalities=list(MODALITIES), batch_key="batch",
                             labels_key="cell_type")
    model = ConvNetVAE(adata, architecture=architecture, seed=seed)
    t1 = time.perf_counter()
    model.train(max_epochs=epochs, progress=progress, seed=seed)
    t_train = time.perf_counter() - t1
    z = model.get_latent_representation()

    sweep = clustering_sweep(z, adata.obs["cell_type"].to_numpy(),
                             resolutions=[0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0],
                             methods=("louvain", "leiden"), seed=seed)
    best = sweep.loc[sweep["ari"].astype(float).idxmax()]
    # the workbench's pipeline at the best resolution: clusters, UMAP, agreement with the batch
    res = embed_and_cluster(adata, model, resolution=float(best.resolution),
                            method=str(best.method), n_neighbors=20, layout="umap",
                            layout_neighbors=20, labels_key="batch", seed=seed)
    for key in ("cell_type", "batch"):
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        sc.pl.embedding(adata, basis=res.basis, color=key, ax=ax, show=False, frameon=False,
                        title=f"ConvNet-VAE ({architecture}) by {key.replace('_', ' ')}")
        with atomic_path(outdir / f"umap_{key}.png") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        plt.close(fig)
    hist = model.history
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(hist.epoch, hist.train_loss, label="train")
    if "validation_loss" in hist:
        ax.plot(hist.epoch, hist.validation_loss, label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO per cell")
    ax.legend()
    with atomic_path(outdir / "loss.png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)

    emb = pd.DataFrame(z, index=adata.obs_names,
                       columns=[f"convnetvae_{i + 1}" for i in range(z.shape[1])])
    emb.insert(0, "batch", adata.obs["batch"].astype(str).to_numpy())
    emb.insert(0, "cell_type", adata.obs["cell_type"].astype(str).to_numpy())
    with atomic_path(outdir / "embedding.csv") as tmp:
        emb.to_csv(tmp)
    with atomic_path(outdir / "sweep.csv") as tmp:
        sweep.to_csv(tmp, index=False)
    model.save(outdir / "model", overwrite=True)
    summary = {
        "n_cells": int(adata.n_obs), "n_bins": int(adata.n_vars),
        "n_modalities": len(MODALITIES), "modalities": list(MODALITIES),
        "n_batches": int(adata.obs["batch"].nunique()),
        "n_cell_types": int(adata.obs["cell_type"].nunique()),
        "architecture": architecture, "n_parameters": model.n_parameters,
        "epochs_trained": int(len(hist)), "max_epochs": epochs,
        "simulate_seconds": round(t_sim, 2), "train_seconds": round(t_train, 2),
        "best_ari": float(best["ari"]), "best_nmi": float(best["nmi"]),
        "best_method": str(best["method"]), "best_resolution": float(best["resolution"]),
        "n_clusters_at_best": int(best["n_clusters"]),
        "batch_ari_at_best": float(res.scores["ARI"]),
        "final_train_loss": float(hist.train_loss.iloc[-1]),
        "seed": seed, "total_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(outdir / "metrics.json", summary)
    return summary
