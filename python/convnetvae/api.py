"""The user-facing :class:`ConvNetVAE` (scvi-tools-like).

>>> import convnetvae as cv
>>> adata = cv.simulate(n_cells=500, n_bins=2000)
>>> cv.ConvNetVAE.setup_anndata(adata, modalities=["ATAC", "H3K27ac", "H3K27me3"],
...                             batch_key="batch")
>>> model = cv.ConvNetVAE(adata, architecture="conv-k31s31")
>>> model.train(max_epochs=5, progress=False)
>>> adata.obsm["X_convnetvae"] = model.get_latent_representation()
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from . import model_format, settings
from .data import contract
from .data.loader import CountSource, MinibatchLoader
from .errors import ConvNetVAEError
from .model.registry import AUTO_BIN_LOADINGS_MAX, DEFAULT_ARCHITECTURE, auto_bin_loadings, resolve_architecture
from .model.vae import VAE, ModuleConfig, count_parameters
from .settings import ModelSettings, TrainSettings
from .train import Strategy, TrainConfig, Trainer, resolve_device


def _arguments(values: dict) -> dict:
    """A method's arguments from its ``locals()`` (without ``self`` and data or callbacks)."""
    return {k: v for k, v in values.items()
            if k not in ("self", "adata", "callback", "stop_event", "strategy")}


def _source_for(adata: ad.AnnData, modalities: Sequence[str]) -> CountSource:
    from .data.backed import source_from_anndata

    return source_from_anndata(adata, modalities)


def _data_statistics(adata: ad.AnnData, modalities: Sequence[str],
                     mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(total per modality and bin (M x G), median library size per modality (M,)) of the cells a
    model is built on (:meth:`VAE.init_from_data`), over the cells where each modality is
    observed (``mask``: cells x modalities, or None)."""
    from .model.transforms import library_scale

    sums = [contract.count_sums(adata, m, None if mask is None else mask[:, j])
            for j, m in enumerate(modalities)]
    return (np.stack([cols for _, cols in sums]),
            np.array([library_scale(rows) for rows, _ in sums]))


def _sparse_counts(adata: ad.AnnData, modalities: Sequence[str],
                   mask: np.ndarray | None = None) -> bool:
    """Whether at most :data:`~convnetvae.model.lsi_start.AUTO_MAX_NONZERO` of the counts of the
    observed modalities are non-zero (what ``tie_loadings=None`` ties on: the LSI start's rule
    for sparse data, peaks and fine bins, not dense 1-Mb tiles)."""
    from .model.lsi_start import AUTO_MAX_NONZERO

    nz = [contract.nonzero_entries(adata, m, None if mask is None else mask[:, j])
          for j, m in enumerate(modalities)]
    entries = sum(e for _, e in nz)
    return entries > 0 and sum(k for k, _ in nz) <= AUTO_MAX_NONZERO * entries


def _warn_unobserved_cells(adata: ad.AnnData, rows: np.ndarray) -> None:
    """Warn that cells with every modality masked (or empty) were embedded from no signal."""
    if len(rows):
        names = ", ".join(repr(str(n)) for n in adata.obs_names[np.sort(rows)[:3]])
        warnings.warn(
            f"{len(rows)} cell(s) have no observed modality (all masked or without counts), e.g. "
            f"{names}: their embedding comes from their batch alone, not from data; drop them",
            stacklevel=3)


class ConvNetVAE:
    """ConvNet-VAE model over the bins of an AnnData set up with :meth:`setup_anndata`.

    Parameters
    ----------
    adata
        Cells x bins with one count layer per modality (see :meth:`setup_anndata`).
    architecture
        Model architecture: auto (one conv layer sized to the number of bins; 8 channels when
        the loadings are tied, otherwise 32), e.g. conv-k31s31, conv-k11s3x2 (two conv layers
        of kernel 11, stride 3) or fc-l1 (the FC-VAE baseline). ``"auto"`` picks the stride --
        conv-k51s51, conv-k31s31 or conv-k11s11 -- from the number of bins, and 8 channels
        (``conv-k51s51c8``) when ``tie_loadings`` ties the loadings: the tied loadings carry the
        linear signal, a step costs less, so the time budget gives about twice the epochs, and
        all cells and held-out cells scored higher
        (:func:`~convnetvae.model.registry.auto_architecture`; docs/benchmarks.md, "Eight
        channels with tied loadings"); the registry (:mod:`convnetvae.model.registry`) lists
        the others: ``"conv-k11s3x1"`` .. ``"conv-k11s3x3"`` (Group 2), any
        ``"conv-k<K>s<S>[x<L>][c<C>]"`` (``c<C>``: channels of the first layer, 32 unless
        given), ``"fc-l1"`` .. ``"fc-l3"``.
    likelihood
        Count likelihood: poisson (the paper) or nb (negative binomial, one dispersion per bin
        and modality).
    n_latent
        Dimension of the embedding (latent space). D = 30 in the paper.
    n_hidden
        Width of the fully connected hidden layer.
    dropout
        Dropout rate.
    chrom_aware
        Pad each chromosome on its own so no kernel mixes bins of two chromosomes (False: the
        paper's kernels run across chromosome boundaries).
    batch_offsets
        Give the decoder a learned log-rate offset per batch, modality and bin (False: the
        paper's decoder). A direct path for batch biases of whole bins, so the latent space
        need not carry them; with ``False`` batch enters only through the FC layer.
    input_transform
        What the encoder sees: depth (log of counts scaled to the median depth), tfidf (the
        same weighted by inverse bin frequency) or log1p (the paper's log(1 + x)). See
        :mod:`convnetvae.model.transforms`.
    bin_offsets
        Give the decoder a log-rate offset per modality and bin, started at the data's mean
        profile (False: the paper's decoder).
    bin_loadings
        Add a learned loading per modality, bin and latent dimension to the decoder's
        log-rates, a linear decoder beside the convolutional one; None: on up to 100,000 bins x
        modalities (False: the paper's decoder). With kernel = stride every bin of a window
        shares the same few kernel columns; a free loading per bin is what LSI and topic models
        have, and it trains small peak data better within the time budget (docs/benchmarks.md,
        "Free loadings per bin"; the rule: :func:`convnetvae.model.registry.auto_bin_loadings`).
    encoder_loadings
        Add a learned weight per modality, bin and latent dimension from the encoder's input to
        the latent mean, a linear encoder beside the convolutional one; None: on up to 100,000
        bins x modalities (False: the paper's encoder). The encoder's convolution, like the
        decoder's, shares its kernel columns across windows; with the free weights and TF-IDF
        input all five real sets scored higher (docs/benchmarks.md, "Free encoder loadings and
        TF-IDF input"; on and off by the same rule as ``bin_loadings``).
    tie_loadings
        Tie the encoder's free weights to the decoder's bin loadings (the loadings times a
        learnt gain per latent dimension, as PCA's encoder is its decoder transposed) instead of
        a matrix of their own; None: tied when both kinds of loadings are on and at most half of
        the counts are non-zero, as in peak data (True: always, False: a matrix of their own).
        Tied, the encoder's linear term is ``h W g`` with ``W`` the bin loadings and ``g`` the
        gain; a matrix of its own (the default before 2026-12-02) is a second free weight per
        bin and dimension, which on sparse data fits the training cells' own noise. On the
        sparse real sets tying scored higher on all cells (Buenrostro 0.43 -> 0.48 over seven
        seeds, Schep 0.85 -> 0.87) and on held-out cells (Buenrostro 0.42 -> 0.47, Schep 0.84
        -> 0.86), equal on Zeller and Paired-Tag; on Satpathy's dense 1-Mb bins lower (hence
        None's rule). A query mapped onto a tied reference trains its own encoder-side
        loadings (:mod:`convnetvae.query`). docs/benchmarks.md, "Tied loadings".
    loadings_start
        How the free bin and encoder loadings start: zero, lsi (the directions of a truncated
        SVD of the encoder's input, as in LSI), or auto (lsi when at most half of the input is
        non-zero, as in peak data). With lsi the linear part of the latent mean starts at the
        cells' LSI embedding (at a third of the prior's scale; with several batches, of the
        input less each batch's mean) and the decoder's loadings at the same directions, so the
        few hundred optimiser steps of the time budget refine an LSI instead of first finding
        one: on the sparse real sets it scores higher (Buenrostro 0.43 -> 0.46, Schep 0.85 ->
        0.89, Paired-Tag 0.485 -> 0.51), on Satpathy's dense 1-Mb bins lower (0.80 -> 0.74,
        hence auto), and a query mapped onto such a reference mixes far less with it
        (:mod:`convnetvae.model.lsi_start`; docs/benchmarks.md, "An LSI start for the
        loadings"). No effect when both kinds of loadings are off.
    seed
        Random seed of the weights, the validation split, the shuffling and the sampling.
        Training uses it unless ``train(seed=)`` is given.

    All settings are defined once in :mod:`convnetvae.settings` (``ModelSettings``).
    """

    def __init__(self, adata: ad.AnnData, architecture: str = DEFAULT_ARCHITECTURE,
                 likelihood: str = "poisson", n_latent: int = 30, n_hidden: int = 128,
                 dropout: float = 0.2, chrom_aware: bool = True, batch_offsets: bool = True,
                 input_transform: str = "tfidf", bin_offsets: bool = True,
                 bin_loadings: bool | None = None, encoder_loadings: bool | None = None,
                 tie_loadings: bool | None = None, loadings_start: str = "zero",
                 seed: int = 0) -> None:
        opts = settings.make(ModelSettings, **_arguments(locals()))
        self.registry = contract.get_registry(adata)
        self.adata = adata
        contract.check_var_coordinates(adata.var)
        if adata.n_vars != self.registry["n_bins"]:
            raise ConvNetVAEError("adata changed since setup_anndata: run setup_anndata again")
        self.bins = adata.var[["chrom", "start", "end"]].copy()
        self.bins["chrom"] = self.bins["chrom"].astype(str)
        chrom_lengths = contract.chromosome_lengths(self.bins)
        mods = self.registry["modalities"]
        loadings = auto_bin_loadings(adata.n_vars, len(mods))  # what None stands for, both kinds
        bin_on = loadings if opts.bin_loadings is None else opts.bin_loadings
        enc_on = loadings if opts.encoder_loadings is None else opts.encoder_loadings
        tie = opts.tie_loadings
        if tie and not (bin_on and enc_on):
            raise ConvNetVAEError(
                "tie_loadings=True ties the encoder's weights to the decoder's bin loadings, so "
                f"it needs both; got bin_loadings={bin_on}, encoder_loadings={enc_on} (this data "
                f"has {adata.n_vars:,} bins x {len(mods)} modalities; None turns them on up to "
                f"{AUTO_BIN_LOADINGS_MAX:,}): turn them on or leave tie_loadings=None")
        if tie is None:
            tie = bool(bin_on and enc_on) and _sparse_counts(adata, mods, self._mask(adata))
        config = ModuleConfig(
            n_modalities=len(mods), chrom_lengths=chrom_lengths,
            n_batches=max(1, len(self.registry["batch_categories"])),
            architecture=resolve_architecture(opts.architecture, adata.n_vars, tie),
            likelihood=opts.likelihood, n_latent=opts.n_latent,
            n_hidden=opts.n_hidden, dropout=opts.dropout, chrom_aware=opts.chrom_aware,
            use_mask=bool(self.registry.get("has_missing", False)),
            batch_offsets=opts.batch_offsets, input_transform=opts.input_transform,
            bin_offsets=opts.bin_offsets,
            bin_loadings=bin_on, encoder_loadings=enc_on, tie_loadings=tie)
        torch.manual_seed(opts.seed)
        self.module = VAE(config)
        if config.input_transform != "log1p" or config.bin_offsets:
            self.module.init_from_data(*_data_statistics(adata, mods, self._mask(adata)))
        if opts.loadings_start != "zero" and (config.bin_loadings or config.encoder_loadings):
            self._start_loadings(adata, opts.loadings_start, opts.seed)
        self.seed = opts.seed
        self.history_: list[dict] = []
        self.is_trained = False
        self.train_config: dict = {}

    def _start_loadings(self, adata: ad.AnnData, how: str, seed: int) -> None:
        """Start the free loadings at an LSI of the encoder's input (``loadings_start``
        "lsi", or "auto" on sparse data)."""
        from .model import lsi_start

        mod = self.module
        h, depth, rows = lsi_start.encoder_input(
            _source_for(adata, self.modalities), mod.config.input_transform,
            None if mod.input_scale is None else mod.input_scale.cpu().numpy(),
            None if mod.input_idf is None else mod.input_idf.cpu().numpy(), seed,
            self._mask(adata))
        if how == "auto" and lsi_start.nonzero_fraction(h) > lsi_start.AUTO_MAX_NONZERO:
            return
        batch = contract.batch_codes(adata, self.registry)[rows]
        mod.start_loadings(*lsi_start.lsi_directions(h, depth, mod.config.n_latent, seed, batch),
                           shrink=lsi_start.SHRINK)

    # ------------------------------------------------------------------ setup
    @staticmethod
    def setup_anndata(adata: ad.AnnData, modalities: Sequence[str] | None = None,
                      batch_key: str | None = None, labels_key: str | None = None,
                      mask_key: str | None = None) -> None:
        """Validate ``adata`` and register the modalities, batch and label columns.

        Parameters
        ----------
        adata
            Cells x bins. ``layers[m]`` holds the raw counts of modality ``m``; ``var`` has
            ``chrom``, ``start``, ``end`` (0-based, half-open) in genome order.
        modalities
            Layer names, in channel order (default ``adata.uns["modalities"]``).
        batch_key
            ``obs`` column with the batch (sample) of each cell; the model removes its effect.
        labels_key
            ``obs`` column with cell labels (evaluation only).
        mask_key
            ``obsm`` key of a boolean cells x modalities mask (True = observed) for cells that lack
            some modalities (default ``"modality_mask"`` when present).
        """
        contract.setup_anndata(adata, modalities, batch_key, labels_key, mask_key)

    # ------------------------------------------------------------------ properties
    @property
    def modalities(self) -> list[str]:
        return list(self.registry["modalities"])

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch ELBO, reconstruction and KL for train (and validation)."""
        return pd.DataFrame(self.history_)

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.module)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def __repr__(self) -> str:
        c = self.module.config
        state = "trained" if self.is_trained else "not trained"
        return (f"ConvNetVAE({c.architecture}, likelihood={c.likelihood}, n_latent={c.n_latent},"
                f" modalities={self.modalities}, bins={self.module.n_bins}, "
                f"batches={c.n_batches}, parameters={self.n_parameters:,}; {state})")

    # ------------------------------------------------------------------ data access
    def _prepare(self, adata: ad.AnnData | None) -> tuple[ad.AnnData, CountSource, np.ndarray,
                                                          np.ndarray | None]:
        adata = self.adata if adata is None else adata
        if adata is None:
            raise ConvNetVAEError(
                "this model was loaded without data: pass the cells, e.g. "
                "model.get_latent_representation(adata), or load it with "
                "ConvNetVAE.load(path, adata)")
        mods = self.modalities
        for m in mods:
            if m not in adata.layers:
                raise ConvNetVAEError(
                    f"layer {m!r} not found in adata.layers (available: "
                    f"{list(adata.layers.keys())}); the model was trained on {mods}")
        if "chrom" not in adata.var.columns:
            contract.check_var_coordinates(adata.var)
        contract.check_same_bins(adata, self.bins, mods, mods)
        if adata is not self.adata:
            for m in mods:
                contract.check_counts(adata.layers[m], m)
        codes = contract.batch_codes(adata, self.registry)
        mask = self._mask(adata)
        if mask is not None and not mask.all() and not self.module.config.use_mask \
                and self.module.arch.kind == "conv":
            warnings.warn("these cells lack some modalities but the model was trained without "
                          "missing modalities; embeddings of those cells may be poor",
                          stacklevel=3)
        return adata, _source_for(adata, mods), codes, mask

    def _mask(self, adata: ad.AnnData) -> np.ndarray | None:
        """The observed-modality mask of ``adata`` under the registered key (None: all observed
        or no mask there)."""
        key = self.registry.get("mask_key")
        if (key or contract.MASK_KEY) not in adata.obsm:
            return None
        return contract.get_mask(adata, self.modalities, key)

    def _loader(self, adata: ad.AnnData | None, batch_size: int) -> tuple[MinibatchLoader,
                                                                          ad.AnnData]:
        adata, source, codes, mask = self._prepare(adata)
        return MinibatchLoader(source, codes, mask, batch_size=batch_size, shuffle=False,
                               device=self.device), adata

    # ------------------------------------------------------------------ training
    def train(self, max_epochs: int | None = None, batch_size: int | None = None,
              lr: float | None = None, lr_schedule: str = "auto", validation_size: float = 0.1,
              early_stopping: bool = True, patience: int = 20,
              seed: int | None = None, device: str = "auto", progress: bool = True,
              callback: Callable[[int, dict], None] | None = None,
              stop_event: threading.Event | None = None, kl_warmup_epochs: int | None = None,
              time_budget: float = 1.0, time_guard: bool = True,
              grad_clip: float | None = 100.0, weight_decay: float = 0.0,
              mixed_precision: bool = False, checkpoint_dir: str | os.PathLike | None = None,
              checkpoint_every: int = 1, resume: bool = False,
              resume_allow_changes: bool = False, n_threads: int | None = None,
              shuffle_block_size: int | None = None, min_delta: float = 0.0,
              strategy: Strategy | None = None) -> ConvNetVAE:
        """Train the model (Adam, minibatches densified one at a time from sparse counts).

        Parameters
        ----------
        max_epochs
            Passes over the training cells; None chooses the length from the data (a one-cycle
            learning-rate schedule); the paper: 300 or 200. ``max_epochs=300,
            early_stopping=False`` trains as the paper (constant learning rate 1e-3).
        batch_size
            Cells per minibatch; None: 128, or fewer (down to 32) when the data are small, so
            that an epoch has at least 16 optimiser steps.
        lr
            Adam learning rate: the peak of the one-cycle schedule or the constant rate (None:
            1e-2 one-cycle, 1e-3 constant as the paper).
        lr_schedule
            Learning-rate schedule: onecycle (warm-up, then cosine decay), constant (the paper),
            or auto (onecycle when max_epochs is None, else constant). See
            :mod:`convnetvae.schedule`.
        validation_size
            Fraction of cells held out for validation and early stopping (0 = none).
        early_stopping
            With the constant schedule, stop when the validation loss has not improved for
            patience epochs and keep the best weights (False: train exactly max_epochs, as the
            paper).
        patience
            Epochs without improvement before early stopping.
        min_delta
            Smallest decrease of the validation loss that counts as an improvement.
        kl_warmup_epochs
            Linearly increase the KL weight over this many epochs (0 = off, as the paper);
            None: over the first half of a one-cycle run, off with the constant schedule. The
            resolved value is ``model.trainer_.plan.kl_warmup_epochs``.
        time_budget
            Training time of an automatic-length run (max_epochs=None) as a multiple of the
            default budget (1 minute per 1,000 cells per modality, up to three, on 2 CPU cores):
            4 lets it train about four times as long. The length still stops at what the data
            need (about 1,000 optimiser steps, at most 200 epochs). Small sets gain from more
            (docs/benchmarks.md). The chosen length is ``model.trainer_.plan.epochs``; with
            ``max_epochs`` given it must stay 1.
        time_guard
            Keep an automatic-length run within its budget (time_budget times the default
            budget, at least 10 seconds) on a slower or busier machine: when the first epochs
            show that the planned length would overrun it, the rest of the learning-rate
            schedule is compressed into the epochs that fit, with a warning. False: always the
            planned length, the same on every machine. A shortened run has
            ``model.trainer_.plan.shortened``; ``plan.planned_epochs`` is the planned length.
        grad_clip
            Clip the gradient norm to this value (None = off).
        weight_decay
            Adam weight decay (L2) of every weight but the per-batch offsets. The batch
            offsets carry the batch correction; decaying them would undo it.
        seed
            Seed of the split, shuffling and sampling (None: the model's seed).
        device
            Device: auto (CUDA when present, else CPU), cpu, cuda, cuda:1 ...
        mixed_precision
            bfloat16 autocast of the forward pass (meant for GPUs; weights stay float32). It
            also runs on CPU, where it is usually slower unless the CPU has bfloat16
            instructions.
        progress
            Show a progress bar with the loss.
        checkpoint_dir
            Directory for resumable checkpoints (None = none).
        checkpoint_every
            Write a checkpoint every this many epochs.
        resume
            Continue from the last checkpoint in checkpoint_dir.
        resume_allow_changes
            With resume: continue even though the data's counts or the run's settings differ
            from the checkpoint's (the differences are recorded in train_config). Without it a
            difference is an error naming it. The checkpoint's train/validation split and
            random state are kept; a new lr or weight_decay is applied to the optimiser.
        n_threads
            CPU threads for torch (None: torch's choice).
        shuffle_block_size
            Shuffle blocks of this many consecutive cells instead of single cells, for long
            reads from disk (None: shuffle cells freely). Data on disk
            (:func:`~convnetvae.data.read_backed`) is then read in long runs; every cell is
            still seen once per epoch and a minibatch mixes 8 blocks, so write a file sorted
            by sample or cell type in random row order first.
        callback
            ``callback(epoch, row)`` after each epoch (live loss curves).
        stop_event
            A :class:`threading.Event`; setting it stops after the current minibatch and keeps the
            best model so far. Ctrl-C (KeyboardInterrupt) does the same.
        strategy
            How the work is spread (:class:`~convnetvae.train.Strategy`); default one process.
            :class:`convnetvae.distributed.DataParallel` trains as one rank of data-parallel
            training (every rank calls ``train`` together; ``batch_size`` is per process).

        All settings are defined once in :mod:`convnetvae.settings` (``TrainSettings``).
        """
        values = _arguments(locals())
        if values["checkpoint_dir"] is not None:
            values["checkpoint_dir"] = os.fspath(values["checkpoint_dir"])
        cfg = settings.make(TrainSettings, **values)
        if cfg.seed is None:
            cfg = dataclasses.replace(cfg, seed=self.seed)
        adata, source, codes, mask = self._prepare(None)
        trainer = Trainer(self.module, source, codes, mask, cfg, callback=callback,
                          stop_event=stop_event, strategy=strategy)
        from .train import TrainingDiverged

        self.trainer_ = trainer  # from the start: callbacks can read trainer_.plan
        try:
            hist = trainer.fit()
        except TrainingDiverged as err:
            self.history_ = list(err.history)  # keep what finished; weights are the last good
            self.trainer_ = trainer
            raise
        self._record_training(trainer, cfg, hist)
        return self

    def _record_training(self, trainer: Trainer, cfg: TrainConfig, hist: list[dict]) -> None:
        """Keep a finished run's history, settings and outcome on the model."""
        self.history_ = list(hist)
        self.is_trained = len(hist) > 0 or self.is_trained
        self.train_config = dataclasses.asdict(cfg)
        self.train_config.update({"stopped_early": trainer.stopped_early,
                                  "interrupted": trainer.interrupted,
                                  "best_epoch": trainer.best_epoch,
                                  "epochs_trained": len(hist),
                                  "plan": dataclasses.asdict(trainer.plan),
                                  "batch_size": trainer.config.batch_size,  # as resolved
                                  "resumed_with_changes": trainer.resume_changes,
                                  **trainer.strategy.describe()})
        self.trainer_ = trainer

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def get_latent_representation(self, adata: ad.AnnData | None = None, give_mean: bool = True,
                                  batch_size: int = 512) -> np.ndarray:
        """Cell embedding (cells x n_latent): the posterior means (or a sample).

        Parameters
        ----------
        adata
            Cells to embed, with the same bins and modalities (and known batches); default the
            training data.
        give_mean
            Return the mean of q(z | x, b) (default) or one sample.
        batch_size
            Cells per forward pass.
        """
        loader, adata = self._loader(adata, batch_size)
        self.module.eval()
        out = np.zeros((adata.n_obs, self.module.config.n_latent), dtype=np.float32)
        empty: list[np.ndarray] = []
        for mb in loader:
            mu, logvar = self.module.encode(mb.x, mb.batch, mb.mask)
            z = mu if give_mean else mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            out[mb.index] = z.float().cpu().numpy()
            empty.append(mb.index[~mb.mask.any(1).cpu().numpy()])
        _warn_unobserved_cells(adata, np.concatenate(empty) if empty else np.zeros(0, int))
        return out

    @torch.no_grad()
    def get_normalized_signal(self, adata: ad.AnnData | None = None,
                              modality: str | None = None, library_size: float | str = 1.0,
                              transform_batch: str | None = None, batch_size: int = 256
                              ) -> np.ndarray | dict[str, np.ndarray]:
        """Decoder rates: the model's denoised signal per cell and bin.

        Missing modalities are imputed: the rates come from the embedding of the modalities a
        cell has.

        Parameters
        ----------
        adata
            Cells (default the training data).
        modality
            One modality (returns cells x bins) or ``None`` (returns a dict of all).
        library_size
            ``1.0`` gives the softmax weights (each row sums to 1); a number scales them;
            ``"observed"`` multiplies by each cell's observed library size (rows sum to the
            library size; 0 for a missing modality).
        transform_batch
            Decode every cell as if it came from this batch (default: its own batch).
        batch_size
            Cells per forward pass.
        """
        loader, adata = self._loader(adata, batch_size)
        mods = self.modalities
        if modality is not None and modality not in mods:
            raise ConvNetVAEError(f"modality {modality!r} is not one of the model's {mods}")
        wanted = [mods.index(modality)] if modality is not None else list(range(len(mods)))
        out = {mods[j]: np.zeros((adata.n_obs, self.module.n_bins), dtype=np.float32)
               for j in wanted}
        tb = None
        if transform_batch is not None:
            cats = self.registry["batch_categories"]
            if str(transform_batch) not in cats:
                raise ConvNetVAEError(f"transform_batch {transform_batch!r} is not one of {cats}")
            tb = cats.index(str(transform_batch))
        self.module.eval()
        for mb in loader:
            mu, _ = self.module.encode(mb.x, mb.batch, mb.mask)
            b = mb.batch if tb is None else torch.full_like(mb.batch, tb)
            w = self.module.decode(mu, b).exp()
            if library_size == "observed":
                w = w * mb.x.sum(-1, keepdim=True)
            elif isinstance(library_size, (int, float)):
                w = w * float(library_size)
            else:
                raise ConvNetVAEError(
                    f"library_size must be a number or 'observed', got {library_size!r}")
            w = w.float().cpu().numpy()
            for j in wanted:
                out[mods[j]][mb.index] = w[:, j, :]
        return out[modality] if modality is not None else out

    def get_marginal_ll(self, adata: ad.AnnData | None = None, n_samples: int = 100,
                        batch_size: int = 64) -> np.ndarray:
        """Per-cell marginal log-likelihood log p(x | b) by importance sampling (paper eq. 8)."""
        from .evaluate.likelihood import marginal_log_likelihood

        return marginal_log_likelihood(self, adata=adata, n_samples=n_samples,
                                       batch_size=batch_size)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save to a directory: ``config.json`` (versioned) and ``model.safetensors``.

        Neither file can execute code when loaded (the format: :mod:`convnetvae.model_format`).
        The save is atomic: after a crash or kill, ``path`` holds the complete previous model or
        the complete new one. ``overwrite=True`` replaces a saved model (or an empty directory),
        never a file or a directory holding anything else.
        """
        config = {
            "module": self.module.config.to_dict(),
            "registry": dict(self.registry.items()),
            "bins": {"chrom": self.bins["chrom"].astype(str).tolist(),
                     "start": np.asarray(self.bins["start"], dtype=np.int64).tolist(),
                     "end": np.asarray(self.bins["end"], dtype=np.int64).tolist(),
                     "names": [str(n) for n in self.bins.index]},
            "seed": self.seed,
            "is_trained": self.is_trained,
            "train_config": self.train_config,
            "history": self.history_,
        }
        return model_format.write(path, config, self.module.state_dict(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike, adata: ad.AnnData | None = None,
             device: str = "auto") -> ConvNetVAE:
        """Load a model saved with :meth:`save` and attach it to ``adata``.

        ``adata`` must have the model's bins, modalities and batch column; it is set up with the
        model's registry. Without ``adata`` the model can only be inspected.
        """
        saved = model_format.read(path)
        mcfg = saved.module_config()
        registry, bins = saved.registry, saved.bins()
        state = saved.load_state()
        try:
            module = VAE(mcfg)
        except (TypeError, ValueError, RuntimeError) as err:  # ConvNetVAEError is a ValueError
            raise ConvNetVAEError(f"{saved.config_path} has invalid model settings: {err}") from None
        try:
            module.load_state_dict(state)
        except RuntimeError as err:
            raise ConvNetVAEError(f"{saved.path / model_format.WEIGHTS_FILE} does not match its "
                                  f"config: {err}") from None
        config = saved.config
        self = cls.__new__(cls)
        self.module = module.to(resolve_device(device)).eval()
        self.registry = registry
        self.bins = bins
        self.seed = config.get("seed", 0)
        self.is_trained = bool(config.get("is_trained", True))
        self.train_config = config.get("train_config", {})
        self.history_ = list(config.get("history", []))
        self.adata = None
        if adata is not None:
            self._attach(adata)
        return self

    @classmethod
    def load_query_data(cls, adata: ad.AnnData, reference: ConvNetVAE | str | os.PathLike,
                        batch_key: str | None = None, device: str = "auto") -> ConvNetVAE:
        """Map new samples onto a reference model (scArches-style query mapping).

        Returns a model over the query cells ``adata`` whose new batches (labels of the batch
        column the reference does not know) get their own parameters: the batch one-hot
        columns of the encoder and decoder and the per-batch bin offsets. Every reference
        weight stays frozen (BatchNorm keeps the reference's statistics); :meth:`train` then
        fits only the new batches' parameters on the query cells. The result embeds reference
        and query cells in the reference's latent space and saves as an ordinary model. See
        :mod:`convnetvae.query`.

        Parameters
        ----------
        adata
            The query cells, with the reference's modalities (layers) and bins.
        reference
            A trained :class:`ConvNetVAE` (left unchanged) or the directory of a saved one.
        batch_key
            The query's batch column (default: the reference's).
        device
            Device of the returned model.
        """
        from .query import load_query_data

        return load_query_data(cls, adata, reference, batch_key=batch_key, device=device)

    def _attach(self, adata: ad.AnnData) -> None:
        reg = self.registry
        for m in reg["modalities"]:
            if m not in adata.layers:
                raise ConvNetVAEError(
                    f"layer {m!r} not found in adata.layers (available: "
                    f"{list(adata.layers.keys())}); the model was trained on "
                    f"{reg['modalities']}")
        contract.check_var_coordinates(adata.var)
        contract.check_same_bins(adata, self.bins, reg["modalities"], reg["modalities"])
        bk = reg.get("batch_key")
        if bk is not None and bk not in adata.obs.columns:
            raise ConvNetVAEError(f"the model was trained with batch_key {bk!r}, which is not a "
                                  "column of adata.obs")
        contract.batch_codes(adata, reg)
        new = contract.setup_anndata(adata, reg["modalities"], bk, reg.get("labels_key")
                                     if reg.get("labels_key") in adata.obs.columns else None,
                                     reg.get("mask_key"))
        new["batch_categories"] = reg["batch_categories"]
        new["has_missing"] = reg.get("has_missing", False)
        adata.uns[contract.REGISTRY_KEY] = new
        self.adata = adata
