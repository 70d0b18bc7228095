"""The ConvNetVAE API: training, embeddings, persistence, reproducibility and bad input."""

import json

import numpy as np
import pytest

import convnetvae as cv
from conftest import fast_train_kwargs
from convnetvae import ConvNetVAE
from convnetvae.errors import ConvNetVAEError

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


def _model(adata, **kw):
    kw.setdefault("architecture", "conv-k11s11")
    kw.setdefault("n_hidden", 32)
    kw.setdefault("n_latent", 8)
    return ConvNetVAE(adata, **kw)


def test_train_lowers_loss_and_records_history(small_adata):
    m = _model(small_adata)
    m.train(**fast_train_kwargs(max_epochs=6, early_stopping=False))
    h = m.history
    assert len(h) == 6
    for col in ["train_elbo", "train_reconstruction", "train_kl", "validation_elbo",
                "validation_reconstruction", "validation_kl"]:
        assert col in h and np.isfinite(h[col]).all()
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    np.testing.assert_allclose(h.train_elbo, h.train_reconstruction - h.train_kl, rtol=1e-6)
    assert m.is_trained and "conv-k11s11" in repr(m)


def test_latent_shapes_and_new_cells(small_adata):
    m = _model(small_adata)
    m.train(**fast_train_kwargs())
    z = m.get_latent_representation()
    assert z.shape == (300, 8) and np.isfinite(z).all()
    sub = small_adata[:50].copy()
    np.testing.assert_allclose(m.get_latent_representation(sub), z[:50], rtol=1e-5, atol=1e-5)
    zs = m.get_latent_representation(give_mean=False)
    assert not np.allclose(zs, z)


def test_normalized_signal_rows_sum_to_library(small_adata):
    m = _model(small_adata)
    m.train(**fast_train_kwargs(max_epochs=1))
    w = m.get_normalized_signal(modality="ATAC")
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-4)
    rates = m.get_normalized_signal(library_size="observed")
    for mod in MODS:
        lib = np.asarray(small_adata.layers[mod].sum(1)).ravel()
        np.testing.assert_allclose(rates[mod].sum(1), lib, rtol=1e-4)
    other = m.get_normalized_signal(modality="H3K27ac", transform_batch="batch1")
    assert other.shape == (300, 600)
    with pytest.raises(ConvNetVAEError):
        m.get_normalized_signal(modality="RNA")


def test_save_load_identical_embedding(small_adata, tmp_path):
    m = _model(small_adata, likelihood="nb")
    m.train(**fast_train_kwargs())
    z = m.get_latent_representation()
    m.save(tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["format"] == 1 and cfg["module"]["likelihood"] == "nb"
    assert not list((tmp_path / "model").glob("*.tmp"))
    fresh = small_adata.copy()
    del fresh.uns["convnetvae"]
    m2 = ConvNetVAE.load(tmp_path / "model", fresh)
    np.testing.assert_array_equal(m2.get_latent_representation(), z)
    assert len(m2.history) == len(m.history)
    with pytest.raises(ConvNetVAEError, match="not empty"):
        m.save(tmp_path / "model")
    m.save(tmp_path / "model", overwrite=True)


def test_same_seed_same_embedding(small_adata):
    zs = []
    for _ in range(2):
        m = _model(small_adata, seed=5)
        m.train(**fast_train_kwargs(seed=5))
        zs.append(m.get_latent_representation())
    np.testing.assert_array_equal(zs[0], zs[1])
    m = _model(small_adata, seed=6)
    m.train(**fast_train_kwargs(seed=6))
    assert not np.allclose(m.get_latent_representation(), zs[0])


def test_stop_event_keeps_model_so_far(small_adata):
    import threading

    ev = threading.Event()
    seen = []

    def cb(epoch, row):
        seen.append(epoch)
        if epoch == 2:
            ev.set()

    m = _model(small_adata)
    m.train(**fast_train_kwargs(max_epochs=50, early_stopping=False), callback=cb,
            stop_event=ev)
    assert len(m.history) == 2 and seen == [1, 2]
    assert m.train_config["interrupted"]
    assert np.isfinite(m.get_latent_representation()).all()


def test_early_stopping_and_paper_fixed_epochs(small_adata):
    m = _model(small_adata)
    m.train(**fast_train_kwargs(max_epochs=200, patience=1))
    assert len(m.history) < 200 and m.train_config["stopped_early"]
    m2 = _model(small_adata)
    m2.train(**fast_train_kwargs(max_epochs=4, early_stopping=False, validation_size=0.0))
    assert len(m2.history) == 4 and "validation_loss" not in m2.history


# ---------------------------------------------------------------------- bad input
def _fresh(**kw):
    return cv.simulate(n_cells=60, n_bins=200, n_types=2, n_chromosomes=2, seed=1, **kw)


@pytest.mark.parametrize("value,match", [(0.5, "non-integer"), (-1, "negative"),
                                         (np.nan, "NaN"), (np.inf, "infinite")])
def test_bad_counts(value, match):
    a = _fresh()
    x = a.layers["ATAC"].astype(np.float64).tolil()
    x[3, 5] = value
    a.layers["ATAC"] = x.tocsr()
    with pytest.raises(ConvNetVAEError, match=f"(?i)ATAC.*{match}|{match}.*ATAC"):
        ConvNetVAE.setup_anndata(a, modalities=MODS)


def test_missing_layer_and_batch_column():
    a = _fresh()
    with pytest.raises(ConvNetVAEError, match="'RNA' not found"):
        ConvNetVAE.setup_anndata(a, modalities=["ATAC", "RNA"])
    with pytest.raises(ConvNetVAEError, match="batch_key 'sample'"):
        ConvNetVAE.setup_anndata(a, modalities=MODS, batch_key="sample")
    with pytest.raises(ConvNetVAEError, match="labels_key"):
        ConvNetVAE.setup_anndata(a, modalities=MODS, labels_key="celltype")


def test_nan_batch_labels():
    a = _fresh()
    b = a.obs["batch"].astype(object)
    b.iloc[4] = np.nan
    a.obs["batch"] = b
    with pytest.raises(ConvNetVAEError, match="missing"):
        ConvNetVAE.setup_anndata(a, modalities=MODS, batch_key="batch")


def test_unsorted_and_overlapping_bins():
    a = _fresh()
    order = np.arange(a.n_vars)
    order[[10, 11]] = order[[11, 10]]
    with pytest.raises(ConvNetVAEError, match="not sorted"):
        ConvNetVAE.setup_anndata(a[:, order].copy(), modalities=MODS)
    b = _fresh()
    b.var.loc[b.var_names[20], "end"] = int(b.var["end"].iloc[20]) + 5000
    with pytest.raises(ConvNetVAEError, match="overlap"):
        ConvNetVAE.setup_anndata(b, modalities=MODS)
    c = _fresh()
    c.var = c.var.drop(columns=["start"])
    with pytest.raises(ConvNetVAEError, match="start"):
        ConvNetVAE.setup_anndata(c, modalities=MODS)


def test_fewer_bins_than_kernel():
    a = _fresh()
    ConvNetVAE.setup_anndata(a, modalities=MODS)
    sub = a[:, :30].copy()
    ConvNetVAE.setup_anndata(sub, modalities=MODS)
    with pytest.raises(ConvNetVAEError, match="kernel 51"):
        ConvNetVAE(sub, architecture="conv-k51s51")


def test_cell_with_zero_counts_in_a_modality_warns_and_stays_finite():
    a = _fresh()
    x = a.layers["H3K27me3"].tolil()
    x[7, :] = 0
    a.layers["H3K27me3"] = x.tocsr()
    with pytest.warns(UserWarning, match="zero counts"):
        ConvNetVAE.setup_anndata(a, modalities=MODS, batch_key="batch")
    m = _model(a)
    m.train(**fast_train_kwargs(max_epochs=2, batch_size=16))
    assert np.isfinite(m.history.train_loss).all()
    z = m.get_latent_representation()
    assert np.isfinite(z).all()


def test_model_on_other_bins_or_modalities(tmp_path):
    a = _fresh()
    ConvNetVAE.setup_anndata(a, modalities=MODS, batch_key="batch")
    m = _model(a)
    m.train(**fast_train_kwargs(max_epochs=1, batch_size=16))
    m.save(tmp_path / "m")
    other = _fresh()[:, :150].copy()
    with pytest.raises(ConvNetVAEError, match="150"):
        ConvNetVAE.load(tmp_path / "m", other)
    with pytest.raises(ConvNetVAEError, match="150"):
        m.get_latent_representation(other)
    shifted = _fresh()
    shifted.var["start"] = shifted.var["start"] + 10
    shifted.var["end"] = shifted.var["end"] + 10
    with pytest.raises(ConvNetVAEError, match="differs"):
        ConvNetVAE.load(tmp_path / "m", shifted)
    two = _fresh()
    del two.layers["H3K27me3"]
    with pytest.raises(ConvNetVAEError, match="H3K27me3"):
        ConvNetVAE.load(tmp_path / "m", two)
    newbatch = _fresh()
    newbatch.obs["batch"] = "batch9"
    with pytest.raises(ConvNetVAEError, match="not seen"):
        m.get_latent_representation(newbatch)


def test_not_set_up_and_bad_arguments(small_adata):
    a = _fresh()
    with pytest.raises(ConvNetVAEError, match="setup_anndata"):
        ConvNetVAE(a)
    with pytest.raises(ConvNetVAEError, match="likelihood"):
        _model(small_adata, likelihood="gaussian")
    with pytest.raises(ConvNetVAEError, match="architecture"):
        _model(small_adata, architecture="transformer")
    m = _model(small_adata)
    with pytest.raises(ConvNetVAEError, match="validation_size"):
        m.train(max_epochs=1, validation_size=1.5, progress=False)
    with pytest.raises(ConvNetVAEError, match="batch_size"):
        m.train(max_epochs=1, batch_size=1, progress=False)


def test_short_training_separates_simulated_types():
    """A short training on the simulator separates the cell types (ARI >= 0.8)."""
    from convnetvae.evaluate.clustering import clustering_sweep

    a = cv.simulate(n_cells=900, n_bins=3000, n_types=5, seed=11)
    ConvNetVAE.setup_anndata(a, modalities=MODS, batch_key="batch", labels_key="cell_type")
    m = ConvNetVAE(a, architecture="conv-k31s31", seed=0)
    m.train(max_epochs=20, progress=False, early_stopping=False)
    z = m.get_latent_representation()
    sweep = clustering_sweep(z, a.obs["cell_type"].to_numpy(), resolutions=[0.05, 0.1, 0.2, 0.4])
    assert sweep["ari"].max() >= 0.8, sweep
    # and the batches mix: clusters do not follow the batch
    batch_sweep = clustering_sweep(z, a.obs["batch"].to_numpy(), resolutions=[0.1])
    assert batch_sweep["ari"].iloc[0] < 0.1
