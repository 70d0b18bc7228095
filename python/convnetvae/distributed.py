"""Data-parallel training over several processes (torch.distributed, DDP).

One rank of data-parallel training is the :class:`DataParallel` strategy of the ordinary
:class:`~convnetvae.train.Trainer` (``model.train(strategy=DataParallel())``). Every process
(rank) holds a full copy of the model and reads its own shard of each global
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
* one machine: ``convnetvae train --nproc 2 ...``, :func:`train_multiprocess` or :func:`launch`
  (each rank runs the same :func:`convnetvae.jobs.run_train_job` as a one-process
  ``convnetvae train``);
* torchrun (one or many machines): ``torchrun --nproc_per_node 4 -m convnetvae.distributed
  --data x.h5ad --modalities ATAC,H3K27ac --out model/`` (the arguments of ``convnetvae train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .data.loader import MinibatchLoader
from .errors import ConvNetVAEError
from .jobs import TrainJob, add_train_arguments, job_from_args, run_train_job
from .settings import TrainSettings
from .train import Strategy, Trainer, resolve_device

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


# ---------------------------------------------------------------------- the strategy
class DataParallel(Strategy):
    """The :class:`~convnetvae.train.Strategy` of one rank of data-parallel training.

    ``torch.distributed`` must be initialised first (:func:`init_process_group`); every rank
    builds the same model on the same data (same seed) and trains with
    ``model.train(strategy=DataParallel(), ...)`` (or ``Trainer(..., strategy=)``) together.
    """

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ConvNetVAEError("DataParallel needs an initialised process group: call "
                                  "convnetvae.distributed.init_process_group() first or launch "
                                  "with torchrun / convnetvae train --nproc N")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        self._val_shard: MinibatchLoader | None = None

    @staticmethod
    def check(train: dict[str, Any]) -> None:
        """Refuse training settings that data-parallel training cannot honour."""
        if train.get("shuffle_block_size"):
            raise ConvNetVAEError(f"shuffle_block_size {NO_BLOCK_SHUFFLE}")

    def device(self, requested: str) -> str:
        return rank_device(requested)

    def setup(self, trainer: Trainer) -> None:
        cfg = trainer.config
        self.check({"shuffle_block_size": cfg.shuffle_block_size})
        if len(epoch_batches(trainer.train_idx, cfg.batch_size, self.world_size, cfg.seed,
                             0)) == 0:
            raise ConvNetVAEError(
                f"{len(trainer.train_idx)} training cells are too few for {self.world_size} "
                f"processes x batch_size {cfg.batch_size}: every process needs >= 2 cells")
        if trainer.val_loader is not None:
            shard = trainer.val_idx[self.rank::self.world_size]
            self._val_shard = MinibatchLoader(
                trainer.source, trainer.val_loader.batch_codes, trainer.val_loader.mask, shard,
                trainer.val_loader.batch_size, shuffle=False, device=trainer.device)

    def wrap(self, trainer: Trainer) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        return DistributedDataParallel(trainer.module, device_ids=ids, forward_sync_buffers=True)

    def epoch_rows(self, trainer: Trainer, epoch: int) -> list[np.ndarray]:
        cfg = trainer.config
        steps = epoch_batches(trainer.train_idx, cfg.batch_size, self.world_size, cfg.seed, epoch)
        return [parts[self.rank] for parts in steps]

    def stop_requested(self, trainer: Trainer) -> bool:
        if trainer.stop_event is None:
            return False
        flag = torch.tensor([float(trainer.stop_event.is_set())], device=trainer.device)
        return self.reduce(flag).item() > 0

    def before_step(self, trainer: Trainer, epoch: int, step: int) -> None:
        torch.manual_seed(step_seed(trainer.config.seed, epoch, step, self.rank))

    def reduce(self, sums: torch.Tensor) -> torch.Tensor:
        # NCCL reduces on the GPU, gloo on the CPU; float64 sums stay exact enough for losses
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        return sums

    def end_epoch(self, trainer: Trainer) -> None:
        for buf in trainer.module.buffers():
            if buf.is_floating_point() or buf.dtype == torch.long:
                dist.broadcast(buf, src=0)

    def validation_batches(self, trainer: Trainer) -> Any:
        return self._val_shard if self._val_shard is not None else []

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size}


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
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainSettings)}


def _check_train_kwargs(train_kwargs: dict) -> None:
    unknown = set(train_kwargs) - _TRAIN_FIELDS
    if unknown:
        raise ConvNetVAEError(f"unknown training argument(s) {sorted(unknown)}; allowed: "
                              f"{sorted(_TRAIN_FIELDS)}")


def train_distributed(model: Any, **train_kwargs: Any) -> Any:
    """Train a :class:`~convnetvae.api.ConvNetVAE` as one rank of a process group.

    Every rank builds the same model on the same data (same seed) and calls this together. The
    keyword arguments are those of :meth:`ConvNetVAE.train <convnetvae.api.ConvNetVAE.train>`
    (``batch_size`` is per process). Returns the model with ``history`` set on every rank.
    """
    _check_train_kwargs(train_kwargs)
    return model.train(strategy=DataParallel(), **train_kwargs)


def _spawned_worker(rank: int, world_size: int, port: int, job: TrainJob,
                    backend: str | None) -> None:
    init_process_group(rank, world_size, port, backend)
    try:
        run_train_job(job, DataParallel())
    finally:
        dist.destroy_process_group()


def launch(job: TrainJob, nproc: int, backend: str | None = None) -> str:
    """Run a training job with ``nproc`` processes on this machine; rank 0 saves the model.

    The job's settings are checked here, before any process starts.
    """
    import torch.multiprocessing as mp

    if nproc < 1:
        raise ConvNetVAEError(f"nproc must be >= 1, got {nproc}")
    if not os.path.exists(job.data):
        raise ConvNetVAEError(f"data file {job.data} does not exist")
    _check_train_kwargs(job.train)
    job.check()
    DataParallel.check(job.train)
    try:
        mp.spawn(_spawned_worker, args=(nproc, free_port(), job, backend), nprocs=nproc,
                 join=True)
    except mp.ProcessRaisedException as err:
        raise ConvNetVAEError(f"a training process failed:\n{err}") from None
    return job.out


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
    job = TrainJob(data=str(data), modalities=list(modalities), out=str(out),
                   batch_key=batch_key, labels_key=labels_key, backed=bool(backed),
                   model=dict(model_kwargs or {}), train=dict(train_kwargs or {}))
    return launch(job, nproc, backend)


# ---------------------------------------------------------------------- torchrun
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point under torchrun: ``torchrun ... -m convnetvae.distributed <train arguments>``
    (the arguments of ``convnetvae train``)."""
    parser = argparse.ArgumentParser(prog="convnetvae.distributed", description=__doc__)
    add_train_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    init_process_group()
    try:
        job = job_from_args(args)
        DataParallel.check(job.train)
        run_train_job(job, DataParallel())
        if dist.get_rank() == 0:
            print(f"saved model trained by {dist.get_world_size()} processes to {job.out}")
    except ConvNetVAEError as err:
        print(f"convnetvae.distributed: error: {err}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
