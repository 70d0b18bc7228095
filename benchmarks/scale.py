"""Scale benchmark: peak memory and seconds per epoch from sparse storage, against a dense
float32 reference implementation of the same architecture.

Cases (each runs in its own process, so peak RSS is per case):

=============  ===================================  ========================================
case           data                                 storage
=============  ===================================  ========================================
paper          4,434 cells x 3 x 25,000 bins        in memory (CSR)
all_bins       4,434 cells x 3 x 245,220 bins       in memory (CSR)
cells_100k     100,000 cells x 3 x 25,000 bins      in memory (CSR)
cells_1m       1,000,000 cells x 3 x 25,000 bins    h5ad on disk (anndata CSR layers), backed
=============  ===================================  ========================================

The counts are random sparse counts, not the simulator's (convnetvae.simulate at 100,000+ cells x
25,000 bins is slow and the point here is memory and time, not biology): per cell and modality
about ``--nnz`` non-zero bins (default 500, 2 % of 25,000 bins, as in nano-CUT&Tag), at positions
drawn with geometric gaps, counts 1 + Geometric. The on-disk file is written chunk-wise with h5py
in anndata's format (``layers/<m>`` groups with ``encoding-type=csr_matrix``), never dense.

Timing: ``paper`` trains full epochs; the larger cases train a bounded number of minibatches
(``--max-batches``, drawn at random from all cells, or as contiguous blocks for the block-shuffled
disk run) and extrapolate the epoch as ``seconds per minibatch x cells / batch_size``; the JSON
says so in ``timing``. The dense reference (``benchmarks/dense_reference.py``) holds a dense float32
tensor; where that tensor would not fit (all_bins: 13 GB; 100k: 30 GB; 1M: 300 GB) its
per-minibatch time is measured on a dense tensor of ``--dense-cells`` cells (the time of one
minibatch does not depend on the tensor's size) and its memory is reported as computed, not
allocated. In ``paper`` both start from the same weights with the same shuffles and noise, and
both loss curves are written.

    .venv/bin/python benchmarks/scale.py --cases paper,all_bins,cells_100k,cells_1m

**Every architecture against the dense reference** (``--cases architectures``, results in
``benchmarks/results/scale_architectures.json``): the paper-size data (4,434 cells x 3 x 25,000
bins, chromosome-aware) for each of ``--architectures`` (default the paper's six ConvNet-VAEs),
each implementation in its own process, alternating ours / dense (the order flips every
repetition), ``--reps`` times; medians are reported. Each process trains ``--arch-batches``
minibatches of 128 random cells twice (two "epochs" of the Trainer, resp. ``train_dense``) and the
second pass gives seconds per minibatch (wall and this process's CPU time); an epoch is
extrapolated as s/minibatch x 4,434 / 128. Peak RSS is the process's maximum resident set; the
dense process holds the whole dense float32 tensor (1.33 GB), as the reference code does. Then both
embed ``--embed-cells`` cells (encoder only, eval mode, no gradient, minibatches of 512: ours is
``VAE.encode`` over the loader's densified minibatches, as ``get_latent_representation``; dense is
its encoder over rows of the dense tensor), best of 3, in cells per second. ``peak_rss_mb`` covers
training and embedding, ``peak_rss_mb_training`` training alone.

    .venv/bin/python benchmarks/scale.py --cases architectures --threads 1 --reps 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

MODALITIES = ("ATAC", "H3K27ac", "H3K27me3")
#: the paper's ConvNet-VAEs: Group 1 (one layer, K = S) and Group 2 (K = 11, S = 3, 1-3 layers)
ARCHITECTURES = ("conv-k11s11", "conv-k31s31", "conv-k51s51", "conv-k11s3x1", "conv-k11s3x2",
                 "conv-k11s3x3")
CASES = {
    "paper": dict(n_cells=4_434, n_bins=25_000, storage="memory"),
    "all_bins": dict(n_cells=4_434, n_bins=245_220, storage="memory"),
    "cells_100k": dict(n_cells=100_000, n_bins=25_000, storage="memory"),
    "cells_1m": dict(n_cells=1_000_000, n_bins=25_000, storage="disk"),
}
#: mouse-like relative chromosome lengths (chr1..chr19, chrX)
_CHROM_W = np.array([195, 182, 160, 157, 152, 150, 145, 130, 125, 131, 122, 120, 121, 125, 104,
                     98, 95, 91, 61, 171], dtype=float)


# ---------------------------------------------------------------------- data
def chrom_lengths(n_bins: int) -> list[int]:
    """Bins per chromosome, proportional to mouse chromosome lengths."""
    per = np.floor(_CHROM_W / _CHROM_W.sum() * n_bins).astype(int)
    per[0] += n_bins - per.sum()
    return [int(v) for v in per]


def random_csr_chunk(rng: np.random.Generator, n_rows: int, n_bins: int, nnz: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random sparse counts (indptr int64, indices int32, data uint8), rows sorted, no dense step.

    Column positions are cumulative sums of geometric gaps (mean ``n_bins / nnz``), so they are
    strictly increasing within a row without any sort or de-duplication.
    """
    p = min(1.0, nnz / n_bins)
    per_row = int(np.ceil(nnz * 1.6)) + 8  # draws per row; the cut at n_bins keeps ~nnz
    gaps = rng.geometric(p, size=(n_rows, per_row)).astype(np.int32)
    cols = np.cumsum(gaps, axis=1, dtype=np.int64) - 1
    keep = cols < n_bins
    counts = keep.sum(1)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = cols[keep].astype(np.int32)
    data = np.minimum(rng.geometric(0.6, size=indices.size), 255).astype(np.uint8)
    return indptr, indices, data


def random_counts(n_cells: int, n_bins: int, nnz: float, seed: int, chunk: int = 20_000
                  ) -> list[sp.csr_matrix]:
    """One random CSR matrix per modality, built chunk-wise in memory."""
    rng = np.random.default_rng(seed)
    mats = []
    for _ in MODALITIES:
        parts = []
        for start in range(0, n_cells, chunk):
            n = min(chunk, n_cells - start)
            indptr, indices, data = random_csr_chunk(rng, n, n_bins, nnz)
            parts.append(sp.csr_matrix((data, indices, indptr), shape=(n, n_bins)))
        mats.append(sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0])
    return mats


def write_random_h5ad(path: str | os.PathLike, n_cells: int, n_bins: int, nnz: float = 500,
                      seed: int = 0, chunk: int = 20_000, n_batches: int = 2) -> Path:
    """Write random counts as an h5ad with one CSR layer per modality, chunk-wise with h5py.

    ``obs`` (``batch``) and ``var`` (``chrom``, ``start``, ``end``) are written by anndata; the
    layers are appended as ``layers/<modality>`` groups (``encoding-type=csr_matrix``,
    ``encoding-version=0.1.0``, ``shape``; datasets ``data``, ``indices``, ``indptr``), so
    ``anndata.read_h5ad`` and :class:`convnetvae.data.backed.H5CSRSource` both read the file.
    """
    import anndata as ad
    import h5py
    import pandas as pd

    from convnetvae.io_utils import atomic_path

    rng = np.random.default_rng(seed)
    lengths = chrom_lengths(n_bins)
    chrom = np.repeat([f"chr{i + 1}" for i in range(len(lengths))], lengths)
    start = np.concatenate([np.arange(k) * 10_000 for k in lengths]).astype(np.int64)
    var = pd.DataFrame({"chrom": chrom, "start": start, "end": start + 10_000},
                       index=[f"{c}:{s}-{s + 10_000}" for c, s in zip(chrom, start)])
    obs = pd.DataFrame({"batch": pd.Categorical(
        [f"batch{b}" for b in rng.integers(0, n_batches, n_cells)])},
        index=pd.RangeIndex(n_cells).astype(str))
    with atomic_path(path) as tmp:
        ad.AnnData(obs=obs, var=var).write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            layers = f.require_group("layers")
            for m in MODALITIES:
                g = layers.create_group(m)
                g.attrs["encoding-type"] = "csr_matrix"
                g.attrs["encoding-version"] = "0.1.0"
                g.attrs["shape"] = np.array([n_cells, n_bins], dtype=np.int64)
                d_data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                          chunks=(1 << 20,))
                d_idx = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int32,
                                         chunks=(1 << 20,))
                indptr = np.zeros(n_cells + 1, dtype=np.int64)
                total = 0
                for s in range(0, n_cells, chunk):
                    n = min(chunk, n_cells - s)
                    ip, idx, dat = random_csr_chunk(rng, n, n_bins, nnz)
                    d_data.resize((total + dat.size,))
                    d_idx.resize((total + idx.size,))
                    d_data[total:] = dat
                    d_idx[total:] = idx
                    indptr[s + 1:s + n + 1] = total + ip[1:]
                    total += dat.size
                g.create_dataset("indptr", data=indptr)
    return Path(path)


def rows_csr(source, modality: int, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of one modality of a count source as a CSR matrix."""
    indptr, indices, data = source.csr_rows(modality, rows)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), source.n_bins))


# ---------------------------------------------------------------------- one case
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sparse_train(source, codes, n_bins, arch, train_idx, epochs, batch_size, seed,
                  chrom_aware, block_size=None):
    import torch

    from convnetvae.model.vae import VAE, ModuleConfig
    from convnetvae.train import TrainConfig, Trainer

    lengths = chrom_lengths(n_bins)
    torch.manual_seed(seed)
    vae = VAE(ModuleConfig(n_modalities=len(MODALITIES), chrom_lengths=lengths, n_batches=2,
                           architecture=arch, chrom_aware=chrom_aware))
    init = {k: v.clone() for k, v in vae.state_dict().items()}
    cfg = TrainConfig(max_epochs=epochs, batch_size=batch_size, validation_size=0.0,
                      early_stopping=False, progress=False, seed=seed,
                      shuffle_block_size=block_size)
    trainer = Trainer(vae, source, codes, None, cfg, train_indices=np.sort(train_idx),
                      validation_indices=np.zeros(0, dtype=np.int64))
    return trainer.fit(), init


def run_case(name: str, args: argparse.Namespace) -> dict:
    """Run one case in this process; returns its JSON record."""
    import torch

    from convnetvae.data.backed import H5CSRSource
    from convnetvae.data.loader import InMemorySource
    from dense_reference import DenseConvVAE, dense_from_sparse, train_dense

    torch.set_num_threads(args.threads)
    spec = CASES[name]
    n, g = spec["n_cells"], spec["n_bins"]
    B = args.batch_size
    rec: dict = {"case": name, "n_cells": n, "n_modalities": len(MODALITIES), "n_bins": g,
                 "storage": spec["storage"], "architecture": args.architecture,
                 "batch_size": B, "threads": args.threads, "nnz_per_cell_modality": args.nnz}
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if spec["storage"] == "memory":
        mats = random_counts(n, g, args.nnz, args.seed)
        source = InMemorySource(mats)
        codes = rng.integers(0, 2, n)
    else:
        path = Path(args.data_dir) / f"random_{n}x{g}_nnz{int(args.nnz)}.h5ad"
        if not path.exists():
            write_random_h5ad(path, n, g, args.nnz, args.seed)
        rec["file"] = str(path)
        rec["file_gb"] = path.stat().st_size / 1e9
        source = H5CSRSource(str(path), MODALITIES)
        import h5py

        with h5py.File(path, "r") as f:
            cats = f["obs/batch/codes"][:]
        codes = cats.astype(np.int64)
        mats = None
    rec["data_seconds"] = time.perf_counter() - t0
    nnz_total = sum(int(source.indptrs[j][-1]) for j in range(3)) if mats is None else \
        sum(m.nnz for m in mats)
    rec["nnz_total"] = nnz_total
    rec["dense_float32_gb"] = n * len(MODALITIES) * g * 4 / 1e9
    rec["peak_rss_mb_after_data"] = peak_rss_mb()

    full = name == "paper"
    if full:
        train_idx = np.arange(n)
        epochs = args.epochs
        rec["timing"] = f"{epochs} full epochs ({n // B} minibatches each); per epoch = the mean"
    else:
        nb = args.max_batches
        if spec["storage"] == "disk" and args.block_size:
            off = int(rng.integers(0, n - nb * B))
            train_idx = np.arange(off, off + nb * B)
        else:
            train_idx = np.sort(rng.choice(n, nb * B, replace=False))
        epochs = 2
        rec["timing"] = (f"bounded: {nb} minibatches of {B} random cells per pass, 2 passes, "
                         f"seconds per minibatch from the faster pass, epoch extrapolated as "
                         f"s/minibatch x {n} / {B}")
    block = args.block_size if (spec["storage"] == "disk" and args.block_size) else None
    hist, init = _sparse_train(source, codes, g, args.architecture, train_idx, epochs, B,
                               args.seed, chrom_aware=not full, block_size=block)
    steps = max(1, len(train_idx) // B)
    per_batch = min(h["seconds"] for h in hist) / steps
    rec["sparse"] = {"seconds_per_minibatch": per_batch,
                     "seconds_per_epoch": (float(np.mean([h["seconds"] for h in hist]))
                                           if full else per_batch * n / B),
                     "loss_curve": [h["train_loss"] for h in hist],
                     "peak_rss_mb": peak_rss_mb(), "chrom_aware": not full}
    if block:
        rec["sparse"]["shuffle"] = f"block shuffle, blocks of {args.block_size} rows x 8"
    # ---- dense reference
    if args.no_dense:
        return rec
    rss_before = peak_rss_mb()
    if full:
        data = dense_from_sparse(mats)
        dense_rows = np.arange(n)
    else:
        m_cells = min(args.dense_cells, n)
        dense_rows = np.sort(rng.choice(n, m_cells, replace=False))
        sub = [m[dense_rows] for m in mats] if mats is not None else [
            rows_csr(source, j, dense_rows) for j in range(len(MODALITIES))]
        data = dense_from_sparse(sub)
    torch.manual_seed(args.seed)
    dense = DenseConvVAE(len(MODALITIES), g, 2, args.architecture)
    if full:  # same function (chrom_aware=False): start from the same weights
        dense.load_state_dict(init)
    dcodes = codes[dense_rows]
    t_idx = np.arange(len(dense_rows)) if full else np.arange(
        min(len(dense_rows), args.max_batches * B))
    dh = train_dense(dense, data, dcodes, t_idx, epochs, B, seed=args.seed)
    d_steps = max(1, len(t_idx) // B)
    d_per_batch = min(h["seconds"] for h in dh) / d_steps
    rec["dense_reference"] = {
        "seconds_per_minibatch": d_per_batch,
        "seconds_per_epoch": (float(np.mean([h["seconds"] for h in dh])) if full
                              else d_per_batch * n / B),
        "loss_curve": [h["train_loss"] for h in dh],
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_growth_mb": peak_rss_mb() - rss_before,
        "dense_tensor": "whole data set" if full else
        f"{len(dense_rows)} cells (full tensor would be {rec['dense_float32_gb']:.1f} GB)",
    }
    rec["speedup_vs_dense"] = rec["dense_reference"]["seconds_per_epoch"] / \
        rec["sparse"]["seconds_per_epoch"]
    if full:
        a = np.array(rec["sparse"]["loss_curve"])
        b = np.array(rec["dense_reference"]["loss_curve"])
        rec["loss_curve_max_relative_difference"] = float(np.max(np.abs(a - b) / np.abs(b)))
    return rec


# ---------------------------------------------------------------------- every architecture
def run_architecture(arch: str, impl: str, args: argparse.Namespace) -> dict:
    """One implementation (``ours`` or ``dense``) of one architecture at the paper's size, in
    this process: bounded training (two passes of ``args.arch_batches`` minibatches), peak RSS,
    embedding throughput.

    Ours trains through :class:`convnetvae.train.Trainer`; the second pass's minibatch loop
    (densify + step) is timed, and the Trainer's once-per-epoch bookkeeping (copies of the last
    good state and of the best weights) is timed once and added to the extrapolated epoch.
    """
    import copy
    import gc

    import torch

    from convnetvae.data.loader import InMemorySource, MinibatchLoader
    from convnetvae.model.vae import VAE, ModuleConfig
    from convnetvae.train import TrainConfig, Trainer
    from dense_reference import DenseConvVAE, dense_from_sparse, embed_dense, train_dense

    torch.set_num_threads(args.threads)
    spec = CASES["paper"]
    n, g, B, nb = spec["n_cells"], spec["n_bins"], args.batch_size, args.arch_batches
    mats = random_counts(n, g, args.nnz, args.seed)
    rng = np.random.default_rng(args.seed)
    codes = rng.integers(0, 2, n)
    train_idx = np.sort(rng.choice(n, nb * B, replace=False))
    embed_rows = np.arange(min(args.embed_cells, n))
    rec: dict = {"architecture": arch, "implementation": impl, "n_cells": n, "n_bins": g,
                 "n_modalities": len(MODALITIES), "batch_size": B, "threads": args.threads,
                 "minibatches_per_pass": nb}
    torch.manual_seed(args.seed)
    if impl == "ours":
        source = InMemorySource(mats)
        vae = VAE(ModuleConfig(n_modalities=len(MODALITIES), chrom_lengths=chrom_lengths(g),
                               n_batches=2, architecture=arch, chrom_aware=True))
        cfg = TrainConfig(max_epochs=2, batch_size=B, validation_size=0.0,
                          early_stopping=False, progress=False, seed=args.seed)
        timed = {"on": False, "wall": 0.0, "cpu": 0.0}
        trainer = Trainer(vae, source, codes, None, cfg,
                          callback=lambda e, r: timed.update(on=True),  # time the 2nd pass
                          train_indices=train_idx, validation_indices=np.zeros(0, np.int64))

        def clock(f):
            def wrapped(*a, **k):
                t0, c0 = time.perf_counter(), time.process_time()
                out = f(*a, **k)
                if timed["on"]:
                    timed["wall"] += time.perf_counter() - t0
                    timed["cpu"] += time.process_time() - c0
                return out
            return wrapped

        # the minibatch loop of an epoch: densify (loader) + step (forward, backward, Adam)
        trainer._step = clock(trainer._step)
        trainer.train_loader.load = clock(trainer.train_loader.load)
        hist = trainer.fit()
        wall, cpu = timed["wall"], timed["cpu"]
        # once per epoch the Trainer keeps the last good state (weights + Adam) and the best
        # weights: timed once here and added to the epoch, not per minibatch
        t0, c0 = time.perf_counter(), time.process_time()
        trainer._snapshot()
        copy.deepcopy(vae.state_dict())
        rec["epoch_bookkeeping_seconds"] = time.perf_counter() - t0
        rec["epoch_bookkeeping_cpu_seconds"] = time.process_time() - c0
        rec["chrom_aware"] = True
        rec["loss"] = [h["train_loss"] for h in hist]
        rec["parameters"] = int(sum(p.numel() for p in vae.parameters()))
        loader = MinibatchLoader(source, codes, None, embed_rows, batch_size=512, shuffle=False)
        vae.eval()

        def embed() -> None:
            with torch.no_grad():
                for mb in loader:
                    vae.encode(mb.x, mb.batch, mb.mask)
    else:
        data = dense_from_sparse(mats)
        del mats
        gc.collect()
        dense = DenseConvVAE(len(MODALITIES), g, 2, arch)
        hist = train_dense(dense, data, codes, train_idx, 2, B, seed=args.seed)
        wall, cpu = hist[1]["seconds"], hist[1]["cpu_seconds"]
        rec["chrom_aware"] = False
        rec["loss"] = [h["train_loss"] for h in hist]
        rec["parameters"] = int(sum(p.numel() for p in dense.parameters()))

        def embed() -> None:
            embed_dense(dense, data, codes, embed_rows, 512)
    rec["seconds_per_minibatch"] = wall / nb
    rec["cpu_seconds_per_minibatch"] = cpu / nb
    rec["seconds_per_epoch"] = wall / nb * n / B + rec.get("epoch_bookkeeping_seconds", 0.0)
    rec["cpu_seconds_per_epoch"] = (cpu / nb * n / B
                                    + rec.get("epoch_bookkeeping_cpu_seconds", 0.0))
    rec["peak_rss_mb_training"] = peak_rss_mb()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        embed()
        times.append(time.perf_counter() - t0)
    rec["embed_cells_per_second"] = len(embed_rows) / min(times)
    rec["peak_rss_mb"] = peak_rss_mb()
    return rec


def summarise_architectures(records: list[dict]) -> list[dict]:
    """Medians per architecture and implementation, and the ratios ours / dense."""
    rows = []
    for arch in dict.fromkeys(r["architecture"] for r in records):
        row: dict = {"architecture": arch}
        for impl in ("ours", "dense"):
            rs = [r for r in records if r["architecture"] == arch and r["implementation"] == impl]
            if not rs:
                continue
            for key in ("seconds_per_epoch", "cpu_seconds_per_epoch", "peak_rss_mb",
                        "peak_rss_mb_training", "embed_cells_per_second"):
                row[f"{impl}_{key}"] = float(np.median([r[key] for r in rs]))
            row[f"{impl}_repetitions"] = len(rs)
        if "ours_seconds_per_epoch" in row and "dense_seconds_per_epoch" in row:
            row["time_ratio"] = row["ours_seconds_per_epoch"] / row["dense_seconds_per_epoch"]
            row["cpu_time_ratio"] = (row["ours_cpu_seconds_per_epoch"]
                                     / row["dense_cpu_seconds_per_epoch"])
            row["rss_ratio"] = row["ours_peak_rss_mb"] / row["dense_peak_rss_mb"]
            row["embed_speedup"] = (row["ours_embed_cells_per_second"]
                                    / row["dense_embed_cells_per_second"])
        rows.append(row)
    return rows


def run_architectures(args: argparse.Namespace, passthrough: list[str]) -> dict:
    """The ``architectures`` case: every (architecture, implementation) in its own process,
    alternating, ``args.reps`` times."""
    records, failures = [], []
    env = dict(os.environ, OMP_WAIT_POLICY=args.omp_wait_policy, THP_MEM_ALLOC_ENABLE="1")
    for rep in range(args.reps):
        for arch in [a for a in args.architectures.split(",") if a]:
            order = ("ours", "dense") if rep % 2 == 0 else ("dense", "ours")
            for impl in order:
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, __file__, *passthrough, "--one",
                                       f"arch:{arch}:{impl}"], capture_output=True, text=True,
                                      env=env)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    failures.append({"architecture": arch, "implementation": impl,
                                     "error": proc.stderr[-3000:]})
                    print(f"{arch} {impl}: FAILED\n{proc.stderr[-3000:]}", flush=True)
                    continue
                rec = json.loads(line[-1][7:])
                rec["repetition"] = rep
                rec["wall_seconds_process"] = time.perf_counter() - t0
                records.append(rec)
                print(json.dumps({k: rec[k] for k in (
                    "architecture", "implementation", "repetition", "seconds_per_epoch",
                    "cpu_seconds_per_epoch", "peak_rss_mb", "embed_cells_per_second")}),
                    flush=True)
    return {"case": "architectures", "records": records, "failures": failures,
            "summary": summarise_architectures(records),
            "timing": (f"bounded: {args.arch_batches} minibatches of {args.batch_size} random "
                       f"cells per pass, 2 passes, the second timed; epoch extrapolated as "
                       f"s/minibatch x 4434 / {args.batch_size}; medians over repetitions"),
            "omp_wait_policy": args.omp_wait_policy, "threads": args.threads}


# ---------------------------------------------------------------------- profile
def profile_epoch(args: argparse.Namespace) -> dict:
    """Where one epoch of the paper-size case goes: loader / forward / backward / optimiser
    wall and CPU time over a full epoch (or ``--profile-batches`` minibatches of it), and
    torch.profiler's top operators over 3 steps."""
    import torch
    from torch.profiler import profile

    from convnetvae.data.loader import InMemorySource, MinibatchLoader
    from convnetvae.model.vae import VAE, ModuleConfig

    torch.set_num_threads(args.threads)
    n, g, B = CASES["paper"]["n_cells"], CASES["paper"]["n_bins"], args.batch_size
    mats = random_counts(n, g, args.nnz, args.seed)
    rng = np.random.default_rng(args.seed)
    loader = MinibatchLoader(InMemorySource(mats), rng.integers(0, 2, n), None, batch_size=B,
                             shuffle=True, drop_last=True, generator=rng)
    torch.manual_seed(args.seed)
    vae = VAE(ModuleConfig(n_modalities=3, chrom_lengths=chrom_lengths(g), n_batches=2,
                           architecture=args.architecture)).train()
    from convnetvae.train import parameter_groups

    opt = torch.optim.Adam(parameter_groups(vae, 1e-3), lr=1e-3)
    parts = {"loader (densify + copy)": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    cpu_parts = dict.fromkeys(parts, 0.0)

    def step(rows):
        marks = [(time.perf_counter(), time.process_time())]
        mb = loader.load(rows)
        marks.append((time.perf_counter(), time.process_time()))
        opt.zero_grad(set_to_none=True)
        out = vae(mb.x, mb.batch, mb.mask, log_factorials=mb.log_factorials)  # as the Trainer
        loss = (out["kl"] - out["reconstruction"]).mean()
        marks.append((time.perf_counter(), time.process_time()))
        loss.backward()
        marks.append((time.perf_counter(), time.process_time()))
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 100.0)
        opt.step()
        marks.append((time.perf_counter(), time.process_time()))
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]

    batches = loader.batches()
    if args.profile_batches:
        batches = batches[:args.profile_batches]
    step(batches[0])  # warm-up (not counted)
    t_epoch, c_epoch = time.perf_counter(), time.process_time()
    for rows in batches:
        for k, (w, c) in zip(parts, step(rows)):
            parts[k] += w
            cpu_parts[k] += c
    t_epoch = time.perf_counter() - t_epoch
    c_epoch = time.process_time() - c_epoch
    with profile() as prof:
        for rows in batches[:3]:
            step(rows)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return {"case": "profile_paper_epoch", "n_cells": n, "n_bins": g,
            "architecture": args.architecture, "threads": args.threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"), "n_minibatches": len(batches),
            "epoch_seconds": t_epoch, "epoch_cpu_seconds": c_epoch, "parts_seconds": parts,
            "parts_cpu_seconds": cpu_parts,
            "parts_fraction": {k: v / t_epoch for k, v in parts.items()},
            "top_operators_3_steps": table}


# ---------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="paper,all_bins,cells_100k,cells_1m")
    p.add_argument("--architecture", default="conv-k31s31")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="full epochs of the paper case")
    p.add_argument("--max-batches", type=int, default=12,
                   help="minibatches per pass in the bounded cases")
    p.add_argument("--dense-cells", type=int, default=1536)
    p.add_argument("--nnz", type=float, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block-size", type=int, default=0,
                   help="block shuffle for the disk case (0 = free shuffle)")
    p.add_argument("--no-dense", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "convnetvae_scale"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale.json"))
    p.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE"],
                   help="OpenMP wait policy of the case processes (see docs/performance.md)")
    p.add_argument("--architectures", default=",".join(ARCHITECTURES),
                   help="architectures of the 'architectures' case")
    p.add_argument("--arch-batches", type=int, default=4,
                   help="minibatches per pass in the 'architectures' case")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the 'architectures' case")
    p.add_argument("--embed-cells", type=int, default=1024)
    p.add_argument("--profile-batches", type=int, default=0,
                   help="minibatches of the profiled epoch (0 = all)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one case
    a = p.parse_args(argv)
    if a.one:
        if a.one.startswith("arch:"):
            _, arch, impl = a.one.split(":")
            rec = run_architecture(arch, impl, a)
        else:
            rec = profile_epoch(a) if a.one == "profile" else run_case(a.one, a)
        print("RESULT " + json.dumps(rec))
        return 0
    from convnetvae.io_utils import write_json

    Path(a.data_dir).mkdir(parents=True, exist_ok=True)
    records = []
    passthrough = [x for x in (argv if argv is not None else sys.argv[1:])]
    if a.cases == "architectures":
        out = {"benchmark": "scale_architectures",
               "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "note": "2 shared cores, 24 GiB"},
               "data": "random sparse counts (see benchmarks/scale.py docstring), not simulate()",
               **run_architectures(a, passthrough)}
        target = a.out if a.out != p.get_default("out") else str(
            REPO / "benchmarks" / "results" / "scale_architectures.json")
        write_json(target, out)
        for row in out["summary"]:
            print(json.dumps(row), flush=True)
        return 0
    for name in [c for c in a.cases.split(",") if c]:
        if name not in CASES and name != "profile":
            raise SystemExit(f"unknown case {name!r}; choose from {sorted(CASES)}")
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_WAIT_POLICY=a.omp_wait_policy)
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--one", name],
                              capture_output=True, text=True, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            rec = {"case": name, "architecture": a.architecture, "error": proc.stderr[-3000:]}
        else:
            rec = json.loads(line[-1][7:])
        rec["wall_seconds"] = time.perf_counter() - t0
        rec["omp_wait_policy"] = a.omp_wait_policy
        records.append(rec)
        print(json.dumps({k: v for k, v in rec.items() if k not in ("error",)}, default=str)
              if "error" not in rec else f"{name}: FAILED\n{rec['error']}", flush=True)
    out = {"benchmark": "scale",
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "note": "2 shared cores, 24 GiB"},
           "data": "random sparse counts (see benchmarks/scale.py docstring), not simulate()",
           "cases": records}
    if Path(a.out).exists():  # keep results of (case, architecture) pairs not rerun
        try:
            old = json.loads(Path(a.out).read_text())
            done = {(r["case"], r.get("architecture")) for r in records}
            out["cases"] = [r for r in old.get("cases", [])
                            if (r.get("case"), r.get("architecture")) not in done] + records
        except (json.JSONDecodeError, KeyError):
            pass
    write_json(a.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
