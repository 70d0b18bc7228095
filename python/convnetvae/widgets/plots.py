"""The workbench's figures: embedding scatter, genome tracks and the loss curve (matplotlib)."""

from __future__ import annotations

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


def _palette(n: int) -> np.ndarray:
    if n <= 10:
        cols = matplotlib.colormaps["tab10"](np.arange(n))
    elif n <= 20:
        cols = matplotlib.colormaps["tab20"](np.arange(n))
    else:
        cols = matplotlib.colormaps["gist_ncar"](np.linspace(0.02, 0.95, n))
    return np.asarray(cols)


def _is_categorical(values: pd.Series) -> bool:
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
    elif _is_categorical(values):
        cat = pd.Categorical(values.astype(str) if not isinstance(values.dtype, pd.CategoricalDtype)
                             else values)
        cats = list(cat.categories)
        cols = _palette(len(cats))
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
        sc = ax.scatter(xy[order, 0], xy[order, 1], c=v[order], cmap="viridis", **kw)
        cax = fig.add_axes((0.72, 0.2, 0.02, 0.6))
        fig.colorbar(sc, cax=cax, label=str(values.name or ""))
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


def tracks_figure(tracks: Tracks, width: float = 8.0) -> Figure:
    """Stacked genome tracks: for each modality, one row per group; observed signal as a
    filled step curve, the model's imputed signal as a line on top."""
    mods = list(tracks.observed)
    n_rows = max(1, len(mods) * len(tracks.groups))
    fig = new_figure(width, 0.9 + 0.42 * n_rows)
    axes = fig.subplots(n_rows, 1, sharex=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.22, right=0.98, top=1 - 0.45 / fig.get_figheight(),
                        bottom=0.45 / fig.get_figheight(), hspace=0.12)
    cols = _palette(len(mods))
    x = np.append(tracks.positions, tracks.bin_ends[-1]) / 1e6
    row = 0
    for j, m in enumerate(mods):
        obs = tracks.observed[m]
        imp = tracks.imputed.get(m)
        top = np.nanmax([np.nanmax(obs) if obs.size else 0,
                         np.nanmax(imp) if imp is not None and imp.size else 0, 1e-9])
        for g, name in enumerate(tracks.groups):
            ax = axes[row]
            y = np.nan_to_num(obs[g])
            ax.fill_between(x, np.append(y, y[-1]), step="post", color=cols[j], alpha=0.55,
                            linewidth=0)
            if imp is not None:
                yi = np.nan_to_num(imp[g])
                ax.step(x, np.append(yi, yi[-1]), where="post", color="black", linewidth=0.8)
            ax.set_ylim(0, top * 1.05)
            ax.set_yticks([])
            for side in ("top", "right", "left"):
                ax.spines[side].set_visible(False)
            ax.set_ylabel(f"{m} | {name}", rotation=0, ha="right", va="center", fontsize=7)
            row += 1
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
