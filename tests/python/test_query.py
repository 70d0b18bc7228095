"""Query mapping (``ConvNetVAE.load_query_data``): new samples onto a frozen reference.

The acceptance case: the simulator with three batches and strong batch effects
(``batch_strength=1.5``); the reference is trained on two, the third arrives later as the query.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError
from convnetvae.query import QueryVAE

MODS = ["ATAC", "H3K27ac", "H3K27me3"]


def _split(n_cells: int = 750, n_bins: int = 1000, strength: float = 1.5, seed: int = 1):
    a = cv.simulate(n_cells=n_cells, n_bins=n_bins, n_batches=3, n_types=4, n_chromosomes=3,
                    batch_strength=strength, seed=seed)
    ref = a[a.obs["batch"] != "batch2"].copy()
    query = a[a.obs["batch"] == "batch2"].copy()
    cv.ConvNetVAE.setup_anndata(ref, modalities=MODS, batch_key="batch", labels_key="cell_type")
    return ref, query


def _reference(**kw):
    ref, query = _split()
    model = cv.ConvNetVAE(ref, architecture="conv-k11s11", n_latent=10, seed=0, **kw)
    model.train(max_epochs=40, batch_size=64, progress=False, early_stopping=False,
                validation_size=0.0)
    return model, ref, query


@pytest.fixture(scope="module")
def reference():
    # the model of the query-mapping acceptance case (before free bin and encoder loadings
    # became the default; the default model's query is tested below)
    return _reference(bin_loadings=False, encoder_loadings=False)


def _mixing(z_ref, z_q, ref) -> tuple[float, float, np.ndarray, np.ndarray]:
    """How well the query mixes with the reference and the reference's batches with each other
    (fraction of kNN neighbours from the other side over its expected value); the query cells'
    neighbour rows in the stacked (reference, query) embedding and which rows are reference."""
    batches = ref.obs["batch"].astype(str).to_numpy()
    own = _knn(z_ref, z_ref, 16)[:, 1:][batches == "batch1"]
    ref_mixing = (batches[own] == "batch0").mean() / (batches == "batch0").mean()
    z = np.vstack([z_ref, z_q])
    is_ref = np.r_[np.ones(len(z_ref), bool), np.zeros(len(z_q), bool)]
    nbrs = _knn(z, z_q, 16)[:, 1:]
    return float(is_ref[nbrs].mean() / is_ref.mean()), float(ref_mixing), nbrs, is_ref


def _transfer_ari(z_ref, z_q, labels_ref, labels_q) -> float:
    """ARI of the query's labels against a 15-NN majority vote of the reference's."""
    from sklearn.metrics import adjusted_rand_score

    votes = labels_ref[_knn(z_ref, z_q, 15)]
    pred = np.array([max(set(r), key=list(r).count) for r in votes])
    return float(adjusted_rand_score(labels_q, pred))


def _nearest_centroids(z_ref, z_q, labels_ref, labels_q) -> dict[str, str]:
    """For each query type, the reference type whose centroid is nearest its own centroid."""
    cent = {u: z_ref[labels_ref == u].mean(0) for u in np.unique(labels_ref)}
    out = {}
    for t in np.unique(labels_q):
        d = {u: np.linalg.norm(z_q[labels_q == t].mean(0) - c) for u, c in cent.items()}
        out[t] = min(d, key=d.get)
    return out


def _knn(z_from: np.ndarray, z_to: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k).fit(z_from).kneighbors(z_to, return_distance=False)


def test_query_mapping_transfers_labels_and_lands_among_the_same_type(reference, tmp_path):
    model, ref, query = reference
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    z_ref = model.get_latent_representation()
    # a new batch is the clear error a projection gives
    with pytest.raises(ConvNetVAEError, match="were not seen"):
        model.get_latent_representation(query)

    q = cv.ConvNetVAE.load_query_data(query, model)
    assert q.query_["query_batches"] == ["batch2"]
    assert q.registry["batch_categories"] == ["batch0", "batch1", "batch2"]
    hidden, out = model.module.config.n_hidden, model.module.decoder.fc.out_features
    n_bins = model.module.n_bins
    # one new column in the encoder FC and the decoder FC, one new row of bin offsets
    assert q.query_["trainable_parameters"] == hidden + out + len(MODS) * n_bins
    assert q.n_parameters == q.query_["trainable_parameters"]
    q.train(max_epochs=40, batch_size=64, lr=1e-2, progress=False, early_stopping=False)
    assert len(q.history) == 40

    # the reference is untouched (the object given and every reference weight in the new one)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    state = q.module.state_dict()
    assert "query_batch_offset" not in state and not any(k.endswith("query_weight") for k in state)
    for k, v in before.items():
        w = state[k]
        if w.shape == v.shape:
            assert torch.equal(w, v), k  # every same-shaped tensor, BatchNorm statistics included
    assert torch.equal(state["batch_offset"][:2], before["batch_offset"])
    assert state["batch_offset"][2].abs().sum() > 0  # the new batch's offsets trained
    # reference cells keep exactly their embedding under the extended model
    z_ref_q = q.get_latent_representation(ref)
    np.testing.assert_allclose(z_ref_q, z_ref, atol=1e-5)

    # label transfer by kNN from the reference to the query
    z_q = q.get_latent_representation()
    labels_ref = ref.obs["cell_type"].astype(str).to_numpy()
    labels_q = query.obs["cell_type"].astype(str).to_numpy()
    ari = _transfer_ari(z_ref, z_q, labels_ref, labels_q)
    assert ari >= 0.9, ari

    # the query mixes with the reference as well as the reference's own batches mix with each
    # other (fraction of kNN neighbours from the other side over its expected value)
    query_mixing, ref_mixing, nbrs, is_ref = _mixing(z_ref, z_q, ref)
    assert query_mixing >= 0.7 * ref_mixing, (query_mixing, ref_mixing)
    labels = np.r_[labels_ref, labels_q]
    # per type: some of each query cell's neighbours are reference cells, of the same type
    for t in np.unique(labels_q):
        rows = nbrs[labels_q == t]
        from_ref = is_ref[rows]
        assert from_ref.mean() >= 0.05, (t, from_ref.mean())
        assert (labels[rows][from_ref] == t).mean() >= 0.95, t
    # each type closer to its type's reference centroid than to any other type's
    for t, nearest in _nearest_centroids(z_ref, z_q, labels_ref, labels_q).items():
        assert nearest == t, (t, nearest)

    # the adapted model saves as an ordinary one: load it plainly, same embeddings
    q.save(tmp_path / "query_model")
    back = cv.ConvNetVAE.load(tmp_path / "query_model", query)
    assert type(back.module) is not QueryVAE
    np.testing.assert_allclose(back.get_latent_representation(), z_q, atol=1e-5)
    np.testing.assert_allclose(back.get_latent_representation(ref), z_ref, atol=1e-5)


def test_query_mapping_with_untied_bin_and_encoder_loadings():
    """A model's free bin and encoder loadings (untied; tied, the default on sparse counts:
    test_tie_loadings.py) stay frozen with the reference; labels transfer as well, but the query
    mixes less with the reference (docs/benchmarks.md, "Free loadings per bin": 0.45-0.60 of the
    reference's own mixing over three seeds, 0.58-0.83 without)."""
    model, ref, query = _reference(tie_loadings=False)
    assert model.module.config.bin_loadings and model.module.config.encoder_loadings
    loading = model.module.bin_loading.detach().clone()
    enc_loading = model.module.encoder_loading.detach().clone()
    z_ref = model.get_latent_representation()
    q = cv.ConvNetVAE.load_query_data(query, model)
    q.train(max_epochs=40, batch_size=64, lr=1e-2, progress=False, early_stopping=False)
    assert torch.equal(q.module.bin_loading, loading) and not q.module.bin_loading.requires_grad
    assert torch.equal(q.module.encoder_loading, enc_loading)
    assert not q.module.encoder_loading.requires_grad
    z_q = q.get_latent_representation()
    labels_ref = ref.obs["cell_type"].astype(str).to_numpy()
    labels_q = query.obs["cell_type"].astype(str).to_numpy()
    assert _transfer_ari(z_ref, z_q, labels_ref, labels_q) >= 0.9
    query_mixing, ref_mixing, _, _ = _mixing(z_ref, z_q, ref)
    assert query_mixing >= 0.4 * ref_mixing, (query_mixing, ref_mixing)
    for t, nearest in _nearest_centroids(z_ref, z_q, labels_ref, labels_q).items():
        assert nearest == t, (t, nearest)


def test_load_query_data_from_a_saved_reference_and_clear_errors(reference, tmp_path):
    model, ref, query = reference
    model.save(tmp_path / "ref")
    # a reference path works; the query's batch column can be given explicitly
    q = cv.ConvNetVAE.load_query_data(query.copy(), tmp_path / "ref")
    assert q.query_["reference_batches"] == ["batch0", "batch1"]
    # no new batch: nothing to train
    with pytest.raises(ConvNetVAEError, match="already one of the reference's"):
        cv.ConvNetVAE.load_query_data(ref.copy(), model)
    # other bins
    with pytest.raises(ConvNetVAEError, match="bins"):
        cv.ConvNetVAE.load_query_data(query[:, :500].copy(), model)
    with pytest.raises(ConvNetVAEError, match="reference must be"):
        cv.ConvNetVAE.load_query_data(query.copy(), 42)


def test_reference_without_batches_and_weight_decay_keep_the_reference_frozen():
    """A reference trained without batches gets batch parameters for the query only; weight decay
    touches only the trainable (new) parameters."""
    ref, query = _split(n_cells=300, n_bins=600, strength=1.0, seed=4)
    cv.ConvNetVAE.setup_anndata(ref, modalities=MODS, labels_key="cell_type")  # no batch
    model = cv.ConvNetVAE(ref, architecture="conv-k11s11", n_latent=6, seed=0)
    model.train(max_epochs=2, batch_size=64, progress=False, validation_size=0.0)
    z_ref = model.get_latent_representation()
    with pytest.raises(ConvNetVAEError, match="batch_key"):
        cv.ConvNetVAE.load_query_data(query.copy(), model)
    q = cv.ConvNetVAE.load_query_data(query.copy(), model, batch_key="batch")
    assert q.registry["batch_categories"] == ["reference", "batch2"]
    q.train(max_epochs=3, batch_size=64, weight_decay=0.1, progress=False, validation_size=0.2)
    ref.obs["batch"] = "reference"
    ref2 = ref.copy()
    np.testing.assert_allclose(q.get_latent_representation(ref2), z_ref, atol=1e-5)


def test_fc_architecture_supports_query_mapping(small_adata):
    """The one-hot columns are found by probing, so the FC-VAE baseline works as well."""
    ref = small_adata[small_adata.obs["batch"] == "batch0"].copy()
    query = small_adata[small_adata.obs["batch"] == "batch1"].copy()
    query.obs["batch"] = "new"
    cv.ConvNetVAE.setup_anndata(ref, modalities=MODS, batch_key="batch")
    model = cv.ConvNetVAE(ref, architecture="fc-l1", n_latent=4, n_hidden=16)
    model.train(max_epochs=1, progress=False, validation_size=0.0)
    z_ref = model.get_latent_representation()
    q = cv.ConvNetVAE.load_query_data(query, model)
    q.train(max_epochs=2, progress=False, validation_size=0.0)
    np.testing.assert_allclose(q.get_latent_representation(ref), z_ref, atol=1e-5)


def test_one_hot_probe_tolerates_rounding_of_identical_cells(reference):
    """Inside R the products use R's BLAS, which may round two identical probe cells differently
    in the last bit; the batch one-hot columns are still the only ones found."""
    from convnetvae import query

    module = reference[0].module
    names = [n for n, m in module.named_modules()
             if isinstance(m, torch.nn.Linear) and n.startswith("encoder")][:1]
    exact = query._onehot_columns(module, names)
    layer = module.get_submodule(names[0])

    def rounding(_m, args):
        x = args[0].clone()
        x[1] = x[1] * (1 + 1e-6)  # the second cell's features, one rounding step apart
        return (x,)

    handle = layer.register_forward_pre_hook(rounding)
    try:
        assert query._onehot_columns(module, names) == exact
    finally:
        handle.remove()
