"""benchmarks/heldout_gap.py: do held-out cells land among the training cells?"""

from __future__ import annotations

import json

import numpy as np
import pytest

import convnetvae as cv
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("heldout_gap")


def test_gap_metrics_tell_a_shared_cloud_from_a_compressed_and_a_separate_one(bench):
    rng = np.random.default_rng(0)
    z_train, z_same = rng.normal(size=(600, 5)), rng.normal(size=(300, 5))
    same = bench.gap_metrics(z_train, z_same)
    assert 0.85 <= same["heldout_mixing"] <= 1.15
    assert same["spread_ratio"] == pytest.approx(1.0, abs=0.1)
    # unseen cells drawn towards the centre: they are each other's neighbours
    shrunk = bench.gap_metrics(z_train, 0.2 * z_same)
    assert shrunk["heldout_mixing"] < 0.5 * same["heldout_mixing"]
    assert shrunk["spread_ratio"] == pytest.approx(0.2 * same["spread_ratio"], rel=1e-9)
    # a cloud of their own
    assert bench.gap_metrics(z_train, z_same + 20.0)["heldout_mixing"] == 0.0


def test_gap_metrics_reject_mismatched_embeddings(bench):
    with pytest.raises(ValueError, match=r"same dimensions, got \(10, 3\) and \(5, 4\)"):
        bench.gap_metrics(np.zeros((10, 3)), np.zeros((5, 4)))


def test_heldout_split_is_seeded_and_sized(bench):
    a, b = bench.heldout_split(90, seed=1), bench.heldout_split(90, seed=1)
    assert a.sum() == 30 and np.array_equal(a, b)
    assert not np.array_equal(a, bench.heldout_split(90, seed=2))
    with pytest.raises(ValueError, match="fraction must be between 0 and 1"):
        bench.heldout_split(90, seed=0, fraction=1.0)
    with pytest.raises(ValueError, match="leaves no cells on one side"):
        bench.heldout_split(1, seed=0)


def test_measure_scores_the_model_and_lsi_on_the_same_split(bench):
    a = cv.simulate(n_cells=240, n_bins=600, modalities=("ATAC",), n_types=4, n_batches=1,
                    library_size=2000, seed=3)
    out = bench.measure(a, ["ATAC"], None, seed=0, model_kwargs={"n_latent": 5},
                        train_kwargs={"max_epochs": 3})
    assert set(out) == {"convnetvae", "lsi"}
    assert out["convnetvae"]["epochs"] == 3
    for res in out.values():
        assert np.isfinite(res["heldout_mixing"]) and res["spread_ratio"] > 0
    # LSI is fitted on the training cells of the same split and projects the held-out ones
    held = bench.heldout_split(a.n_obs, seed=0)
    lsi = bench.LSIModel(["ATAC"], seed=0).fit(a[~held].copy())
    want = bench.gap_metrics(lsi.transform(a[~held].copy()), lsi.transform(a[held].copy()))
    assert out["lsi"]["heldout_mixing"] == pytest.approx(want["heldout_mixing"])
    assert out["lsi"]["spread_ratio"] == pytest.approx(want["spread_ratio"])


def test_main_writes_the_json_and_names_bad_arguments(bench, tmp_path):
    out = tmp_path / "gap.json"
    assert bench.main(["--datasets", "simulator", "--max-bins", "400", "--sim-cells", "150",
                       "--train-kwargs", '{"max_epochs": 2}', "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sim = res["datasets"]["simulator"]
    assert sim["cells"] == 150 and sim["bins"] == 400 and sim["batch_key"] == "batch"
    assert set(sim["seeds"]["0"]) == {"convnetvae", "lsi"}
    assert res["train_kwargs"] == {"max_epochs": 2}
    assert res["command"].startswith("benchmarks/heldout_gap.py --datasets simulator")
    with pytest.raises(SystemExit, match="--model-kwargs must be a JSON object"):
        bench.main(["--datasets", "simulator", "--model-kwargs", "[1]", "--out", str(out)])
