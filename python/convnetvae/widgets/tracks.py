"""Per-group aggregated signal over a genomic region: observed counts and model-imputed rates.

Both are put on the same scale: each cell's signal in a bin as a fraction of that cell's total
signal in the modality (counts over library size; decoder rates over their sum), times 10,000,
averaged over the cells of a group. Cells lacking a modality are left out of its observed mean
(their imputed signal is what the model fills in).

The imputed signal is one decoder pass for all modalities and groups over a random subsample of
cells (``max_imputed_cells`` in all, split evenly over the groups), in small minibatches (the
decoder's output, cells x modalities x all bins, is large: small batches stay in cache), keeping
only the region's bins. Latent means already computed by this model can be passed in, so the
encoder is not run again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError

#: the most bins a track plot shows (a region wider than this is refused)
MAX_REGION_BINS = 5000
_REGION = re.compile(r"^\s*([^:\s]+)\s*(?::\s*([\d,_]+)\s*-\s*([\d,_]+))?\s*$")


@dataclass
class Region:
    """A genomic interval (0-based, half-open) and the indices of the bins it overlaps."""

    chrom: str
    start: int
    end: int
    bins: np.ndarray

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start:,}-{self.end:,}"


def parse_region(region: str, var: pd.DataFrame) -> Region:
    """Parse ``"chr1:1,000,000-2,000,000"`` (or ``"chr1"``) against the bins in ``var``.

    Raises :class:`ConvNetVAEError` naming the region and the chromosomes available when it
    does not parse, names an unknown chromosome, overlaps no bin or spans too many bins.
    """
    m = _REGION.match(str(region))
    if not m:
        raise ConvNetVAEError(
            f"region {region!r} does not parse: write chrom:start-end, e.g. chr1:0-2000000, "
            "or a chromosome name alone")
    chrom = m.group(1)
    chroms = var["chrom"].astype(str).to_numpy()
    on = np.flatnonzero(chroms == chrom)
    if on.size == 0:
        avail = list(dict.fromkeys(chroms))
        raise ConvNetVAEError(
            f"region {region!r}: chromosome {chrom!r} has no bins; available: "
            f"{', '.join(avail[:25])}{' ...' if len(avail) > 25 else ''}")
    starts = np.asarray(var["start"], dtype=np.int64)[on]
    ends = np.asarray(var["end"], dtype=np.int64)[on]
    if m.group(2) is None:
        lo, hi = int(starts.min()), int(ends.max())
    else:
        lo, hi = (int(re.sub(r"[,_]", "", g)) for g in m.group(2, 3))
        if hi <= lo:
            raise ConvNetVAEError(f"region {region!r}: end must be greater than start")
    sel = on[(ends > lo) & (starts < hi)]
    if sel.size == 0:
        raise ConvNetVAEError(
            f"region {region!r} overlaps no bin; {chrom} has bins from {starts.min():,} to "
            f"{ends.max():,}")
    if sel.size > MAX_REGION_BINS:
        raise ConvNetVAEError(
            f"region {region!r} spans {sel.size:,} bins; choose a region of at most "
            f"{MAX_REGION_BINS:,} bins")
    return Region(chrom, lo, hi, sel)


def default_region(var: pd.DataFrame, n_bins: int = 200) -> str:
    """A region of about ``n_bins`` bins at the start of the first chromosome."""
    chrom = str(var["chrom"].iloc[0])
    on = np.flatnonzero(var["chrom"].astype(str).to_numpy() == chrom)[:n_bins]
    return f"{chrom}:{int(var['start'].iloc[on[0]])}-{int(var['end'].iloc[on[-1]])}"


@dataclass
class Tracks:
    """Aggregated signal: ``observed[m]`` and ``imputed[m]`` are groups x region-bins arrays.

    ``dropped`` names the groups left out (only the ``max_groups`` largest are shown) and
    ``n_imputed_cells`` counts the cells per group whose decoded signal was averaged.
    """

    region: Region
    groups: list[str]
    n_cells: list[int]
    positions: np.ndarray  # bin starts (bp) of the region's bins
    bin_ends: np.ndarray
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    imputed: dict[str, np.ndarray] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    n_imputed_cells: list[int] = field(default_factory=list)


def _groups_of(adata: Any, group_by: str | None, max_groups: int
               ) -> tuple[list[str], np.ndarray, list[str]]:
    """Group names (the ``max_groups`` largest), each cell's group code (-1: left out) and
    the names of the groups left out, largest first."""
    if group_by is None:
        return ["all cells"], np.zeros(adata.n_obs, dtype=np.int64), []
    if group_by not in adata.obs.columns:
        raise ConvNetVAEError(
            f"group_by {group_by!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)})")
    col = adata.obs[group_by].astype(str).to_numpy()
    counts = pd.Series(col).value_counts()
    dropped = [str(g) for g in counts.index[max_groups:]]
    counts = counts.iloc[:max_groups]  # the largest groups
    names = sorted(counts.index, key=lambda s: (len(s), s)) if all(
        s.isdigit() for s in counts.index) else sorted(counts.index)
    lookup = {n: i for i, n in enumerate(names)}
    codes = np.array([lookup.get(v, -1) for v in col], dtype=np.int64)
    return list(names), codes, dropped


def _group_mean(values: sp.csr_matrix | np.ndarray, codes: np.ndarray, n_groups: int,
                weights: np.ndarray) -> np.ndarray:
    """Mean over the cells of each group of ``values * weights[:, None]`` (codes < 0 skipped)."""
    keep = (codes >= 0) & (weights > 0)
    n = np.bincount(codes[keep], minlength=n_groups).astype(float)
    ind = sp.csr_matrix((np.ones(keep.sum()), (codes[keep], np.flatnonzero(keep))),
                        shape=(n_groups, len(codes)))
    scaled = (sp.diags(weights) @ values) if sp.issparse(values) else values * weights[:, None]
    total = ind @ scaled
    total = total.toarray() if sp.issparse(total) else np.asarray(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n[:, None] > 0, total / np.maximum(n, 1)[:, None], np.nan)


def compute_tracks(
    adata: Any,
    region: str,
    group_by: str | None,
    modalities: Sequence[str],
    model: Any = None,
    max_groups: int = 12,
    max_imputed_cells: int = 600,
    seed: int = 0,
    latent: np.ndarray | None = None,
    batch_size: int = 32,
) -> Tracks:
    """Observed (and, with a trained model, imputed) signal per group over ``region``.

    Parameters
    ----------
    adata
        AnnData following the data contract.
    region
        ``"chrom:start-end"`` or a chromosome name.
    group_by
        ``obs`` column whose values define the groups (``None``: all cells together).
    modalities
        Layers to show.
    model
        A trained :class:`~convnetvae.ConvNetVAE`; its rates are averaged over a random
        subsample of each group (:func:`imputed_means`).
    max_groups
        Show the largest groups only (the others are named in ``Tracks.dropped``).
    max_imputed_cells
        Cells decoded in all, split evenly over the groups (at most 200 per group).
    seed
        Seed of that subsample.
    latent
        The model's latent means of all cells of ``adata`` (``obsm["X_convnetvae"]``), when
        they are current: the encoder is then skipped.
    batch_size
        Cells per decoder pass.
    """
    reg = parse_region(region, adata.var)
    names, codes, dropped = _groups_of(adata, group_by, max_groups)
    tr = Tracks(reg, names, np.bincount(codes[codes >= 0], minlength=len(names)).tolist(),
                np.asarray(adata.var["start"], dtype=np.int64)[reg.bins],
                np.asarray(adata.var["end"], dtype=np.int64)[reg.bins], dropped=dropped)
    for m in modalities:
        if m not in adata.layers:
            raise ConvNetVAEError(f"modality {m!r} is not a layer of adata (layers: "
                                  f"{list(adata.layers.keys())})")
        x = adata.layers[m]
        x = x.tocsr() if sp.issparse(x) else sp.csr_matrix(x)
        lib = np.asarray(x.sum(axis=1)).ravel().astype(float)
        inv = np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)
        tr.observed[m] = _group_mean(x[:, reg.bins].astype(np.float64), codes, len(names), inv)
    if model is not None:
        per_group = int(np.clip(max_imputed_cells // max(len(names), 1), 1, 200))
        rng = np.random.default_rng(seed)
        picks = []
        for g in range(len(names)):
            idx = np.flatnonzero(codes == g)
            if idx.size > per_group:
                idx = np.sort(rng.choice(idx, per_group, replace=False))
            picks.append(idx)
        cells = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        tr.n_imputed_cells = [int(p.size) for p in picks]
        tr.imputed = imputed_means(model, adata, cells, codes[cells], len(names), reg.bins,
                                   modalities, latent=latent, batch_size=batch_size)
    return tr


def imputed_means(model: Any, adata: Any, cells: np.ndarray, groups: np.ndarray, n_groups: int,
                  bins: np.ndarray, modalities: Sequence[str], latent: np.ndarray | None = None,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per group, the mean over ``cells`` of the model's signal per 10k of each cell's total in
    a modality, over ``bins``: one encoder pass (skipped when ``latent`` is given) and one
    decoder pass for all modalities.

    Returns ``{modality: groups x len(bins)}`` for the modalities the model has.
    """
    import torch

    from ..data import contract

    mods = list(model.modalities)
    want = [m for m in modalities if m in mods]
    if not want or cells.size == 0:
        return {m: np.full((n_groups, len(bins)), np.nan) for m in want}
    if latent is not None:
        z = np.asarray(latent, dtype=np.float32)[cells]
    else:
        z = model.get_latent_representation(adata[cells], batch_size=batch_size)
    bcodes = contract.batch_codes(adata, model.registry)[cells]
    module = model.module
    device = model.device
    chan = torch.as_tensor([mods.index(m) for m in want], device=device)
    cols = torch.as_tensor(np.asarray(bins), device=device)
    sums = torch.zeros(len(want), n_groups, len(bins), dtype=torch.float64, device=device)
    g_all = torch.as_tensor(groups, device=device)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(cells), batch_size):
                zt = torch.as_tensor(z[i:i + batch_size], device=device)
                bt = torch.as_tensor(bcodes[i:i + batch_size], device=device)
                # softmax weights: each cell's signal in a modality sums to 1 over all bins
                wts = module.decode(zt, bt).index_select(1, chan).index_select(2, cols).exp()
                sums.index_add_(1, g_all[i:i + batch_size], wts.transpose(0, 1).double())
    finally:
        module.train(was_training)
    n = np.bincount(groups, minlength=n_groups).astype(float)
    out = sums.cpu().numpy() * 1e4 / np.maximum(n, 1)[None, :, None]
    out[:, n == 0, :] = np.nan
    return {m: out[j] for j, m in enumerate(want)}
