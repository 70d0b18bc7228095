"""The workbench's figures: embedding scatter, genome tracks and the loss curve (matplotlib)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .render import new_figure
from .tracks import Tracks

_MAX_LEGEND = 40


def categorical_palette(n: int) -> np.ndarray:
    """``n`` RGBA colours for categories in which neighbours (categories i and i + 1, e.g.
    clusters 3 and 4) always differ clearly, also beyond 20 groups.

    Up to 10: matplotlib's tab10. Up to 20: tab20's dark colours, then its light ones (tab20
    itself pairs each colour with a lighter shade of it). Beyond: hues stepped by the golden
    angle with lightness and saturation cycling through three levels, so consecutive colours
    differ in hue by about 137 degrees and in lightness too.
    """
    if n <= 10:
        return np.asarray(matplotlib.colormaps["tab10"](np.arange(n)))
    if n <= 20:
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return np.asarray(matplotlib.colormaps["tab20"](order[:n]))
    i = np.arange(n)
    hue = (i * 0.381966) % 1.0
    light = np.array([0.45, 0.62, 0.32])[i % 3]
    sat = np.array([0.75, 0.55, 0.9])[(i // 3) % 3]
    rgb = np.array([colorsys.hls_to_rgb(h, v, s_) for h, v, s_ in zip(hue, light, sat)])
    return np.column_stack([rgb, np.ones(n)])


#: numeric colours are clipped at these percentiles (outliers would flatten the colour scale)
CLIP_PERCENTILES = (1.0, 99.0)


def clip_range(values: Any) -> tuple[float, float]:
    """The colour range of a numeric column: its 1st to 99th percentile (finite values)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = (float(q) for q in np.percentile(v, CLIP_PERCENTILES))
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def is_categorical(values: pd.Series) -> bool:
    """Whether a column colours by category (legend) rather than by number (colour bar)."""
    return not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
                and not isinstance(values.dtype, pd.CategoricalDtype))


def embedding_figure(xy: np.ndarray, values: pd.Series | None = None, title: str = "",
                     basis: str = "", seed: int = 0, width: float = 7.0,
                     height: float = 5.0) -> Figure:
    """Scatter of a 2D embedding coloured by an obs column, with a legend or colour bar.

    Cells are drawn in a random order (so no group hides another), with a marker size that
    shrinks with the number of cells and the points rasterised: 100,000 cells draw in well
    under a second.

    Parameters
    ----------
    xy
        ``(n_cells, >=2)`` coordinates (the first two columns are used).
    values
        Colour per cell: categories get a legend, numbers a colour bar; ``None`` for grey.
    title, basis
        Figure title and axis-label prefix (e.g. ``"UMAP"``).
    seed
        Seed of the drawing order.
    """
    xy = np.asarray(xy)[:, :2]
    n = xy.shape[0]
    fig = new_figure(width, height)
    ax = fig.add_axes((0.06, 0.08, 0.62, 0.84))
    order = np.random.default_rng(seed).permutation(n)
    size = float(np.clip(3e4 / max(n, 1), 0.3, 30.0))
    kw = dict(s=size, linewidths=0, rasterized=True)
    if values is None:
        ax.scatter(xy[order, 0], xy[order, 1], c="#888888", **kw)
    elif is_categorical(values):
        cat = pd.Categorical(values.astype(str) if not isinstance(values.dtype, pd.CategoricalDtype)
                             else values)
        cats = list(cat.categories)
        cols = categorical_palette(len(cats))
        codes = np.asarray(cat.codes)
        rgba = np.where(codes[:, None] >= 0, cols[np.maximum(codes, 0)], (0.8, 0.8, 0.8, 1.0))
        ax.scatter(xy[order, 0], xy[order, 1], c=rgba[order], **kw)
        if len(cats) <= _MAX_LEGEND:
            handles = [matplotlib.lines.Line2D([], [], marker="o", ls="", color=cols[i],
                                               label=str(c)) for i, c in enumerate(cats)]
            ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
                      frameon=False, fontsize=8, ncol=1 if len(cats) <= 20 else 2,
                      title=str(values.name) if values.name is not None else None,
                      title_fontsize=9)
        else:
            ax.text(1.02, 0.5, f"{len(cats)} categories", transform=ax.transAxes, fontsize=9)
    else:
        v = np.asarray(values, dtype=float)
        lo, hi = clip_range(v)
        sc = ax.scatter(xy[order, 0], xy[order, 1], c=v[order], cmap="viridis", vmin=lo,
                        vmax=hi, **kw)
        cax = fig.add_axes((0.72, 0.2, 0.02, 0.6))
        fig.colorbar(sc, cax=cax, extend="both",
                     label=f"{values.name or ''} (clipped at percentiles "
                           f"{CLIP_PERCENTILES[0]:g}-{CLIP_PERCENTILES[1]:g})")
    ax.set_xticks([])
    ax.set_yticks([])
    label = _axis_label(basis)
    ax.set_xlabel(f"{label} 1", fontsize=9)
    ax.set_ylabel(f"{label} 2", fontsize=9)
    ax.set_title(title or f"{n:,} cells", fontsize=10)
    return fig


def _axis_label(basis: str) -> str:
    """``X_convnetvae_umap`` -> ``UMAP``, ``X_pca`` -> ``PCA``, ``X_foo`` -> ``foo``."""
    if not basis:
        return "dim"
    name = basis[2:] if basis.startswith("X_") else basis
    for known in ("umap", "tsne", "pca", "draw_graph_fa"):
        if name.lower().endswith(known):
            return known.upper() if known != "draw_graph_fa" else "FA"
    return name


def tracks_figure(tracks: Tracks, width: float = 9.0) -> Figure:
    """Stacked genome tracks: one panel per modality, one band per group in it; observed signal
    as a filled step curve, the model's imputed signal as a line on top. Each modality has one
    scale for all its groups (its largest value fills a band)."""
    mods = list(tracks.observed)
    n_groups = max(1, len(tracks.groups))
    band_in = 0.32
    height = 0.9 + sum(0.25 + band_in * n_groups for _ in mods)
    fig = new_figure(width, max(height, 1.6))
    axes = fig.subplots(max(1, len(mods)), 1, sharex=True, squeeze=False,
                        gridspec_kw={"hspace": 0.25})[:, 0]
    fig.subplots_adjust(left=0.2, right=0.98, top=1 - 0.5 / fig.get_figheight(),
                        bottom=0.5 / fig.get_figheight())
    cols = categorical_palette(len(mods))
    x = np.append(tracks.positions, tracks.bin_ends[-1]) / 1e6
    for j, m in enumerate(mods):
        ax = axes[j]
        obs = tracks.observed[m]
        imp = tracks.imputed.get(m)
        top = np.nanmax([np.nanmax(obs) if obs.size else 0,
                         np.nanmax(imp) if imp is not None and imp.size else 0, 1e-9])
        for g in range(len(tracks.groups)):
            base = (n_groups - 1 - g) * 1.15  # first group on top
            y = np.nan_to_num(obs[g]) / top
            ax.fill_between(x, base, base + np.append(y, y[-1]), step="post", color=cols[j],
                            alpha=0.6, linewidth=0)
            if imp is not None:
                yi = np.nan_to_num(imp[g]) / top
                ax.step(x, base + np.append(yi, yi[-1]), where="post", color="black",
                        linewidth=0.7)
        ax.set_yticks([(n_groups - 1 - g) * 1.15 + 0.5 for g in range(len(tracks.groups))])
        ax.set_yticklabels([f"{name} ({n:,})" for name, n in zip(tracks.groups, tracks.n_cells)],
                           fontsize=7)
        ax.set_ylim(-0.1, (n_groups - 1) * 1.15 + 1.1)
        ax.set_ylabel(m, fontsize=9)
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.text(1.0, 1.0, f"max {top:.3g}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="#555555")
    axes[-1].set_xlabel(f"{tracks.region.chrom} (Mb)", fontsize=9)
    what = "observed (filled)" + (" and imputed (line)" if tracks.imputed else "")
    fig.suptitle(f"{tracks.region}: {what}, per 10k of each cell's signal", fontsize=9)
    return fig


def loss_figure(history: pd.DataFrame | Sequence[dict[str, Any]], max_epochs: int | None = None,
                width: float = 5.0, height: float = 3.0) -> Figure:
    """Training and validation loss per epoch (negative ELBO)."""
    df = history if isinstance(history, pd.DataFrame) else pd.DataFrame(list(history))
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    cols = [c for c in ("train_loss", "validation_loss") if c in df.columns]
    if df.empty or not cols:
        ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=ax.transAxes)
    else:
        epochs = df["epoch"] if "epoch" in df.columns else np.arange(1, len(df) + 1)
        for c in cols:
            ax.plot(epochs, df[c], marker="o", markersize=3, label=c.replace("_", " "))
        ax.legend(fontsize=8, frameon=False)
    if max_epochs:
        ax.set_xlim(0.5, max_epochs + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel("loss (-ELBO per cell)", fontsize=9)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig
