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
                        "published:published", "published:shuffled"}
    assert out["published:published"] == 1.0
    assert abs(out["published:shuffled"]) < 0.1
    # the simulated types are well separated: LSI finds them
    assert out["lsi30"] > 0.8


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
    assert res["command"].startswith("benchmarks/lsi_variants.py --datasets simulator")
