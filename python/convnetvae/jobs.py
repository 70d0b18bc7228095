"""The one training path of the command line: read an h5ad, set it up, train, save.

``convnetvae train`` runs :func:`run_train_job` in its own process; with ``--nproc N`` (and under
torchrun) every rank runs the same function with a :class:`~convnetvae.distributed.DataParallel`
strategy, and rank 0 saves. The arguments of ``convnetvae train`` are defined here once
(:func:`add_train_arguments`), the model and training flags from :mod:`convnetvae.settings`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from . import settings
from .settings import ModelSettings, TrainSettings


@dataclass
class TrainJob:
    """What to train on and how (plain, picklable values: it is sent to every process).

    Attributes
    ----------
    data
        An h5ad following the data contract.
    modalities, batch_key, labels_key
        As in ``ConvNetVAE.setup_anndata``.
    out
        Folder for the saved model.
    backed
        Leave the count layers on disk and read a minibatch at a time.
    model, train
        Arguments of ``ConvNetVAE(...)`` and ``model.train(...)`` (the schema's settings).
    """

    data: str
    modalities: list[str]
    out: str
    batch_key: str | None = None
    labels_key: str | None = None
    backed: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Check the settings against the schema (before any process starts)."""
        settings.validate(ModelSettings, self.model)
        settings.validate(TrainSettings, self.train)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``convnetvae train`` (also those of ``-m convnetvae.distributed``)."""
    p.add_argument("--data", required=True, help="h5ad following the data contract")
    p.add_argument("--modalities", required=True, help="comma-separated layer names")
    p.add_argument("--batch-key", default=None, help="obs column with the batch of each cell")
    p.add_argument("--labels-key", default=None, help="obs column with cell labels (recorded)")
    settings.add_arguments(p.add_argument_group("model settings"), ModelSettings)
    settings.add_arguments(p.add_argument_group("training settings"), TrainSettings)
    p.add_argument("--backed", action="store_true",
                   help="leave the count layers on disk and read a minibatch at a time "
                        "(data larger than RAM)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (torch.distributed)")
    p.add_argument("--out", required=True, help="folder for the saved model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def job_from_args(args: argparse.Namespace) -> TrainJob:
    """The :class:`TrainJob` described by parsed ``convnetvae train`` arguments."""
    return TrainJob(data=args.data, modalities=[m for m in args.modalities.split(",") if m],
                    out=args.out, batch_key=args.batch_key, labels_key=args.labels_key,
                    backed=bool(args.backed), model=settings.from_args(args, ModelSettings),
                    train={**settings.from_args(args, TrainSettings),
                           "progress": not args.quiet})


def run_train_job(job: TrainJob, strategy: Any = None) -> Any:
    """Read the data, build the model, train it (with ``strategy``, see
    :class:`convnetvae.train.Strategy`) and save it from the main process; returns the model."""
    from .api import ConvNetVAE
    from .data.backed import read_h5ad

    adata = read_h5ad(job.data, backed=job.backed)
    ConvNetVAE.setup_anndata(adata, modalities=list(job.modalities), batch_key=job.batch_key,
                             labels_key=job.labels_key)
    model = ConvNetVAE(adata, **job.model)
    model.train(strategy=strategy, **job.train)
    if strategy is None or strategy.is_main:
        model.save(job.out, overwrite=True)
    if strategy is not None and hasattr(strategy, "barrier"):
        strategy.barrier()
    return model
