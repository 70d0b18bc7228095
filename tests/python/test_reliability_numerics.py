"""Numerical guards (issue 9, part 3): non-finite losses and gradients, clamping, clipping,
and extreme inputs that must train without NaN."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError
from convnetvae.model.vae import LOGVAR_MAX, LOGVAR_MIN
from convnetvae.train import TrainingDiverged

FAST = dict(batch_size=16, progress=False, validation_size=0.0, seed=1, n_threads=1,
            early_stopping=False)


def _tiny(seed: int = 0, n_cells: int = 64, **kw):
    adata = cv.simulate(n_cells=n_cells, n_bins=200, n_chromosomes=2, n_types=2, seed=seed, **kw)
    return adata


def _setup(adata):
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)


def _all_finite(model) -> bool:
    return all(torch.isfinite(v).all() for v in model.module.state_dict().values()
               if v.is_floating_point())


def _poison_forward(model, bad_calls):
    """Make the training forward pass return a NaN reconstruction on the given call numbers."""
    real = model.module.forward
    seen = {"n": 0}

    def forward(*a, **k):
        out = real(*a, **k)
        if model.module.training:
            seen["n"] += 1
            if bad_calls(seen["n"]):
                out = dict(out)
                out["reconstruction"] = out["reconstruction"] * float("nan")
        return out

    model.module.forward = forward
    return seen


def _calls_per_epoch(adata) -> int:
    return adata.n_obs // FAST["batch_size"]  # validation_size=0, drop_last only drops 1 cell


# ---------------------------------------------------------------------- non-finite loss
@pytest.mark.parametrize("spill", [False, True])
def test_nan_loss_once_restores_last_good_state_and_lowers_lr(spill, monkeypatch):
    """Also with the optimiser's snapshot in a temporary file (large models on CPU): the file
    restores the same state and is removed after training."""
    import convnetvae.train as train_mod

    if spill:
        monkeypatch.setattr(train_mod, "SPILL_OPTIMIZER_BYTES", 0)
        restored = []
        real_restore = train_mod.Trainer._restore_optimizer
        monkeypatch.setattr(train_mod.Trainer, "_restore_optimizer",
                            lambda self, saved: (restored.append(saved),
                                                 real_restore(self, saved)))
    adata = _tiny()
    m = _setup(adata)
    per = _calls_per_epoch(adata)
    first_bad = 2 * per + 2  # the 2nd minibatch of epoch 3
    _poison_forward(m, lambda n: n == first_bad)
    m.train(max_epochs=5, lr=1e-3, **FAST)
    h = m.history
    assert list(h["epoch"]) == [1, 2, 3, 4, 5]
    assert np.allclose(h["lr"][:2], 1e-3) and np.allclose(h["lr"][2:], 1e-4)
    assert np.isfinite(h["train_loss"]).all() and _all_finite(m)
    assert m.trainer_.lr_lowered
    if spill:
        import os

        assert len(restored) == 1 and isinstance(restored[0], str)
        assert not os.path.exists(restored[0])


def test_snapshot_in_a_file_retries_exactly_as_in_memory(monkeypatch):
    import convnetvae.train as train_mod

    hist = []
    for limit in (train_mod.SPILL_OPTIMIZER_BYTES, 0):
        monkeypatch.setattr(train_mod, "SPILL_OPTIMIZER_BYTES", limit)
        adata = _tiny()
        m = _setup(adata)
        bad = 2 * _calls_per_epoch(adata) + 2
        _poison_forward(m, lambda n, bad=bad: n == bad)
        m.train(max_epochs=4, lr=1e-3, **FAST)
        hist.append(m.history["train_loss"].to_numpy())
    np.testing.assert_array_equal(hist[0], hist[1])


def test_nan_loss_twice_stops_with_error_naming_epoch_and_cause():
    adata = _tiny()
    m = _setup(adata)
    per = _calls_per_epoch(adata)
    _poison_forward(m, lambda n: n > 2 * per)  # every step from epoch 3 on
    with pytest.raises(TrainingDiverged, match="epoch 3") as info:
        m.train(max_epochs=5, **FAST)
    msg = str(info.value)
    assert "learning rate" in msg and "lr=" in msg and "grad_clip" in msg
    assert isinstance(info.value, ConvNetVAEError)


def test_infinite_loss_is_caught_too():
    adata = _tiny()
    m = _setup(adata)
    real = m.module.forward

    def forward(*a, **k):
        out = dict(real(*a, **k))
        if m.module.training:
            out["kl"] = out["kl"] + float("inf")
        return out

    m.module.forward = forward
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        m.train(max_epochs=2, **FAST)


def test_non_finite_gradient_in_last_step_never_reaches_the_weights():
    """A finite loss with an infinite gradient in the last step must not survive in the weights
    (the epoch-end check restores the last good state and retries at a lower learning rate)."""
    adata = _tiny()
    m = _setup(adata)
    per = _calls_per_epoch(adata)
    total = 3 * per
    seen = {"n": 0}
    real = m.module.forward

    def forward(*a, **k):
        out = real(*a, **k)
        if m.module.training:
            seen["n"] += 1
            if seen["n"] == total:  # the very last training step: nothing would detect it later
                mu = out["mu"]
                mu.register_hook(lambda g: torch.full_like(g, float("inf")))
        return out

    m.module.forward = forward
    m.train(max_epochs=3, **FAST)
    assert _all_finite(m), "an infinite gradient was applied to the weights"
    assert m.trainer_.lr_lowered and len(m.history) == 3


# ---------------------------------------------------------------------- clamping and clipping
def test_logvar_is_clamped():
    adata = _tiny()
    m = _setup(adata)
    enc = m.module.encoder
    lin = enc.logvar
    x = torch.from_numpy(np.stack([adata.layers[k][:8].toarray() for k in m.modalities], 1)
                         ).float()
    b = torch.zeros(8, dtype=torch.long)
    m.module.eval()
    for bias in (1e4, -1e4):
        with torch.no_grad():
            lin.bias.fill_(bias)
        _, logvar = m.module.encode(x, b)
        assert logvar.min() >= LOGVAR_MIN and logvar.max() <= LOGVAR_MAX
        out = m.module(x, b)
        assert torch.isfinite(out["kl"]).all() and torch.isfinite(out["reconstruction"]).all()


def test_grad_clip_is_configurable():
    adata = _tiny()
    start = {k: v.clone() for k, v in _setup(adata).module.named_parameters()}

    def moved(grad_clip):
        m = _setup(adata)
        m.train(max_epochs=1, grad_clip=grad_clip, **FAST)
        with torch.no_grad():
            return sum(float((p - start[k]).abs().sum()) for k, p in m.module.named_parameters())

    # Adam normalises gradients, so only a clip far below Adam's eps (1e-8) shows up clearly
    tiny, free = moved(1e-12), moved(None)
    assert free > 0 and tiny < 0.05 * free


# ---------------------------------------------------------------------- extreme inputs
def _train_ok(adata, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = _setup(adata)
        m.train(max_epochs=3, **{**FAST, **kw})
    h = m.history
    assert np.isfinite(h["train_loss"]).all()
    assert _all_finite(m) and not m.trainer_.lr_lowered
    z = m.get_latent_representation()
    assert np.isfinite(z).all()
    assert np.isfinite(m.get_normalized_signal(modality=m.modalities[0])).all()
    return m


def test_cell_with_a_million_counts_in_one_bin():
    adata = _tiny()
    x = adata.layers["ATAC"].tolil()
    x[5, 17] = 10 ** 6
    adata.layers["ATAC"] = x.tocsr()
    _train_ok(adata)


@pytest.mark.parametrize("grad_clip", [100.0, None])
def test_many_cells_with_huge_counts(grad_clip):
    adata = _tiny()
    x = adata.layers["H3K27ac"].tolil()
    for i in range(0, adata.n_obs, 3):
        x[i, (7 * i) % adata.n_vars] = 10 ** 6
    adata.layers["H3K27ac"] = x.tocsr()
    _train_ok(adata, grad_clip=grad_clip)


def test_modality_all_zero_for_a_whole_batch():
    adata = _tiny()
    b = adata.obs["batch"].astype(str).to_numpy()
    first = sorted(set(b))[0]
    x = adata.layers["H3K27me3"].tolil()
    x[np.flatnonzero(b == first), :] = 0
    adata.layers["H3K27me3"] = x.tocsr()
    _train_ok(adata)


def test_modality_all_zero_everywhere():
    adata = _tiny()
    adata.layers["H3K27ac"] = sp.csr_matrix(adata.layers["H3K27ac"].shape, dtype=np.int64)
    _train_ok(adata)


def test_single_cell_batch_and_single_cell_last_minibatch():
    adata = _tiny(n_cells=49)  # 49 = 3 x 16 + 1: the last minibatch of one cell is dropped
    lab = adata.obs["batch"].astype(str).to_numpy().copy()
    lab[0] = "only_one_cell"
    adata.obs["batch"] = lab
    m = _train_ok(adata)
    assert m.module.config.n_batches == 3
    one = adata[:1].copy()
    assert np.isfinite(m.get_latent_representation(one)).all()


def test_single_cell_or_tiny_data_is_a_clear_error():
    adata = _tiny(n_cells=64)
    m = _setup(adata[:1].copy())
    with pytest.raises(ConvNetVAEError, match="at least 2 training cells|too few"):
        m.train(max_epochs=1, **FAST)
    with pytest.raises(ConvNetVAEError, match="batch_size"):
        _setup(adata).train(max_epochs=1, **{**FAST, "batch_size": 1})


def test_training_history_is_finite_with_paper_settings_on_sparse_cells():
    """Very sparse cells (a few counts each) with the paper's fixed epochs."""
    adata = _tiny(library_size=30.0)
    m = _train_ok(adata)
    assert not math.isnan(float(m.history["train_kl"].iloc[-1]))


# ---------------------------------------------------------------------- mixed precision, host syncs
def test_mixed_precision_runs_on_cpu_and_tracks_float32():
    """bfloat16 autocast (the GPU path) is testable on CPU: finite, float32 weights, and the
    first epoch's loss within a few percent of the float32 run from the same start."""
    adata = _tiny()
    losses = {}
    for mp in (False, True):
        m = _setup(adata)
        m.train(max_epochs=2, mixed_precision=mp, **FAST)
        assert _all_finite(m)
        assert all(p.dtype == torch.float32 for p in m.module.parameters())
        losses[mp] = m.history["train_loss"].to_numpy()
    assert m.train_config["mixed_precision"] is True
    np.testing.assert_allclose(losses[True], losses[False], rtol=0.05)


def test_training_step_does_not_wait_for_the_device(monkeypatch):
    """The loss and gradient checks stay on the device: convnetvae's training loop calls no
    .item()/bool()/.tolist() of a tensor per step, one .tolist() per epoch (the sums), as the
    data-parallel trainer. (torch's Adam reads its step counter, a CPU tensor, by .item(): no
    device sync, so only calls made from convnetvae's own code are counted.)"""
    import os
    import sys

    import convnetvae

    pkg = os.path.dirname(convnetvae.__file__)
    adata = _tiny()
    m = _setup(adata)
    calls = {"item": 0, "__bool__": 0, "tolist": 0}

    def count(name):
        real = getattr(torch.Tensor, name)

        def f(self, *a, **k):
            if sys._getframe(1).f_code.co_filename.startswith(pkg):
                calls[name] += 1
            return real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, f)

    for name in calls:
        count(name)
    epochs = 3
    m.train(max_epochs=epochs, **FAST)
    assert epochs * _calls_per_epoch(adata) >= 12
    assert calls == {"item": 0, "__bool__": 0, "tolist": epochs}, calls
