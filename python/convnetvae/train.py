"""The training loop: one place for devices, progress, early stopping, guards and checkpoints.

Paper settings (section 2.7): Adam, learning rate 1e-3, minibatch 128, a fixed number of epochs
(300 for the mouse brain, 200 for BMMC): ``early_stopping=False``. The default stops early on a
held-out validation split and restores the best weights.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import schedule
from .data.loader import CountSource, MinibatchLoader
from .errors import ConvNetVAEError
from .io_utils import atomic_path, write_json
from .model.vae import VAE
from .settings import TrainSettings, validate

CHECKPOINT_FORMAT = 1


#: the training settings (defined once in :mod:`convnetvae.settings`); ``seed=None`` means 0 here
TrainConfig = TrainSettings

#: on CPU, an optimiser state at least this large is kept in a temporary file between epochs (the
#: snapshot for retrying a non-finite epoch) instead of as a second copy in memory: Adam's moments
#: are twice the parameters (conv-k11s3x1: 0.34 GB of a 2.2 GB peak; about 1 s per GB per epoch)
SPILL_OPTIMIZER_BYTES = 64 * 2**20


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; otherwise the named device (checked)."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConvNetVAEError(f"device {device!r} is not a valid torch device: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConvNetVAEError("device='cuda' was requested but CUDA is not available; use "
                              "device='auto' or 'cpu'")
    return dev


def split_indices(n: int, validation_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``n`` rows (validation may be empty)."""
    if not 0.0 <= validation_size < 1.0:
        raise ConvNetVAEError(f"validation_size must be in [0, 1), got {validation_size}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = int(round(n * validation_size))
    if validation_size > 0 and n - n_val < 2:
        raise ConvNetVAEError(f"only {n} cells: too few to hold out a validation split; use "
                              "validation_size=0")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class TrainingDiverged(ConvNetVAEError):
    """The loss became non-finite and lowering the learning rate did not help.

    ``.history`` holds the epochs that finished; the module keeps the last good weights.
    """

    history: list = []


class Trainer:
    """Train a :class:`~convnetvae.model.vae.VAE` on sparse counts.

    Parameters
    ----------
    module
        The VAE.
    source
        The counts (:class:`~convnetvae.data.loader.CountSource`).
    batch_codes, mask
        Batch code per cell and observed-modality mask (or ``None``).
    config
        :class:`TrainConfig`.
    callback
        Called as ``callback(epoch, row)`` after every epoch with the history row.
    stop_event
        A :class:`threading.Event`; when set, training stops after the current minibatch.
    strategy
        How the work is spread (:class:`Strategy`): one process by default, or
        :class:`convnetvae.distributed.DataParallel` for one rank of data-parallel training.
    """

    def __init__(self, module: VAE, source: CountSource, batch_codes: np.ndarray,
                 mask: np.ndarray | None, config: TrainConfig,
                 callback: Callable[[int, dict], None] | None = None,
                 stop_event: threading.Event | None = None,
                 train_indices: np.ndarray | None = None,
                 validation_indices: np.ndarray | None = None,
                 strategy: Strategy | None = None) -> None:
        self.started = _now()  # the time guard counts from here (the optimiser's setup too)
        # the schema's checks (types, bounds); an unset seed means 0
        config = TrainSettings(**validate(TrainSettings, asdict(config)))
        if config.seed is None:
            config = replace(config, seed=0)
        self.strategy = strategy if strategy is not None else Strategy()
        if not self.strategy.is_main:  # only the main process reports
            config, callback = replace(config, progress=False), None
        self.module = module
        self.source = source
        self.config = config
        self.callback = callback
        self.stop_event = stop_event
        self.device = resolve_device(self.strategy.device(config.device))
        if train_indices is None:
            train_indices, validation_indices = split_indices(
                source.n_obs, config.validation_size, config.seed)
        self.train_idx = np.asarray(train_indices)
        self.val_idx = np.asarray(validation_indices if validation_indices is not None else [],
                                  dtype=np.int64)
        if len(self.train_idx) < 2:
            raise ConvNetVAEError("need at least 2 training cells")
        if config.batch_size is None:  # chosen from the data; recorded in train_config
            config = replace(config, batch_size=schedule.auto_batch_size(len(self.train_idx)))
            self.config = config
        self.rng = np.random.default_rng(config.seed + 1)
        self.train_loader = MinibatchLoader(source, batch_codes, mask, self.train_idx,
                                            config.batch_size, shuffle=True, drop_last=True,
                                            device=self.device, generator=self.rng,
                                            # block shuffling for data on disk (see loader)
                                            block_size=config.shuffle_block_size)
        self.val_loader = MinibatchLoader(source, batch_codes, mask, self.val_idx,
                                          max(config.batch_size, 256), shuffle=False,
                                          device=self.device) if len(self.val_idx) else None
        flops = schedule.training_flops_per_cell(module) if config.max_epochs is None else 0.0
        self.plan = schedule.plan(len(self.train_idx), source.n_bins, source.n_modalities,
                                  config.batch_size, config.max_epochs, config.lr,
                                  config.lr_schedule, flops,
                                  sum(p.numel() for p in module.parameters()),
                                  config.kl_warmup_epochs, config.time_budget)
        self.lr_scale = 1.0  # 0.1 after a non-finite epoch was retried
        self.history: list[dict] = []
        self.stopped_early = False
        self.interrupted = False
        self.best_state: dict | None = None
        self.best_score = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.start_epoch = 0
        self.lr_lowered = False
        self.resume_changes: dict[str, dict] = {}  # what differs from the resumed checkpoint
        self._fingerprint: dict | None = None
        self._guard_note: dict | None = None  # the time guard's last re-plan, for its warning
        self.net: torch.nn.Module = module  # what the steps run (a strategy may wrap the module)
        self.strategy.setup(self)

    @property
    def early_stopping(self) -> bool:
        """Early stopping applies to the constant schedule (a one-cycle run has a set length)."""
        return bool(self.config.early_stopping) and self.plan.schedule == "constant"

    @property
    def is_main(self) -> bool:
        """Whether this process reports, checkpoints and saves (False on other ranks)."""
        return self.strategy.is_main

    # ------------------------------------------------------------------ one pass
    def _evaluate(self) -> dict[str, float]:
        """Validation ELBO per cell (summed over every process's share by the strategy)."""
        self.module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for mb in self.strategy.validation_batches(self):
                out = self.module(mb.x, mb.batch, mb.mask, log_factorials=mb.log_factorials)
                elbo = out["reconstruction"] - out["kl"]
                sums += torch.stack([elbo.sum(), out["reconstruction"].sum(), out["kl"].sum(),
                                     elbo.new_tensor(float(len(elbo)))]).double()
        s = self.strategy.reduce(sums).tolist()
        n = max(s[3], 1.0)
        return {"validation_elbo": s[0] / n, "validation_reconstruction": s[1] / n,
                "validation_kl": s[2] / n, "validation_loss": -s[0] / n}

    def _snapshot(self) -> tuple[dict, dict | str]:
        """The last good weights and optimiser state (the optimiser's in a file when large on
        CPU, see ``SPILL_OPTIMIZER_BYTES``)."""
        state = self.optimizer.state_dict()
        size = sum(t.numel() * t.element_size() for per in state["state"].values()
                   for t in per.values() if torch.is_tensor(t))
        if self.device.type == "cpu" and size >= SPILL_OPTIMIZER_BYTES:
            if getattr(self, "_spill_dir", None) is None:
                self._spill_dir = tempfile.mkdtemp(prefix="convnetvae-snapshot-")
            path = os.path.join(self._spill_dir, "optimizer.pt")
            with atomic_path(path) as tmp:
                torch.save(state, tmp)
            return copy.deepcopy(self.module.state_dict()), path
        return copy.deepcopy(self.module.state_dict()), copy.deepcopy(state)

    def _restore_optimizer(self, saved: dict | str) -> None:
        self.optimizer.load_state_dict(torch.load(saved, weights_only=True) if isinstance(saved, str) else saved)

    def _autocast(self) -> Any:
        """bfloat16 autocast when ``mixed_precision`` is on (CUDA, or CPU for testing)."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=bool(self.config.mixed_precision))

    def _set_lr(self, epoch: int, step: int, n_steps: int) -> None:
        """The learning rate of this step: the plan's schedule at this point of the run."""
        progress = self.plan.progress(epoch + step / max(n_steps, 1))
        factor = self.plan.lr_factor(progress) * self.lr_scale
        for group, base in zip(self.optimizer.param_groups, self._base_lrs):
            group["lr"] = base * factor

    def _step(self, mb: Any, kl_w: float, net: torch.nn.Module | None = None) -> torch.Tensor:
        """One optimiser step; returns (elbo sum, reconstruction sum, KL sum, cells, guard).

        Nothing here waits for the device: the sums stay on it, and ``guard`` is 0 when the loss
        and the gradient norm are finite and NaN otherwise, so one check of the epoch's sums
        catches a non-finite step (see :meth:`_finish_epoch`).
        """
        # the last step's gradients are freed before the forward pass, not after it: they would
        # otherwise sit in memory next to this step's activations (the peak)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = (net or self.module)(mb.x, mb.batch, mb.mask,
                                       log_factorials=mb.log_factorials)
        recon, kl = out["reconstruction"].float(), out["kl"].float()
        loss = (kl_w * kl - recon).mean()
        loss.backward()
        # the total gradient norm (clipped when grad_clip is set; inf = only measure it)
        gnorm = torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                               self.config.grad_clip or math.inf)
        self.optimizer.step()
        guard = (loss.detach() + gnorm.detach()) * 0.0  # NaN iff either is non-finite
        return torch.stack([(recon - kl).sum(), recon.sum(), kl.sum(),
                            recon.new_tensor(float(recon.shape[0])), guard]).detach().double()

    @staticmethod
    def _finish_epoch(sums: torch.Tensor, epoch: int) -> dict[str, float]:
        """The one host sync of an epoch: the history row, or :class:`_NonFinite`.

        A non-finite step makes the epoch's sums non-finite; :meth:`fit` then restores the
        weights and optimiser state of the last good epoch and retries at a lower learning rate.
        """
        s = sums.tolist()
        if not all(math.isfinite(v) for v in s):
            raise _NonFinite(epoch)
        n = max(s[3], 1.0)
        return {"train_elbo": s[0] / n, "train_reconstruction": s[1] / n,
                "train_kl": s[2] / n, "train_loss": -s[0] / n}

    def _train_epoch(self, epoch: int) -> dict[str, float] | None:
        self.net.train()
        kl_w = self.plan.kl_weight(epoch)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        batches = list(self.strategy.epoch_rows(self, epoch))
        for step, rows in enumerate(batches):
            if self.strategy.stop_requested(self):
                self.interrupted = True
                return None
            self.strategy.before_step(self, epoch, step)
            self._set_lr(epoch, step, len(batches))
            sums += self._step(self.train_loader.load(rows), kl_w, self.net)
        self.strategy.reduce(sums)
        self.strategy.end_epoch(self)
        # with several processes every one sees the same sums, so all restore and retry together
        return self._finish_epoch(sums, epoch)

    def elapsed(self) -> float:
        """Seconds this run has taken: since this trainer was built, plus the epochs of earlier
        sessions when it resumed from a checkpoint (the time the time guard counts)."""
        before = sum(r.get("seconds", 0.0) for r in self.history[:self.start_epoch])
        return _now() - self.started + before

    def guard_limit(self) -> float | None:
        """Seconds the time guard holds this run to (:func:`schedule.time_limit` over all its
        cells), or ``None`` when it does not act: a given ``max_epochs`` or ``time_guard=False``."""
        if not (self.plan.auto and self.config.time_guard):
            return None
        return schedule.time_limit(len(self.train_idx) + len(self.val_idx),
                                   self.source.n_modalities, self.config.time_budget)

    def _guard_time(self, done: int) -> bool:
        """The time guard after ``done`` epochs: re-plan an automatic-length run whose planned
        length would overrun its budget to the epochs that fit (:func:`schedule.guarded_epochs`;
        more again, up to the planned length, when epochs got faster); returns whether it did.

        Every process of a data-parallel run reaches the same decision: the elapsed time and the
        epoch time are averaged over them.
        """
        plan, limit = self.plan, self.guard_limit()
        # this process's epochs after its first (which warms up: up to 1.9x a later one)
        steady = [r["seconds"] for r in self.history[self.start_epoch + 1:]]
        if limit is None or len(steady) < schedule.GUARD_AFTER_EPOCHS or done >= plan.epochs:
            return False
        times = torch.tensor([self.elapsed(), float(np.median(steady)), 1.0],
                             dtype=torch.float64, device=self.device)
        elapsed, per_epoch, n = self.strategy.reduce(times).tolist()
        elapsed, per_epoch = elapsed / n, per_epoch / n
        n_cells, n_mod = len(self.train_idx) + len(self.val_idx), self.source.n_modalities
        epochs = schedule.guarded_epochs(done, plan.planned_epochs, elapsed, per_epoch, limit,
                                         min(schedule.FLOOR_EPOCHS, plan.planned_epochs))
        if epochs == plan.epochs:
            return False
        self.plan = plan.resize(done, epochs)
        projected = elapsed + per_epoch * (plan.planned_epochs - done)
        self._guard_note = {"limit": limit, "per_epoch": per_epoch, "projected": projected,
                            # the time_budget that fits the planned length, up to a quarter
                            "need": math.ceil(projected / schedule.full_budget_seconds(
                                n_cells, n_mod) * 4) / 4}
        return True

    def _warn_shortened(self) -> None:
        """Say once, after the run, that the time guard shortened it, why, and how not to."""
        note, plan = self._guard_note, self.plan
        if note is None or not plan.shortened or not self.is_main:
            return
        # what the re-plan compressed: a constant learning rate has nothing to compress, and a
        # KL warm-up only if it was not over when the run was first re-planned
        parts = (["learning-rate schedule"] if plan.schedule != "constant" else []) + (
            ["KL warm-up"] if plan.knots[0][1] < plan.kl_warmup_epochs else [])
        what = (f"The rest of the {' and the '.join(parts)} "
                f"{'were' if len(parts) > 1 else 'was'} compressed, not cut off. " if parts else "")
        warnings.warn(
            f"training shortened from {plan.planned_epochs} to {plan.epochs} epochs to stay "
            f"within its time budget of {note['limit']:.0f} s: epochs took "
            f"{note['per_epoch']:.2g} s here, so the planned length would have ended after "
            f"about {note['projected']:.0f} s (this machine is slower or busier than the one "
            f"the length was estimated for). {what}To train the planned length, pass "
            f"time_budget={note['need']:g} or time_guard=False (the same length on every "
            "machine).", stacklevel=2)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> list[dict]:
        """Train; returns the history (one dict per epoch)."""
        cfg = self.config
        if cfg.n_threads:
            torch.set_num_threads(cfg.n_threads)
        torch.manual_seed(cfg.seed)
        self.module.to(self.device)
        self.net = self.strategy.wrap(self)
        try:
            with checkpoint_lock(cfg.checkpoint_dir if self.is_main else None):
                return self._fit()
        finally:
            self.net = self.module
            if getattr(self, "_spill_dir", None) is not None:
                shutil.rmtree(self._spill_dir, ignore_errors=True)
                self._spill_dir = None

    def _fit(self) -> list[dict]:
        cfg = self.config
        lr = self.plan.lr
        self.optimizer = torch.optim.Adam(parameter_groups(self.module, lr), lr=lr,
                                          **adam_implementation(self.module))
        self._base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        if cfg.resume:
            if not cfg.checkpoint_dir:
                raise ConvNetVAEError("resume=True needs checkpoint_dir=")
            load_checkpoint(self, cfg.checkpoint_dir)
        # after a resume too: a new value, or a checkpoint of a version that decayed the offsets
        set_weight_decay(self.optimizer, cfg.weight_decay)
        good = self._snapshot()
        bar = tqdm(total=self.plan.epochs, initial=self.start_epoch, disable=not cfg.progress,
                   desc="training", unit="epoch", dynamic_ncols=True)
        epoch = self.start_epoch
        try:
            while epoch < self.plan.epochs:
                t0 = _now()
                try:
                    row = self._train_epoch(epoch)
                except _NonFinite as err:
                    if self.lr_lowered:
                        self.module.load_state_dict(good[0])
                        err_out = TrainingDiverged(
                            f"training diverged at epoch {err.epoch + 1}: the loss became NaN or "
                            "infinite again after restoring the last good weights and lowering "
                            "the learning rate. Likely causes: a learning rate too high for these "
                            "data, extreme counts (check for outlier cells), or too small "
                            "minibatches. Try lr=1e-4 or grad_clip=10.")
                        err_out.history = list(self.history)  # the epochs that did finish
                        raise err_out from None
                    self.module.load_state_dict(good[0])
                    self._restore_optimizer(good[1])
                    self.lr_scale *= 0.1
                    self.lr_lowered = True
                    continue  # retry this epoch with the lower learning rate
                if row is None:  # stop requested
                    break
                if self.val_loader is not None:
                    row.update(self._evaluate())
                row["epoch"] = epoch + 1
                row["lr"] = self.optimizer.param_groups[0]["lr"]
                row["seconds"] = _now() - t0
                self.history.append(row)
                good = self._snapshot()
                score = row.get("validation_loss", row["train_loss"])
                if score < self.best_score - cfg.min_delta:
                    self.best_score, self.best_epoch, self.bad_epochs = score, epoch + 1, 0
                    if self.early_stopping:  # only early stopping goes back to the best weights
                        # the snapshot just taken holds these weights: share it (one copy, not two)
                        self.best_state = good[0]
                else:
                    self.bad_epochs += 1
                epoch += 1
                if self._guard_time(epoch):
                    bar.total = self.plan.epochs
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.1f}",
                                val=f"{row.get('validation_loss', float('nan')):.1f}")
                if cfg.checkpoint_dir and self.is_main and (
                        epoch % max(1, cfg.checkpoint_every) == 0 or epoch == self.plan.epochs):
                    save_checkpoint(self, cfg.checkpoint_dir, epoch)
                if self.callback is not None:
                    self.callback(epoch, dict(row))
                if (self.early_stopping and self.val_loader is not None
                        and self.bad_epochs >= cfg.patience):
                    self.stopped_early = True
                    break
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            bar.close()
        self._warn_shortened()
        if self.early_stopping and self.val_loader is not None and self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        elif self.interrupted and self.history:
            # stopped mid-epoch: keep the weights of the last finished epoch (its history row)
            self.module.load_state_dict(good[0])
        self.module.eval()
        return self.history


#: learning-rate multiplier of the per-batch bin offsets: Adam moves each parameter by about lr
#: per step, and these offsets must reach log-fold changes of order 1 within the first epochs
BATCH_OFFSET_LR_SCALE = 20.0


def adam_implementation(module: torch.nn.Module) -> dict[str, bool]:
    """Adam's fused kernel where torch has one for every parameter's device (CPU and CUDA), else
    the multi-tensor one. Same update; the fused kernel reads and writes each weight once per
    step instead of once per elementwise operation (one Buenrostro step, 2.6 M parameters:
    8.6 vs 14.4 ms for Adam, 8 % of the whole step; docs/performance.md)."""
    devices = {p.device.type for p in module.parameters()}
    floating = all(p.is_floating_point() for p in module.parameters())
    return {"fused": True} if floating and devices <= {"cpu", "cuda"} else {"foreach": True}


def parameter_groups(module: torch.nn.Module, lr: float) -> list[dict]:
    """Adam parameter groups: every weight but the batch offsets, then the batch offsets (if
    any), which learn faster and are never decayed (:func:`set_weight_decay`)."""
    offsets = [p for n, p in module.named_parameters() if n.endswith("batch_offset")]
    rest = [p for n, p in module.named_parameters() if not n.endswith("batch_offset")]
    groups = [{"params": rest, "lr": lr}]
    if offsets:
        groups.append({"params": offsets, "lr": lr * BATCH_OFFSET_LR_SCALE})
    return groups


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """Set the weight decay of the groups of :func:`parameter_groups`: ``weight_decay`` for the
    first, 0 for the batch offsets. Decaying the per-batch offsets towards zero would undo the
    batch correction they carry (measured: with Adam's weight decay 0.1 on every weight, the two
    batches of the query test's reference stopped mixing, 0.60 -> 0.003; docs/benchmarks.md)."""
    for i, group in enumerate(optimizer.param_groups):
        group["weight_decay"] = weight_decay if i == 0 else 0.0


class Strategy:
    """How a :class:`Trainer` spreads its work; this base class is one process.

    A strategy is given to ``Trainer(..., strategy=)`` or ``ConvNetVAE.train(strategy=)``; the
    trainer calls these hooks and nothing else, so data-parallel training
    (:class:`convnetvae.distributed.DataParallel`) is a subclass, not a second training loop.
    """

    #: whether this process reports progress, calls the callback and writes checkpoints
    is_main: bool = True

    def device(self, requested: str) -> str:
        """The device this process trains on, given the requested one."""
        return requested

    def setup(self, trainer: Trainer) -> None:
        """Check the trainer's settings and data (called at the end of ``Trainer.__init__``)."""

    def wrap(self, trainer: Trainer) -> torch.nn.Module:
        """The network the training steps run (the module itself, or a wrapper of it)."""
        return trainer.module

    def epoch_rows(self, trainer: Trainer, epoch: int) -> Iterable[np.ndarray]:
        """The training rows of each step of one epoch, for this process."""
        return trainer.train_loader.batches()

    def stop_requested(self, trainer: Trainer) -> bool:
        """Whether to stop now (the trainer's ``stop_event``; all processes agree)."""
        return trainer.stop_event is not None and trainer.stop_event.is_set()

    def before_step(self, trainer: Trainer, epoch: int, step: int) -> None:
        """Called before every training step (e.g. to seed the step's randomness)."""

    def reduce(self, sums: torch.Tensor) -> torch.Tensor:
        """Sum ``sums`` over processes in place and return it."""
        return sums

    def end_epoch(self, trainer: Trainer) -> None:
        """Called after the last step of an epoch (e.g. to share BatchNorm statistics)."""

    def validation_batches(self, trainer: Trainer) -> Iterable[Any]:
        """This process's share of the validation minibatches."""
        return trainer.val_loader if trainer.val_loader is not None else []

    def describe(self) -> dict[str, Any]:
        """Extra facts recorded in the model's ``train_config`` (e.g. ``world_size``)."""
        return {}


def _now() -> float:
    """The clock of epoch times and the time guard (one place, so tests can replace it)."""
    return time.perf_counter()


class _NonFinite(Exception):
    def __init__(self, epoch: int) -> None:
        super().__init__(f"non-finite loss at epoch {epoch + 1}")
        self.epoch = epoch


# ---------------------------------------------------------------------- checkpoints
def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v.detach().cpu().contiguous()
                meta["state"][str(pid)][k] = "tensor"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if v == "tensor" else v)
                           for k, v in st.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(trainer: Trainer, directory: str | os.PathLike, epoch: int) -> Path:
    """Write the trainer's full state atomically; returns the pointer file.

    Files: ``ckpt-<epoch>.safetensors`` (weights, optimiser tensors, best weights, torch RNG),
    ``ckpt-<epoch>.json`` (everything else), then ``latest.json`` naming them, written last, so a
    crash at any point leaves the previous checkpoint usable.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in trainer.module.state_dict().items()}
    if trainer.best_state is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous()
                        for k, v in trainer.best_state.items()})
    opt_t, opt_meta = _flatten_optimizer(trainer.optimizer.state_dict())
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    stem = f"ckpt-{epoch:06d}"
    with atomic_path(d / f"{stem}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "format": CHECKPOINT_FORMAT, "epoch": epoch, "history": trainer.history,
        "optimizer": opt_meta, "numpy_rng": trainer.rng.bit_generator.state,
        "best_score": trainer.best_score if math.isfinite(trainer.best_score) else None,
        "best_epoch": trainer.best_epoch, "bad_epochs": trainer.bad_epochs,
        "lr_lowered": trainer.lr_lowered, "has_best": trainer.best_state is not None,
        "train_indices": trainer.train_idx.tolist(), "validation_indices": trainer.val_idx.tolist(),
        "config": asdict(trainer.config),
        "fingerprint": run_fingerprint(trainer),
        # a run the time guard re-planned resumes on its re-planned schedule
        "plan": {"epochs": trainer.plan.epochs, "planned_epochs": trainer.plan.planned_epochs,
                 "knots": [list(k) for k in trainer.plan.knots]},
    }
    write_json(d / f"{stem}.json", meta)
    write_json(d / "latest.json", {"format": CHECKPOINT_FORMAT, "stem": stem, "epoch": epoch})
    for old in d.glob("ckpt-*"):
        if not old.name.startswith(stem):
            old.unlink(missing_ok=True)
    return d / "latest.json"


def load_checkpoint(trainer: Trainer, directory: str | os.PathLike) -> bool:
    """Restore a trainer from ``directory``; returns False when there is no checkpoint yet."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    pointer = d / "latest.json"
    if not pointer.exists():
        return False
    try:
        latest = json.loads(pointer.read_text())
        stem = latest["stem"]
        meta = json.loads((d / f"{stem}.json").read_text())
        tensors = load_file(str(d / f"{stem}.safetensors"))
    except (OSError, json.JSONDecodeError, KeyError, SafetensorError) as err:
        raise ConvNetVAEError(f"checkpoint in {d} is unreadable or incomplete: {err}") from None
    if meta.get("format", 0) > CHECKPOINT_FORMAT:
        raise ConvNetVAEError(f"checkpoint in {d} was written by a newer convnetvae (format "
                              f"{meta['format']}); upgrade convnetvae to resume it")
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    found = _run_changes(trainer, meta)  # one pass over the counts
    mine = {k: tuple(v.shape) for k, v in trainer.module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in model_state.items()}
    if mine != theirs:  # before changing anything
        # the model's layers follow its data (architecture, loadings, tied loadings): other
        # data are named first, as check_same_run names them
        if any(v["part"] == "data" for v in (found or {}).values()):
            check_same_run(trainer, found, d)
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        raise ConvNetVAEError(
            f"checkpoint in {d} does not match this model (other layers or shapes: another "
            f"architecture, data shape or loadings; differing: {', '.join(differ[:5])})")
    changes = check_same_run(trainer, found, d)
    try:
        trainer.module.load_state_dict(model_state)
    except RuntimeError as err:
        raise ConvNetVAEError(f"checkpoint in {d} does not match this model: {err}") from None
    if meta.get("has_best"):
        trainer.best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    trainer.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    trainer.rng.bit_generator.state = meta["numpy_rng"]
    trainer.history = list(meta["history"])
    trainer.best_score = meta["best_score"] if meta["best_score"] is not None else math.inf
    trainer.best_epoch = meta["best_epoch"]
    trainer.bad_epochs = meta["bad_epochs"]
    trainer.lr_lowered = meta["lr_lowered"]
    trainer.lr_scale = 0.1 if trainer.lr_lowered else 1.0
    trainer.start_epoch = int(meta["epoch"])
    _resume_plan(trainer, meta.get("plan"))
    _use_split(trainer, meta, d)
    _apply_changes(trainer, changes)
    return True


def _resume_plan(trainer: Trainer, saved: dict | None) -> None:
    """Continue a run the time guard re-planned on its re-planned schedule (when the resumed
    run plans the same automatic length; a new ``max_epochs`` or budget plans anew)."""
    plan = trainer.plan
    if (saved and plan.auto and int(saved["planned_epochs"]) == plan.planned_epochs
            and saved["knots"]):
        trainer.plan = replace(plan, epochs=int(saved["epochs"]), knots=saved["knots"])


# ---------------------------------------------------------------------- same run on resume
#: training settings that may change on resume without changing the run's numbers
#: (``max_epochs``: a finished run may be continued for longer)
RESUME_FREE_SETTINGS = frozenset({"max_epochs", "device", "progress", "n_threads", "time_guard",
                                  "checkpoint_dir", "checkpoint_every", "resume",
                                  "resume_allow_changes"})
#: settings a resumed run applies when they changed (with ``resume_allow_changes``); the others
#: cannot: the checkpoint's split and random state are kept
_APPLIED_ON_RESUME = frozenset({"lr", "lr_schedule", "weight_decay", "batch_size", "patience",
                                "min_delta",
                                "early_stopping", "grad_clip", "kl_warmup_epochs", "time_budget",
                                "mixed_precision", "shuffle_block_size"})


def data_fingerprint(trainer: Trainer) -> dict[str, Any]:
    """Cells, bins, modalities and checksums of the counts, batches and masks of a trainer's data.

    One pass over the counts (a block of rows at a time; also for data on disk).
    """
    src, loader = trainer.source, trainer.train_loader
    counts = hashlib.blake2b(digest_size=16)
    for j in range(src.n_modalities):
        for a in range(0, src.n_obs, 8192):
            indptr, indices, data = src.csr_rows(j, np.arange(a, min(src.n_obs, a + 8192)))
            for arr, dtype in ((np.diff(indptr), np.int64), (indices, np.int64),
                               (data, np.float64)):
                counts.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
    labels = hashlib.blake2b(digest_size=16)
    labels.update(np.ascontiguousarray(loader.batch_codes, dtype=np.int64).tobytes())
    if loader.mask is not None:
        labels.update(np.ascontiguousarray(loader.mask, dtype=np.uint8).tobytes())
    return {"cells": int(src.n_obs), "bins": int(src.n_bins), "modalities": int(src.n_modalities),
            "counts_checksum": counts.hexdigest(), "batches_and_mask_checksum": labels.hexdigest()}


def run_fingerprint(trainer: Trainer) -> dict[str, dict]:
    """What makes a run this run: its data and the settings that shape it (computed once)."""
    if trainer._fingerprint is None:
        shaping = {k: v for k, v in asdict(trainer.config).items()
                   if k not in RESUME_FREE_SETTINGS}
        # the learning rate and schedule the run really uses (None means "chosen by the plan")
        shaping.update(lr=trainer.plan.lr, lr_schedule=trainer.plan.schedule)
        trainer._fingerprint = {"data": data_fingerprint(trainer),
                                "settings": json.loads(json.dumps(shaping, default=str))}
    return trainer._fingerprint


def _run_changes(trainer: Trainer, meta: dict) -> dict[str, dict] | None:
    """What differs between a checkpoint's fingerprint and this run's (None: the checkpoint has
    no fingerprint)."""
    saved = meta.get("fingerprint")
    if not isinstance(saved, dict):
        return None
    now = run_fingerprint(trainer)
    changes: dict[str, dict] = {}
    for part in ("data", "settings"):
        old, new = saved.get(part) or {}, now[part]
        for k in new:
            if (k in old or part == "data") and old.get(k) != new[k]:
                changes[k] = {"checkpoint": old.get(k), "now": new[k], "part": part}
    return changes


def check_same_run(trainer: Trainer, changes: dict[str, dict] | None, d: Path
                   ) -> dict[str, dict]:
    """Judge what differs between a checkpoint's fingerprint and this run's (``changes``, from
    :func:`_run_changes`; None: the checkpoint has none); returns the allowed changes.

    A difference is an error naming it, unless ``resume_allow_changes``; other cells can never
    continue a run (its train/validation split is theirs).
    """
    if changes is None:
        warnings.warn(f"checkpoint in {d} has no fingerprint (written by an older convnetvae): "
                      "cannot check that it is of the same data and settings", stacklevel=4)
        return {}
    if not changes:
        return {}
    listed = "; ".join(f"{v['part']} {k}: {v['checkpoint']!r} in the checkpoint, {v['now']!r} now"
                       for k, v in changes.items())
    if "cells" in changes:
        raise ConvNetVAEError(
            f"checkpoint in {d} is of another run ({listed}): its train/validation split is of "
            f"{changes['cells']['checkpoint']} cells, so it cannot continue on these data; use "
            "another checkpoint_dir to start a new run")
    if not trainer.config.resume_allow_changes:
        raise ConvNetVAEError(
            f"checkpoint in {d} is of another run: {listed}. Resume with the same data and "
            "settings, use another checkpoint_dir for a new run, or pass "
            "resume_allow_changes=True to continue this run with the changes (recorded in "
            "train_config)")
    for k, v in changes.items():
        v["applied"] = k in _APPLIED_ON_RESUME
    return changes


def _use_split(trainer: Trainer, meta: dict, d: Path) -> None:
    """Continue with the checkpoint's own train/validation split."""
    try:
        tr = np.asarray(meta["train_indices"], dtype=np.int64)
        va = np.asarray(meta["validation_indices"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise ConvNetVAEError(f"checkpoint in {d} has no valid train/validation split") from None
    n = trainer.source.n_obs
    if len(tr) < 2 or (len(tr) and tr.max() >= n) or (len(va) and va.max() >= n) or min(
            tr.min(initial=0), va.min(initial=0)) < 0:
        raise ConvNetVAEError(f"checkpoint in {d}: its train/validation split does not fit "
                              f"these {n} cells")
    if np.array_equal(tr, trainer.train_idx) and np.array_equal(va, trainer.val_idx):
        return
    trainer.train_idx, trainer.val_idx = tr, va
    trainer.train_loader.indices = tr
    loader = trainer.train_loader
    trainer.val_loader = MinibatchLoader(
        trainer.source, loader.batch_codes, loader.mask, va, max(trainer.config.batch_size, 256),
        shuffle=False, device=trainer.device) if len(va) else None
    trainer.strategy.setup(trainer)  # a strategy's shards follow the split


def _apply_changes(trainer: Trainer, changes: dict[str, dict]) -> None:
    """Record the allowed changes of a resumed run (a new learning rate is already the plan's:
    every step sets it from the schedule; a new weight decay is set on the restored optimiser
    by ``Trainer._fit``, as for every run)."""
    trainer.resume_changes = changes


# ---------------------------------------------------------------------- one trainer per directory
LOCK_FILE = "training.lock"


@contextlib.contextmanager
def checkpoint_lock(directory: str | os.PathLike | None) -> Iterator[None]:
    """Hold ``directory/training.lock`` while training, refusing a second trainer.

    The lock (``flock``) is released by the system when the process dies, so a killed run never
    leaves a stale lock. Once held, temporary files that killed runs left are removed.
    """
    if not directory:
        yield
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = _acquire(d / LOCK_FILE, fcntl)
    except OSError as err:
        raise ConvNetVAEError(f"checkpoint_dir {str(d)!r} cannot be used: {err.strerror or err}"
                              ) from None
    try:
        remove_checkpoint_temporaries(d)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(d / LOCK_FILE)
        os.close(fd)


def _acquire(path: Path, fcntl: Any) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConvNetVAEError(
                f"checkpoint_dir {str(path.parent)!r} is in use by another training run "
                f"({holder}); wait for it to finish or use another checkpoint_dir") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file the previous holder unlinked while we waited
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            return fd
        os.close(fd)


def remove_checkpoint_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete temporary files that killed checkpoint writes left in ``directory``."""
    gone = []
    for p in Path(directory).glob(".*"):
        if p.is_file() and p.name.startswith((".ckpt-", ".latest.")):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone
