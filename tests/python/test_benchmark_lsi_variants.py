"""benchmarks/lsi_variants.py: the LSI family's best ARI on a dataset (docs/benchmarks.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import convnetvae as cv
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("lsi_variants")


def _data():
    a = cv.simulate(n_cells=240, n_bins=600, modalities=("ATAC",), n_types=4, n_batches=1,
                    library_size=2000, seed=3)
    a.obs["published"] = a.obs["cell_type"].astype(str)
    a.obs["shuffled"] = np.random.default_rng(0).permutation(a.obs["published"].to_numpy())
    return a


def test_every_variant_is_scored_and_published_partitions_are_compared_as_given(bench):
    a = _data()
    labels = a.obs["cell_type"].astype(str).to_numpy()
    out = bench.lsi_variants(a, ["ATAC"], labels, components=(10, 30),
                             published=("published", "shuffled"))
    assert set(out) == {"lsi10", "lsi10-unscaled", "lsi30", "lsi30-unscaled", "lsi30-binarised",
                        "lsi30-cosine", "pca30-lognorm", "published:published",
                        "published:shuffled"}
    assert out["published:published"] == 1.0
    assert abs(out["published:shuffled"]) < 0.1
    # the simulated types are well separated: LSI finds them
    assert out["lsi30"] > 0.8
    assert out["lsi30-cosine"] > 0.8 and out["pca30-lognorm"] > 0.8


def test_lsi_cosine_is_the_uncentred_projection_scaled_to_unit_rows(bench):
    a = cv.simulate(n_cells=120, n_bins=300, modalities=("ATAC", "H3K27ac"), n_types=3,
                    n_batches=1, library_size=1500, seed=1)
    mods = ["ATAC", "H3K27ac"]
    model = bench.LSIModel(mods, n_components=5, scale=False).fit(a)
    z = bench.lsi_cosine(model, a)
    assert z.shape == (120, 10)
    np.testing.assert_allclose(np.linalg.norm(z[:, :5], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(z[:, 5:], axis=1), 1.0, rtol=1e-6)
    # the oracle: TF-IDF by hand (log1p(x / depth * idf * 1e4)), projected on the fitted SVD
    # without any centring, the same first component dropped, each row scaled to length 1
    for k, m in enumerate(mods):
        x = sp.csr_matrix(a.layers[m], dtype=np.float64).toarray()
        p = model.parts_[m]
        t = np.log1p(x / x.sum(1, keepdims=True) * p["idf"] * 1e4)
        u = t @ p["svd"].components_.T
        first = 1 if p["dropped_first"] else 0
        want = u[:, first:first + 5]
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(z[:, 5 * k:5 * (k + 1)], want, atol=1e-6)
    with pytest.raises(ValueError, match="scale=False"):
        bench.lsi_cosine(bench.LSIModel(mods, n_components=5).fit(a), a)


def test_lognorm_pca_gives_components_per_modality_and_leaves_the_counts_alone(bench):
    a = cv.simulate(n_cells=120, n_bins=300, modalities=("ATAC", "H3K27ac"), n_types=3,
                    n_batches=1, library_size=1500, seed=1)
    for m in ("ATAC", "H3K27ac"):  # float32, as a loader may give: the layer must not be shared
        a.layers[m] = sp.csr_matrix(a.layers[m], dtype=np.float32)
    before = {m: a.layers[m].copy() for m in ("ATAC", "H3K27ac")}
    z = bench.lognorm_pca(a, ["ATAC", "H3K27ac"], n_components=5)
    assert z.shape == (120, 10)
    # centred PCA: every component has mean zero and the first varies most in its block
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    assert z[:, 0].var() >= z[:, 4].var() and z[:, 5].var() >= z[:, 9].var()
    for m, x in before.items():
        assert (sp.csr_matrix(a.layers[m]) != x).nnz == 0


def test_binarised_copy_has_ones_where_counts_were_positive(bench):
    a = _data()
    b = bench.binarised(a, ["ATAC"])
    x, y = sp.csr_matrix(a.layers["ATAC"]), sp.csr_matrix(b.layers["ATAC"])
    assert x.max() > 1  # there is something to binarise
    assert set(np.unique(y.data)) == {1.0}
    assert ((x > 0) != (y > 0)).nnz == 0
    assert sp.csr_matrix(a.layers["ATAC"]).max() == x.max()  # the input is left alone


def test_a_missing_published_column_is_named(bench):
    a = _data()
    with pytest.raises(ValueError, match="'IDcluster' is not a column of adata.obs"):
        bench.lsi_variants(a, ["ATAC"], a.obs["cell_type"].astype(str).to_numpy(),
                           components=(10,), published=("IDcluster",))


def test_main_writes_the_json(bench, tmp_path):
    out = tmp_path / "lsi.json"
    assert bench.main(["--datasets", "simulator", "--max-bins", "400", "--sim-cells", "150",
                       "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sim = res["datasets"]["simulator"]
    assert sim["cells"] == 150 and sim["bins"] == 400 and sim["labels"] == "cell_type"
    assert "lsi30" in sim["best_ari"] and -1.0 <= sim["best_ari"]["lsi30"] <= 1.0
    assert set(sim["supervised"]["lsi30-unscaled:logreg"]) == {"ari", "accuracy", "cells"}
    assert res["command"].startswith("benchmarks/lsi_variants.py --datasets simulator")


def test_supervised_ari_finds_separable_types_and_nothing_in_shuffled_labels(bench):
    a = _data()
    z = bench.LSIModel(["ATAC"], n_components=10, scale=False).fit(a).transform(a)
    labels = a.obs["cell_type"].astype(str).to_numpy()
    for clf in ("logreg", "knn20"):
        r = bench.supervised_ari(z, labels, clf)
        assert r["ari"] > 0.9 and r["accuracy"] > 0.95
        # labels that carry no information: held-out predictions are at chance
        shuffled = a.obs["shuffled"].astype(str).to_numpy()
        r = bench.supervised_ari(z, shuffled, clf)
        assert abs(r["ari"]) < 0.1 and r["accuracy"] < 0.45
    refs = bench.supervised_references(a, ["ATAC"], labels)
    assert set(refs) == {"lsi30-unscaled:logreg", "lsi30-unscaled:knn20",
                         "lsi50-unscaled:logreg"}
    assert all(r["cells"] == a.n_obs for r in refs.values())
    # a label too small for the folds is left out of the prediction, not an error
    rare = labels.copy()
    rare[:3] = "rare"
    refs = bench.supervised_references(a, ["ATAC"], rare)
    assert all(r["cells"] == a.n_obs - 3 for r in refs.values())


def test_supervised_ari_names_what_cannot_be_split_and_unknown_classifiers(bench):
    z = np.random.default_rng(0).normal(size=(30, 3))
    labels = np.array(["a"] * 27 + ["rare"] * 3)
    with pytest.raises(ValueError, match="'rare' has 3 cells, fewer than folds=5"):
        bench.supervised_ari(z, labels)
    with pytest.raises(ValueError, match="classifier must be 'logreg' or 'knn20', not 'svm'"):
        bench.supervised_ari(z, np.array(["a", "b"] * 15), "svm")
