"""The time guard of automatic-length runs (issue 14, point 2): a run that the first epochs show
would overrun its budget is shortened, the rest of its one-cycle schedule compressed, with a
warning; the planned length otherwise, with ``time_guard=False`` and with a fixed ``max_epochs``.

The machine's speed is simulated: the trainer's clock (``train._now``) advances by a set number
of seconds per optimiser step and by nothing else, so these tests do not depend on CI's speed.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

import convnetvae as cv
from convnetvae import schedule
from convnetvae import train as train_mod
from convnetvae.train import Strategy, Trainer

#: small_adata: 300 cells x 3 modalities, so the budget is 0.06 s x 3 x 300 = 54 s; 270 training
#: cells in minibatches of 64 make 5 steps per epoch; the length rule below plans 20 epochs
PLANNED, STEPS = 20, 5


class FakeClock:
    """A clock that advances ``per_step`` seconds per training step and not otherwise."""

    def __init__(self, per_step: float) -> None:
        self.t, self.per_step = 1000.0, per_step
        self.slow_steps, self.slow_extra = 0, 0.0  # a warm-up: the first steps take longer

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def slow(monkeypatch):
    """Install a fake clock; returns a function that sets its seconds per step."""
    clock = FakeClock(0.0)
    monkeypatch.setattr(train_mod, "_now", clock)
    step = Trainer._step

    def timed_step(self, *args, **kwargs):
        clock.t += clock.per_step
        if clock.slow_steps > 0:
            clock.slow_steps -= 1
            clock.t += clock.slow_extra
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", timed_step)
    monkeypatch.setattr(schedule, "AUTO_RULE",
                        lambda *a, time_budget: PLANNED * STEPS)

    def set_speed(per_step: float) -> FakeClock:
        clock.per_step = per_step
        return clock

    return set_speed


def _model(adata):
    return cv.ConvNetVAE(adata, n_hidden=16, n_latent=4, seed=0)


def _train(model, **kw):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model.train(batch_size=64, progress=False, **kw)
    return [str(w.message) for w in seen if "training shortened" in str(w.message)]


# ---------------------------------------------------------------------------- the rule
def test_guarded_epochs_keeps_what_fits_and_shortens_what_does_not():
    # 20 planned, 2 done after 10 s, 5 s per epoch: 100 s in all
    assert schedule.guarded_epochs(2, 20, 10.0, 5.0, 100.0) == 20
    assert schedule.guarded_epochs(2, 20, 10.0, 5.0, 54.0) == 10  # 10 + 8 x 5 = 50 s
    # a re-planned run aims at 95 % of the limit: 10 + 7 x 5 = 45 s <= 49.4 s, 8 x 5 would not
    assert schedule.guarded_epochs(2, 20, 10.0, 5.0, 52.0) == 9
    # no time left: still one more epoch (the schedule's end), never below the floor
    assert schedule.guarded_epochs(8, 20, 60.0, 5.0, 54.0) == 9
    assert schedule.guarded_epochs(2, 20, 60.0, 5.0, 54.0) == schedule.FLOOR_EPOCHS
    assert schedule.guarded_epochs(2, 4, 60.0, 5.0, 54.0) == 4  # the floor: at most the plan
    assert schedule.guarded_epochs(20, 20, 500.0, 5.0, 54.0) == 20  # done


def test_time_limit_is_the_whole_budget_over_all_cells_with_a_floor():
    assert schedule.time_limit(2000, 1) == pytest.approx(120.0)
    assert schedule.time_limit(2000, 3, 2.0) == pytest.approx(2 * 360.0)
    assert schedule.time_limit(2000, 5) == schedule.time_limit(2000, 3)
    assert schedule.time_limit(50, 1) == schedule.GUARD_MIN_SECONDS  # 3 s: the floor


def test_a_shortened_plan_continues_the_schedule_and_ends_where_it_ends():
    plan = schedule.plan(1000, 5000, 1, 128, 20, None, "onecycle", kl_warmup_epochs=None)
    assert not plan.shortened and plan.position(7.5) == 7.5 and plan.planned_epochs == 20
    short = plan.resize(4, 10)
    assert short.shortened and (short.epochs, short.planned_epochs) == (10, 20)
    for e in (0.0, 2.5, 4.0):  # the epochs done are unchanged
        assert short.progress(e) == pytest.approx(plan.progress(e))
        assert short.kl_weight(int(e)) == pytest.approx(plan.kl_weight(int(e)))
    assert short.progress(10) == pytest.approx(1.0)
    assert short.lr_factor(short.progress(10)) == pytest.approx(plan.lr_factor(1.0))
    assert short.position(7) == pytest.approx(4 + 3 * 16 / 6)
    # the KL warm-up (the first 10 planned epochs) is compressed with the rest
    assert plan.kl_weight(6) < 1.0 and short.kl_weight(6) == 1.0
    # shortened again: the first shortening is kept up to the second one
    again = short.resize(6, 8)
    assert again.position(5) == pytest.approx(short.position(5))
    assert again.progress(8) == pytest.approx(1.0)
    assert short.resize(6, 20).progress(20) == pytest.approx(1.0)  # back to the planned length
    with pytest.raises(ValueError, match="need 0 < done < epochs"):
        plan.resize(10, 10)
    with pytest.raises(ValueError, match="the planned 20"):
        plan.resize(4, 21)


# ---------------------------------------------------------------------------- in training
def test_a_run_that_would_overrun_its_budget_is_shortened_with_a_warning(small_adata, slow):
    clock = slow(1.0)  # 5 s per epoch: the planned 20 epochs would take 100 s of 54
    m = _model(small_adata)
    said = _train(m)
    plan = m.trainer_.plan
    assert (plan.epochs, plan.planned_epochs, plan.shortened) == (10, PLANNED, True)
    assert len(m.history_) == 10 and clock.t - 1000.0 == pytest.approx(50.0)
    assert m.train_config["plan"]["planned_epochs"] == PLANNED
    assert m.train_config["plan"]["epochs"] == 10
    assert len(said) == 1
    assert "from 20 to 10 epochs" in said[0] and "time budget of 54 s" in said[0]
    assert "about 100 s" in said[0] and "time_budget=2" in said[0]
    assert "time_guard=False" in said[0]
    # the schedule still ends: the last step's learning rate is the one-cycle's end
    assert m.history_[-1]["lr"] == pytest.approx(schedule.ONE_CYCLE_LR * plan.lr_factor(
        plan.progress(9 + (STEPS - 1) / STEPS)))
    assert m.history_[-1]["lr"] < 0.01 * schedule.ONE_CYCLE_LR  # the peak: 1
    assert np.isfinite(m.get_latent_representation()).all()


def test_the_warning_names_only_what_was_compressed(small_adata, slow):
    slow(1.0)
    said = _train(_model(small_adata))  # one-cycle with the KL warm-up over the first half
    assert "rest of the learning-rate schedule and the KL warm-up were compressed" in said[0]
    said = _train(_model(small_adata), lr_schedule="constant")  # no warm-up either
    assert len(said) == 1 and "from 20 to 10 epochs" in said[0]
    assert "compressed" not in said[0] and "learning-rate" not in said[0]
    said = _train(_model(small_adata), lr_schedule="constant", kl_warmup_epochs=10)
    assert "rest of the KL warm-up was compressed" in said[0]
    # a warm-up already over when the guard first acts (after the third epoch) was not
    said = _train(_model(small_adata), kl_warmup_epochs=2)
    assert "rest of the learning-rate schedule was compressed" in said[0]


def test_a_run_within_its_budget_and_an_unguarded_run_train_the_planned_length(small_adata,
                                                                              slow):
    slow(0.1)  # 0.5 s per epoch: 10 s of 54
    m = _model(small_adata)
    assert _train(m) == []
    assert (m.trainer_.plan.epochs, len(m.history_), m.trainer_.plan.shortened) == (
        PLANNED, PLANNED, False)
    slow(1.0)
    for kw in ({"time_guard": False}, {"max_epochs": 12}):
        m = _model(small_adata)
        assert _train(m, **kw) == []
        assert len(m.history_) == kw.get("max_epochs", PLANNED)
    # a larger budget fits the planned length: what the warning suggests
    m = _model(small_adata)
    assert _train(m, time_budget=2) == [] and len(m.history_) == PLANNED


def test_a_run_grows_back_to_what_fits_when_epochs_get_faster(small_adata, slow):
    clock = slow(1.0)  # shortened to 10 epochs after the third

    def faster_after_3(epoch, row):
        if epoch == 3:
            clock.per_step = 0.1  # then 0.5 s per epoch

    m = _model(small_adata)
    m.train(batch_size=64, progress=False, callback=faster_after_3)
    plan = m.trainer_.plan
    # re-planned after every epoch from the fourth (10 -> 11 -> 18 -> 20 epochs); after the
    # sixth the median epoch is 0.5 s: 16.5 s + 14 x 0.5 s fits the 54 s
    assert (plan.epochs, len(m.history_), plan.shortened) == (PLANNED, PLANNED, False)
    assert [k[0] for k in plan.knots] == [3.0, 4.0, 5.0, 6.0]
    assert m.history_[-1]["lr"] < 0.01 * schedule.ONE_CYCLE_LR


def test_a_slow_first_epoch_is_not_taken_for_the_machine_s_speed(small_adata, slow):
    clock = slow(0.4)  # 2 s per epoch: 40 s of 54
    clock.slow_steps, clock.slow_extra = STEPS, 1.6  # but the first epoch takes 10 s
    m = _model(small_adata)
    assert _train(m) == [] and len(m.history_) == PLANNED  # 48 s in all: it fits
    assert clock.t - 1000.0 == pytest.approx(48.0)


def test_the_same_seed_gives_the_same_model_when_the_guard_does_not_act(small_adata, slow):
    slow(0.1)
    a, b = _model(small_adata), _model(small_adata)
    _train(a)
    _train(b, time_guard=False)
    np.testing.assert_array_equal(a.get_latent_representation(), b.get_latent_representation())


def test_a_shortened_run_resumes_on_its_shortened_schedule(small_adata, slow, tmp_path):
    slow(1.0)
    whole = _model(small_adata)
    _train(whole)
    stop = threading.Event()

    def stop_after_4(epoch, row):
        if epoch == 4:
            stop.set()

    part = _model(small_adata)
    part.train(batch_size=64, progress=False, checkpoint_dir=tmp_path, callback=stop_after_4,
               stop_event=stop)
    assert part.trainer_.interrupted and part.trainer_.plan.epochs == 10
    # resumed: the shortened plan, not the planned 20 (re-planned from epoch 7 on, the
    # schedule would differ from the whole run's)
    resumed = _model(small_adata)
    assert _train(resumed, checkpoint_dir=tmp_path, resume=True) == []
    assert resumed.trainer_.plan == whole.trainer_.plan and len(resumed.history_) == 10
    # the time the run has taken counts the first session's 4 epochs (5 s each) too
    assert resumed.trainer_.elapsed() == pytest.approx(50.0)
    np.testing.assert_allclose(resumed.get_latent_representation(),
                               whole.get_latent_representation(), atol=1e-5)


class _LaterSecondRank(Strategy):
    """One process standing in for two ranks: the other rank started 10 s earlier."""

    def reduce(self, sums: torch.Tensor) -> torch.Tensor:
        if sums.numel() == 3:  # the time guard's (elapsed, epoch time, 1)
            return sums * 2 + sums.new_tensor([10.0, 0.0, 0.0])
        return sums


def test_data_parallel_ranks_decide_on_their_mean_times(small_adata, slow):
    slow(1.0)
    m = _model(small_adata)
    said = _train(m, strategy=_LaterSecondRank())
    # after 3 epochs (the guard's first look) this rank has run 15 s, the other 25 s: a mean of
    # 20 s, 5 s per epoch, limit 54 s: 3 + 34 // 5 = 9 epochs (this rank alone: 10)
    assert m.trainer_.plan.epochs == 9 and len(m.history_) == 9 and len(said) == 1


def test_the_guard_is_a_setting_of_every_front_end():
    import argparse
    from pathlib import Path

    from convnetvae import settings
    from convnetvae.settings import TrainSettings

    p = argparse.ArgumentParser()
    settings.add_arguments(p, TrainSettings)
    assert settings.from_args(p.parse_args([]), TrainSettings)["time_guard"] is True
    assert settings.from_args(p.parse_args(["--no-time-guard"]), TrainSettings)["time_guard"] is False
    r_settings = Path(__file__).resolve().parents[2] / "R" / "settings.R"
    assert "`time.guard` = list(" in r_settings.read_text()  # R: time.guard = FALSE
    with pytest.raises(ValueError, match="time_guard"):
        settings.make(TrainSettings, time_guard="yes")
