"""Realistic synthetic multimodal single-cell epigenomic bin counts.

The simulator builds, for every cell type, a genome-wide signal per modality with the shapes real
marks have, then draws each cell's counts as a multinomial over bins with a log-normal library
size. Nothing cells x bins is ever dense: counts are drawn as bin indices and assembled as sparse
CSR matrices.

Shapes of the marks
-------------------
* Active regulatory elements (the shared "loci" of a cell type's program) are punctate: ATAC peaks
  one bin wide, H3K27ac peaks one to three bins wide around the same loci, so the two active marks
  are correlated at the same positions.
* H3K27me3 forms broad domains (tens of bins) over the loci a cell type keeps silent: the domains
  of one type cover the active loci of other types, so the repressive mark anti-correlates with the
  active ones, as in real tissue.
* Cell types form a hierarchy (lineages share part of their program), every cell mixes its type's
  program with a background at a cell-specific strength, and library sizes are log-normal.

Batch effects
-------------
Each batch multiplies the genome-wide signal by a smooth, bin-wise distortion (GC- or
mappability-like bias varying along the chromosome), adds batch-specific spurious peaks and shifts
the library size: without correction cells separate by batch as well as by type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .contract import build

#: mouse-like relative chromosome lengths used to lay out simulated chromosomes
_CHROM_WEIGHTS = np.array([195, 182, 160, 157, 152, 150, 145, 130, 125, 131, 122, 120, 121, 125,
                           104, 98, 95, 91, 61, 171], dtype=float)

ACTIVE_MARKS = ("ATAC", "H3K27ac", "H3K4me3", "H3K4me1", "H3K36me3")
REPRESSIVE_MARKS = ("H3K27me3", "H3K9me3")


def _smooth(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """Random smooth curve of length ``n`` (moving average of white noise), zero mean, unit sd."""
    noise = rng.standard_normal(n + width)
    kernel = np.ones(width) / width
    out = np.convolve(noise, kernel, mode="valid")[:n]
    return (out - out.mean()) / (out.std() + 1e-12)


def _mark_kind(modality: str) -> str:
    if modality in REPRESSIVE_MARKS or modality.lower().endswith("me3") and modality not in ACTIVE_MARKS:
        return "broad"
    return "punctate"


def simulate(
    n_cells: int = 3000,
    n_bins: int = 10_000,
    modalities: Sequence[str] = ("ATAC", "H3K27ac", "H3K27me3"),
    n_types: int = 8,
    n_batches: int = 2,
    n_chromosomes: int = 5,
    bin_size: int = 10_000,
    library_size: float | Mapping[str, float] | None = None,
    library_sd: float = 0.5,
    program_strength: float = 0.55,
    batch_strength: float = 0.5,
    missing: Mapping[str, float] | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate multimodal single-cell bin counts following the data contract.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_bins
        Number of genomic bins (shared by all modalities), spread over ``n_chromosomes``.
    modalities
        Layer names. Names of repressive marks (``H3K27me3``, ``H3K9me3``) get broad domains,
        all others punctate peaks.
    n_types
        Number of cell types (in a two-level hierarchy of lineages).
    n_batches
        Number of batches (samples) with batch effects.
    n_chromosomes
        Number of chromosomes (``chr1`` ...); bins are divided in proportion to mouse lengths.
    bin_size
        Width of a bin in bp (coordinates only).
    library_size
        Median counts per cell per modality (a number, or one per modality). Default
        ``0.04 * n_bins`` clipped to [200, 3000], which gives the 1-5 % non-zero bins of real data.
    library_sd
        Standard deviation of log library size.
    program_strength
        Mean fraction of a cell's counts that come from its type's program (the rest is
        background); lower is harder.
    batch_strength
        Scale of the batch distortions (0 = no batch effect).
    missing
        Fraction of cells lacking each modality, e.g. ``{"ATAC": 0.6}``. Missing cells have an
        empty row in that layer and ``False`` in ``obsm["modality_mask"]``.
    seed
        Random seed; the same seed gives the same data.

    Returns
    -------
    AnnData with ``layers[modality]`` (CSR int32 counts), ``var`` (``chrom``, ``start``, ``end``),
    ``obs`` (``cell_type``, ``lineage``, ``batch``, ``n_counts_<modality>``) and, when
    ``missing`` is given, ``obsm["modality_mask"]``. ``uns["simulation"]`` records the settings.
    """
    modalities = list(modalities)
    if n_cells < 1 or n_bins < 1:
        raise ConvNetVAEError(f"n_cells and n_bins must be positive, got {n_cells} and {n_bins}")
    if not modalities or len(set(modalities)) != len(modalities):
        raise ConvNetVAEError(f"modalities must be non-empty and unique, got {modalities}")
    if n_types < 1 or n_batches < 1:
        raise ConvNetVAEError("n_types and n_batches must be at least 1")
    n_chromosomes = max(1, min(n_chromosomes, len(_CHROM_WEIGHTS), n_bins))
    missing = dict(missing or {})
    for m, frac in missing.items():
        if m not in modalities:
            raise ConvNetVAEError(f"missing= names modality {m!r}, which is not in {modalities}")
        if not 0.0 <= frac < 1.0:
            raise ConvNetVAEError(f"missing fraction for {m!r} must be in [0, 1), got {frac}")
    rng = np.random.default_rng(seed)
    var = _genome_layout(n_bins, n_chromosomes, bin_size)
    world = _programs(rng, n_bins, n_types, modalities)
    batches = _batch_effects(rng, n_bins, n_batches, modalities, batch_strength,
                             world["n_loci"])
    # ---- cells ---------------------------------------------------------------------------
    type_weights = rng.dirichlet(np.full(n_types, 5.0))
    cell_type = rng.choice(n_types, size=n_cells, p=type_weights)
    batch = rng.integers(0, n_batches, size=n_cells)
    strength = np.clip(rng.beta(8 * program_strength, 8 * (1 - program_strength), size=n_cells)
                       * batches["snr"][batch], 0.02, 0.98)
    if library_size is None:
        library_size = float(np.clip(0.04 * n_bins, 200, 3000))
    if isinstance(library_size, Mapping):
        lib_median = {m: float(library_size.get(m, 1500.0)) for m in modalities}
    else:
        lib_median = {m: float(library_size) for m in modalities}
    layers: dict[str, sp.csr_matrix] = {}
    mask = np.ones((n_cells, len(modalities)), dtype=bool)
    for j, m in enumerate(modalities):
        if m in missing:
            mask[:, j] = rng.random(n_cells) >= missing[m]
        lib = np.rint(lib_median[m] * batches["depth"][batch]
                      * np.exp(library_sd * rng.standard_normal(n_cells))).astype(np.int64)
        lib = np.maximum(lib, 20)
        lib[~mask[:, j]] = 0
        layers[m] = _draw_counts(rng, m, lib, cell_type, batch, strength, world, batches,
                                 batch_strength)
    names = [f"type{t}" for t in range(n_types)]
    obs = pd.DataFrame(index=[f"cell{i:06d}" for i in range(n_cells)])
    obs["cell_type"] = pd.Categorical([names[t] for t in cell_type], categories=names)
    obs["lineage"] = pd.Categorical([f"lineage{world['lineage_of_type'][t]}" for t in cell_type])
    obs["batch"] = pd.Categorical([f"batch{b}" for b in batch],
                                  categories=[f"batch{b}" for b in range(n_batches)])
    return build(layers, var, obs, mask if missing else None, uns={"simulation": {
        "n_cells": n_cells, "n_bins": n_bins, "modalities": list(modalities), "n_types": n_types,
        "n_batches": n_batches, "n_chromosomes": n_chromosomes, "bin_size": bin_size,
        "library_sd": library_sd, "program_strength": program_strength,
        "batch_strength": batch_strength, "missing": missing, "seed": seed,
    }})


def _genome_layout(n_bins: int, n_chromosomes: int, bin_size: int) -> pd.DataFrame:
    """Bins spread over chromosomes in proportion to mouse chromosome lengths."""
    w = _CHROM_WEIGHTS[:n_chromosomes]
    per_chrom = np.maximum(1, np.floor(w / w.sum() * n_bins).astype(int))
    per_chrom[0] += n_bins - per_chrom.sum()
    chrom = np.repeat([f"chr{i + 1}" for i in range(n_chromosomes)], per_chrom)
    start = np.concatenate([np.arange(k) * bin_size for k in per_chrom])
    var = pd.DataFrame({"chrom": chrom, "start": start.astype(np.int64),
                        "end": (start + bin_size).astype(np.int64)})
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end)]
    return var


def _programs(rng: np.random.Generator, n_bins: int, n_types: int, modalities: Sequence[str]
              ) -> dict:
    """Cell-type programs: per modality, a normalised signal over bins for every type."""
    n_lineages = max(1, int(round(np.sqrt(n_types))))
    lineage_of_type = np.arange(n_types) % n_lineages
    n_loci = max(8, n_bins // 40)
    # constitutive loci shared by all types, lineage loci, and type-specific loci
    shared = rng.choice(n_bins, size=n_loci, replace=False)
    lineage_loci = [rng.choice(n_bins, size=n_loci, replace=False) for _ in range(n_lineages)]
    type_loci = [rng.choice(n_bins, size=n_loci, replace=False) for _ in range(n_types)]
    base = np.exp(0.6 * _smooth(rng, n_bins, 50))  # mappability-like background
    profiles: dict[str, np.ndarray] = {}
    for m in modalities:
        kind = _mark_kind(m)
        prof = np.empty((n_types, n_bins))
        for t in range(n_types):
            act = np.zeros(n_bins)
            strength = rng.gamma(2.0, 1.0, size=n_loci)
            np.add.at(act, shared, 1.0)
            np.add.at(act, lineage_loci[lineage_of_type[t]], 1.5 * strength)
            np.add.at(act, type_loci[t], 2.5 * rng.gamma(2.0, 1.0, size=n_loci))
            if kind == "punctate":
                width = 1 if m == "ATAC" else 3
                if width > 1:
                    act = np.convolve(act, np.array([0.5, 1.0, 0.5]), mode="same")
                signal = base * (0.15 + act)
            else:
                # broad domains over loci active in *other* lineages/types (silenced here)
                rep = np.zeros(n_bins)
                for u in range(n_types):
                    if u != t:
                        np.add.at(rep, type_loci[u], 1.0)
                for lin in range(n_lineages):
                    if lin != lineage_of_type[t]:
                        np.add.at(rep, lineage_loci[lin], 1.0)
                dom = np.convolve(rep, np.ones(31) / 31, mode="same")
                signal = base * (0.2 + 4.0 * dom) * np.exp(-0.5 * act)
            prof[t] = signal / signal.sum()
        profiles[m] = prof
    return {"profiles": profiles, "base": base, "n_loci": n_loci,
            "lineage_of_type": lineage_of_type}


def _batch_effects(rng: np.random.Generator, n_bins: int, n_batches: int,
                   modalities: Sequence[str], batch_strength: float, n_loci: int) -> dict:
    """Smooth GC/mappability-like bias along the genome, a few sample-specific artefact peaks,
    a shifted sequencing depth and a shifted signal-to-noise (fraction of counts in the
    program, like FRiP) per batch."""
    bias = {m: np.stack([np.exp(batch_strength * 0.35 * _smooth(rng, n_bins, 20))
                         for _ in range(n_batches)]) for m in modalities}
    peaks = {m: [rng.choice(n_bins, size=max(2, n_loci // 10), replace=False)
                 for _ in range(n_batches)] for m in modalities}
    depth = np.exp(batch_strength * 0.4 * rng.standard_normal(n_batches))
    snr = np.exp(batch_strength * 0.08 * rng.standard_normal(n_batches))
    return {"bias": bias, "peaks": peaks, "depth": depth, "snr": snr}


def _draw_counts(rng: np.random.Generator, m: str, lib: np.ndarray, cell_type: np.ndarray,
                 batch: np.ndarray, strength: np.ndarray, world: dict, batches: dict,
                 batch_strength: float) -> sp.csr_matrix:
    """One modality's counts: per cell, a multinomial over bins of its type's program (in its
    batch's distortion) and of the background, drawn as bin indices (never dense)."""
    n_cells = len(lib)
    n_types, n_bins = world["profiles"][m].shape
    background = world["base"] / world["base"].sum()
    rows, cols = [], []
    for t in range(n_types):
        for b in range(len(batches["depth"])):
            idx = np.flatnonzero((cell_type == t) & (batch == b) & (lib > 0))
            if idx.size == 0:
                continue
            bias = batches["bias"][m][b]
            p_prog = world["profiles"][m][t] * bias
            spur = np.zeros(n_bins)
            spur[batches["peaks"][m][b]] = batch_strength * 0.1 / len(batches["peaks"][m][b])
            p_prog = p_prog / p_prog.sum() + spur
            p_prog /= p_prog.sum()
            p_bg = background * bias
            p_bg /= p_bg.sum()
            n_prog = rng.binomial(lib[idx], strength[idx])
            n_bg = lib[idx] - n_prog
            for p, counts in ((p_prog, n_prog), (p_bg, n_bg)):
                total = int(counts.sum())
                if total == 0:
                    continue
                cdf = np.cumsum(p)
                cdf /= cdf[-1]
                draws = np.searchsorted(cdf, rng.random(total), side="right")
                rows.append(np.repeat(idx, counts))
                cols.append(np.minimum(draws, n_bins - 1))
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    return sp.coo_matrix((np.ones(r.size, dtype=np.int32), (r, c)),
                         shape=(n_cells, n_bins)).tocsr()
