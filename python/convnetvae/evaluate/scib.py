"""scIB integration metrics (Luecken et al. 2022), implemented once here in numpy/scipy.

Why not the ``scib`` / ``scib-metrics`` packages: ``scib-metrics`` needs JAX (and 0.6 needs
Python 3.12), ``scib`` needs R/kBET and compiled C++ for graph LISI; neither installs cleanly
beside the pinned CPU torch on Python 3.11. The definitions follow ``scib-metrics`` (the maintained
re-implementation of scIB), with the differences listed in ``docs/benchmarks.md``:

batch removal (higher = better mixed)
    ``asw_batch``           per label, ``1 - |silhouette(batch)|`` per cell, mean per label, mean over labels
    ``graph_connectivity``  per label, largest connected component of the kNN subgraph / label size, mean
    ``ilisi``               median graph iLISI (perplexity-calibrated Simpson index on the kNN graph),
                            scaled ``(iLISI - 1) / (n_batches - 1)``
    ``kbet``                kBET acceptance rate per label on diffusion-map neighbourhoods, mean over labels
biology conservation (higher = better separated cell types)
    ``asw_label``           ``(silhouette(label) + 1) / 2``
    ``nmi``                 best NMI over a Louvain resolution sweep
    ``clisi``               median graph cLISI scaled ``(n_labels - cLISI) / (n_labels - 1)``

Aggregates: ``batch`` and ``bio`` are the means of their defined metrics,
``overall = 0.4 * batch + 0.6 * bio``.

Undefined metrics (one batch, one label, every label in a single batch, ...) are reported as
``None`` with a reason in :attr:`ScibResult.reasons`, never as NaN or an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..errors import ConvNetVAEError
from .neighbors import KNNResult, fuzzy_connectivities, knn

BATCH_METRICS: tuple[str, ...] = ("asw_batch", "graph_connectivity", "ilisi", "kbet")
BIO_METRICS: tuple[str, ...] = ("asw_label", "nmi", "clisi")


class Undefined(Exception):
    """Raised inside a metric when it is undefined for the data; the message is the reason."""


def _codes(values: Sequence) -> tuple[np.ndarray, int]:
    cat = pd.Categorical(np.asarray(values))
    return np.asarray(cat.codes, dtype=np.int64), len(cat.categories)


# ----------------------------------------------------------------------------- silhouettes
def silhouette_label(embedding: np.ndarray, labels: Sequence) -> float:
    """ASW (cell type): mean silhouette width of the labels, rescaled to ``[0, 1]``.

    Raises
    ------
    Undefined
        Fewer than two labels, or every cell its own label.
    """
    from sklearn.metrics import silhouette_samples

    codes, n_lab = _codes(labels)
    if n_lab < 2:
        raise Undefined("needs at least two cell-type labels")
    if n_lab >= len(codes):
        raise Undefined("every cell has its own label")
    sil = silhouette_samples(np.asarray(embedding, dtype=np.float64), codes)
    return float((np.mean(sil) + 1.0) / 2.0)


def silhouette_batch(embedding: np.ndarray, labels: Sequence, batches: Sequence) -> float:
    """ASW (batch): per label, ``1 - |silhouette of batch|`` averaged over cells, then labels.

    Labels seen in a single batch (or with one cell per batch) are skipped, as in scIB.

    Raises
    ------
    Undefined
        Only one batch, or no label is present in two or more batches.
    """
    from sklearn.metrics import silhouette_samples

    x = np.asarray(embedding, dtype=np.float64)
    lab, _ = _codes(labels)
    bat, n_bat = _codes(batches)
    if n_bat < 2:
        raise Undefined("needs at least two batches")
    per_label = []
    for g in np.unique(lab):
        m = lab == g
        nb = len(np.unique(bat[m]))
        if nb == 1 or nb == int(m.sum()):
            continue
        sil = silhouette_samples(x[m], bat[m])
        per_label.append(float(np.mean(1.0 - np.abs(sil))))
    if not per_label:
        raise Undefined("no cell-type label is present in two or more batches")
    return float(np.mean(per_label))


# ----------------------------------------------------------------------------- graph metrics
def graph_connectivity(nbrs: KNNResult, labels: Sequence) -> float:
    """Mean over labels of (largest connected component of the label's kNN subgraph) / label size.

    The kNN graph is symmetrised (an edge in either direction connects two cells), as scIB does
    with scanpy's connectivities. Defined for any labelling.
    """
    lab, _ = _codes(labels)
    g = nbrs.distance_graph()
    g = (g + g.T).tocsr()
    scores = []
    for c in np.unique(lab):
        m = np.flatnonzero(lab == c)
        sub = g[m][:, m]
        _, comp = connected_components(sub, directed=False)
        scores.append(np.bincount(comp).max() / len(m))
    return float(np.mean(scores))


def simpson_index(
    distances: np.ndarray, neighbor_codes: np.ndarray, n_codes: int, perplexity: float, tol: float = 1e-5,
    max_iter: int = 50,
) -> np.ndarray:
    """Per-cell Simpson index of neighbour categories under perplexity-calibrated Gaussian weights.

    As Harmony's ``compute_simpson_index`` (and scib-metrics): for each cell, ``beta`` is tuned by
    bisection so that the entropy of ``P_j ~ exp(-beta d_j)`` equals ``log(perplexity)``; the
    Simpson index is ``sum_c (sum_{j: c_j = c} P_j)^2``. Vectorised over cells.

    Parameters
    ----------
    distances
        ``(n_cells, k)`` neighbour distances.
    neighbor_codes
        ``(n_cells, k)`` integer category of each neighbour.
    n_codes
        Number of categories.
    perplexity
        Effective neighbourhood size.
    tol, max_iter
        Bisection tolerance on the entropy and maximum iterations.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` Simpson index in ``[1/n_codes, 1]``; its inverse is the LISI.
    """
    d = np.asarray(distances, dtype=np.float64)
    d = d - d.min(axis=1, keepdims=True)  # entropy and P are invariant to this shift; avoids underflow
    n = d.shape[0]
    log_u = np.log(perplexity)
    beta = np.ones(n)
    bmin = np.full(n, -np.inf)
    bmax = np.full(n, np.inf)

    def entropy(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.exp(-d * b[:, None])
        s = p.sum(axis=1)
        h = np.log(s) + b * (d * p).sum(axis=1) / s
        return h, p / s[:, None]

    h, p = entropy(beta)
    for _ in range(max_iter):
        hdiff = h - log_u
        active = np.abs(hdiff) > tol
        if not active.any():
            break
        up = active & (hdiff > 0)
        down = active & (hdiff <= 0)
        bmin = np.where(up, beta, bmin)
        bmax = np.where(down, beta, bmax)
        new_up = np.where(np.isinf(bmax), beta * 2.0, (beta + bmax) / 2.0)
        new_down = np.where(np.isinf(bmin), beta / 2.0, (beta + bmin) / 2.0)
        beta = np.where(up, new_up, np.where(down, new_down, beta))
        h, p = entropy(beta)
    codes = np.asarray(neighbor_codes)
    simpson = np.zeros(n)
    for c in range(n_codes):
        s = (p * (codes == c)).sum(axis=1)
        simpson += s * s
    return simpson


def lisi(nbrs: KNNResult, values: Sequence, perplexity: float | None = None) -> np.ndarray:
    """Per-cell LISI (inverse Simpson index) of ``values`` over the kNN graph.

    ``perplexity`` defaults to ``k // 3`` (scib uses k = 90 neighbours, perplexity 30).
    """
    codes, n_codes = _codes(values)
    if perplexity is None:
        perplexity = max(1.0, float(np.floor(nbrs.k / 3)))
    simpson = simpson_index(nbrs.distances, codes[nbrs.indices], n_codes, perplexity)
    return 1.0 / simpson


def ilisi(nbrs: KNNResult, batches: Sequence, perplexity: float | None = None) -> float:
    """Graph iLISI: median batch LISI scaled to ``[0, 1]`` by ``(x - 1) / (n_batches - 1)``.

    Raises
    ------
    Undefined
        Only one batch.
    """
    _, n_bat = _codes(batches)
    if n_bat < 2:
        raise Undefined("needs at least two batches")
    return float((np.median(lisi(nbrs, batches, perplexity)) - 1.0) / (n_bat - 1))


def clisi(nbrs: KNNResult, labels: Sequence, perplexity: float | None = None) -> float:
    """Graph cLISI: median label LISI scaled to ``[0, 1]`` by ``(n_labels - x) / (n_labels - 1)``.

    Raises
    ------
    Undefined
        Only one label.
    """
    _, n_lab = _codes(labels)
    if n_lab < 2:
        raise Undefined("needs at least two cell-type labels")
    return float((n_lab - np.median(lisi(nbrs, labels, perplexity))) / (n_lab - 1))


# ----------------------------------------------------------------------------- kBET
def kbet_acceptance(neighbor_batches: np.ndarray, batches: np.ndarray, n_batches: int, alpha: float = 0.05) -> float:
    """kBET acceptance rate: share of cells whose neighbourhood batch counts pass a chi-square
    test against the global batch frequencies at level ``alpha``.

    Parameters
    ----------
    neighbor_batches
        ``(n_cells, k)`` batch code of each neighbour.
    batches
        ``(n_cells,)`` batch codes (``0..n_batches-1``) defining the expected frequencies.
    n_batches
        Number of batches.
    alpha
        Significance level.
    """
    from scipy.stats import chi2

    k = neighbor_batches.shape[1]
    freq = np.bincount(batches, minlength=n_batches) / len(batches)
    observed = np.stack([(neighbor_batches == b).sum(axis=1) for b in range(n_batches)], axis=1)
    expected = freq * k
    ok = expected > 0
    stat = (((observed - expected) ** 2)[:, ok] / expected[ok]).sum(axis=1)
    p = chi2.sf(stat, n_batches - 1)
    return float(np.mean(p >= alpha))


def _diffusion_embedding(conn: sp.csr_matrix, n_comps: int) -> np.ndarray:
    """Multiscale diffusion map of a connectivity graph (as scanpy / scib-metrics)."""
    q = np.asarray(conn.sum(axis=0)).ravel()
    q[q == 0] = 1.0
    qinv = sp.diags(1.0 / q)
    kern = qinv @ conn @ qinv
    z = np.sqrt(np.asarray(kern.sum(axis=0)).ravel())
    z[z == 0] = 1.0
    zinv = sp.diags(1.0 / z)
    trans = (zinv @ kern @ zinv).astype(np.float64)
    n = trans.shape[0]
    n_comps = max(1, min(n_comps, n - 1))
    if n <= 500:
        evals, evecs = np.linalg.eigh(trans.toarray())
        evals, evecs = evals[::-1][:n_comps], evecs[:, ::-1][:, :n_comps]
    else:
        from scipy.sparse.linalg import eigsh

        evals, evecs = eigsh(trans, k=n_comps, which="LM", v0=np.ones(n))
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
    evals = evals + 1e-8
    emb = evecs.copy()
    emb[:, 1:] = (evals[1:] / (1.0 - evals[1:])) * emb[:, 1:]
    return emb


def kbet_per_label(
    conn: sp.csr_matrix, batches: Sequence, labels: Sequence, alpha: float = 0.05, diffusion_n_comps: int = 100
) -> float:
    """kBET per cell-type label (scIB's protocol), mean acceptance rate over labels.

    For each label with at least 10 cells in at least two batches: ``k0 = clip(mean cells per
    batch / 4, 10, 70)`` (and at most the label's size minus one); the label's subgraph of the
    connectivity graph is embedded by a diffusion map and each cell's ``k0`` nearest neighbours in
    that space are tested. Components smaller than ``3 k0`` are dropped; if they hold over 25 % of
    the label's cells its score is 0 (as scIB).

    Raises
    ------
    Undefined
        Only one batch, or no label qualifies.
    """
    from sklearn.neighbors import NearestNeighbors

    bat, n_bat = _codes(batches)
    lab, _ = _codes(labels)
    if n_bat < 2:
        raise Undefined("needs at least two batches")
    conn = sp.csr_matrix(conn)
    scores = []
    for c in np.unique(lab):
        m = np.flatnonzero(lab == c)
        b_sub = bat[m]
        if len(m) < 10 or len(np.unique(b_sub)) < 2:
            continue
        k0 = int(min(70, max(10, np.floor(np.mean(np.unique(b_sub, return_counts=True)[1]) / 4))))
        sub = conn[m][:, m]
        n_comp, comp = connected_components(sub, connection="strong")
        if n_comp > 1:
            sizes = np.bincount(comp)
            keep = np.isin(comp, np.flatnonzero(sizes >= 3 * k0))
            if keep.mean() < 0.75:
                scores.append(0.0)
                continue
            idx = np.flatnonzero(keep)
            sub = sub[idx][:, idx]
            b_sub = b_sub[idx]
        k = min(k0, sub.shape[0] - 1)
        emb = _diffusion_embedding(sub, diffusion_n_comps)
        _, nn_idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
        nn_idx = nn_idx[:, 1:]
        b_codes, b_n = _codes(b_sub)
        scores.append(kbet_acceptance(b_codes[nn_idx], b_codes, b_n, alpha))
    if not scores:
        raise Undefined("no cell-type label has at least 10 cells in two or more batches")
    return float(np.mean(scores))


def nmi_best_louvain(
    embedding: np.ndarray, labels: Sequence, resolutions: Sequence[float] | None = None, seed: int = 0,
    graph: sp.spmatrix | None = None, n_starts: int = 5,
) -> float:
    """Best NMI between labels and Louvain clusters over a resolution sweep (scIB's 'optimal
    resolution' NMI).

    Raises
    ------
    Undefined
        Only one label.
    """
    from .clustering import DEFAULT_RESOLUTIONS, clustering_sweep

    _, n_lab = _codes(labels)
    if n_lab < 2:
        raise Undefined("needs at least two cell-type labels")
    sweep = clustering_sweep(
        embedding, labels, resolutions=resolutions or DEFAULT_RESOLUTIONS, seed=seed, graph=graph, n_starts=n_starts
    )
    return float(sweep["nmi"].max())


# ----------------------------------------------------------------------------- all together
def _batch_guard(single_batch: bool) -> None:
    if single_batch:
        raise Undefined("batch-removal metric; only one batch")
    return None


@dataclass
class ScibResult:
    """scIB metric values (``None`` when undefined) and the reason for each undefined one."""

    scores: dict[str, float | None]
    reasons: dict[str, str] = field(default_factory=dict)

    def _mean(self, names: Sequence[str]) -> float | None:
        vals = [self.scores[n] for n in names if self.scores.get(n) is not None]
        return float(np.mean(vals)) if vals else None

    @property
    def batch(self) -> float | None:
        """Mean of the defined batch-removal metrics (``None`` if none is defined)."""
        return self._mean(BATCH_METRICS)

    @property
    def bio(self) -> float | None:
        """Mean of the defined biology-conservation metrics."""
        return self._mean(BIO_METRICS)

    @property
    def overall(self) -> float | None:
        """``0.4 * batch + 0.6 * bio``; ``None`` when either part is undefined."""
        if self.batch is None or self.bio is None:
            return None
        return 0.4 * self.batch + 0.6 * self.bio

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: every metric, ``batch``, ``bio``, ``overall`` and ``undefined`` (reasons joined)."""
        out: dict[str, Any] = dict(self.scores)
        out["batch"] = self.batch
        out["bio"] = self.bio
        out["overall"] = self.overall
        reasons = dict(self.reasons)
        if self.overall is None:
            reasons.setdefault("overall", "batch or biology score undefined")
        out["undefined"] = "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
        return out


def scib_metrics(
    embedding: np.ndarray,
    labels: Sequence,
    batches: Sequence | None = None,
    k_graph: int = 15,
    k_lisi: int = 90,
    k_kbet: int = 50,
    seed: int = 0,
    nmi_resolutions: Sequence[float] | None = None,
) -> ScibResult:
    """Compute the seven scIB metrics the paper reports on one embedding.

    Parameters
    ----------
    embedding
        ``(n_cells, n_dims)`` embedding (latent means).
    labels
        Cell-type label per cell.
    batches
        Batch per cell, or ``None`` (batch metrics then undefined).
    k_graph, k_lisi, k_kbet
        Neighbours for graph connectivity / NMI clustering, LISI, and the kBET connectivity
        graph (scIB's 15, 90, 50), each capped at ``n_cells - 1``.
    seed
        Seed of the Louvain starts used for NMI.
    nmi_resolutions
        Resolution grid for NMI (default 0.1..2.0).

    Returns
    -------
    ScibResult
    """
    x = np.asarray(embedding, dtype=np.float64)
    n = x.shape[0]
    labels = np.asarray(labels)
    if labels.shape[0] != n:
        raise ConvNetVAEError(f"labels has {labels.shape[0]} entries but the embedding has {n} cells")
    if pd.isna(pd.Series(labels)).any():
        raise ConvNetVAEError("labels contain missing values (NaN); drop those cells first")
    if batches is None:
        batches = np.zeros(n, dtype=np.int64)
    batches = np.asarray(batches)
    if batches.shape[0] != n:
        raise ConvNetVAEError(f"batches has {batches.shape[0]} entries but the embedding has {n} cells")
    if pd.isna(pd.Series(batches)).any():
        raise ConvNetVAEError("batches contain missing values (NaN); drop those cells first")
    if n < 3:
        raise ConvNetVAEError(f"scIB metrics need at least 3 cells, got {n}")
    k_max = min(max(k_graph, k_lisi, k_kbet), n - 1)
    nbrs = knn(x, k=k_max, seed=seed)
    nb_graph = nbrs.subset_k(min(k_graph, k_max))
    conn_graph = fuzzy_connectivities(nb_graph)
    conn_kbet = fuzzy_connectivities(nbrs.subset_k(min(k_kbet, k_max)))
    nb_lisi = nbrs.subset_k(min(k_lisi, k_max))

    single_batch = len(np.unique(batches)) < 2
    jobs = {
        "asw_batch": lambda: silhouette_batch(x, labels, batches),
        "graph_connectivity": lambda: _batch_guard(single_batch) or graph_connectivity(nb_graph, labels),
        "ilisi": lambda: ilisi(nb_lisi, batches),
        "kbet": lambda: kbet_per_label(conn_kbet, batches, labels),
        "asw_label": lambda: silhouette_label(x, labels),
        "nmi": lambda: nmi_best_louvain(x, labels, nmi_resolutions, seed=seed, graph=conn_graph),
        "clisi": lambda: clisi(nb_lisi, labels),
    }
    scores: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, fn in jobs.items():
        try:
            scores[name] = fn()
        except Undefined as exc:
            scores[name] = None
            reasons[name] = str(exc)
    return ScibResult(scores, reasons)
