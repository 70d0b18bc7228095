"""Data-parallel training over several processes (torch.distributed, DDP).

Every process (rank) holds a full copy of the model and reads its own shard of each global
minibatch; gradients are averaged across ranks by
:class:`~torch.nn.parallel.DistributedDataParallel` after every step, so all ranks keep identical
weights. Backends: ``gloo`` on CPU, ``nccl`` on GPU (one GPU per process).

Sharding (DistributedSampler-like, but per step): every epoch all ranks draw the same permutation
of the training cells from ``(seed, epoch)``, cut it into global minibatches of
``batch_size * world_size`` cells and give rank ``r`` the ``r``-th part of each. ``batch_size`` is
therefore *per process*: two processes at 64 see the same cells per step as one at 128. Dropout
and the reparameterisation noise are drawn from a generator seeded by ``(seed, epoch, step,
rank)``, so a run is reproducible for a given number of processes.

BatchNorm: statistics are computed per process (standard DDP; ``SyncBatchNorm`` only runs on GPU),
so a 2 x 64 run normalises each half-batch on its own; running statistics follow rank 0 (DDP
broadcasts its buffers at every forward and once more at the end of each epoch). Losses reported
in the history are averaged over all cells of all ranks; validation is split across ranks and
summed. Only rank 0 shows progress, calls the callback, writes checkpoints and saves the model.

Launch
------
* one machine: ``convnetvae train --nproc 2 ...`` or :func:`train_multiprocess`;
* torchrun (one or many machines): ``torchrun --nproc_per_node 4 -m convnetvae.distributed
  --data x.h5ad --modalities ATAC,H3K27ac --out model/`` (the arguments of ``convnetvae train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .data.loader import MinibatchLoader
from .errors import ConvNetVAEError
from .train import Trainer, TrainConfig, resolve_device


#: why block shuffling is refused (the trainer and the command line say the same)
NO_BLOCK_SHUFFLE = ("works with one process only: data-parallel training shards a fresh "
                    "permutation of the cells every epoch")


# ---------------------------------------------------------------------- sharding and seeding
def epoch_batches(indices: np.ndarray, batch_size: int, world_size: int, seed: int,
                  epoch: int) -> list[list[np.ndarray]]:
    """The rows every rank trains on at every step of one epoch.

    Parameters
    ----------
    indices
        Training rows.
    batch_size
        Rows per rank per step.
    world_size
        Number of ranks.
    seed, epoch
        The permutation is drawn from ``(seed, epoch)``, identically on every rank.

    Returns
    -------
    One entry per step: a list of ``world_size`` disjoint row arrays (rank ``r`` takes entry
    ``r``). A final step whose smallest part would have fewer than 2 rows is dropped (BatchNorm).
    """
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(np.asarray(indices))
    step = batch_size * world_size
    out = []
    for i in range(0, len(order), step):
        parts = np.array_split(order[i:i + step], world_size)
        if min(len(p) for p in parts) < 2:
            break
        out.append(parts)
    return out


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """Seed of the torch generator for one rank's forward pass at one step."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(step), int(rank)])
               .generate_state(1)[0])


# ---------------------------------------------------------------------- the trainer
class DistributedTrainer(Trainer):
    """:class:`~convnetvae.train.Trainer` for one rank of an initialised process group.

    Takes the arguments of :class:`~convnetvae.train.Trainer`; ``torch.distributed`` must be
    initialised first (:func:`init_process_group`). Every rank must pass the same data, config and
    initial weights (the weights are also broadcast from rank 0).
    """

    def __init__(self, module, source, batch_codes, mask, config: TrainConfig,
                 callback=None, stop_event=None, train_indices=None,
                 validation_indices=None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ConvNetVAEError("DistributedTrainer needs an initialised process group: call "
                                  "convnetvae.distributed.init_process_group() first or launch "
                                  "with torchrun / convnetvae train --nproc N")
        if config.shuffle_block_size:
            raise ConvNetVAEError(f"shuffle_block_size {NO_BLOCK_SHUFFLE}")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        main = self.rank == 0
        config = dataclasses.replace(config, progress=config.progress and main)
        super().__init__(module, source, batch_codes, mask, config,
                         callback=callback if main else None, stop_event=stop_event,
                         train_indices=train_indices, validation_indices=validation_indices)
        self.is_main = main
        if len(epoch_batches(self.train_idx, config.batch_size, self.world_size, config.seed,
                             0)) == 0:
            raise ConvNetVAEError(
                f"{len(self.train_idx)} training cells are too few for {self.world_size} "
                f"processes x batch_size {config.batch_size}: every process needs >= 2 cells")
        shard = self.val_idx[self.rank::self.world_size]
        self.val_shard_loader = MinibatchLoader(
            source, batch_codes, mask, shard, max(config.batch_size, 256), shuffle=False,
            device=self.device) if len(self.val_idx) else None
        self.net: torch.nn.Module = module

    def _allreduce(self, t: torch.Tensor) -> torch.Tensor:
        # NCCL reduces on the GPU, gloo on the CPU; float64 sums stay exact enough for losses
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def _sync_buffers(self) -> None:
        for buf in self.module.buffers():
            if buf.is_floating_point() or buf.dtype == torch.long:
                dist.broadcast(buf, src=0)

    def _train_epoch(self, epoch: int) -> dict[str, float] | None:
        cfg = self.config
        self.net.train()
        kl_w = self._kl_weight(epoch)
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        steps = epoch_batches(self.train_idx, cfg.batch_size, self.world_size, cfg.seed, epoch)
        for step, parts in enumerate(steps):
            if self.stop_event is not None:
                flag = torch.tensor([float(self.stop_event.is_set())], device=self.device)
                if self._allreduce(flag).item() > 0:
                    self.interrupted = True
                    return None
            torch.manual_seed(step_seed(cfg.seed, epoch, step, self.rank))
            # DDP averages the gradients across ranks in the backward pass of the step
            sums += self._step(self.train_loader.load(parts[self.rank]), kl_w, self.net)
        self._allreduce(sums)
        self._sync_buffers()
        # every rank sees the same sums, so every rank restores and retries together
        return self._finish_epoch(sums, epoch)

    def _evaluate(self) -> dict[str, float]:
        self.module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            if self.val_shard_loader is not None:
                for mb in self.val_shard_loader:
                    out = self.module(mb.x, mb.batch, mb.mask,
                                      log_factorials=mb.log_factorials)
                    elbo = out["reconstruction"] - out["kl"]
                    sums += torch.stack([elbo.sum(), out["reconstruction"].sum(),
                                         out["kl"].sum(), elbo.new_tensor(float(len(elbo)))
                                         ]).double()
        s = self._allreduce(sums).tolist()
        n = max(s[3], 1.0)
        return {"validation_elbo": s[0] / n, "validation_reconstruction": s[1] / n,
                "validation_kl": s[2] / n, "validation_loss": -s[0] / n}

    def fit(self) -> list[dict]:
        """Train (all ranks call this together); returns the history (identical on all ranks)."""
        from torch.nn.parallel import DistributedDataParallel

        self.module.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.net = DistributedDataParallel(self.module, device_ids=ids, forward_sync_buffers=True)
        try:
            return super().fit()
        finally:
            self.net = self.module


# ---------------------------------------------------------------------- process groups
def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_backend() -> str:
    """``"nccl"`` when CUDA exists, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(rank: int | None = None, world_size: int | None = None,
                       port: int | None = None, backend: str | None = None) -> tuple[int, int]:
    """Initialise ``torch.distributed`` and set threads / the CUDA device of this rank.

    With ``rank``/``world_size``/``port`` given, the rendezvous is ``tcp://127.0.0.1:port`` (one
    machine); otherwise torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``, ``LOCAL_RANK``) is used.

    Returns
    -------
    ``(rank, world_size)``.
    """
    backend = backend or default_backend()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if rank is not None:
        if world_size is None or port is None:
            raise ConvNetVAEError("init_process_group: give rank, world_size and port together")
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world_size)
        local_rank, local_world = rank, world_size
    else:
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                   if k not in os.environ]
        if missing:
            raise ConvNetVAEError(
                f"no rank given and the environment lacks {missing}: launch with torchrun "
                "(torchrun --nproc_per_node N -m convnetvae.distributed ...) or use "
                "convnetvae train --nproc N")
        dist.init_process_group(backend, init_method="env://")
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
    if torch.cuda.is_available() and backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    else:
        # share this machine's cores among its processes (few-core CPUs oversubscribe badly)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
    return dist.get_rank(), dist.get_world_size()


def rank_device(device: str = "auto") -> str:
    """This rank's device: its own GPU under NCCL, else the requested device."""
    if device in ("auto", None) and torch.cuda.is_available():
        return f"cuda:{torch.cuda.current_device()}"
    return str(resolve_device(device))


# ---------------------------------------------------------------------- API-level training
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def train_distributed(model: Any, **train_kwargs: Any) -> Any:
    """Train a :class:`~convnetvae.api.ConvNetVAE` as one rank of a process group.

    Every rank builds the same model on the same data (same seed) and calls this together. The
    keyword arguments are those of :meth:`ConvNetVAE.train <convnetvae.api.ConvNetVAE.train>`
    (``batch_size`` is per process). Returns the model with ``history`` set on every rank.
    """
    unknown = set(train_kwargs) - _TRAIN_FIELDS
    if unknown:
        raise ConvNetVAEError(f"unknown training argument(s) {sorted(unknown)}; allowed: "
                              f"{sorted(_TRAIN_FIELDS)}")
    kw = dict(train_kwargs)
    if kw.get("seed") is None:
        kw["seed"] = model.seed
    kw["device"] = rank_device(kw.get("device", "auto"))
    if kw.get("checkpoint_dir") is not None:
        kw["checkpoint_dir"] = str(kw["checkpoint_dir"])
    cfg = TrainConfig(**kw)
    _, source, codes, mask = model._prepare(None)
    trainer = DistributedTrainer(model.module, source, codes, mask, cfg)
    hist = trainer.fit()
    model._record_training(trainer, cfg, hist, world_size=trainer.world_size)
    return model


def _train_from_file(data: str, modalities: Sequence[str], out: str, batch_key: str | None,
                     labels_key: str | None, model_kwargs: dict, train_kwargs: dict,
                     backed: bool) -> None:
    """Body of one rank: read the data, build the model, train, rank 0 saves."""
    from .api import ConvNetVAE
    from .data.backed import read_h5ad

    adata = read_h5ad(data, backed=backed)
    ConvNetVAE.setup_anndata(adata, modalities=list(modalities), batch_key=batch_key,
                             labels_key=labels_key)
    model = ConvNetVAE(adata, **model_kwargs)
    train_distributed(model, **train_kwargs)
    if dist.get_rank() == 0:
        model.save(out, overwrite=True)
    dist.barrier()


def _spawned_worker(rank: int, world_size: int, port: int, spec: dict) -> None:
    init_process_group(rank, world_size, port, spec.get("backend"))
    try:
        _train_from_file(spec["data"], spec["modalities"], spec["out"], spec.get("batch_key"),
                         spec.get("labels_key"), spec.get("model_kwargs", {}),
                         spec.get("train_kwargs", {}), spec.get("backed", False))
    finally:
        dist.destroy_process_group()


def train_multiprocess(data: str | os.PathLike, modalities: Sequence[str], out: str | os.PathLike,
                       nproc: int = 2, batch_key: str | None = None,
                       labels_key: str | None = None, model_kwargs: dict | None = None,
                       train_kwargs: dict | None = None, backed: bool = False,
                       backend: str | None = None) -> str:
    """Train on one machine with ``nproc`` processes and save the model (rank 0) to ``out``.

    Parameters
    ----------
    data
        An h5ad following the data contract (every process reads it; ``backed=True`` reads the
        counts from disk a minibatch at a time).
    modalities, batch_key, labels_key
        As in :meth:`ConvNetVAE.setup_anndata <convnetvae.api.ConvNetVAE.setup_anndata>`.
    out
        Folder for the saved model.
    nproc
        Number of processes (each gets ``cpu_count() // nproc`` threads on CPU, one GPU on CUDA).
    model_kwargs, train_kwargs
        Arguments of ``ConvNetVAE(...)`` and of ``model.train(...)`` (``batch_size`` per process).
    backend
        ``"gloo"`` or ``"nccl"`` (default: NCCL when CUDA exists).

    Returns
    -------
    The model folder (load it with ``ConvNetVAE.load(out, adata)``).
    """
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ConvNetVAEError(f"nproc must be >= 1, got {nproc}")
    if not os.path.exists(data):
        raise ConvNetVAEError(f"data file {data} does not exist")
    spec = {"data": str(data), "modalities": list(modalities), "out": str(out),
            "batch_key": batch_key, "labels_key": labels_key,
            "model_kwargs": dict(model_kwargs or {}), "train_kwargs": dict(train_kwargs or {}),
            "backed": bool(backed), "backend": backend}
    unknown = set(spec["train_kwargs"]) - _TRAIN_FIELDS
    if unknown:
        raise ConvNetVAEError(f"unknown training argument(s) {sorted(unknown)}")
    try:
        mp.spawn(_spawned_worker, args=(nproc, free_port(), spec), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as err:
        raise ConvNetVAEError(f"a training process failed:\n{err}") from None
    return str(out)


# ---------------------------------------------------------------------- command line
def _specs_from_cli(args: argparse.Namespace) -> dict:
    if getattr(args, "shuffle_block_size", None):  # not passed on to the ranks: refuse here
        raise ConvNetVAEError(f"--shuffle-block-size {NO_BLOCK_SHUFFLE}")
    from . import settings
    from .settings import ModelSettings, TrainSettings

    model_kwargs = settings.from_args(args, ModelSettings)
    train_kwargs = {**settings.from_args(args, TrainSettings), "progress": not args.quiet}
    return {"data": args.data, "modalities": [m for m in args.modalities.split(",") if m],
            "out": args.out, "batch_key": args.batch_key, "model_kwargs": model_kwargs,
            "train_kwargs": train_kwargs, "backed": args.backed}


def launch_cli(args: argparse.Namespace) -> int:
    """``convnetvae train --nproc N``: spawn N local processes (gloo on CPU, NCCL on GPU)."""
    spec = _specs_from_cli(args)
    train_multiprocess(spec["data"], spec["modalities"], spec["out"], nproc=args.nproc,
                       batch_key=spec["batch_key"], model_kwargs=spec["model_kwargs"],
                       train_kwargs=spec["train_kwargs"], backed=spec["backed"])
    print(f"saved model trained by {args.nproc} processes to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point under torchrun: ``torchrun ... -m convnetvae.distributed <train arguments>``."""
    from .cli import build_parser

    args = build_parser().parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    spec = _specs_from_cli(args)
    init_process_group()
    try:
        _train_from_file(spec["data"], spec["modalities"], spec["out"], spec["batch_key"], None,
                         spec["model_kwargs"], spec["train_kwargs"], spec["backed"])
        if dist.get_rank() == 0:
            print(f"saved model trained by {dist.get_world_size()} processes to {args.out}")
    except ConvNetVAEError as err:
        print(f"convnetvae.distributed: error: {err}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
