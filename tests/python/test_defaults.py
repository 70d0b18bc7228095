"""The default model and training (issue 14): training length chosen from the data, the one-cycle
schedule, the encoder's input transforms and their inverses, data-initialised bin offsets, the
automatic architecture; and that the paper's settings stay reachable."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import convnetvae as cv
from convnetvae import schedule
from convnetvae.model import transforms
from convnetvae.model.registry import auto_architecture, resolve_architecture
from convnetvae.model.vae import VAE, ModuleConfig, count_parameters


# ---------------------------------------------------------------------------- schedule
def test_one_cycle_warms_up_then_decays_to_nearly_zero():
    f = [schedule.one_cycle(p) for p in np.linspace(0, 1, 101)]
    assert f[0] == pytest.approx(1 / schedule.START_DIVISOR)
    peak = int(round(schedule.WARMUP_FRACTION * 100))
    assert f[peak] == pytest.approx(1.0)
    assert all(a <= b + 1e-12 for a, b in zip(f[:peak], f[1:peak + 1]))  # rises
    assert all(a >= b - 1e-12 for a, b in zip(f[peak:], f[peak + 1:]))  # then falls
    assert f[-1] < 1e-4


def test_plan_auto_and_paper_settings():
    auto = schedule.plan(1000, 5000, 1, 128, None, None, "auto", 1e7)
    assert auto.auto and auto.schedule == "onecycle" and auto.lr == schedule.ONE_CYCLE_LR
    assert auto.steps_per_epoch == 8 and auto.total_steps >= 8
    paper = schedule.plan(1000, 5000, 1, 128, 300, None, "auto")
    assert not paper.auto and (paper.epochs, paper.schedule, paper.lr) == (300, "constant", 1e-3)
    assert paper.lr_factor(0.0) == paper.lr_factor(0.7) == 1.0
    forced = schedule.plan(1000, 5000, 1, 128, 20, 3e-3, "onecycle")
    assert (forced.epochs, forced.schedule, forced.lr) == (20, "onecycle", 3e-3)


def test_auto_length_is_chosen_from_the_data():
    flops = 1e6  # a cheap model: the quality term decides
    steps = {n: schedule.auto_steps(n, 3000, 1, 128, flops) for n in (200, 2000, 20000, 200000)}
    assert all(s >= 1 for s in steps.values())
    # more cells: at least as many steps, but far fewer epochs than on small data
    assert steps[200] <= steps[2000] <= steps[20000] <= steps[200000]
    epochs = {n: s / schedule.steps_per_epoch(n, 128) for n, s in steps.items()}
    assert epochs[200000] < epochs[200] and epochs[200] <= schedule.MAX_EPOCHS
    assert min(epochs.values()) >= schedule.MIN_EPOCHS
    assert schedule.auto_steps(2000, 3000, 1, 128, flops) == schedule.auto_steps(2000, 3000, 1, 128, flops)


def test_auto_length_fits_the_time_budget():
    for bins, mods, flops, params in ((25_000, 1, 2e7, 3e6), (25_000, 3, 5e7, 5e6),
                                      (5_000, 1, 8e6, 1.5e6), (245_220, 3, 4e8, 3e7)):
        for n in (200, 1000, 5000):
            batch = schedule.auto_batch_size(n)
            epochs = schedule.auto_epochs(n, bins, mods, batch, flops, params)
            est = epochs * schedule.seconds_per_epoch(n, bins, mods, batch, flops, params)
            budget = schedule.BUDGET_SECONDS_PER_CELL * min(mods, 3) * n
            assert schedule.full_budget_seconds(n, mods) == pytest.approx(budget)
            assert schedule.budget_seconds(n, mods) == pytest.approx(
                schedule.BUDGET_SHARE * budget)
            assert est <= schedule.budget_seconds(n, mods) <= budget or \
                epochs == schedule.FLOOR_EPOCHS
    # a costlier model (more FLOPs per cell) gets no more epochs
    assert schedule.auto_epochs(500, 25_000, 1, 128, 4e8) <= schedule.auto_epochs(500, 25_000, 1, 128, 4e6)


def test_time_budget_scales_the_cap_and_stops_at_what_the_data_need():
    # a Buenrostro-like set (480 training cells, 25,000 bins): the budget term decides
    n, bins, flops, params = 480, 25_000, 2e7, 3e6
    batch = schedule.auto_batch_size(n)
    quality = min(schedule.MAX_EPOCHS, max(schedule.MIN_EPOCHS, -(-schedule.TARGET_STEPS //
                                                                  schedule.steps_per_epoch(n, batch))))
    one = schedule.auto_epochs(n, bins, 1, batch, flops, params)
    assert schedule.FLOOR_EPOCHS < one < quality
    for factor in (2.0, 4.0):
        longer = schedule.auto_epochs(n, bins, 1, batch, flops, params, time_budget=factor)
        est = longer * schedule.seconds_per_epoch(n, bins, 1, batch, flops, params)
        assert est <= schedule.budget_seconds(n, 1) * factor
        assert longer >= int(factor * one) - 1 and longer <= quality
    assert schedule.budget_seconds(n, 1, 3.0) == pytest.approx(3 * schedule.budget_seconds(n, 1))
    # a large budget stops at the quality term, a small one at the floor
    assert schedule.auto_epochs(n, bins, 1, batch, flops, params, time_budget=1e3) == quality
    assert schedule.auto_epochs(n, bins, 1, batch, flops, params,
                                time_budget=1e-3) == schedule.FLOOR_EPOCHS
    p1 = schedule.plan(n, bins, 1, batch, None, None, "auto", flops, params)
    p4 = schedule.plan(n, bins, 1, batch, None, None, "auto", flops, params, time_budget=4.0)
    assert p4.auto and p4.epochs > 3 * p1.epochs
    # the KL warm-up follows the longer run
    assert p4.kl_warmup_epochs == schedule.auto_kl_warmup(p4.epochs, "onecycle")


def test_time_budget_reaches_the_length_rule_and_conflicts_with_max_epochs(small_adata,
                                                                           monkeypatch):
    seen = []

    def rule(n_train, n_bins, n_modalities, batch_size, flops_per_cell, n_parameters, *,
             time_budget):
        seen.append(time_budget)
        return 5

    monkeypatch.setattr(schedule, "AUTO_RULE", rule)
    m = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4)
    m.train(batch_size=64, time_budget=2.5, progress=False)
    assert seen == [2.5] and m.train_config["time_budget"] == 2.5
    with pytest.raises(ValueError, match=r"time_budget=2 sets the length .* max_epochs=3 fixes"):
        m.train(max_epochs=3, time_budget=2, progress=False)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="time_budget"):
            m.train(time_budget=bad, progress=False)
    m.train(max_epochs=1, time_budget=1.0, batch_size=64, progress=False)  # 1 is the default


def test_flops_are_counted_without_touching_the_model(small_adata):
    m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    deep = cv.ConvNetVAE(small_adata, architecture="conv-k11s3x2")
    before = {k: v.clone() for k, v in m.module.state_dict().items()}
    rng = torch.get_rng_state()
    small = schedule.training_flops_per_cell(m.module)
    big = schedule.training_flops_per_cell(deep.module)
    assert 0 < small < big
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in m.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in m.module.parameters())
    # Group 2 cannot run on meta tensors: counted on a CPU copy (the same count as on meta for
    # Group 1), not the 6-FLOPs-per-parameter fallback
    assert big > 6.0 * sum(p.numel() for p in deep.module.parameters())
    assert schedule._count_training_flops(m.module, "cpu") == small


def test_training_follows_the_plan(small_adata):
    m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    m.train(max_epochs=4, lr_schedule="onecycle", batch_size=64, progress=False)
    lrs = m.history["lr"].to_numpy()
    assert len(lrs) == 4 and lrs.max() <= schedule.ONE_CYCLE_LR and lrs[-1] < lrs.max() / 10
    assert m.train_config["lr_schedule"] == "onecycle"
    # the paper: constant 1e-3 for exactly max_epochs
    p = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    p.train(max_epochs=3, early_stopping=False, batch_size=64, progress=False)
    assert len(p.history) == 3 and np.allclose(p.history["lr"], 1e-3)


def test_kl_warmup_is_half_of_a_one_cycle_run_and_off_for_the_paper():
    auto = schedule.plan(1000, 5000, 1, 128, None, None, "auto", 1e7)
    assert auto.kl_warmup_epochs == round(schedule.KL_WARMUP_FRACTION * auto.epochs) >= 1
    w = auto.kl_warmup_epochs
    weights = [auto.kl_weight(e) for e in range(auto.epochs)]
    assert weights[0] == pytest.approx(1 / w) and weights[w - 1] == 1.0 == weights[-1]
    assert all(a < b for a, b in zip(weights[:w - 1], weights[1:w]))  # rises linearly, then 1
    assert schedule.plan(1000, 5000, 1, 128, 20, None, "onecycle", kl_warmup_epochs=None).kl_warmup_epochs == 10
    # the paper's regime (constant rate) has none; an explicit value wins in either regime
    paper = schedule.plan(1000, 5000, 1, 128, 300, None, "auto", kl_warmup_epochs=None)
    assert paper.kl_warmup_epochs == 0 and paper.kl_weight(0) == 1.0
    assert schedule.plan(1000, 5000, 1, 128, 300, None, "auto", kl_warmup_epochs=7).kl_warmup_epochs == 7
    assert schedule.plan(1000, 5000, 1, 128, None, None, "auto", 1e7, kl_warmup_epochs=0).kl_weight(0) == 1.0


def test_training_uses_the_planned_kl_weights(small_adata, monkeypatch):
    from convnetvae.train import Trainer

    seen: list[float] = []
    step = Trainer._step

    def spy(self, mb, kl_w, net=None):
        seen.append(kl_w)
        return step(self, mb, kl_w, net)

    monkeypatch.setattr(Trainer, "_step", spy)
    m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    m.train(max_epochs=4, lr_schedule="onecycle", batch_size=128, progress=False)
    assert m.trainer_.plan.kl_warmup_epochs == 2 and m.train_config["kl_warmup_epochs"] is None
    per_epoch = len(seen) // 4
    assert seen[::per_epoch] == [0.5, 1.0, 1.0, 1.0]
    seen.clear()
    p = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    p.train(max_epochs=2, early_stopping=False, batch_size=128, progress=False)  # the paper
    assert p.trainer_.plan.kl_warmup_epochs == 0 and set(seen) == {1.0}


def test_default_training_length_comes_from_the_data(small_adata, monkeypatch):
    seen = {}

    def rule(n_train, n_bins, n_modalities, batch_size, flops_per_cell, n_parameters, *,
             time_budget):
        seen.update(n_train=n_train, n_bins=n_bins, n_modalities=n_modalities,
                    time_budget=time_budget)
        return 7

    monkeypatch.setattr(schedule, "AUTO_RULE", rule)
    m = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4).train(batch_size=64, progress=False)
    assert seen == {"n_train": 270, "n_bins": 600, "n_modalities": 3, "time_budget": 1.0}
    assert len(m.history) == 2  # 7 steps at 5 steps per epoch (270 cells, batch 64): 2 epochs
    assert m.trainer_.plan.auto and m.trainer_.plan.schedule == "onecycle"


# ---------------------------------------------------------------------------- input transforms
@pytest.mark.parametrize("kind", ["log1p", "depth", "tfidf"])
def test_input_transform_and_its_inverse(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(5, 2, 40, generator=g) * 3, generator=g)
    x[:, :, 3] = 0  # a bin with no counts: idf 0
    scale = torch.tensor([50.0, 20.0])
    idf = torch.as_tensor(np.stack([transforms.inverse_frequency(t) for t in x.sum(0).numpy()]),
                          dtype=torch.float32)
    h = transforms.forward(x, kind, scale, idf)
    back = transforms.inverse(h, kind, x.sum(-1), scale, idf)
    keep = torch.ones_like(x, dtype=torch.bool) if kind != "tfidf" else (idf > 0).expand_as(x)
    torch.testing.assert_close(back[keep], x[keep], rtol=1e-4, atol=1e-4)
    # the library sizes the model computed once give the same input
    torch.testing.assert_close(transforms.forward(x, kind, scale, idf, x.sum(-1)), h)
    if kind != "log1p":  # and they are what it uses: twice the library, half the scale
        torch.testing.assert_close(transforms.forward(x, kind, scale, idf, 2 * x.sum(-1)),
                                   transforms.forward(x, kind, scale / 2, idf))


def test_depth_transform_removes_sequencing_depth():
    x = torch.poisson(torch.rand(4, 1, 100) * 2)
    scale = torch.tensor([30.0])
    a = transforms.forward(x, "depth", scale)
    b = transforms.forward(3 * x, "depth", scale)  # the same cells sequenced 3x deeper
    torch.testing.assert_close(a, b)
    assert not torch.allclose(transforms.forward(x, "log1p"), transforms.forward(3 * x, "log1p"))


def test_idf_weights_rare_bins_up():
    idf = transforms.inverse_frequency(np.array([10.0, 10.0, 1.0, 0.0]))
    assert idf[2] > idf[0] == idf[1] and idf[3] == 0 and idf[:3].mean() > 0


# ---------------------------------------------------------------------------- the model defaults
def test_default_model_uses_data_statistics(small_adata):
    m = cv.ConvNetVAE(small_adata)
    c = m.module.config
    assert c.architecture == auto_architecture(small_adata.n_vars, tied=True) == "conv-k11s11c8"
    assert c.input_transform == "tfidf" and c.bin_offsets and c.bin_loadings
    assert c.encoder_loadings and c.tie_loadings  # sparse counts: tied (test_tie_loadings.py)
    lib = np.asarray(small_adata.layers["ATAC"].sum(1)).ravel()
    assert float(m.module.input_scale[0]) == pytest.approx(np.median(lib[lib > 0]))
    tot = np.asarray(small_adata.layers["H3K27ac"].sum(0)).ravel()
    idf = np.where(tot > 0, tot[tot > 0].mean() / np.maximum(tot, 1e-12), 0.0)
    np.testing.assert_allclose(m.module.input_idf[1].numpy(), idf, rtol=1e-5)
    prof = np.log((tot + 0.5) / (tot + 0.5).sum())
    np.testing.assert_allclose(m.module.bin_offset[1].detach().numpy(), prof - prof.mean(), rtol=1e-5,
                               atol=1e-5)


def test_new_model_parts_survive_save_and_load(small_adata, tmp_path):
    m = cv.ConvNetVAE(small_adata, input_transform="tfidf", n_hidden=16, n_latent=4)
    m.train(max_epochs=1, batch_size=64, progress=False)
    m.save(tmp_path / "m")
    back = cv.ConvNetVAE.load(tmp_path / "m", small_adata)
    for name in ("input_scale", "input_idf", "bin_offset", "bin_loading", "encoder_loading"):
        torch.testing.assert_close(getattr(back.module, name), getattr(m.module, name))
    np.testing.assert_allclose(back.get_latent_representation(), m.get_latent_representation(),
                               rtol=1e-5, atol=1e-5)


def test_models_saved_before_these_settings_keep_the_paper_behaviour():
    cfg = ModuleConfig(n_modalities=1, chrom_lengths=[50], n_batches=1)  # an old config's fields
    vae = VAE(cfg)
    assert cfg.input_transform == "log1p" and vae.bin_offset is None and vae.input_scale is None
    assert vae.bin_loading is None and vae.encoder_loading is None
    assert not {"bin_offset", "bin_loading", "encoder_loading"} & set(vae.state_dict())


def _default_module_with_zero_loadings(adata, name: str):
    """The default model's module (5 latent dimensions, eval mode), its modalities and bins,
    after checking that its loadings ``name`` are (modalities x bins) x 5 and start at 0 (so the
    decoder or encoder starts as the convolutional one; ``loadings_start="lsi"``:
    test_lsi_start.py). The encoder's own matrix is untied (``tie_loadings=False``; tied, the
    default on sparse counts: test_tie_loadings.py)."""
    vae = cv.ConvNetVAE(adata, n_latent=5, tie_loadings=False).module.eval()
    n_mod, n_bins = vae.config.n_modalities, vae.n_bins
    loading = getattr(vae, name)
    assert tuple(loading.shape) == (n_mod * n_bins, 5)
    assert not loading.detach().any()
    return vae, n_mod, n_bins


def test_bin_loadings_add_z_times_w_to_the_log_rates_and_start_at_zero(small_adata):
    vae, n_mod, n_bins = _default_module_with_zero_loadings(small_adata, "bin_loading")
    torch.manual_seed(0)
    z, batch = torch.randn(4, 5), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        before = vae.decode(z, batch)
        vae.bin_loading.normal_()
        after = vae.decode(z, batch)
    # log-softmax outputs: the difference is z W^T up to one constant per cell and modality
    diff = after - before
    want = (z @ vae.bin_loading.detach().t()).view(4, n_mod, n_bins)
    torch.testing.assert_close(diff - diff.mean(-1, keepdim=True),
                               want - want.mean(-1, keepdim=True), rtol=1e-4, atol=1e-4)


def test_encoder_loadings_add_scaled_input_times_v_to_the_mean_and_start_at_zero(small_adata):
    vae, n_mod, n_bins = _default_module_with_zero_loadings(small_adata, "encoder_loading")
    x = torch.as_tensor(np.stack([small_adata.layers[k][:6].toarray()
                                  for k in ("ATAC", "H3K27ac", "H3K27me3")], axis=1),
                        dtype=torch.float32)
    batch = torch.tensor(small_adata.obs["batch"].cat.codes.to_numpy()[:6], dtype=torch.long)
    with torch.no_grad():
        mu0, logvar0 = vae.encode(x, batch)
        torch.manual_seed(0)
        vae.encoder_loading.normal_()
        mu1, logvar1 = vae.encode(x, batch)
    h = transforms.forward(x, vae.config.input_transform, vae.input_scale,
                           vae.input_idf).flatten(1)
    want = h @ vae.encoder_loading.detach() / np.sqrt(n_mod * n_bins)
    torch.testing.assert_close(mu1 - mu0, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logvar1, logvar0)  # the variance is the convolutional encoder's
    # a modality the cell lacks adds nothing (its input reads as zeros)
    mask = torch.ones(6, n_mod, dtype=torch.bool)
    mask[:, 1] = False
    with torch.no_grad():
        vae.encoder_loading[n_bins:2 * n_bins].add_(100.0)
        a, _ = vae.encode(x, batch, mask)
        vae.encoder_loading[n_bins:2 * n_bins].sub_(100.0)
        b, _ = vae.encode(x, batch, mask)
    torch.testing.assert_close(a, b)


def test_bin_loadings_are_on_by_default_up_to_a_size(small_adata, monkeypatch):
    from convnetvae.model import registry

    assert registry.auto_bin_loadings(25_000, 3) and registry.auto_bin_loadings(100_000, 1)
    assert not registry.auto_bin_loadings(100_001, 1)
    assert not registry.auto_bin_loadings(245_220, 3)  # the paper's all-bins setting
    assert cv.ConvNetVAE(small_adata, n_hidden=8, n_latent=2).module.config.bin_loadings
    monkeypatch.setattr(registry, "AUTO_BIN_LOADINGS_MAX", 3 * small_adata.n_vars - 1)
    m = cv.ConvNetVAE(small_adata, n_hidden=8, n_latent=2)
    assert not m.module.config.bin_loadings and m.module.bin_loading is None
    assert not m.module.config.encoder_loadings and m.module.encoder_loading is None
    on = cv.ConvNetVAE(small_adata, n_hidden=8, n_latent=2, bin_loadings=True).module.config
    assert on.bin_loadings and not on.encoder_loadings
    on = cv.ConvNetVAE(small_adata, n_hidden=8, n_latent=2, encoder_loadings=True).module.config
    assert on.encoder_loadings and not on.bin_loadings


def test_bin_loadings_are_trained_and_can_be_turned_off(small_adata):
    m = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4, tie_loadings=False)
    m.train(max_epochs=1, batch_size=64, progress=False)
    assert m.module.bin_loading.detach().abs().sum() > 0
    assert m.module.encoder_loading.detach().abs().sum() > 0
    off = cv.ConvNetVAE(small_adata, n_hidden=16, n_latent=4, bin_loadings=False,
                        encoder_loadings=False)
    assert off.module.bin_loading is None and not off.module.config.bin_loadings
    assert off.module.encoder_loading is None and not off.module.config.encoder_loadings


def test_paper_settings_are_reachable(small_adata):
    m = cv.ConvNetVAE(small_adata, architecture="conv-k51s51", input_transform="log1p",
                      bin_offsets=False, bin_loadings=False, encoder_loadings=False,
                      batch_offsets=False, chrom_aware=False)
    c = m.module.config
    assert (c.architecture, c.input_transform, c.bin_offsets, c.bin_loadings, c.encoder_loadings,
            c.batch_offsets, c.chrom_aware) == ("conv-k51s51", "log1p", False, False, False,
                                                False, False)
    x = torch.tensor([[[0.0, 1.0, 3.0] + [0.0] * 597] * 3])
    assert m.module.input_scale is None
    torch.testing.assert_close(transforms.forward(x, c.input_transform), torch.log1p(x))
    m.train(max_epochs=2, batch_size=128, early_stopping=False, progress=False)  # as README
    plan = m.trainer_.plan
    assert (plan.epochs, plan.schedule, plan.lr, plan.auto) == (2, "constant", 1e-3, False)
    assert m.train_config["batch_size"] == 128 and len(m.history) == 2


def test_auto_architecture_from_the_number_of_bins():
    assert auto_architecture(25_000) == "conv-k51s51"
    assert auto_architecture(10_000) == "conv-k31s31"
    assert auto_architecture(4_681) == "conv-k11s11"
    assert auto_architecture(300) == "conv-k11s11"
    assert resolve_architecture("AUTO", 25_000) == "conv-k51s51"
    # tied loadings (tie_loadings): the same stride, 8 channels
    assert auto_architecture(25_000, tied=True) == "conv-k51s51c8"
    assert auto_architecture(300, tied=True) == "conv-k11s11c8"
    assert resolve_architecture("auto", 10_000, tied=True) == "conv-k31s31c8"
    assert resolve_architecture("conv-k31s31", 25_000, tied=True) == "conv-k31s31"  # as given
    assert resolve_architecture("conv-k31s31", 25_000) == "conv-k31s31"


def test_conv_channels_in_the_name_and_the_papers_32_otherwise():
    from convnetvae.errors import ConvNetVAEError
    from convnetvae.model.registry import parse_architecture

    assert parse_architecture("conv-k51s51").channels == (32,)  # the paper's models unchanged
    assert parse_architecture("conv-k11s3x3").channels == (32, 64, 128)
    assert parse_architecture("conv-k51s51c8").channels == (8,)
    assert parse_architecture("conv-k11s3x2c16").channels == (16, 32)
    with pytest.raises(ConvNetVAEError, match="channels"):
        parse_architecture("conv-k11s11c0")
    with pytest.raises(ConvNetVAEError, match="c<channels>"):
        parse_architecture("conv-k11s11c")


def test_channels_in_the_name_build_the_model(small_adata):
    small = cv.ConvNetVAE(small_adata, architecture="conv-k11s11c8", n_hidden=16, n_latent=4)
    assert small.module.encoder.convs[0].out_channels == 8
    assert small.module.decoder.weights[0].shape[1] == 8
    paper = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    assert paper.module.encoder.convs[0].out_channels == 32
    assert count_parameters(small.module) < count_parameters(paper.module)
    small.train(max_epochs=1, batch_size=64, progress=False)
    assert small.get_latent_representation().shape == (small_adata.n_obs, 4)


def test_statistics_from_disk_equal_those_in_memory(small_adata, tmp_path):
    from convnetvae.api import _data_statistics

    path = tmp_path / "d.h5ad"
    small_adata.write_h5ad(path)
    disk = cv.data.read_backed(path)
    mods = ["ATAC", "H3K27ac", "H3K27me3"]
    for a, b in zip(_data_statistics(small_adata, mods), _data_statistics(disk, mods)):
        np.testing.assert_allclose(a, b)
    assert sp.issparse(small_adata.layers["ATAC"])
    # masked (unobserved) cells count as empty, on disk as in memory
    mask = np.ones((small_adata.n_obs, 3), dtype=bool)
    mask[::3, 1] = False
    mem, dsk = _data_statistics(small_adata, mods, mask), _data_statistics(disk, mods, mask)
    for a, b in zip(mem, dsk):
        np.testing.assert_allclose(a, b)
    expect = np.asarray(small_adata.layers["H3K27ac"][mask[:, 1]].sum(0)).ravel()
    np.testing.assert_allclose(mem[0][1], expect)
    np.testing.assert_allclose(mem[0][0], np.asarray(small_adata.layers["ATAC"].sum(0)).ravel())


def test_batch_size_is_chosen_from_the_data():
    sizes = {n: schedule.auto_batch_size(n) for n in (10, 180, 278, 540, 1024, 1800, 2048, 10**6)}
    assert sizes[10] == sizes[180] == sizes[278] == sizes[540] == schedule.MIN_AUTO_BATCH_SIZE
    assert sizes[1024] == 64 and sizes[1800] == 64
    assert sizes[2048] == sizes[10**6] == schedule.BATCH_SIZE
    for n, b in sizes.items():  # a power of two; small data get >= 16 steps unless at the floor
        assert b & (b - 1) == 0
        assert n // b >= schedule.MIN_STEPS_PER_EPOCH or b == schedule.MIN_AUTO_BATCH_SIZE


def test_default_training_resolves_and_records_the_batch_size(small_adata):
    m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    m.train(max_epochs=1, progress=False)
    n_train = small_adata.n_obs - round(0.1 * small_adata.n_obs)
    assert m.train_config["batch_size"] == schedule.auto_batch_size(n_train) == 32
    assert m.trainer_.plan.steps_per_epoch == schedule.steps_per_epoch(n_train, 32)
    m.train(max_epochs=1, batch_size=100, progress=False)  # a given size is kept
    assert m.train_config["batch_size"] == 100


def test_adam_is_fused_on_cpu_and_makes_the_same_update(small_adata, monkeypatch):
    from convnetvae import train as train_mod

    def fit(kind):
        monkeypatch.setattr(train_mod, "adam_implementation", lambda module: {kind: True})
        m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
        m.train(max_epochs=2, batch_size=64, progress=False)
        return m

    fused, foreach = fit("fused"), fit("foreach")
    assert fused.trainer_.optimizer.defaults["fused"]
    assert not foreach.trainer_.optimizer.defaults["fused"]
    # the same update up to rounding (weights right before a BatchNorm get gradients of ~0, whose
    # sign Adam amplifies, so the losses are compared rather than every weight)
    for col in ("train_loss", "validation_loss"):
        a, b = fused.history[col].to_numpy(), foreach.history[col].to_numpy()
        assert np.allclose(a, b, rtol=1e-3), col
    monkeypatch.undo()
    m = cv.ConvNetVAE(small_adata, architecture="conv-k11s11", n_hidden=16, n_latent=4)
    assert train_mod.adam_implementation(m.module) == {"fused": True}  # the default on CPU
    assert train_mod.adam_implementation(m.module.to("meta")) == {"foreach": True}
