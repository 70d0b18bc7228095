"""Clustering sweeps on an embedding: Louvain (best of several random starts) and Leiden.

The paper's protocol (section 2.7): a kNN graph (k = 20) on the latent means, Louvain with five
random starts keeping the partition of best modularity, over a grid of resolutions; at each
resolution the number of clusters and the ARI / NMI against published labels.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .neighbors import fuzzy_connectivities, knn

#: the default resolution grid (0.1, 0.2, ..., 2.0)
DEFAULT_RESOLUTIONS: tuple[float, ...] = tuple(np.round(np.arange(0.1, 2.0001, 0.1), 2).tolist())


def _to_igraph(graph: sp.spmatrix):
    import igraph as ig

    g = sp.triu(sp.csr_matrix(graph), k=1).tocoo()
    ig_graph = ig.Graph(n=graph.shape[0], edges=np.column_stack([g.row, g.col]).tolist(), directed=False)
    ig_graph.es["weight"] = g.data.astype(float).tolist()
    return ig_graph


def louvain(
    graph: sp.spmatrix | object, resolution: float = 1.0, n_starts: int = 5, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Louvain communities, best modularity over ``n_starts`` random starts.

    Parameters
    ----------
    graph
        Symmetric sparse weighted adjacency (e.g. :func:`fuzzy_connectivities`) or an
        undirected ``igraph.Graph`` with a ``weight`` edge attribute.
    resolution
        Resolution (higher gives more clusters).
    n_starts
        Random starts; start ``i`` seeds igraph's random generator with ``seed + i``.
    seed
        Base seed.

    Returns
    -------
    labels, modularity
        Integer cluster labels (``0..c-1``) and the best modularity.
    """
    import igraph as ig

    if n_starts < 1:
        raise ConvNetVAEError(f"n_starts must be at least 1, got {n_starts}")
    g = graph if isinstance(graph, ig.Graph) else _to_igraph(graph)
    best: tuple[np.ndarray, float] | None = None
    try:
        for start in range(n_starts):
            ig.set_random_number_generator(random.Random(seed + start))
            part = g.community_multilevel(weights="weight", resolution=resolution)
            q = g.modularity(part.membership, weights="weight", resolution=resolution)
            if best is None or q > best[1] + 1e-12:
                best = (np.asarray(part.membership, dtype=np.int64), float(q))
    finally:
        ig.set_random_number_generator(random)
    assert best is not None
    return best


def leiden(
    graph: sp.spmatrix | object, resolution: float = 1.0, n_starts: int = 5, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Leiden communities (RB-configuration quality, i.e. modularity with a resolution).

    Parameters and returns as :func:`louvain`; each start uses ``leidenalg`` with seed ``seed + i``.
    """
    import igraph as ig
    import leidenalg

    if n_starts < 1:
        raise ConvNetVAEError(f"n_starts must be at least 1, got {n_starts}")
    g = graph if isinstance(graph, ig.Graph) else _to_igraph(graph)
    best: tuple[np.ndarray, float] | None = None
    for start in range(n_starts):
        part = leidenalg.find_partition(
            g,
            leidenalg.RBConfigurationVertexPartition,
            weights="weight",
            resolution_parameter=resolution,
            seed=seed + start,
        )
        q = g.modularity(part.membership, weights="weight", resolution=resolution)
        if best is None or q > best[1] + 1e-12:
            best = (np.asarray(part.membership, dtype=np.int64), float(q))
    assert best is not None
    return best


def ari(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Adjusted Rand index (scikit-learn)."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(labels_true), np.asarray(labels_pred)))


def nmi(labels_true: Sequence, labels_pred: Sequence) -> float:
    """Normalised mutual information, arithmetic normalisation (scikit-learn, as scIB)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(labels_true), np.asarray(labels_pred)))


def clustering_sweep(
    embedding: np.ndarray,
    labels: Sequence | None = None,
    resolutions: Iterable[float] = DEFAULT_RESOLUTIONS,
    k: int = 20,
    n_starts: int = 5,
    methods: Sequence[str] = ("louvain",),
    seed: int = 0,
    graph: sp.spmatrix | None = None,
) -> pd.DataFrame:
    """Cluster an embedding over a resolution grid and score each partition against labels.

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)`` latent means (or any embedding).
    labels
        Reference labels per cell (e.g. ``adata.obs["cell_type"]``), or ``None`` to report cluster
        counts only. Missing labels (NaN) are not allowed: subset the cells first.
    resolutions
        Resolution grid (default 0.1 to 2.0 by 0.1).
    k
        Neighbours of the kNN graph (the paper uses 20).
    n_starts
        Random starts per resolution; the best-modularity partition is kept.
    methods
        Any of ``"louvain"``, ``"leiden"``.
    seed
        Base random seed: the same seed gives the same table.
    graph
        A precomputed symmetric connectivity graph (skips the kNN step).

    Returns
    -------
    pandas.DataFrame
        One row per (method, resolution): ``method, resolution, n_clusters, modularity, ari, nmi``
        (``ari``/``nmi`` are absent when ``labels`` is ``None``, and ``None`` (undefined) when all
        cells share one label).
    """
    x = np.asarray(embedding)
    n = x.shape[0]
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape[0] != n:
            raise ConvNetVAEError(f"labels has {lab.shape[0]} entries but the embedding has {n} cells")
        if pd.isna(pd.Series(lab)).any():
            raise ConvNetVAEError("labels contain missing values (NaN); drop those cells before the sweep")
    resolutions = [float(r) for r in resolutions]
    if not resolutions or any(r <= 0 for r in resolutions):
        raise ConvNetVAEError(f"resolutions must be a non-empty list of positive numbers, got {resolutions}")
    unknown = set(methods) - {"louvain", "leiden"}
    if unknown:
        raise ConvNetVAEError(f"unknown clustering method(s) {sorted(unknown)}; use 'louvain' and/or 'leiden'")
    single_label = labels is not None and len(pd.unique(pd.Series(lab))) < 2
    if graph is None:
        graph = fuzzy_connectivities(knn(x, k=k, seed=seed))
    g = _to_igraph(graph)
    rows = []
    for method in methods:
        fn = louvain if method == "louvain" else leiden
        for r in resolutions:
            memb, q = fn(g, resolution=r, n_starts=n_starts, seed=seed)
            row = {"method": method, "resolution": r, "n_clusters": int(memb.max() + 1), "modularity": q}
            if labels is not None:
                # ARI/NMI against a single label are meaningless: reported as undefined (None)
                row["ari"] = None if single_label else ari(lab, memb)
                row["nmi"] = None if single_label else nmi(lab, memb)
            rows.append(row)
    return pd.DataFrame(rows)
