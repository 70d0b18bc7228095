"""Metric functions on tiny hand-made cases with known values (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2

from convnetvae.errors import ConvNetVAEError
from convnetvae.evaluate.clustering import clustering_sweep, louvain
from convnetvae.evaluate.neighbors import KNNResult, fuzzy_connectivities, knn
from convnetvae.evaluate.scib import (
    ScibResult,
    Undefined,
    clisi,
    graph_connectivity,
    ilisi,
    kbet_acceptance,
    kbet_per_label,
    scib_metrics,
    silhouette_batch,
    silhouette_label,
    simpson_index,
)


def blobs(n_per=60, n_types=4, dim=8, sep=8.0, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_types, dim)) * sep
    lab = np.repeat(np.arange(n_types), n_per)
    return centers[lab] + rng.normal(size=(len(lab), dim)), lab


# ------------------------------------------------------------------ kNN graph
def test_knn_excludes_self_and_orders_neighbours():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    nb = knn(x, k=2)
    assert nb.indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    np.testing.assert_allclose(nb.distances, [[1, 3], [1, 2], [2, 3], [4, 6]])


def test_knn_handles_duplicate_points():
    x = np.zeros((5, 2))
    nb = knn(x, k=3)
    assert all(i not in row for i, row in enumerate(nb.indices))


def test_knn_rejects_too_few_cells_and_nan():
    with pytest.raises(ConvNetVAEError, match="needs more than 20 cells"):
        knn(np.zeros((20, 3)), k=20)
    with pytest.raises(ConvNetVAEError, match="NaN"):
        knn(np.array([[0.0], [np.nan], [1.0]]), k=1)


def test_fuzzy_connectivities_symmetric_and_nearest_weight_one():
    x, _ = blobs(n_per=30)
    nb = knn(x, k=10)
    g = fuzzy_connectivities(nb)
    assert abs(g - g.T).max() < 1e-12
    assert g.max() <= 1.0 + 1e-12
    # the nearest neighbour of every cell has weight exactly 1 (UMAP's local connectivity)
    assert np.allclose(g[np.arange(len(x)), nb.indices[:, 0]].A1, 1.0)


def test_knn_path_on_more_than_10000_cells():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10_500, 10)).astype(np.float32)
    nb = knn(x, k=20)
    assert nb.indices.shape == (10_500, 20)
    assert (nb.indices != np.arange(10_500)[:, None]).all()
    g = fuzzy_connectivities(nb)
    assert g.shape == (10_500, 10_500)


# ------------------------------------------------------------------ clustering
def test_perfect_embedding_has_ari_one():
    x, lab = blobs()
    sw = clustering_sweep(x, lab, resolutions=[0.5, 1.0], n_starts=2, methods=("louvain", "leiden"))
    assert set(sw["method"]) == {"louvain", "leiden"}
    assert sw["ari"].max() == pytest.approx(1.0)
    assert sw["nmi"].max() == pytest.approx(1.0)
    assert (sw.loc[sw["ari"] == 1.0, "n_clusters"] == 4).all()


def test_sweep_is_reproducible_with_seed():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))  # no structure: partitions depend on the random starts
    lab = rng.integers(0, 3, 300)
    a = clustering_sweep(x, lab, resolutions=[0.8, 1.5], seed=7)
    b = clustering_sweep(x, lab, resolutions=[0.8, 1.5], seed=7)
    assert a.equals(b)


def test_louvain_keeps_best_modularity_of_starts():
    x, _ = blobs(n_per=40)
    g = fuzzy_connectivities(knn(x, k=10))
    _, q5 = louvain(g, resolution=1.0, n_starts=5, seed=1)
    qs = [louvain(g, resolution=1.0, n_starts=1, seed=1 + s)[1] for s in range(5)]
    assert q5 == pytest.approx(max(qs))


def test_sweep_resolution_increases_clusters():
    x, lab = blobs(n_per=80, n_types=3, sep=1.0)
    sw = clustering_sweep(x, lab, resolutions=[0.1, 3.0], n_starts=1)
    assert sw["n_clusters"].iloc[1] > sw["n_clusters"].iloc[0]


def test_sweep_single_label_reports_undefined():
    x, _ = blobs(n_per=20)
    sw = clustering_sweep(x, np.zeros(len(x)), resolutions=[1.0], n_starts=1)
    assert sw["ari"].isna().all() and sw["nmi"].isna().all()  # None, not a number
    assert sw["ari"].iloc[0] is None


def test_sweep_bad_inputs():
    x, lab = blobs(n_per=10)
    with pytest.raises(ConvNetVAEError, match="labels has 3 entries"):
        clustering_sweep(x, lab[:3])
    with pytest.raises(ConvNetVAEError, match="resolutions"):
        clustering_sweep(x, lab, resolutions=[0.0])
    with pytest.raises(ConvNetVAEError, match="missing values"):
        clustering_sweep(x, np.r_[lab[:-1].astype(object), None])
    with pytest.raises(ConvNetVAEError, match="unknown clustering method"):
        clustering_sweep(x, lab, methods=("kmeans",))


# ------------------------------------------------------------------ silhouettes
def test_asw_batch_hand_computed():
    # one label, batches A={0,1} and B={10,11} on a line
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    # s(0) = 1 - 1/10.5, s(1) = 1 - 1/9.5 (symmetric for the other two)
    s = np.array([1 - 1 / 10.5, 1 - 1 / 9.5])
    expected = float(np.mean(1 - np.abs(s)))
    assert silhouette_batch(x, ["t"] * 4, ["A", "A", "B", "B"]) == pytest.approx(expected)


def test_asw_label_hand_computed():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    s = np.array([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5])
    assert silhouette_label(x, [0, 0, 1, 1]) == pytest.approx((s.mean() + 1) / 2)


def test_asw_batch_skips_single_batch_labels_and_undefined_cases():
    x = np.array([[0.0], [1.0], [10.0], [11.0], [50.0], [51.0]])
    lab = ["t", "t", "t", "t", "u", "u"]
    bat = ["A", "A", "B", "B", "A", "A"]  # label u is in one batch only: skipped
    s = np.array([1 - 1 / 10.5, 1 - 1 / 9.5])
    assert silhouette_batch(x, lab, bat) == pytest.approx(float(np.mean(1 - s)))
    with pytest.raises(Undefined, match="two batches"):
        silhouette_batch(x, lab, ["A"] * 6)
    with pytest.raises(Undefined, match="no cell-type label"):
        silhouette_batch(x, ["a", "a", "b", "b", "c", "c"], ["A", "A", "B", "B", "A", "A"])
    with pytest.raises(Undefined):
        silhouette_label(x, ["a"] * 6)


# ------------------------------------------------------------------ graph metrics
def test_graph_connectivity_hand_made():
    # label 0: cells 0-3, label 1: cells 4-5; kNN (k=1) chains 0-1 and 2-3 but not 1-2
    idx = np.array([[1], [0], [3], [2], [5], [4]])
    nb = KNNResult(idx, np.ones((6, 1)))
    # label 0 splits into two components of 2 -> 0.5 ; label 1 is connected -> 1.0
    assert graph_connectivity(nb, [0, 0, 0, 0, 1, 1]) == pytest.approx(0.75)


def test_simpson_index_equal_distances():
    d = np.ones((1, 4))
    codes = np.array([[0, 0, 1, 1]])
    s = simpson_index(d, codes, 2, perplexity=2)
    assert s[0] == pytest.approx(0.5)  # P uniform: 0.5^2 + 0.5^2
    codes3 = np.array([[0, 1, 2, 2]])
    assert simpson_index(d, codes3, 3, perplexity=2)[0] == pytest.approx(0.25**2 * 2 + 0.5**2)


def test_simpson_index_perplexity_calibration():
    # a far neighbour gets almost no weight at low perplexity
    d = np.array([[0.0, 0.1, 5.0, 5.1]])
    codes = np.array([[0, 0, 1, 1]])
    s = simpson_index(d, codes, 2, perplexity=2)
    assert s[0] > 0.99
    # entropy of the calibrated weights equals log(perplexity)
    s_hi = simpson_index(d, codes, 2, perplexity=3.9)
    assert s_hi[0] < s[0]


def test_lisi_scaling():
    x, lab = blobs(n_per=50, n_types=2, sep=20.0)
    nb = knn(x, k=30)
    # batches alternate within clusters: well mixed -> iLISI near 1 ; separated labels -> cLISI = 1
    bat = np.arange(len(x)) % 2
    assert ilisi(nb, bat) > 0.6
    assert clisi(nb, lab) == pytest.approx(1.0)
    # batch = label: no mixing at all
    assert ilisi(nb, lab) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(Undefined):
        ilisi(nb, np.zeros(len(x)))


def test_kbet_acceptance_hand_computed():
    batches = np.array([0] * 5 + [1] * 5)
    mixed = np.tile([0, 1], (10, 5))  # each neighbourhood 5/5: chi2 = 0 -> accepted
    assert kbet_acceptance(mixed, batches, 2) == 1.0
    pure = np.zeros((10, 10), dtype=int)  # all 10 neighbours from batch 0: chi2 = 10, p = 0.0016
    assert chi2.sf(10.0, 1) < 0.05
    assert kbet_acceptance(pure, batches, 2) == 0.0


def test_kbet_per_label_mixed_vs_separated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    lab = np.zeros(200, dtype=int)
    bat = np.arange(200) % 2
    g = fuzzy_connectivities(knn(x, k=30))
    assert kbet_per_label(g, bat, lab) > 0.7
    x2 = x + bat[:, None] * 20.0
    g2 = fuzzy_connectivities(knn(x2, k=30))
    assert kbet_per_label(g2, bat, lab) < 0.1
    with pytest.raises(Undefined):
        kbet_per_label(g, np.zeros(200), lab)


# ------------------------------------------------------------------ all together
def test_scib_metrics_integrated_beats_batch_separated():
    x, lab = blobs(n_per=80, n_types=3)
    bat = np.arange(len(x)) % 2
    good = scib_metrics(x, lab, bat, nmi_resolutions=[0.5, 1.0])
    bad = scib_metrics(x + bat[:, None] * 30.0, lab, bat, nmi_resolutions=[0.5, 1.0])
    assert good.batch > bad.batch + 0.3
    assert good.overall == pytest.approx(0.4 * good.batch + 0.6 * good.bio)
    assert good.scores["nmi"] == pytest.approx(1.0)
    assert good.reasons == {}
    assert all(v is not None and np.isfinite(v) for v in good.scores.values())


def test_scib_single_batch_and_single_label_are_undefined_not_nan():
    x, lab = blobs(n_per=30, n_types=2)
    r = scib_metrics(x, lab, None, nmi_resolutions=[1.0])
    for m in ("asw_batch", "graph_connectivity", "ilisi", "kbet"):
        assert r.scores[m] is None and "batch" in r.reasons[m]
    assert r.batch is None and r.overall is None and r.bio is not None
    d = r.to_dict()
    assert "overall" in d["undefined"] and d["overall"] is None
    r2 = scib_metrics(x, np.zeros(len(x)), np.arange(len(x)) % 2, nmi_resolutions=[1.0])
    for m in ("asw_label", "nmi", "clisi"):
        assert r2.scores[m] is None and "label" in r2.reasons[m]
    assert r2.bio is None and r2.batch is not None


def test_scib_bad_inputs():
    x, lab = blobs(n_per=5, n_types=2)
    with pytest.raises(ConvNetVAEError, match="labels has"):
        scib_metrics(x, lab[:-1])
    with pytest.raises(ConvNetVAEError, match="batches has"):
        scib_metrics(x, lab, lab[:-1])
    assert isinstance(scib_metrics(x, lab, None, nmi_resolutions=[1.0]), ScibResult)
