"""Embed, cluster and lay out cells with a trained model: the pipeline of the demo and the
workbench's "Embed & cluster" panel.

Writes, into the AnnData:

* ``obsm["X_convnetvae"]``: the latent means;
* ``obs["convnetvae_clusters"]``: Louvain or Leiden clusters (best modularity of 5 starts) of the
  kNN graph of the latent means (the evaluation module's graph, as in the paper);
* ``obsm["X_convnetvae_umap"]`` (scanpy's UMAP, its graph in ``uns["convnetvae_neighbors"]``,
  apart from the model's ``uns["convnetvae"]`` registry) or ``obsm["X_convnetvae_pca"]``.

UMAP reuses the clustering's kNN graph (its first ``layout_neighbors`` neighbours, with UMAP's
fuzzy connectivities from :mod:`convnetvae.evaluate.neighbors`) instead of a second search with
``scanpy.pp.neighbors``, whose first call in a fresh process compiles numba code for a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConvNetVAEError
from .clustering import ari, leiden, louvain, nmi
from .neighbors import KNNResult, fuzzy_connectivities, knn

#: where the pipeline writes its results
LATENT_KEY = "X_convnetvae"
CLUSTER_KEY = "convnetvae_clusters"
NEIGHBORS_KEY = "convnetvae_neighbors"
LAYOUTS = ("umap", "pca")
METHODS = ("louvain", "leiden")


@dataclass
class EmbedResult:
    """What :func:`embed_and_cluster` computed (the arrays are in the AnnData)."""

    n_clusters: int
    method: str
    resolution: float
    basis: str
    scores: dict[str, float] = field(default_factory=dict)


def embed_and_cluster(adata: Any, model: Any, resolution: float = 1.0, method: str = "louvain",
                      n_neighbors: int = 20, layout: str = "umap", layout_neighbors: int = 15,
                      labels_key: str | None = None, seed: int = 0) -> EmbedResult:
    """Latent means -> ``obsm["X_convnetvae"]``, clusters -> ``obs["convnetvae_clusters"]``,
    2D layout -> ``obsm["X_convnetvae_umap"]`` (or ``_pca``); ARI/NMI against labels.

    Parameters
    ----------
    adata
        The cells (the model's training data or cells with the same bins).
    model
        A trained :class:`~convnetvae.ConvNetVAE`.
    resolution, method
        Louvain or Leiden resolution (best modularity of 5 starts).
    n_neighbors
        k of the clustering kNN graph (the paper uses 20).
    layout
        ``"umap"`` (scanpy) or ``"pca"`` (the first two principal components of the latent means).
    layout_neighbors
        Neighbours of UMAP's graph (at most ``n_neighbors``).
    labels_key
        obs column of known labels to score the clusters against (ARI, NMI).
    seed
        Seed of the kNN search, the clustering and UMAP.
    """
    if method not in METHODS:
        raise ConvNetVAEError(f"method must be 'louvain' or 'leiden', got {method!r}")
    if layout not in LAYOUTS:
        raise ConvNetVAEError(f"layout must be 'umap' or 'pca', got {layout!r}")
    if labels_key and labels_key not in adata.obs.columns:
        raise ConvNetVAEError(f"labels_key {labels_key!r} is not a column of adata.obs")
    # small minibatches on a CPU: the cells x modalities x bins input of a large one falls out
    # of cache (25,000 bins: 32 cells take 2.4x less CPU time than 512)
    batch = 32 if getattr(getattr(model, "device", None), "type", "cpu") == "cpu" else 512
    z = np.asarray(model.get_latent_representation(adata, batch_size=batch), dtype=np.float32)
    adata.obsm[LATENT_KEY] = z
    k = int(min(n_neighbors, adata.n_obs - 1))
    nbrs = knn(z, k=k, seed=seed)
    graph = fuzzy_connectivities(nbrs)
    labels, _q = (louvain if method == "louvain" else leiden)(
        graph, resolution=float(resolution), n_starts=5, seed=seed)
    cats = [str(c) for c in range(int(labels.max()) + 1)]
    adata.obs[CLUSTER_KEY] = pd.Categorical(labels.astype(str), categories=cats)
    # scanpy's n_neighbors counts the cell itself
    basis = _layout(adata, z, layout, nbrs.subset_k(max(1, min(layout_neighbors - 1, k))), seed)
    scores: dict[str, float] = {}
    if labels_key:
        truth = adata.obs[labels_key].astype(str).to_numpy()
        scores = {"ARI": ari(truth, labels), "NMI": nmi(truth, labels)}
    return EmbedResult(len(cats), method, float(resolution), basis, scores)


def store_neighbors(adata: Any, nbrs: KNNResult, key: str = NEIGHBORS_KEY, seed: int = 0) -> None:
    """Store a kNN graph where scanpy looks for one (``uns[key]``, ``obsp[key + "_..."]``), as
    ``scanpy.pp.neighbors(..., key_added=key)`` would, so ``sc.tl.umap(neighbors_key=key)`` and
    ``sc.tl.leiden(neighbors_key=key)`` use it without a second neighbour search."""
    adata.obsp[f"{key}_distances"] = nbrs.distance_graph()
    adata.obsp[f"{key}_connectivities"] = fuzzy_connectivities(nbrs)
    adata.uns[key] = {"connectivities_key": f"{key}_connectivities",
                      "distances_key": f"{key}_distances",
                      "params": {"n_neighbors": nbrs.k + 1, "method": "umap", "metric": "euclidean",
                                 "use_rep": LATENT_KEY, "random_state": seed}}


def _layout(adata: Any, z: np.ndarray, layout: str, nbrs: KNNResult, seed: int) -> str:
    """Write the 2D layout; returns its obsm key."""
    if layout == "umap":
        import scanpy as sc

        store_neighbors(adata, nbrs, NEIGHBORS_KEY, seed)
        sc.tl.umap(adata, neighbors_key=NEIGHBORS_KEY, key_added=f"{LATENT_KEY}_umap",
                   random_state=seed)
        return f"{LATENT_KEY}_umap"
    zc = z - z.mean(axis=0)
    _u, _s, vt = np.linalg.svd(zc, full_matrices=False)
    adata.obsm[f"{LATENT_KEY}_pca"] = zc @ vt[:2].T
    return f"{LATENT_KEY}_pca"
