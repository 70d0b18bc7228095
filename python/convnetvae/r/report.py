"""What the R bridge tells the R session while it works: messages, progress, warnings, errors.

R sees only R conditions: ``suppressMessages``, ``suppressWarnings`` and ``tryCatch`` cannot act on
what Python writes to stderr or on Python warnings. So, while the bridge works:

* messages and training progress go to an R function R passes in (``emit``, which calls
  ``message()``), live; when that call fails (an exiting ``tryCatch(message = )`` handler in R
  cannot unwind through Python) the rest are kept and returned, and R signals them afterwards;
* Python warnings are recorded and returned; R signals them as warnings after the call;
* texts name R's arguments (``validation.size = 0``, ``group.by.vars``), not Python's.

Nothing here imports R or rpy2 (it runs inside R's process through reticulate).
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .. import settings
from ..errors import ConvNetVAEError
from ..train import Strategy

#: seconds between two progress messages while training (the first and last epochs always show)
PROGRESS_EVERY = 10.0
#: training steps timed (after one warm-up step) for the run-time estimate
TIMED_STEPS = 3


# ---------------------------------------------------------------------------- R names
@functools.cache
def _renames() -> list[tuple[re.Pattern, str]]:
    """(pattern, R name) for every setting whose R name differs from its Python name."""
    out = []
    for s in settings.all_settings():
        r = s.r_name
        if r and r != s.name:
            out.append((re.compile(rf"(?<![\w.]){re.escape(s.name)}(?![\w])"), r))
    out.append((re.compile(r"(?<![\w.])batch_key(?![\w])"), "group.by.vars"))
    out.append((re.compile(r"(?<![\w.])model_dir(?![\w])"), "model.dir"))
    return out


_PY_LITERALS = {"True": "TRUE", "False": "FALSE", "None": "NULL"}


def r_names(text: str) -> str:
    """A Python message with R's argument names: ``validation_size=0`` -> ``validation.size = 0``,
    ``lr`` -> ``learning.rate``, ``early_stopping=False`` -> ``early.stopping = FALSE``."""
    for pattern, r in _renames():
        text = pattern.sub(r, text)
    r_args = "|".join(re.escape(r) for _, r in _renames())
    text = re.sub(rf"(?<![\w.])({r_args})=(True|False|None|[\w.+-]+)",
                  lambda m: f"{m.group(1)} = {_PY_LITERALS.get(m.group(2), m.group(2))}", text)
    return re.sub(r"(?<![\w.])([A-Za-z][\w.]*)='([^']*)'", r'\1 = "\2"', text)


def duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"2 h 5 min"``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{max(s, 1)} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s < 600 and s % 60 else "")
    return f"{s // 3600} h {(s % 3600) // 60} min"


# ---------------------------------------------------------------------------- the reporter
class Reporter:
    """Messages, progress and warnings of one bridge call, for R.

    Parameters
    ----------
    emit
        An R function ``function(text)`` calling ``message()`` (``None``: keep messages to return).
    verbose
        ``False`` silences messages and progress (warnings still arrive).
    """

    def __init__(self, emit: Callable[[str], Any] | None = None, verbose: bool = True) -> None:
        self.emit = emit
        self.verbose = bool(verbose)
        self.pending: list[str] = []  # messages R signals after the call
        self.warnings: list[str] = []

    def message(self, text: str) -> None:
        """One message (R names), live when possible."""
        if not self.verbose:
            return
        text = "ConvNetVAE: " + r_names(text)
        if self.emit is not None and not self.pending:
            try:
                self.emit(text)
                return
            except Exception:  # noqa: BLE001 - an R handler that exits: deliver the rest later
                self.emit = None
        self.pending.append(text)

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Record Python warnings (for R) and give errors R's names."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            except ConvNetVAEError as err:
                raise type(err)(r_names(str(err))) from None
            finally:
                seen = []
                for w in caught:
                    text = r_names(str(w.message))
                    if text not in seen:
                        seen.append(text)
                self.warnings += seen

    def result(self) -> dict:
        """What R signals after the call: ``messages`` and ``warnings`` (lists of text)."""
        return {"messages": list(self.pending), "warnings": list(self.warnings)}

    # ------------------------------------------------------------------ training
    def training(self, max_epochs: int | None) -> tuple[Callable[[int, dict], None], Strategy]:
        """The epoch callback (progress messages) and the strategy that times the first steps."""
        start = time.perf_counter()
        last = [-PROGRESS_EVERY]

        def callback(epoch: int, row: dict) -> None:
            now = time.perf_counter() - start
            if epoch in (1, max_epochs) or now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                val = row.get("validation_loss")
                of = f"/{max_epochs}" if max_epochs else ""
                self.message(f"epoch {epoch}{of}: loss {row['train_loss']:.1f}"
                             + (f", validation loss {val:.1f}" if val is not None else "")
                             + f" ({duration(now)})")

        return callback, TimingStrategy(self.message)


class TimingStrategy(Strategy):
    """One process (the default strategy) that reports the estimated training time.

    The first minibatches are timed: one warm-up step, then :data:`TIMED_STEPS` more (across
    epochs when an epoch has fewer steps, validation included then). The estimate counts every
    epoch's steps and its validation pass (a forward pass costs about a third of a training step).
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.stamps: list[float] = []
        self.done = False

    def before_step(self, trainer: Any, epoch: int, step: int) -> None:
        if self.done:
            return
        self.stamps.append(time.perf_counter())
        planned = trainer.plan.steps_per_epoch * (trainer.plan.epochs - trainer.start_epoch)
        needed = min(TIMED_STEPS + 2, planned)  # a short training: as many as there are
        if needed < 2:
            self.done = True
        elif len(self.stamps) == needed:
            self.done = True
            first = 1 if needed > 2 else 0  # skip the warm-up step when there are enough
            self._report(trainer, (self.stamps[-1] - self.stamps[first]) / (needed - 1 - first),
                         epoch)

    def _report(self, trainer: Any, per_step: float, epoch: int) -> None:
        cfg = trainer.config
        steps = trainer.plan.steps_per_epoch
        val_steps = len(trainer.val_idx) / max(cfg.batch_size, 256)
        per_epoch = per_step * (steps + val_steps * max(cfg.batch_size, 256) / cfg.batch_size / 3)
        stop = ("; early stopping may end it sooner"
                if trainer.early_stopping and len(trainer.val_idx) else "")
        epochs = trainer.plan.epochs  # given, or chosen from the data
        total = epochs - trainer.start_epoch
        left = per_epoch * (epochs - epoch)
        limit = trainer.guard_limit()
        guard = ""
        if limit is not None and trainer.elapsed() + left > limit:
            guard = (f" That is more than the run's time budget of {duration(limit)}: if the "
                     "epochs stay this slow, the time guard shortens the training to the epochs "
                     f"that fit (time_guard=False trains all {total}).")
        self.say(f"estimated training time {duration(left)} for "
                 f"{total} epoch{'s' if total != 1 else ''} (about {per_epoch:.2g} s per "
                 f"epoch from the first minibatches{stop}).{guard}")
