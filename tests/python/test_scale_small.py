"""Small versions of benchmarks/scale.py: the sparse data writers, the dense reference and one
bounded run of each storage (the full sizes live in the benchmark)."""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import load_benchmark
from convnetvae.data.backed import H5CSRSource
from convnetvae.model.vae import VAE, ModuleConfig


@pytest.fixture(scope="module")
def scale():
    return load_benchmark("scale")


def test_random_csr_chunk_is_valid_sparse_counts(scale):
    rng = np.random.default_rng(0)
    indptr, indices, data = scale.random_csr_chunk(rng, 400, 5000, nnz=100)
    m = sp.csr_matrix((data, indices, indptr), shape=(400, 5000))
    assert m.has_sorted_indices and m.has_canonical_format
    assert indices.dtype == np.int32 and data.dtype == np.uint8 and (data >= 1).all()
    per_row = np.diff(indptr)
    assert 85 < per_row.mean() < 115 and per_row.min() > 40
    assert indices.max() < 5000
    # positions spread over the whole row
    assert np.bincount(indices // 1000, minlength=5).min() > 0.15 * indices.size


def test_written_h5ad_is_anndata_csr_and_readable_from_disk(scale, tmp_path):
    path = scale.write_random_h5ad(tmp_path / "r.h5ad", n_cells=333, n_bins=700, nnz=30,
                                   seed=1, chunk=100)
    adata = ad.read_h5ad(path)
    assert adata.shape == (333, 700)
    assert list(adata.var.columns[:3]) == ["chrom", "start", "end"]
    assert adata.var["chrom"].nunique() == 20 and set(adata.obs["batch"]) == {"batch0", "batch1"}
    src = H5CSRSource(str(path), list(scale.MODALITIES))
    for j, m in enumerate(scale.MODALITIES):
        layer = adata.layers[m]
        assert sp.issparse(layer) and layer.format == "csr"
        assert 20 < layer.getnnz(axis=1).mean() < 40
        rows = np.array([0, 99, 100, 101, 332])
        np.testing.assert_array_equal(scale.rows_csr(src, j, rows).toarray(),
                                      layer[rows].toarray())


@pytest.mark.parametrize("arch,n_bins", [("conv-k31s31", 992), ("conv-k11s3x2", 720)])
def test_dense_reference_computes_the_same_function(arch, n_bins):
    # chromosome halves are multiples of the total stride, so the chromosome-aware model has the
    # same parameter shapes (used below to show the comparison can fail)
    dense_ref = load_benchmark("dense_reference")
    torch.manual_seed(0)
    vae = VAE(ModuleConfig(n_modalities=3, chrom_lengths=[n_bins // 2, n_bins - n_bins // 2],
                           n_batches=2, architecture=arch, chrom_aware=False))
    dense = dense_ref.DenseConvVAE(3, n_bins, 2, arch)
    dense.load_state_dict(vae.state_dict())
    x = torch.poisson(torch.rand(16, 3, n_bins) * 2)
    b = torch.randint(0, 2, (16,))
    torch.manual_seed(1)
    o1 = vae(x, b)
    torch.manual_seed(1)
    o2 = dense(x, b)  # same dropout masks and noise: the same draws in the same order
    torch.testing.assert_close(o1["reconstruction"], o2["reconstruction"], rtol=1e-5, atol=1e-2)
    torch.testing.assert_close(o1["kl"], o2["kl"])
    # chromosome-aware convolution is a different function (the comparison can fail)
    aware = VAE(ModuleConfig(n_modalities=3, chrom_lengths=[n_bins // 2, n_bins - n_bins // 2],
                             n_batches=2, architecture=arch, chrom_aware=True))
    aware.load_state_dict(vae.state_dict())
    aware.eval()
    dense.eval()
    assert (aware(x, b, sample=False)["reconstruction"] -
            vae.eval()(x, b, sample=False)["reconstruction"]).abs().max() > 1e-2


def _args(**kw) -> argparse.Namespace:
    base = dict(architecture="conv-k11s11", batch_size=32, epochs=2, max_batches=3,
                dense_cells=128, nnz=40, threads=1, block_size=0, no_dense=False, seed=0,
                data_dir=None)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.mark.timeout(300)
def test_small_scale_cases_run_and_match_the_dense_loss_curve(scale, tmp_path, monkeypatch):
    monkeypatch.setitem(scale.CASES, "paper", dict(n_cells=200, n_bins=1200, storage="memory"))
    monkeypatch.setitem(scale.CASES, "cells_1m", dict(n_cells=3000, n_bins=1200,
                                                      storage="disk"))
    paper = scale.run_case("paper", _args(data_dir=str(tmp_path)))
    assert paper["sparse"]["peak_rss_mb"] > 50
    assert len(paper["sparse"]["loss_curve"]) == 2
    # the same weights, shuffles and noise: the same loss curve as the dense reference
    assert paper["loss_curve_max_relative_difference"] < 1e-4
    assert paper["speedup_vs_dense"] > 0
    disk = scale.run_case("cells_1m", _args(data_dir=str(tmp_path), block_size=16))
    assert disk["storage"] == "disk" and disk["file_gb"] > 0
    assert "bounded" in disk["timing"] and "block shuffle" in disk["sparse"]["shuffle"]
    assert disk["sparse"]["seconds_per_epoch"] == pytest.approx(
        disk["sparse"]["seconds_per_minibatch"] * 3000 / 32)
    assert np.isfinite(disk["sparse"]["loss_curve"]).all()
    assert disk["dense_float32_gb"] == pytest.approx(3000 * 3 * 1200 * 4 / 1e9)


def test_embed_bound_counts_the_encoder_multiply_adds(tmp_path):
    bound = load_benchmark("embed_bound")
    # Group 1, one chromosome of 330 bins, no chromosome padding: conv k11 s11 -> 30 windows x 32
    # channels from 3 modalities, then FC 960 -> 128 and the two 128 -> 30 heads
    cfg = ModuleConfig(n_modalities=3, n_batches=1, architecture="conv-k11s11", chrom_lengths=[330])
    module = VAE(cfg).eval()
    want = 30 * 32 * 3 * 11 + 960 * 128 + 2 * 128 * 30
    assert bound.encoder_macs_per_cell(module, 3, 330) == pytest.approx(want)
    assert bound.gemm_macs_per_second(module, repeats=2) > 0
    ref = tmp_path / "ref.json"
    ref.write_text('{"summary": [{"architecture": "conv-k11s11", "dense_embed_cells_per_second": 100.0,'
                   ' "ours_embed_cells_per_second": 90.0}]}')
    out = tmp_path / "bound.json"
    threads = torch.get_num_threads()
    try:
        assert bound.main(["--threads", "1", "--bins", "2000", "--reference", str(ref), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    import json
    row = json.loads(out.read_text())["rows"][0]
    assert row["architecture"] == "conv-k11s11" and row["bound_vs_dense"] == pytest.approx(
        row["bound_cells_per_second"] / 100.0)
