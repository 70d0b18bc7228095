"""Weight decay (``train(weight_decay=)``) decays every weight but the per-batch offsets."""

from __future__ import annotations

import torch

import convnetvae as cv
from convnetvae.train import parameter_groups, set_weight_decay


def _model() -> cv.ConvNetVAE:
    adata = cv.simulate(n_cells=80, n_bins=200, n_chromosomes=2, n_types=2, n_batches=2, seed=0)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4, seed=0)


def _adam(module: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The optimiser as ``Trainer`` builds it."""
    opt = torch.optim.Adam(parameter_groups(module, lr), lr=lr)
    set_weight_decay(opt, weight_decay)
    return opt


def test_groups_decay_everything_but_the_batch_offsets():
    module = _model().module
    groups = _adam(module, 1e-3, weight_decay=0.5).param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert groups[1]["params"] == [module.batch_offset]
    names = {id(p): n for n, p in module.named_parameters()}
    assert "bin_offset" in {names[id(p)] for p in groups[0]["params"]}
    assert len(groups[0]["params"]) + 1 == len(list(module.parameters()))


def test_a_step_without_gradient_moves_decayed_weights_and_leaves_the_offsets():
    """With zero gradients only the decay moves a weight: the batch offsets stay put."""
    module = _model().module
    with torch.no_grad():
        module.batch_offset.fill_(0.5)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    opt = _adam(module, 1e-2, weight_decay=1.0)
    for p in module.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(module.batch_offset, before["batch_offset"])
    moved = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    nonzero = {n for n, v in before.items() if v.any()}
    assert moved == nonzero - {"batch_offset"}
    assert "bin_offset" in moved  # the shared bin offsets are decayed like any weight


def test_set_weight_decay_keeps_the_offsets_undecayed():
    module = _model().module
    opt = torch.optim.Adam(parameter_groups(module, 1e-3), lr=1e-3)
    for group in opt.param_groups:  # as a checkpoint of an older version restores them
        group["weight_decay"] = 0.3
    set_weight_decay(opt, 0.2)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]


def test_training_with_weight_decay_keeps_batch_offsets_learned():
    """Strong decay shrinks the other weights; the offsets learn as without it."""
    kw = dict(max_epochs=3, batch_size=16, progress=False, validation_size=0.0, n_threads=1,
              early_stopping=False)
    plain, decayed = _model(), _model()
    plain.train(weight_decay=0.0, **kw)
    decayed.train(weight_decay=5.0, **kw)
    norm = {n: p.detach().norm().item() for n, p in decayed.module.named_parameters()}
    plain_norm = {n: p.detach().norm().item() for n, p in plain.module.named_parameters()}
    assert norm["bin_loading"] < plain_norm["bin_loading"]
    assert norm["batch_offset"] > 0.5 * plain_norm["batch_offset"] > 0
