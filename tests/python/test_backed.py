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
    from convnetvae.train import Trainer, TrainConfig
    from convnetvae.model.vae import VAE, ModuleConfig
    import torch

    path, adata = h5ad_file
    codes = np.zeros(220, dtype=np.int64)
    cfg = TrainConfig(max_epochs=2, batch_size=32, validation_size=0.1, progress=False,
                      extra={"shuffle_block_size": 16})
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
