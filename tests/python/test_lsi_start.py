"""The LSI start of the free loadings (``loadings_start="lsi"`` / ``"auto"``; issue 14): the
sparse input transform, the directions against a dense SVD (of the batch-centred input with
several batches), how the loadings are set, the "auto" rule, masked modalities, the cell subset,
and that the default ``"zero"`` keeps the earlier start."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import convnetvae as cv
from convnetvae.data.backed import source_from_anndata
from convnetvae.errors import ConvNetVAEError
from convnetvae.model import lsi_start, transforms

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


def _dense_input(adata, module, rows=None, mask=None):
    """The encoder's input of every (or the given) cell(s), cells x (modalities x bins), by the
    dense torch transform the encoder itself runs."""
    x = np.stack([adata.layers[m].toarray() for m in MODS], axis=1).astype(np.float32)
    if rows is not None:
        x = x[rows]
    if mask is not None:
        x = x * mask[:, :, None]
    h = transforms.forward(torch.as_tensor(x), module.config.input_transform, module.input_scale,
                           module.input_idf)
    return h.flatten(1).numpy().astype(np.float64), x.sum(axis=(1, 2))


def _reference_directions(dense: np.ndarray, depth: np.ndarray, k: int
                          ) -> tuple[np.ndarray, float]:
    """The oracle: ``k`` right singular vectors of ``dense`` by numpy's full SVD, the first
    dropped when it tracks log depth, and the root mean variance of the projections on them."""
    u, s, vt = np.linalg.svd(dense, full_matrices=False)
    first = 1 if abs(np.corrcoef(u[:, 0] * s[0], np.log1p(depth))[0, 1]) > \
        lsi_start.DEPTH_CORRELATION_CUTOFF else 0
    want = vt[first:first + k].T
    return want, float(np.sqrt((dense @ want).var(axis=0).mean()))


@pytest.mark.parametrize("kind", ["log1p", "depth", "tfidf"])
def test_sparse_transform_equals_the_encoders_dense_one(small_adata, kind):
    x = small_adata.layers["ATAC"][:40]
    idf = transforms.inverse_frequency(np.asarray(small_adata.layers["ATAC"].sum(0)).ravel())
    scale = 17.0
    got = transforms.forward_csr(x, kind, scale, idf)
    want = transforms.forward(torch.as_tensor(x.toarray(), dtype=torch.float64)[:, None],
                              kind, torch.tensor([scale], dtype=torch.float64),
                              torch.as_tensor(idf)[None])[:, 0]
    assert sp.isspmatrix_csr(got) and got.nnz <= x.nnz  # zeros stay zeros
    np.testing.assert_allclose(got.toarray(), want.numpy(), rtol=1e-12, atol=1e-12)
    # duplicate entries are summed before the log, as the dense matrix would have them
    dup = sp.csr_matrix((np.array([1.0, 2.0]), np.array([3, 3]), np.array([0, 2])), shape=(1, 5))
    np.testing.assert_allclose(transforms.forward_csr(dup, "log1p").toarray()[0, 3], np.log(4.0))


def test_directions_are_the_dense_svd_of_the_encoder_input_without_the_depth_component(
        small_adata):
    model = cv.ConvNetVAE(small_adata, n_latent=5, loadings_start="zero")
    mod = model.module
    hs, depth_s, _ = lsi_start.encoder_input(
        source_from_anndata(small_adata, MODS), mod.config.input_transform,
        mod.input_scale.numpy(), mod.input_idf.numpy(), seed=0)
    v, s = lsi_start.lsi_directions(hs, depth_s, 5, seed=0)
    h, depth = _dense_input(small_adata, mod)
    np.testing.assert_allclose(hs.toarray(), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(depth_s, depth)
    want, spread = _reference_directions(h, depth, 5)
    assert v.shape == (3 * small_adata.n_vars, 5)
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-8)
    # the same directions up to sign (ARPACK matches the dense SVD to rounding here; a random
    # direction would score ~0.03)
    np.testing.assert_allclose(np.abs(np.sum(v * want, axis=0)), np.ones(5), atol=1e-6)
    assert s == pytest.approx(spread, rel=1e-3)


def test_lsi_start_sets_the_loadings_to_the_directions(small_adata):
    # the encoder's own matrix (untied; tied: test_tie_loadings.py)
    lsi = cv.ConvNetVAE(small_adata, n_latent=5, loadings_start="lsi",
                        tie_loadings=False).module.eval()
    zero = cv.ConvNetVAE(small_adata, n_latent=5, loadings_start="zero",
                         tie_loadings=False).module.eval()
    assert not zero.encoder_loading.detach().any() and not zero.bin_loading.detach().any()
    # everything else starts the same (the SVD draws no torch random numbers)
    for (name, a), (_, b) in zip(lsi.named_parameters(), zero.named_parameters()):
        if not name.endswith("_loading"):
            torch.testing.assert_close(a, b, msg=name)
    w = lsi.bin_loading.detach().double().numpy()
    cs = float(np.sqrt(np.diag(w.T @ w)).mean())
    np.testing.assert_allclose(w.T @ w, cs * cs * np.eye(5), atol=1e-4 * cs * cs)  # V c s
    enc = lsi.encoder_loading.detach().double().numpy() * lsi.encoder_loading_scale
    np.testing.assert_allclose(enc, w / (cs * cs), atol=1e-6)  # V / (c s)
    # the linear part of the latent mean is the cells' LSI embedding at unit root mean variance
    x = torch.as_tensor(np.stack([small_adata.layers[m][:50].toarray() for m in MODS], axis=1),
                        dtype=torch.float32)
    b = torch.tensor(small_adata.obs["batch"].cat.codes.to_numpy()[:50], dtype=torch.long)
    with torch.no_grad():
        diff = (lsi.encode(x, b)[0] - zero.encode(x, b)[0]).double().numpy()
    h, _ = _dense_input(small_adata, lsi)
    np.testing.assert_allclose(diff, h[:50] @ enc, rtol=1e-3, atol=1e-4)
    # the LSI embedding at 1 / c of unit root mean variance, and decoding it adds back the
    # input's projection on the directions
    centred = h.copy()  # the model's data have two batches: the scale is of the centred input
    codes = small_adata.obs["batch"].cat.codes.to_numpy()
    for b in np.unique(codes):
        centred[codes == b] -= centred[codes == b].mean(axis=0)
    assert np.sqrt((centred @ enc).var(axis=0).mean()) == pytest.approx(1 / lsi_start.SHRINK,
                                                                         rel=1e-3)
    np.testing.assert_allclose(h @ enc @ w.T, h @ (w @ w.T) / (cs * cs), rtol=1e-6, atol=1e-6)


def test_auto_starts_at_the_lsi_on_sparse_input_only(small_adata, monkeypatch):
    h, _, _ = lsi_start.encoder_input(source_from_anndata(small_adata, MODS), "log1p", None,
                                   None, seed=0)
    frac = lsi_start.nonzero_fraction(h)
    assert frac == pytest.approx(sum(small_adata.layers[m].nnz for m in MODS) / h.shape[0]
                                 / h.shape[1])
    auto = cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="auto").module
    lsi = cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="lsi").module
    zero = cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="zero").module
    want = lsi if frac <= lsi_start.AUTO_MAX_NONZERO else zero
    torch.testing.assert_close(auto.bin_loading, want.bin_loading)
    # move the cutoff to either side of this data's fraction
    monkeypatch.setattr(lsi_start, "AUTO_MAX_NONZERO", frac - 1e-6)
    assert not cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="auto").module \
        .bin_loading.detach().any()
    monkeypatch.setattr(lsi_start, "AUTO_MAX_NONZERO", frac + 1e-6)
    torch.testing.assert_close(
        cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="auto").module.bin_loading,
        lsi.bin_loading)
    # the default starts at zero whatever the data
    assert not cv.ConvNetVAE(small_adata, n_latent=4).module.bin_loading.detach().any()


def test_only_the_loadings_a_model_has_are_started(small_adata):
    enc = cv.ConvNetVAE(small_adata, n_latent=4, bin_loadings=False, loadings_start="lsi").module
    assert enc.bin_loading is None and enc.encoder_loading.detach().abs().sum() > 0
    dec = cv.ConvNetVAE(small_adata, n_latent=4, encoder_loadings=False,
                        loadings_start="lsi").module
    assert dec.encoder_loading is None and dec.bin_loading.detach().abs().sum() > 0
    with pytest.raises(ConvNetVAEError, match="directions must be"):
        enc.start_loadings(np.zeros((5, 4)), 1.0)
    with pytest.raises(ConvNetVAEError, match="scale must be a positive"):
        enc.start_loadings(np.zeros((3 * small_adata.n_vars, 4)), 0.0)
    with pytest.raises(ConvNetVAEError, match="shrink must be a positive"):
        enc.start_loadings(np.zeros((3 * small_adata.n_vars, 4)), 1.0, shrink=float("nan"))


def test_masked_modalities_read_as_zeros_and_the_cell_subset_follows_the_seed(small_adata):
    mod = cv.ConvNetVAE(small_adata, n_latent=3, loadings_start="zero").module
    args = (mod.config.input_transform, mod.input_scale.numpy(), mod.input_idf.numpy(), 3)
    src = source_from_anndata(small_adata, MODS)
    mask = np.ones((small_adata.n_obs, 3), dtype=bool)
    mask[::2, 1] = False
    hm, dm, _ = lsi_start.encoder_input(src, *args[:3], seed=0, mask=mask)
    v, _ = lsi_start.lsi_directions(hm, dm, 3, seed=0)
    h, depth = _dense_input(small_adata, mod, mask=mask.astype(np.float32))
    want, _ = _reference_directions(h, depth, 3)
    np.testing.assert_allclose(np.abs(np.sum(v * want, axis=0)), np.ones(3), atol=1e-6)
    a, da, ra = lsi_start.encoder_input(src, *args[:3], seed=1, max_cells=100)
    b, db, _ = lsi_start.encoder_input(src, *args[:3], seed=1, max_cells=100)
    c, dc, _ = lsi_start.encoder_input(src, *args[:3], seed=2, max_cells=100)
    assert a.shape == (100, 3 * small_adata.n_vars)
    assert (a != b).nnz == 0 and (a != c).nnz > 0  # another subset of 100 of the 300 cells
    full, dfull, rall = lsi_start.encoder_input(src, *args[:3], seed=1)
    np.testing.assert_array_equal(rall, np.arange(300))
    assert len(set(ra)) == 100 and np.all(np.diff(ra) > 0)
    np.testing.assert_allclose(a.toarray(), full[ra].toarray())  # rows of the same input
    np.testing.assert_allclose(da, dfull[ra])


def test_with_several_batches_the_directions_are_those_of_the_batch_centred_input(small_adata):
    mod = cv.ConvNetVAE(small_adata, n_latent=4, loadings_start="zero").module
    h, depth, _ = lsi_start.encoder_input(
        source_from_anndata(small_adata, MODS), mod.config.input_transform,
        mod.input_scale.numpy(), mod.input_idf.numpy(), seed=0)
    batch = small_adata.obs["batch"].cat.codes.to_numpy()
    v, s = lsi_start.lsi_directions(h, depth, 4, seed=0, batch=batch)
    dense = h.toarray()
    for b in np.unique(batch):
        dense[batch == b] -= dense[batch == b].mean(axis=0)
    want, spread = _reference_directions(dense, depth, 4)
    np.testing.assert_allclose(np.abs(np.sum(v * want, axis=0)), np.ones(4), atol=1e-6)
    assert s == pytest.approx(spread, rel=1e-3)
    # one batch: the input itself, not centred
    one, _ = lsi_start.lsi_directions(h, depth, 4, seed=0, batch=np.zeros_like(batch))
    none, _ = lsi_start.lsi_directions(h, depth, 4, seed=0)
    np.testing.assert_allclose(one, none)
    assert np.abs(np.sum(one * v, axis=0)).min() < 0.999  # centring changed the directions


def test_too_few_cells_for_all_directions_leave_the_rest_at_zero():
    adata = cv.simulate(n_cells=6, n_bins=60, n_types=2, n_chromosomes=1, seed=0)
    cv.ConvNetVAE.setup_anndata(adata, modalities=["ATAC"])
    m = cv.ConvNetVAE(adata, n_latent=8, n_hidden=8, loadings_start="lsi")
    w = m.module.bin_loading.detach()
    assert w[:, :4].abs().sum(0).min() > 0 and not w[:, 5:].any()  # rank <= 5 cells - 1
    m.train(max_epochs=1, batch_size=6, early_stopping=False, progress=False)
    assert np.isfinite(m.get_latent_representation()).all()


def test_loadings_start_is_checked(small_adata):
    with pytest.raises(ValueError, match="loadings_start"):
        cv.ConvNetVAE(small_adata, loadings_start="pca")
