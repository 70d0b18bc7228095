"""How long and how fast to train: the training length chosen from the data, and the learning-rate
schedule.

Two regimes:

* **auto** (``max_epochs=None``, the default): the number of optimiser steps is chosen from the
  data (:func:`auto_steps`) and the learning rate follows a one-cycle schedule (:func:`one_cycle`:
  a warm-up to ``lr`` then a cosine decay to nearly zero), which reaches in a few hundred steps
  what a constant learning rate reaches in thousands. The run has a fixed length, so early
  stopping does not apply.
* **fixed** (``max_epochs=N``): exactly as before and as the paper: ``N`` epochs at a constant
  learning rate (1e-3 unless given), optionally stopped early on the validation loss.

``lr_schedule`` picks the schedule explicitly (``"onecycle"`` or ``"constant"``) in either regime.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .data.loader import n_minibatches

#: peak learning rate of the one-cycle schedule and the paper's constant learning rate
ONE_CYCLE_LR = 1e-2
CONSTANT_LR = 1e-3
#: fraction of the one-cycle schedule spent warming up, and the start / end fractions of the peak
WARMUP_FRACTION = 0.3
START_DIVISOR = 25.0
END_DIVISOR = 1e4


@dataclass(frozen=True)
class Plan:
    """A resolved training plan.

    Attributes
    ----------
    epochs
        Passes over the training cells.
    steps_per_epoch
        Optimiser steps per epoch.
    schedule
        ``"onecycle"`` or ``"constant"``.
    lr
        The peak (one-cycle) or constant learning rate.
    auto
        Whether the length was chosen from the data.
    kl_warmup_epochs
        Epochs over which the KL weight rises linearly to 1 (0: the full weight from the start).
    planned_epochs
        The length the schedule was planned for (0: :attr:`epochs`); larger than :attr:`epochs`
        when the time guard shortened the run (:meth:`resize`).
    knots
        Where the time guard re-planned the run: ``(epoch, position)`` pairs, the run's epoch
        and the position in the planned schedule (in planned epochs) it had reached there; from
        each knot on the rest of the schedule is fitted into the remaining epochs.
    """

    epochs: int
    steps_per_epoch: int
    schedule: str
    lr: float
    auto: bool
    kl_warmup_epochs: int = 0
    planned_epochs: int = 0
    knots: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.planned_epochs <= 0:
            object.__setattr__(self, "planned_epochs", self.epochs)
        object.__setattr__(self, "knots", tuple((float(e), float(p)) for e, p in self.knots))

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def shortened(self) -> bool:
        """Whether the time guard shortened the run."""
        return self.epochs < self.planned_epochs

    def position(self, epoch: float) -> float:
        """Where in the planned schedule the run is at ``epoch`` (fractional, 0-based), in
        planned epochs: ``epoch`` itself unless the run was shortened, then piecewise linear
        through :attr:`knots` to :attr:`planned_epochs` at :attr:`epochs`."""
        if not self.knots:  # never re-planned: the planned length
            return float(epoch)
        xs = [0.0, *(k[0] for k in self.knots), float(self.epochs)]
        ys = [0.0, *(k[1] for k in self.knots), float(self.planned_epochs)]
        return float(np.interp(float(epoch), xs, ys))

    def progress(self, epoch: float) -> float:
        """Fraction of the planned schedule done at ``epoch`` (fractional, 0-based)."""
        return self.position(epoch) / max(self.planned_epochs, 1)

    def kl_weight(self, epoch: int) -> float:
        """Weight of the KL term in epoch ``epoch`` (0-based): ``(epoch + 1) / w`` during a
        warm-up of ``w`` epochs, then 1 (in planned epochs: a shortened run's warm-up is
        compressed with the rest of its schedule)."""
        w = self.kl_warmup_epochs
        return 1.0 if w <= 0 else min(1.0, (self.position(epoch) + 1) / w)

    def lr_factor(self, progress: float) -> float:
        """Multiplier of :attr:`lr` at ``progress`` = fraction of the run done (0 to 1)."""
        if self.schedule == "constant":
            return 1.0
        return one_cycle(progress)

    def resize(self, done: int, epochs: int) -> Plan:
        """This plan ending after ``epochs`` epochs instead (at most :attr:`planned_epochs`),
        the first ``done`` as they were: the rest of the planned schedule (learning rate and KL
        warm-up) is fitted into epochs ``done`` to ``epochs``, so the run still ends where the
        schedule ends."""
        if not 0 < done < epochs <= self.planned_epochs:
            raise ValueError(f"resize(done={done}, epochs={epochs}): need 0 < done < epochs <= "
                             f"the planned {self.planned_epochs}")
        knots = (*self.knots, (done, self.position(done)))
        return replace(self, epochs=int(epochs), knots=knots)


def one_cycle(progress: float, warmup: float = WARMUP_FRACTION) -> float:
    """One-cycle factor at ``progress`` (fraction of the run done) (Smith & Topin 2019, as
    ``torch.optim.lr_scheduler.OneCycleLR`` with cosine annealing): from ``1/25`` up to 1 over
    the first ``warmup`` of the run, then down to ``1/(25 * 1e4)``."""
    p = min(max(float(progress), 0.0), 1.0)
    lo, hi, end = 1.0 / START_DIVISOR, 1.0, 1.0 / (START_DIVISOR * END_DIVISOR)
    if p <= warmup:
        return _cos(lo, hi, p / warmup)
    return _cos(hi, end, (p - warmup) / (1.0 - warmup))


def _cos(start: float, end: float, frac: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * min(max(frac, 0.0), 1.0)) + 1.0)


#: the minibatch size of large data, the smallest one chosen for small data, and the optimiser
#: steps per epoch small data get (a few hundred cells: 32 cells per step, not 128; at equal
#: epochs this is what trains small sets in time, docs/benchmarks.md)
BATCH_SIZE = 128
MIN_AUTO_BATCH_SIZE = 32
MIN_STEPS_PER_EPOCH = 16


def auto_batch_size(n_train: int) -> int:
    """The minibatch size when ``batch_size=None``: :data:`BATCH_SIZE`, or the largest power of
    two that still gives :data:`MIN_STEPS_PER_EPOCH` steps per epoch, never below
    :data:`MIN_AUTO_BATCH_SIZE`."""
    want = max(1, int(n_train) // MIN_STEPS_PER_EPOCH)
    size = 1 << max(0, want.bit_length() - 1)  # largest power of two <= want
    return int(min(BATCH_SIZE, max(MIN_AUTO_BATCH_SIZE, size)))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps of one epoch: the training loader's minibatches (the last partial one is
    kept when it has >= 2 cells)."""
    return max(1, n_minibatches(n_train, batch_size, drop_last=True))


#: the time budget of default training, seconds per cell and modality (the issue's 1 minute per
#: 1,000 cells for one modality, 3 for three), and the share of it the cost model aims for
#: (headroom for slower or busier machines, the validation pass and the setup)
BUDGET_SECONDS_PER_CELL = 0.060
BUDGET_SHARE = 0.75
#: the cost model of one epoch: A * training FLOPs per cell and B * bins x modalities for every
#: training cell, plus C + D * parameters per optimiser step (Adam, gradient clipping and the
#: other per-step work over every weight, which dominates with small minibatches); fitted by
#: benchmarks/default_cost.py on the project's 2-core machine (2 threads; the shape measured with
#: minibatches of 32 and 128, the scale from an idle run; median error 11 %, largest 28 %:
#: benchmarks/results/default_cost.json), then scaled by 0.77, the mean ratio of measured to
#: estimated default training time on the five real sets (docs/benchmarks.md)
COST_A = 3.03e-11
COST_B = 1.26e-08
COST_C = 0.0
COST_D = 1.86e-08
#: enough optimiser steps for small data, at least this many epochs for large data, at most this
#: many epochs; and never fewer than FLOOR_EPOCHS when the budget is tight
TARGET_STEPS = 1000
MIN_EPOCHS = 20
MAX_EPOCHS = 200
FLOOR_EPOCHS = 5


def seconds_per_epoch(n_train: int, n_bins: int, n_modalities: int, batch_size: int,
                      flops_per_cell: float, n_parameters: int = 0) -> float:
    """The cost model's estimate of one training epoch, in seconds on the reference machine."""
    per_cell = COST_A * flops_per_cell + COST_B * n_bins * n_modalities
    per_step = COST_C + COST_D * n_parameters
    return n_train * per_cell + per_step * steps_per_epoch(n_train, batch_size)


def full_budget_seconds(n_cells: int, n_modalities: int) -> float:
    """The whole time budget of default training on ``n_cells`` cells:
    :data:`BUDGET_SECONDS_PER_CELL` per cell and modality, up to three modalities (the issue's
    1 minute per 1,000 cells for one modality, 3 for three)."""
    return BUDGET_SECONDS_PER_CELL * min(max(n_modalities, 1), 3) * n_cells


def budget_seconds(n_train: int, n_modalities: int, time_budget: float = 1.0) -> float:
    """The share of the time budget default training aims for (:data:`BUDGET_SHARE` of
    :func:`full_budget_seconds` of the training cells), times ``time_budget`` (the ``train``
    setting: 1 is the default budget)."""
    return BUDGET_SHARE * full_budget_seconds(n_train, n_modalities) * float(time_budget)


#: the time guard of automatic-length runs (``train(time_guard=True)``): once this many epochs
#: after the first (a warm-up) have run, it projects the run's end from their median time after
#: every epoch and, if the planned length would overrun its whole budget
#: (:func:`full_budget_seconds` times ``time_budget``, at least :data:`GUARD_MIN_SECONDS`),
#: compresses the rest of the schedule into the epochs that fit (re-planned after every epoch:
#: fewer when epochs get slower, more, up to the planned length, when they get faster)
GUARD_AFTER_EPOCHS = 2
GUARD_MIN_SECONDS = 10.0
#: a re-planned run aims at this share of the limit (the work after the last epoch, and epochs
#: that vary: aimed at the whole limit, runs on a busy machine ended at 96-101 % of it)
GUARD_AIM = 0.95


def time_limit(n_cells: int, n_modalities: int, time_budget: float = 1.0) -> float:
    """The time guard's limit for a run on ``n_cells`` cells (training and validation): the
    whole budget times ``time_budget``, never below :data:`GUARD_MIN_SECONDS` (a run that ends
    within seconds is not cut)."""
    return max(GUARD_MIN_SECONDS, full_budget_seconds(n_cells, n_modalities) * float(time_budget))


def guarded_epochs(done: int, epochs: int, elapsed: float, per_epoch: float, limit: float,
                   floor: int = FLOOR_EPOCHS) -> int:
    """The epochs a run may have so that it ends within ``limit`` seconds.

    ``done`` epochs have finished after ``elapsed`` seconds, epochs take ``per_epoch`` seconds,
    ``epochs`` were planned. Returns ``epochs`` when the planned length fits; otherwise as many
    as fit into :data:`GUARD_AIM` of ``limit``, but at least one more than ``done`` (the
    schedule's end: the learning rate decays to nearly zero) and never fewer than ``floor`` (or
    ``epochs``, if fewer).
    """
    if done >= epochs or elapsed + per_epoch * (epochs - done) <= limit:
        return epochs
    fit = done + int(max(0.0, GUARD_AIM * limit - elapsed) // max(per_epoch, 1e-12))
    return int(min(epochs, max(fit, done + 1, min(floor, epochs))))


def auto_epochs(n_train: int, n_bins: int, n_modalities: int, batch_size: int,
                flops_per_cell: float, n_parameters: int = 0, time_budget: float = 1.0) -> int:
    """Epochs of an auto-length run, chosen from the data.

    The quality term asks for :data:`TARGET_STEPS` optimiser steps, within
    [:data:`MIN_EPOCHS`, :data:`MAX_EPOCHS`] epochs (small data: many epochs of few steps; large
    data: fewer epochs of many steps). The budget term caps the epochs so that the estimated
    training time (:func:`seconds_per_epoch`) stays within :func:`budget_seconds` (``time_budget``
    times the default budget), never below :data:`FLOOR_EPOCHS`. docs/benchmarks.md has the
    measurements behind the numbers.
    """
    spe = steps_per_epoch(n_train, batch_size)
    quality = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / spe)))
    cap = int(budget_seconds(n_train, n_modalities, time_budget)
              / seconds_per_epoch(n_train, n_bins, n_modalities, batch_size, flops_per_cell,
                                  n_parameters))
    return max(1, min(quality, max(FLOOR_EPOCHS, cap)))


def _default_rule(n_train: int, n_bins: int, n_modalities: int, batch_size: int,
                  flops_per_cell: float, n_parameters: int, *, time_budget: float = 1.0) -> int:
    return auto_epochs(n_train, n_bins, n_modalities, batch_size, flops_per_cell,
                       n_parameters, time_budget) * steps_per_epoch(n_train, batch_size)


#: ``rule(n_train, n_bins, n_modalities, batch_size, flops_per_cell, n_parameters, *,
#: time_budget) -> steps`` of auto runs
AUTO_RULE = _default_rule


def auto_steps(n_train: int, n_bins: int, n_modalities: int, batch_size: int,
               flops_per_cell: float, n_parameters: int = 0, time_budget: float = 1.0) -> int:
    """Optimiser steps of an auto-length run, chosen from the data (:data:`AUTO_RULE`)."""
    return int(AUTO_RULE(n_train, n_bins, n_modalities, batch_size, flops_per_cell,
                         n_parameters, time_budget=time_budget))


def training_flops_per_cell(module: torch.nn.Module) -> float:
    """FLOPs of matrix products and convolutions in one training step, per cell.

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` on a copy of the module on the
    ``meta`` device (shapes only: no computation, no change to the module, its statistics or
    the random state); the deeper architectures, which cannot run on ``meta`` tensors, on a
    2-cell CPU copy instead. Falls back to 6 FLOPs per parameter when both fail.
    """
    for device in ("meta", "cpu"):
        try:
            return _count_training_flops(module, device)
        except Exception:  # noqa: BLE001, S112 - an estimate: try the next way
            continue
    return 6.0 * float(sum(p.numel() for p in module.parameters()))


def _count_training_flops(module: torch.nn.Module, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    cfg = module.config
    n = 2
    with torch.random.fork_rng(devices=[]):
        work = copy.deepcopy(module).to(device).train()
        x = torch.ones(n, cfg.n_modalities, module.n_bins, device=device)
        batch = torch.zeros(n, dtype=torch.long, device=device)
        with FlopCounterMode(display=False) as counter:
            out = work(x, batch, log_factorials=torch.zeros(n, cfg.n_modalities, device=device))
            (out["kl"] - out["reconstruction"]).sum().backward()
    return float(counter.get_total_flops()) / n


#: share of a one-cycle run over which the KL weight rises from 1/w to 1 when
#: ``kl_warmup_epochs=None``: with the full weight from the first step, the few hundred steps of
#: a default run on small data leave the latent space less informative (docs/benchmarks.md,
#: "KL warm-up")
KL_WARMUP_FRACTION = 0.5


def auto_kl_warmup(epochs: int, schedule: str) -> int:
    """The KL warm-up of ``kl_warmup_epochs=None``: the first :data:`KL_WARMUP_FRACTION` of a
    one-cycle run's epochs, none with the constant schedule (the paper)."""
    if schedule != "onecycle":
        return 0
    return int(round(KL_WARMUP_FRACTION * epochs))


def plan(n_train: int, n_bins: int, n_modalities: int, batch_size: int, max_epochs: int | None,
         lr: float | None, lr_schedule: str, flops_per_cell: float = 0.0,
         n_parameters: int = 0, kl_warmup_epochs: int | None = None,
         time_budget: float = 1.0) -> Plan:
    """Resolve ``max_epochs`` / ``lr`` / ``lr_schedule`` / ``kl_warmup_epochs`` /
    ``time_budget`` settings into a :class:`Plan` (``flops_per_cell``:
    :func:`training_flops_per_cell` of the model, ``n_parameters`` its parameter count, for auto
    runs; ``kl_warmup_epochs=None``: :func:`auto_kl_warmup`; ``time_budget`` only shapes
    automatic runs, and the settings reject it beside a ``max_epochs``)."""
    spe = steps_per_epoch(n_train, batch_size)
    auto = max_epochs is None
    schedule = lr_schedule if lr_schedule != "auto" else ("onecycle" if auto else "constant")
    if auto:
        steps = auto_steps(n_train, n_bins, n_modalities, batch_size, flops_per_cell,
                           n_parameters, time_budget)
        epochs = max(1, math.ceil(steps / spe))
    else:
        epochs = int(max_epochs)
    if lr is None:
        lr = ONE_CYCLE_LR if schedule == "onecycle" else CONSTANT_LR
    warmup = auto_kl_warmup(epochs, schedule) if kl_warmup_epochs is None else int(kl_warmup_epochs)
    return Plan(epochs=epochs, steps_per_epoch=spe, schedule=schedule, lr=float(lr), auto=auto,
                kl_warmup_epochs=warmup)
