"""k-nearest-neighbour graphs on an embedding (exact for small data, pynndescent for large).

One place builds the kNN graph that the clustering sweep and the scIB metrics share, so both
see the same neighbourhoods. Connectivities follow UMAP's fuzzy simplicial set (the weights
``scanpy.pp.neighbors`` stores), computed here in vectorised numpy so no numba compilation is
paid on import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import ConvNetVAEError

#: above this many cells the approximate pynndescent index is used instead of an exact search
EXACT_MAX_CELLS = 50_000


@dataclass(frozen=True)
class KNNResult:
    """Neighbours of every cell, self excluded.

    Attributes
    ----------
    indices
        ``(n_cells, k)`` int array, nearest first.
    distances
        ``(n_cells, k)`` float array of Euclidean distances, ascending.
    """

    indices: np.ndarray
    distances: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def subset_k(self, k: int) -> KNNResult:
        """The first ``k`` neighbours of each cell (``k`` must not exceed :attr:`k`)."""
        if k > self.k:
            raise ConvNetVAEError(f"k={k} exceeds the {self.k} neighbours computed; recompute with a larger k")
        return KNNResult(self.indices[:, :k], self.distances[:, :k])

    def distance_graph(self) -> sp.csr_matrix:
        """Directed sparse graph with the kNN distances as edge values (self loops excluded)."""
        n, k = self.indices.shape
        rows = np.repeat(np.arange(n), k)
        # tiny offset keeps zero-distance duplicates as stored edges
        data = self.distances.ravel().astype(np.float64) + 1e-12
        return sp.csr_matrix((data, (rows, self.indices.ravel())), shape=(n, n))


def _as_embedding(embedding: np.ndarray, name: str = "embedding") -> np.ndarray:
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise ConvNetVAEError(f"{name} must be a 2-D (cells x dimensions) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConvNetVAEError(f"{name} contains NaN or infinite values; check the model's training loss")
    return x


def knn(embedding: np.ndarray, k: int = 20, method: str = "auto", seed: int = 0) -> KNNResult:
    """Find each cell's ``k`` nearest neighbours (Euclidean), excluding the cell itself.

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)`` array, e.g. latent means.
    k
        Number of neighbours. Must be smaller than the number of cells.
    method
        ``"exact"`` (scikit-learn), ``"pynndescent"`` (approximate) or ``"auto"`` (exact up to
        :data:`EXACT_MAX_CELLS` cells).
    seed
        Random seed of the approximate index.

    Returns
    -------
    KNNResult
    """
    x = _as_embedding(embedding)
    n = x.shape[0]
    if k < 1:
        raise ConvNetVAEError(f"k must be at least 1, got {k}")
    if n <= k:
        raise ConvNetVAEError(
            f"a kNN graph with k={k} needs more than {k} cells, got {n}; use fewer neighbours or more cells"
        )
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_CELLS else "pynndescent"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
        dist, idx = nn.kneighbors(x)
    elif method == "pynndescent":
        import pynndescent

        index = pynndescent.NNDescent(x, n_neighbors=k + 1, random_state=seed, n_jobs=1)
        idx, dist = index.neighbor_graph
    else:
        raise ConvNetVAEError(f"method must be 'auto', 'exact' or 'pynndescent', got {method!r}")
    idx, dist = _drop_self(np.asarray(idx), np.asarray(dist, dtype=np.float64), k)
    return KNNResult(idx, dist)


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each cell from its own ``k + 1`` neighbour list (or its farthest entry when a
    duplicate cell displaced it)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), np.argmax(is_self, axis=1), k)
    keep = np.ones(idx.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k)


def fuzzy_connectivities(nbrs: KNNResult, n_iter: int = 64) -> sp.csr_matrix:
    """UMAP fuzzy-simplicial-set connectivities of a kNN graph (symmetric, weights in (0, 1]).

    For each cell, ``rho`` is the distance to its nearest neighbour and ``sigma`` solves
    ``sum_j exp(-(d_ij - rho) / sigma) = log2(k + 1)`` by bisection (``k + 1`` counts the cell
    itself, as scanpy does); edge weights ``w_ij = exp(-(d_ij - rho_i) / sigma_i)`` are
    symmetrised as ``W + W^T - W * W^T``.

    Parameters
    ----------
    nbrs
        Neighbours from :func:`knn`.
    n_iter
        Bisection steps.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(n_cells, n_cells)`` symmetric weights.
    """
    d = nbrs.distances
    n, k = d.shape
    rho = d[:, 0:1]
    excess = np.maximum(d - rho, 0.0)
    target = np.log2(k + 1)
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    sigma = np.ones(n)
    for _ in range(n_iter):
        total = np.exp(-excess / sigma[:, None]).sum(axis=1)
        too_big = total > target  # sigma too large -> shrink
        hi = np.where(too_big, sigma, hi)
        lo = np.where(too_big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2.0, (lo + hi) / 2.0)
    # UMAP's floor on sigma, relative to the mean neighbour distance
    mean_d = d.mean(axis=1)
    floor = 1e-3 * np.where(rho[:, 0] > 0, mean_d, d.mean())
    sigma = np.maximum(sigma, np.maximum(floor, 1e-12))
    w = np.exp(-excess / sigma[:, None])
    rows = np.repeat(np.arange(n), k)
    g = sp.csr_matrix((w.ravel(), (rows, nbrs.indices.ravel())), shape=(n, n))
    gt = g.T.tocsr()
    out = (g + gt - g.multiply(gt)).tocsr()
    out.eliminate_zeros()
    return out
