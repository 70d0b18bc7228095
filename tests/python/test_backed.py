"""Training from a backed h5ad (counts read from disk a minibatch at a time) and block shuffling."""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import convnetvae as cv
from convnetvae.data.backed import H5CSRSource, source_from_anndata
from convnetvae.data.loader import InMemorySource, MinibatchLoader, densify
from convnetvae.errors import ConvNetVAEError

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


@pytest.fixture(scope="module")
def h5ad_file(tmp_path_factory):
    adata = cv.simulate(n_cells=220, n_bins=500, n_types=3, n_chromosomes=3, seed=4)
    # a few empty rows (cells with no counts in a modality) exercise zero-length runs
    atac = adata.layers["ATAC"].tolil()
    atac[[3, 4, 100], :] = 0
    adata.layers["ATAC"] = atac.tocsr()
    path = tmp_path_factory.mktemp("backed") / "cells.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_h5_source_rows_equal_in_memory(h5ad_file):
    path, adata = h5ad_file
    disk = H5CSRSource(str(path), MODS)
    mem = InMemorySource([adata.layers[m] for m in MODS])
    assert (disk.n_obs, disk.n_bins, disk.n_modalities) == (220, 500, 3)
    rng = np.random.default_rng(0)
    for rows in (np.array([0]), np.arange(2, 9), np.array([3, 4, 100, 219]),
                 np.sort(rng.choice(220, 64, replace=False))):
        for j in range(3):
            for a, b in zip(disk.csr_rows(j, rows), mem.csr_rows(j, rows)):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(densify(disk, rows), densify(mem, rows))


def test_source_from_backed_anndata_reads_the_file(h5ad_file):
    path, _ = h5ad_file
    backed = ad.read_h5ad(path, backed="r")
    try:
        assert isinstance(source_from_anndata(backed, MODS), H5CSRSource)
        with pytest.raises(ConvNetVAEError, match="H3K4me1"):
            H5CSRSource(str(path), ["H3K4me1"])
    finally:
        backed.file.close()


def test_dense_layer_on_disk_is_a_clear_error(tmp_path):
    adata = ad.AnnData(np.zeros((4, 3), dtype=np.float32),
                       layers={"ATAC": np.ones((4, 3), dtype=np.float32)})
    path = tmp_path / "dense.h5ad"
    adata.write_h5ad(path)
    with pytest.raises(ConvNetVAEError, match="not CSR"):
        H5CSRSource(str(path), ["ATAC"])


def test_backed_training_equals_in_memory(h5ad_file):
    path, _ = h5ad_file
    kw = dict(max_epochs=2, batch_size=64, validation_size=0.1, progress=False, seed=3)
    mem = ad.read_h5ad(path)
    cv.ConvNetVAE.setup_anndata(mem, modalities=MODS, batch_key="batch")
    m1 = cv.ConvNetVAE(mem, architecture="conv-k11s11", seed=1).train(**kw)
    backed = ad.read_h5ad(path, backed="r")
    try:
        cv.ConvNetVAE.setup_anndata(backed, modalities=MODS, batch_key="batch")
        m2 = cv.ConvNetVAE(backed, architecture="conv-k11s11", seed=1)
        assert isinstance(m2._prepare(None)[1], H5CSRSource)
        m2.train(**kw)
        np.testing.assert_allclose(m1.history["train_loss"], m2.history["train_loss"], rtol=1e-6)
        np.testing.assert_allclose(m1.history["validation_loss"], m2.history["validation_loss"],
                                   rtol=1e-6)
        np.testing.assert_allclose(m1.get_latent_representation(),
                                   m2.get_latent_representation(), atol=1e-5)
    finally:
        backed.file.close()


def test_block_shuffle_covers_every_row_once_and_limits_reads(h5ad_file):
    path, adata = h5ad_file
    disk = H5CSRSource(str(path), MODS)
    codes = np.zeros(220, dtype=np.int64)
    idx = np.arange(5, 215)
    loader = MinibatchLoader(disk, codes, None, idx, batch_size=16, shuffle=True,
                             generator=np.random.default_rng(0), block_size=10,
                             buffer_blocks=3)
    calls = []
    orig = disk.csr_rows
    disk.csr_rows = lambda j, rows: calls.append(len(rows)) or orig(j, rows)
    orders = []
    for _ in range(2):
        batches = loader.batches()
        order = np.concatenate(batches)
        orders.append(order)
        np.testing.assert_array_equal(np.sort(order), idx)
        full = np.sort(idx)
        n_buffers = int(np.ceil(np.ceil(len(full) / 10) / 3))
        for rows in batches:
            mb = loader.load(rows)
            np.testing.assert_array_equal(mb.x.numpy(), densify(InMemorySource(
                [adata.layers[m] for m in MODS]), np.sort(rows)))
            # rows of a minibatch come from at most two buffers (one, except at a boundary)
            blocks = np.unique((np.sort(rows) - 5) // 10)
            assert len(blocks) <= 6
        # buffers are read whole (<= 30 rows per read) plus a few straddling minibatches
        assert max(calls) <= 30
        assert len(calls) <= 3 * (n_buffers + len(batches))
        calls.clear()
    assert not np.array_equal(orders[0], orders[1])  # reshuffled each epoch
    # it is not the free shuffle: consecutive rows stay within a buffer of 3 blocks
    first = orders[0][:30]
    assert len(np.unique((first - 5) // 10)) <= 3


def test_block_shuffled_training_from_disk_equals_in_memory(h5ad_file):
    """The on-disk buffer cache is exact: same seed, same blocks -> the same model."""
    import torch

    from convnetvae.model.vae import VAE, ModuleConfig
    from convnetvae.train import TrainConfig, Trainer

    path, adata = h5ad_file
    codes = np.zeros(220, dtype=np.int64)
    cfg = TrainConfig(max_epochs=2, batch_size=32, validation_size=0.1, progress=False,
                      shuffle_block_size=16)
    hist = []
    for src in (H5CSRSource(str(path), MODS), InMemorySource([adata.layers[m] for m in MODS])):
        torch.manual_seed(0)
        vae = VAE(ModuleConfig(n_modalities=3, chrom_lengths=[500], n_batches=1,
                               architecture="conv-k11s11", n_hidden=32, n_latent=8))
        t = Trainer(vae, src, codes, None, cfg)
        assert t.train_loader.block_size == 16
        hist.append([r["train_loss"] for r in t.fit()])
    np.testing.assert_allclose(hist[0], hist[1], rtol=1e-6)
    assert h5py.is_hdf5(path) and sp.issparse(adata.layers["ATAC"])


# ---------------------------------------------------------------------- read_backed: layers on disk
def _is_on_disk(x) -> bool:
    from anndata.abc import CSRDataset

    return isinstance(x, CSRDataset)


def test_read_backed_keeps_layers_on_disk_through_setup_training_and_embedding(h5ad_file):
    path, _ = h5ad_file
    kw = dict(max_epochs=2, batch_size=64, validation_size=0.1, progress=False, seed=3)
    mem = ad.read_h5ad(path)
    with pytest.warns(UserWarning, match="zero counts"):
        cv.ConvNetVAE.setup_anndata(mem, modalities=MODS, batch_key="batch")
    m1 = cv.ConvNetVAE(mem, architecture="conv-k11s11", seed=1).train(**kw)

    lazy = cv.data.read_backed(path)
    assert all(_is_on_disk(lazy.layers[m]) for m in MODS)
    with pytest.warns(UserWarning, match="zero counts"):  # library sizes computed from disk
        cv.ConvNetVAE.setup_anndata(lazy, modalities=MODS, batch_key="batch")
    assert lazy.uns["convnetvae"]["has_missing"] == mem.uns["convnetvae"]["has_missing"] is True
    m2 = cv.ConvNetVAE(lazy, architecture="conv-k11s11", seed=1)
    assert isinstance(m2._prepare(None)[1], H5CSRSource)
    m2.train(**kw)
    assert all(_is_on_disk(lazy.layers[m]) for m in MODS), "a layer was loaded into memory"
    np.testing.assert_allclose(m1.history["train_loss"], m2.history["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(m1.get_latent_representation(), m2.get_latent_representation(),
                               atol=1e-5)
    np.testing.assert_allclose(m1.get_normalized_signal(modality="ATAC"),
                               m2.get_normalized_signal(modality="ATAC"), rtol=1e-4, atol=1e-9)


def test_disk_row_sums_equal_in_memory_sums_across_blocks(h5ad_file):
    from convnetvae.data.backed import iter_csr_chunks
    from convnetvae.data.contract import disk_row_sums

    path, adata = h5ad_file
    lazy = cv.data.read_backed(path)
    for m in MODS:
        want = np.asarray(adata.layers[m].sum(axis=1)).ravel()
        np.testing.assert_array_equal(disk_row_sums(lazy.layers[m], m), want)
        # tiny blocks: every row is covered exactly once, empty rows included
        firsts = [first for first, _, _ in iter_csr_chunks(lazy.layers[m], chunk_rows=7)]
        assert firsts == list(range(0, 220, 7))


@pytest.mark.parametrize("bad, match", [(-1, "negative"), (0.5, "non-integer"),
                                        (np.nan, "NaN")])
def test_bad_counts_on_disk_are_clear_errors_naming_the_layer(tmp_path, bad, match):
    adata = cv.simulate(n_cells=40, n_bins=200, seed=0)
    x = adata.layers["H3K27ac"].astype(np.float32)
    x.data[-1] = bad  # in the last block of rows
    adata.layers["H3K27ac"] = x
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    lazy = cv.data.read_backed(path)
    with pytest.raises(ConvNetVAEError, match=f"'H3K27ac'.*{match}"):
        cv.ConvNetVAE.setup_anndata(lazy, modalities=MODS)


def test_read_backed_bad_paths_and_non_csr_layers(tmp_path):
    with pytest.raises(ConvNetVAEError, match="does not exist"):
        cv.data.read_backed(tmp_path / "missing.h5ad")
    junk = tmp_path / "junk.h5ad"
    junk.write_text("not hdf5")
    with pytest.raises(ConvNetVAEError, match="not a readable h5ad"):
        cv.data.read_backed(junk)
    # a dense layer is not counts stored for streaming: it is read into memory and still works
    adata = cv.simulate(n_cells=30, n_bins=100, seed=0)
    adata.layers["ATAC"] = adata.layers["ATAC"].toarray()
    adata.write_h5ad(tmp_path / "mixed.h5ad")
    lazy = cv.data.read_backed(tmp_path / "mixed.h5ad")
    assert isinstance(lazy.layers["ATAC"], np.ndarray) and _is_on_disk(lazy.layers["H3K27ac"])
    cv.ConvNetVAE.setup_anndata(lazy, modalities=MODS)
    src = source_from_anndata(lazy, MODS)
    np.testing.assert_array_equal(densify(src, np.arange(30))[:, 0], adata.layers["ATAC"])


def test_cli_train_backed_with_block_shuffle(h5ad_file, tmp_path):
    from convnetvae.cli import main

    path, _ = h5ad_file
    out = tmp_path / "model"
    rc = main(["train", "--data", str(path), "--modalities", ",".join(MODS), "--batch-key",
               "batch", "--architecture", "conv-k11s11", "--epochs", "2", "--backed",
               "--shuffle-block-size", "16", "--quiet", "--out", str(out)])
    assert rc == 0
    model = cv.ConvNetVAE.load(out)
    assert model.train_config["shuffle_block_size"] == 16
    assert len(model.history) == 2 and np.isfinite(model.history["train_loss"]).all()
    rc = main(["train", "--data", str(path), "--modalities", ",".join(MODS), "--epochs", "1",
               "--shuffle-block-size", "0", "--quiet", "--out", str(out)])
    assert rc == 2  # a clear error, not a traceback


def test_shuffle_block_size_is_rejected_for_data_parallel_training(h5ad_file, tmp_path):
    from convnetvae.cli import main

    path, _ = h5ad_file
    rc = main(["train", "--data", str(path), "--modalities", ",".join(MODS), "--epochs", "1",
               "--nproc", "2", "--shuffle-block-size", "16", "--quiet",
               "--out", str(tmp_path / "m")])
    assert rc == 2
