"""Data-parallel training (torch.distributed, gloo on CPU) against single-process runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convnetvae as cv
from convnetvae.data.loader import MinibatchLoader
from convnetvae.distributed import epoch_batches, step_seed, train_distributed, train_multiprocess
from convnetvae.errors import ConvNetVAEError
from convnetvae.train import parameter_groups

MODS = ["ATAC", "H3K27ac", "H3K27me3"]
MODEL_KW = dict(architecture="conv-k11s11", n_hidden=32, n_latent=8, seed=0)
EPOCHS, PER_RANK = 2, 32


def _data():
    adata = cv.simulate(n_cells=200, n_bins=600, n_types=4, n_chromosomes=3, seed=5)
    cv.ConvNetVAE.setup_anndata(adata, modalities=MODS, batch_key="batch")
    return adata


def _reference(adata, world: int) -> tuple[cv.ConvNetVAE, list[float]]:
    """What DDP over ``world`` ranks computes, written out in one process: per step, each rank's
    part is a micro-batch with its own BatchNorm statistics and noise seed; gradients are averaged;
    running statistics follow rank 0."""
    model = cv.ConvNetVAE(adata, **MODEL_KW)
    _, source, codes, mask = model._prepare(None)
    loader = MinibatchLoader(source, codes, mask)
    vae = model.module.train()
    opt = torch.optim.Adam(parameter_groups(vae, 1e-3), lr=1e-3)
    bns = [m for m in vae.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    losses = []
    for epoch in range(EPOCHS):
        total, n = 0.0, 0
        for step, parts in enumerate(epoch_batches(np.arange(adata.n_obs), PER_RANK, world,
                                                   MODEL_KW["seed"], epoch)):
            opt.zero_grad()
            for r, rows in enumerate(parts):
                for bn in bns:
                    bn.momentum = 0.1 if r == 0 else 0.0
                torch.manual_seed(step_seed(MODEL_KW["seed"], epoch, step, r))
                mb = loader.load(rows)
                out = vae(mb.x, mb.batch, mb.mask)
                ((out["kl"] - out["reconstruction"]).mean() / world).backward()
                total += float((out["reconstruction"] - out["kl"]).sum().detach())
                n += len(rows)
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 100.0)
            opt.step()
        losses.append(-total / n)
    for bn in bns:
        bn.momentum = 0.1
    vae.eval()
    return model, losses


def _train_mode_outputs(model, adata) -> tuple[np.ndarray, np.ndarray]:
    """Embedding and decoder log-weights of all cells in one batch, BatchNorm on batch statistics
    and dropout off: invariant to the biases that BatchNorm cancels."""
    _, source, codes, mask = model._prepare(None)
    mb = MinibatchLoader(source, codes, mask).load(np.arange(adata.n_obs))
    vae = model.module.train()
    for m in vae.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        mu, _ = vae.encode(mb.x, mb.batch, mb.mask)
        logw = vae.decode(mu, mb.batch)
    vae.eval()
    return mu.numpy(), logw.numpy()


def test_epoch_batches_are_disjoint_shards_covering_the_epoch():
    idx = np.arange(203)
    steps = epoch_batches(idx, 32, 2, seed=1, epoch=4)
    seen = np.concatenate([p for parts in steps for p in parts])
    assert len(seen) == len(np.unique(seen)) == 203  # last step: 11 rows -> 6 + 5
    assert all(len(parts) == 2 for parts in steps)
    assert [len(p) for p in steps[0]] == [32, 32]
    # same on every rank (a function of seed and epoch only), different across epochs
    again = epoch_batches(idx, 32, 2, seed=1, epoch=4)
    assert all(np.array_equal(a, b) for s, t in zip(steps, again) for a, b in zip(s, t))
    other = epoch_batches(idx, 32, 2, seed=1, epoch=5)
    assert not np.array_equal(steps[0][0], other[0][0])
    # a tail too small for BatchNorm on some rank is dropped
    tail = epoch_batches(np.arange(66), 32, 2, seed=0, epoch=0)
    assert len(tail) == 1
    assert step_seed(0, 1, 2, 0) != step_seed(0, 1, 2, 1)


def test_train_distributed_needs_a_process_group():
    adata = _data()
    model = cv.ConvNetVAE(adata, **MODEL_KW)
    with pytest.raises(ConvNetVAEError, match="process group"):
        train_distributed(model, max_epochs=1)
    with pytest.raises(ConvNetVAEError, match="unknown training argument"):
        train_distributed(model, max_epoch=1)


@pytest.mark.timeout(180)
def test_two_processes_match_single_process(tmp_path):
    adata = _data()
    path = tmp_path / "data.h5ad"
    adata.write_h5ad(path)
    out = train_multiprocess(
        path, MODS, tmp_path / "ddp_model", nproc=2, batch_key="batch", model_kwargs=MODEL_KW,
        train_kwargs=dict(max_epochs=EPOCHS, batch_size=PER_RANK, validation_size=0.0,
                          early_stopping=False, progress=False))
    ddp = cv.ConvNetVAE.load(out, adata, device="cpu")
    assert ddp.train_config["world_size"] == 2
    assert len(ddp.history) == EPOCHS

    # 1) exact semantics: the same computation written out in one process. Biases feeding a
    # BatchNorm (or the softmax) get a mathematically zero gradient, so Adam turns rounding noise
    # into arbitrary steps there; they cannot change the train-mode function, which is compared.
    ref, ref_losses = _reference(adata, world=2)
    np.testing.assert_allclose(ddp.history["train_loss"].to_numpy(), ref_losses, rtol=1e-5)
    ref_state = ref.module.state_dict()
    for k, v in ddp.module.state_dict().items():
        if "weight" in k and "running" not in k:
            torch.testing.assert_close(v, ref_state[k], atol=1e-5, rtol=1e-4, msg=k)
    z_ddp, logw_ddp = _train_mode_outputs(ddp, adata)
    z_ref, logw_ref = _train_mode_outputs(ref, adata)
    np.testing.assert_allclose(z_ddp, z_ref, atol=1e-4)
    np.testing.assert_allclose(logw_ddp, logw_ref, atol=1e-4)
    # the tolerance is meaningful: training moved the function far further than that
    z_init, _ = _train_mode_outputs(cv.ConvNetVAE(adata, **MODEL_KW), adata)
    assert np.abs(z_init - z_ddp).max() > 0.1
    # eval-mode embeddings (running statistics) agree up to the bias noise above
    np.testing.assert_allclose(ddp.get_latent_representation(), ref.get_latent_representation(),
                               atol=0.03)

    # 2) the plain single-process run with the same effective batch (64) learns the same curve
    single = cv.ConvNetVAE(adata, **MODEL_KW)
    single.train(max_epochs=EPOCHS, batch_size=2 * PER_RANK, validation_size=0.0,
                 early_stopping=False, progress=False, device="cpu")
    a = ddp.history["train_loss"].to_numpy()
    b = single.history["train_loss"].to_numpy()
    assert a[-1] < a[0] and b[-1] < b[0]
    np.testing.assert_allclose(a, b, rtol=0.02)


@pytest.mark.timeout(180)
def test_cli_train_nproc_2_saves_one_model(tmp_path, capsys):
    from convnetvae.cli import main

    adata = _data()
    path = tmp_path / "data.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "model"
    code = main(["train", "--data", str(path), "--modalities", ",".join(MODS), "--batch-key",
                 "batch", "--architecture", "conv-k11s11", "--epochs", "1", "--batch-size",
                 "32", "--nproc", "2", "--quiet", "--out", str(out)])
    assert code == 0
    assert "2 processes" in capsys.readouterr().out
    model = cv.ConvNetVAE.load(out, adata, device="cpu")
    assert model.train_config["world_size"] == 2 and len(model.history) == 1
    assert np.isfinite(model.get_latent_representation()).all()
