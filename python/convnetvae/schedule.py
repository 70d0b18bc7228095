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

import math
from dataclasses import dataclass

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
    """

    epochs: int
    steps_per_epoch: int
    schedule: str
    lr: float
    auto: bool

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def lr_factor(self, progress: float) -> float:
        """Multiplier of :attr:`lr` at ``progress`` = fraction of the run done (0 to 1)."""
        if self.schedule == "constant":
            return 1.0
        return one_cycle(progress)


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


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps of one epoch (the last partial minibatch is kept when it has >= 2 cells)."""
    full, rest = divmod(int(n_train), int(batch_size))
    return max(1, full + (1 if rest >= 2 else 0))


def auto_steps(n_train: int, n_bins: int, n_modalities: int, batch_size: int) -> int:
    """Optimiser steps of an auto-length run, chosen from the data.

    See :data:`AUTO_RULE` for the rule and docs/benchmarks.md for the measurements behind it.
    """
    return AUTO_RULE(n_train, n_bins, n_modalities, batch_size)


def _default_rule(n_train: int, n_bins: int, n_modalities: int, batch_size: int) -> int:
    # placeholder values tuned in docs/benchmarks.md (issue 14)
    epochs = 150
    return epochs * steps_per_epoch(n_train, batch_size)


AUTO_RULE = _default_rule


def plan(n_train: int, n_bins: int, n_modalities: int, batch_size: int, max_epochs: int | None,
         lr: float | None, lr_schedule: str) -> Plan:
    """Resolve ``max_epochs`` / ``lr`` / ``lr_schedule`` settings into a :class:`Plan`."""
    spe = steps_per_epoch(n_train, batch_size)
    auto = max_epochs is None
    schedule = lr_schedule if lr_schedule != "auto" else ("onecycle" if auto else "constant")
    if auto:
        epochs = max(1, math.ceil(auto_steps(n_train, n_bins, n_modalities, batch_size) / spe))
    else:
        epochs = int(max_epochs)
    if lr is None:
        lr = ONE_CYCLE_LR if schedule == "onecycle" else CONSTANT_LR
    return Plan(epochs=epochs, steps_per_epoch=spe, schedule=schedule, lr=float(lr), auto=auto)
