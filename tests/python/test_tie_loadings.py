"""``tie_loadings``: the encoder's free weights tied to the decoder's bin loadings (``h W g``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import convnetvae as cv
from convnetvae.data import contract
from convnetvae.errors import ConvNetVAEError
from convnetvae.model import lsi_start
from convnetvae.model.vae import VAE, ModuleConfig, module_config_from_dict
from test_lsi_start import MODS, _dense_input


def _batch(adata, rows):
    return torch.tensor(adata.obs["batch"].cat.codes.to_numpy()[rows], dtype=torch.long)


def _counts(adata, rows):
    return torch.as_tensor(np.stack([adata.layers[m][rows].toarray() for m in MODS], axis=1),
                           dtype=torch.float32)


def test_tied_encoder_adds_input_times_bin_loadings_times_gain(small_adata):
    tied = cv.ConvNetVAE(small_adata, n_latent=5).module.eval()  # the default: sparse, tied
    free = cv.ConvNetVAE(small_adata, n_latent=5, tie_loadings=False,  # same conv layer
                         architecture=tied.config.architecture).module.eval()
    assert tied.config.tie_loadings and not free.config.tie_loadings
    assert free.loading_gain is None and free.encoder_loading is not None
    # no matrix of its own: a gain per latent dimension, started at the free weights' scale
    assert tied.encoder_loading is None and "encoder_loading" not in tied.state_dict()
    n = tied.config.n_modalities * tied.n_bins
    torch.testing.assert_close(tied.loading_gain.detach(), torch.full((5,), 1 / np.sqrt(n)))
    n_free = sum(p.numel() for p in free.parameters())
    assert sum(p.numel() for p in tied.parameters()) == n_free - n * 5 + 5
    rows = np.arange(8)
    x, b = _counts(small_adata, rows), _batch(small_adata, rows)
    with torch.no_grad():
        before = tied.encode(x, b)[0]
        tied.bin_loading.normal_()
        tied.loading_gain.uniform_(0.5, 2.0)
        after = tied.encode(x, b)[0]
    h, _ = _dense_input(small_adata, tied)
    want = h[rows] @ tied.bin_loading.detach().double().numpy() \
        * tied.loading_gain.detach().double().numpy()
    np.testing.assert_allclose((after - before).double().numpy(), want, rtol=1e-4, atol=1e-4)


def test_tied_training_moves_the_gain_and_the_shared_loadings(small_adata):
    m = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4, tie_loadings=True)
    g0 = m.module.loading_gain.detach().clone()
    m.train(max_epochs=2, batch_size=64, progress=False)
    assert m.module.bin_loading.detach().abs().sum() > 0
    assert not torch.equal(m.module.loading_gain.detach(), g0)
    # the encoder's gradient reaches the bin loadings: a backward pass through the encoder
    # alone gives them one
    mod = m.module.train()
    mod.zero_grad()
    rows = np.arange(16)
    x, b = _counts(small_adata, rows), _batch(small_adata, rows)
    mod.encode(x, b)[0].sum().backward()
    assert mod.bin_loading.grad is not None and mod.bin_loading.grad.abs().sum() > 0


def test_tie_none_ties_on_sparse_counts_only(small_adata, monkeypatch):
    frac = sum(small_adata.layers[m].nnz for m in MODS) / small_adata.n_obs \
        / small_adata.n_vars / len(MODS)
    auto = cv.ConvNetVAE(small_adata, n_latent=4, tie_loadings=None).module
    assert auto.config.tie_loadings == (frac <= lsi_start.AUTO_MAX_NONZERO)
    # the architecture "auto" follows the tie: 8 channels tied, the paper's 32 untied
    monkeypatch.setattr(lsi_start, "AUTO_MAX_NONZERO", frac - 1e-6)
    untied = cv.ConvNetVAE(small_adata, n_latent=4, tie_loadings=None).module
    assert not untied.config.tie_loadings and untied.config.architecture == "conv-k11s11"
    assert untied.encoder.convs[0].out_channels == 32
    monkeypatch.setattr(lsi_start, "AUTO_MAX_NONZERO", frac + 1e-6)
    tied = cv.ConvNetVAE(small_adata, n_latent=4, tie_loadings=None).module
    assert tied.config.tie_loadings and tied.config.architecture == "conv-k11s11c8"
    assert tied.encoder.convs[0].out_channels == 8
    # given explicitly, an architecture is kept whatever the tie
    assert cv.ConvNetVAE(small_adata, n_latent=4, architecture="conv-k11s11").module \
        .config.architecture == "conv-k11s11"
    # without both kinds of loadings there is nothing to tie: None unties, True is an error
    assert not cv.ConvNetVAE(small_adata, n_latent=4, tie_loadings=None,
                             encoder_loadings=False).module.config.tie_loadings
    with pytest.raises(ConvNetVAEError, match="tie_loadings=True .* needs both; got "
                                              "bin_loadings=False, encoder_loadings=True"):
        cv.ConvNetVAE(small_adata, n_latent=4, tie_loadings=True, bin_loadings=False)
    with pytest.raises(ConvNetVAEError, match="tie_loadings needs both"):
        VAE(ModuleConfig(n_modalities=1, chrom_lengths=[50], n_batches=1, encoder_loadings=True,
                         tie_loadings=True))


def test_dense_counts_are_not_tied_by_none():
    adata = cv.simulate(n_cells=60, n_bins=200, n_types=2, n_chromosomes=2, seed=1,
                        modalities=("ATAC",))
    adata.layers["ATAC"] = sp.csr_matrix(adata.layers["ATAC"].toarray() + 1.0)
    cv.ConvNetVAE.setup_anndata(adata, modalities=["ATAC"])
    assert not cv.ConvNetVAE(adata, n_latent=3, tie_loadings=None).module.config.tie_loadings
    assert cv.ConvNetVAE(adata, n_latent=3, tie_loadings=True).module.config.tie_loadings


def test_nonzero_entries_in_memory_dense_masked_and_on_disk(tmp_path):
    x = sp.csr_matrix(np.array([[0, 2, 0, 1], [0, 0, 0, 0], [3, 1, 1, 0]], dtype=np.float32))
    x.data[0] = 0.0  # a stored zero does not count
    a = ad.AnnData(X=np.zeros((3, 4), np.float32), layers={"m": x})
    assert contract.nonzero_entries(a, "m") == (4, 12)
    assert contract.nonzero_entries(a, "m", np.array([True, True, False])) == (1, 8)
    a.layers["d"] = x.toarray()
    assert contract.nonzero_entries(a, "d") == (4, 12)
    a.write_h5ad(tmp_path / "a.h5ad")
    lazy = cv.data.read_backed(tmp_path / "a.h5ad")
    assert contract.nonzero_entries(lazy, "m") == (4, 12)
    assert contract.nonzero_entries(lazy, "m", np.array([False, True, True])) == (3, 8)


def test_lsi_start_of_a_tied_model_gives_the_same_linear_term(small_adata):
    tied = cv.ConvNetVAE(small_adata, n_latent=5, tie_loadings=True,
                         loadings_start="lsi").module.eval()
    free = cv.ConvNetVAE(small_adata, n_latent=5, loadings_start="lsi",
                         tie_loadings=False).module.eval()
    torch.testing.assert_close(tied.bin_loading, free.bin_loading)
    w = tied.bin_loading.detach().double().numpy()
    cs = float(np.sqrt(np.diag(w.T @ w)).mean())  # c s
    torch.testing.assert_close(tied.loading_gain.detach().double(),
                               torch.full((5,), 1 / cs ** 2, dtype=torch.float64), rtol=1e-4,
                               atol=0)
    rows = np.arange(20)
    x, b = _counts(small_adata, rows), _batch(small_adata, rows)
    zero = cv.ConvNetVAE(small_adata, n_latent=5, tie_loadings=True).module.eval()
    with torch.no_grad():
        d_tied = (tied.encode(x, b)[0] - zero.encode(x, b)[0]).double().numpy()
    h, _ = _dense_input(small_adata, tied)
    enc = free.encoder_loading.detach().double().numpy() * free.encoder_loading_scale
    np.testing.assert_allclose(d_tied, h[rows] @ enc, rtol=1e-3, atol=1e-4)  # h V / (c s)


def test_tied_models_save_load_and_older_configs_are_untied(small_adata, tmp_path):
    m = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4, tie_loadings=True)
    m.train(max_epochs=1, batch_size=64, progress=False)
    z = m.get_latent_representation()
    m.save(tmp_path / "tied")
    back = cv.ConvNetVAE.load(tmp_path / "tied", small_adata)
    assert back.module.config.tie_loadings and back.module.encoder_loading is None
    np.testing.assert_allclose(back.get_latent_representation(), z, atol=1e-5)
    old = ModuleConfig(n_modalities=1, chrom_lengths=[50], n_batches=1, bin_loadings=True,
                       encoder_loadings=True).to_dict()
    del old["tie_loadings"]  # a model saved before the setting: a matrix of its own
    vae = VAE(module_config_from_dict(old))
    assert vae.encoder_loading is not None and vae.loading_gain is None


def test_query_of_a_tied_reference_trains_its_own_encoder_loadings(tmp_path):
    """The default model of the suite's query case is tied: the query keeps the reference's bin
    loadings and gain frozen and trains its own encoder-side loadings Q (its cells read
    h (W + Q) g); the reference's cells keep their embedding under the query model. Without Q
    the query mixed half as well with the reference (docs/benchmarks.md, "Tied loadings":
    0.19-0.27 of the reference's own mixing over three seeds; with Q 0.35-0.45, untied
    0.38-0.50, and as much absolute mixing)."""
    from test_query import _mixing, _reference, _transfer_ari

    model, ref, query = _reference()
    assert model.module.config.tie_loadings and model.module.query_loading is None
    loading = model.module.bin_loading.detach().clone()
    gain = model.module.loading_gain.detach().clone()
    z_ref = model.get_latent_representation()
    q = cv.ConvNetVAE.load_query_data(query, model)
    assert q.module.config.query_batches_from == model.module.config.n_batches
    assert q.module.query_loading.requires_grad and not q.module.query_loading.detach().any()
    q.train(max_epochs=40, batch_size=64, lr=1e-2, progress=False, early_stopping=False)
    assert torch.equal(q.module.bin_loading, loading) and not q.module.bin_loading.requires_grad
    assert torch.equal(q.module.loading_gain, gain) and not q.module.loading_gain.requires_grad
    assert q.module.query_loading.detach().abs().sum() > 0
    z_q = q.get_latent_representation()
    np.testing.assert_allclose(q.get_latent_representation(ref), z_ref, atol=1e-5)
    labels_ref = ref.obs["cell_type"].astype(str).to_numpy()
    labels_q = query.obs["cell_type"].astype(str).to_numpy()
    assert _transfer_ari(z_ref, z_q, labels_ref, labels_q) >= 0.9
    query_mixing, ref_mixing, _, _ = _mixing(z_ref, z_q, ref)
    assert query_mixing >= 0.4 * ref_mixing, (query_mixing, ref_mixing)
    # saved and read back as an ordinary model, with the query's loadings
    q.save(tmp_path / "query_model")
    back = cv.ConvNetVAE.load(tmp_path / "query_model", query)
    np.testing.assert_allclose(back.get_latent_representation(), z_q, atol=1e-5)
    np.testing.assert_allclose(back.get_latent_representation(ref), z_ref, atol=1e-5)
    # a second query goes onto the reference, not onto this query model
    again = query.copy()
    again.obs["batch"] = pd.Categorical(["batch3"] * again.n_obs)
    with pytest.raises(ConvNetVAEError, match="map the new query onto the reference"):
        cv.ConvNetVAE.load_query_data(again, back)
    with pytest.raises(ConvNetVAEError, match="query_batches_from is for query models"):
        VAE(ModuleConfig(n_modalities=1, chrom_lengths=[50], n_batches=2,
                         query_batches_from=1))
