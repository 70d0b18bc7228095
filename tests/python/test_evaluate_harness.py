"""The benchmark harness, LSI baseline, folds and the `convnetvae benchmark` command end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError
from convnetvae.evaluate.baselines import LSIModel, lsi_embedding, tfidf
from convnetvae.evaluate.clustering import clustering_sweep
from convnetvae.evaluate.crossval import kfold_indices
from convnetvae.evaluate.harness import BenchmarkConfig, parse_model_name, run_benchmark, summary_table
from convnetvae.evaluate.report import FIGURES


@pytest.fixture(scope="module")
def small():
    return cv.simulate(n_cells=150, n_bins=330, modalities=["ATAC", "H3K27me3"], n_types=3, n_batches=2,
                       program_strength=0.8, library_size=2000.0, seed=2)


# ------------------------------------------------------------------ LSI baseline
def test_tfidf_matches_hand_computation():
    x = sp.csr_matrix(np.array([[1, 0, 3], [0, 2, 2]]))
    t = tfidf(x, scale_factor=1.0).toarray()
    # tf = x / rowsum ; idf = n_cells / colsum ; log1p(tf * idf)
    tf = np.array([[1 / 4, 0, 3 / 4], [0, 2 / 4, 2 / 4]])
    idf = np.array([2 / 1, 2 / 2, 2 / 5])
    np.testing.assert_allclose(t, np.log1p(tf * idf))


def test_lsi_drops_depth_component_and_clusters(small):
    res = lsi_embedding(small, ["ATAC", "H3K27me3"], n_components=10)
    assert res.embedding.shape == (150, 20)
    for m in ("ATAC", "H3K27me3"):
        assert res.dropped_first[m] == (abs(res.depth_correlation[m][0]) > 0.75)
    sw = clustering_sweep(res.embedding, small.obs["cell_type"], resolutions=[0.3, 0.6], n_starts=2)
    assert sw["ari"].max() > 0.5


def test_lsi_model_projects_new_cells(small):
    m = LSIModel(["ATAC"], n_components=5).fit(small[:100])
    z_all = m.transform(small)
    np.testing.assert_allclose(m.transform(small[100:]), z_all[100:], atol=1e-8)
    with pytest.raises(ConvNetVAEError, match="not found"):
        LSIModel(["H3K4me3"]).fit(small)


def test_lsi_unscaled_keeps_singular_value_weights(small):
    scaled = LSIModel(["ATAC", "H3K27me3"], n_components=6).fit(small)
    unscaled = LSIModel(["ATAC", "H3K27me3"], n_components=6, scale=False).fit(small)
    zs, zu = scaled.transform(small), unscaled.transform(small)
    np.testing.assert_allclose(zs.std(axis=0), 1.0, atol=1e-6)
    for block in (zu[:, :6], zu[:, 6:]):
        sd = block.std(axis=0)
        assert sd[0] == pytest.approx(1.0) and sd.max() / sd.min() > 1.5  # singular-value weights kept
    # same directions, only reweighted
    np.testing.assert_allclose(np.abs(np.corrcoef(zs[:, 3], zu[:, 3])[0, 1]), 1.0, atol=1e-8)


# ------------------------------------------------------------------ folds
def test_kfold_partitions_cells():
    splits = kfold_indices(103, 5, seed=1)
    vals = np.concatenate([v for _, v in splits])
    assert sorted(vals.tolist()) == list(range(103))
    for tr, va in splits:
        assert not set(tr) & set(va) and len(tr) + len(va) == 103
    assert kfold_indices(103, 5, seed=1)[0][1].tolist() == splits[0][1].tolist()
    assert len(kfold_indices(10, 1)[0][1]) == 0


def test_kfold_too_few_cells_per_fold():
    with pytest.raises(ConvNetVAEError, match="cells per validation fold"):
        kfold_indices(50, 5, min_validation=21)


# ------------------------------------------------------------------ harness
def test_parse_model_names():
    assert parse_model_name("conv-k11s11+shuffle") == ("conv-k11s11", True)
    assert parse_model_name("LSI") == ("lsi", False)
    with pytest.raises(ConvNetVAEError, match="unknown model"):
        parse_model_name("transformer")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"labels_key": "celltype"}, "labels column 'celltype' is not in adata.obs"),
        ({"batch_key": "sample"}, "batch column 'sample' is not in adata.obs"),
        ({"folds": 10}, "cells per validation fold"),
        ({"k": 200, "folds": 1}, "not more than k=200"),
        ({"models": ["conv-foo"]}, "unknown model"),
        ({"modalities": ["H3K4me3"]}, "modality layer 'H3K4me3'"),
    ],
)
def test_harness_bad_input(small, change, match):
    kw = dict(models=["lsi"], labels_key="cell_type", batch_key="batch", folds=2, epochs=1)
    kw.update(change)
    with pytest.raises(ConvNetVAEError, match=match):
        run_benchmark(small, BenchmarkConfig(**kw))


def test_harness_missing_labels_error(small):
    a = small.copy()
    a.obs["lab"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[0, a.obs.columns.get_loc("lab")] = None
    with pytest.raises(ConvNetVAEError, match="missing values"):
        run_benchmark(a, BenchmarkConfig(models=["lsi"], labels_key="lab", folds=2))


def test_harness_batch_only_in_validation_fold_is_an_error(small):
    a = small.copy()
    a.obs["sample"] = "common"
    a.obs.iloc[:1, a.obs.columns.get_loc("sample")] = "tiny"
    with pytest.raises(ConvNetVAEError, match="no cells in the training folds"):
        run_benchmark(a, BenchmarkConfig(models=["lsi"], labels_key="cell_type", batch_key="sample", folds=5,
                                         k=5, seed=0))


def test_harness_single_batch_single_label_reported_undefined(small):
    a = small.copy()
    a.obs["one_batch"] = "b0"
    a.obs["one_label"] = "t0"
    cfg = BenchmarkConfig(models=["lsi"], labels_key="one_label", batch_key="one_batch", folds=2,
                          resolutions=[1.0], n_starts=1, lsi_components=5)
    r = run_benchmark(a, cfg)
    assert len(r.results) == 4
    assert r.results["best_ari"].isna().all()
    assert r.results["overall"].isna().all()
    assert r.results["undefined"].str.contains("only one batch").all()
    assert r.results["undefined"].str.contains("two cell-type labels").all()


def test_harness_lsi_scores_train_and_validation(small):
    cfg = BenchmarkConfig(models=["lsi", "lsi+shuffle", "lsi-unscaled"], labels_key="cell_type",
                          batch_key="batch", folds=2, resolutions=[0.3, 0.6], n_starts=2,
                          lsi_components=10)
    r = run_benchmark(small, cfg)
    assert set(r.results["split"]) == {"train", "validation"}
    assert set(r.results["model"]) == {"lsi", "lsi+shuffle", "lsi-unscaled"}
    assert (r.results["best_ari"] > 0.3).all()
    # LSI does not depend on bin order: the shuffle control changes nothing for it
    a = r.results.set_index(["model", "fold", "split"])["best_ari"]
    np.testing.assert_allclose(a.loc["lsi"].to_numpy(), a.loc["lsi+shuffle"].to_numpy(), atol=0.05)
    s = summary_table(r.results)
    assert {"best_ari_mean", "best_ari_sd", "overall_mean"} <= set(s.columns)


# ------------------------------------------------------------------ CLI end to end
def test_cli_benchmark_end_to_end(small, tmp_path):
    from convnetvae.cli import main

    path = tmp_path / "sim.h5ad"
    small.write_h5ad(path)
    out = tmp_path / "bench"
    code = main(["benchmark", "--data", str(path), "--labels-key", "cell_type", "--batch-key", "batch",
                 "--models", "conv-k11s11,fc-l1,lsi", "--shuffle-control", "--folds", "2", "--epochs", "2",
                 "--n-hidden", "16", "--n-latent", "8", "--n-importance", "5", "--resolutions", "0.5,1.0",
                 "--n-starts", "2", "--k", "10", "--out", str(out), "--quiet"])
    assert code == 0
    res = pd.read_csv(out / "results.csv")
    assert set(res["model"]) == {"conv-k11s11", "fc-l1", "lsi", "conv-k11s11+shuffle"}
    assert len(res) == 4 * 2 * 2
    val = res[(res["split"] == "validation") & res["model"].str.startswith(("conv", "fc"))]
    assert np.isfinite(val["neg_mll"]).all() and (val["neg_mll"] > 0).all()
    assert res.loc[res["model"] == "lsi", "neg_mll"].isna().all()
    assert (res["n_parameters"] > 0).all() and (res["train_time_s"] > 0).all()
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 4 * 2 * 2 * 2
    for f in FIGURES:
        assert (out / "figures" / f).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| conv-k11s11 | validation |" in report and "Bin-shuffle control" in report
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["epochs"] == 2 and meta["data"]["n_cells"] == 150


def test_cli_benchmark_bad_labels_key_exits_2(small, tmp_path, capsys):
    from convnetvae.cli import main

    path = tmp_path / "sim.h5ad"
    small.write_h5ad(path)
    code = main(["benchmark", "--data", str(path), "--labels-key", "nope", "--models", "lsi",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "labels column 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tmp_path / "missing.h5ad"), "--labels-key", "x",
                 "--out", str(tmp_path / "o")]) == 2


def test_mofa_baseline_optional(small):
    pytest.importorskip("mofapy2")
    from convnetvae.evaluate.baselines import mofa_embedding

    z = mofa_embedding(small, ["ATAC", "H3K27me3"], n_factors=5, n_features=100)
    assert z.shape[0] == 150 and 1 <= z.shape[1] <= 5 and np.isfinite(z).all()
