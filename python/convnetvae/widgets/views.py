"""The workbench's main views: an interactive embedding and genome tracks, over an AnnData.

The embedding is a `jupyter-scatter <https://jupyter-scatter.dev>`_ plot (WebGL through
anywidget; its JavaScript ships in the wheel, nothing is fetched at run time): zoom, pan, hover
(cell id and group) and lasso selection on 100,000+ cells. A lasso selection becomes a named
``obs`` column with one button; *Save figure* writes the embedding as PNG, SVG or PDF with
matplotlib. Genome tracks are computed in the background (:class:`~convnetvae.widgets.jobs.Job`).
"""

from __future__ import annotations

import base64
import html
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
from jscatter import Scatter

from ..errors import ConvNetVAEError
from .annotations import ObsColumn, categorical_columns
from .fields import Dropdown
from .jobs import Job
from .plots import CLIP_PERCENTILES, categorical_palette, clip_range, embedding_figure, is_categorical, tracks_figure
from .render import error_widget, figure_to_png, html_box
from .tracks import compute_tracks, default_region

#: embeddings the view prefers, in order, when several exist
PREFERRED_BASES = ("X_umap", "X_convnetvae_umap", "X_tsne", "X_convnetvae", "X_pca")
#: value of the selection column for cells outside every saved selection
UNSELECTED = "unselected"
_STYLE = {"description_width": "80px"}
#: a replaced scatter widget is closed this many seconds later (its front-end view may still
#: be sending its last messages; closing at once makes the page log "no comm channel")
_CLOSE_AFTER_S = 30.0


def embedding_bases(adata: Any) -> list[str]:
    """``obsm`` keys with at least two columns, preferred ones first."""
    keys = [k for k in adata.obsm.keys()
            if getattr(adata.obsm[k], "ndim", 0) == 2 and adata.obsm[k].shape[1] >= 2
            and k != "modality_mask"]
    return sorted(keys, key=lambda k: (PREFERRED_BASES.index(k) if k in PREFERRED_BASES
                                       else len(PREFERRED_BASES), k))


def _download_link(data: bytes, name: str, mime: str) -> str:
    b64 = base64.b64encode(data).decode()
    return (f'<a download="{html.escape(name)}" href="data:{mime};base64,{b64}" '
            f'class="convnetvae-download">download {html.escape(name)}</a>')


class EmbeddingView:
    """An interactive 2D scatter of an ``obsm`` embedding coloured by any obs column.

    Attributes
    ----------
    basis, color
        Dropdowns (``color.value`` is ``None`` for no colour).
    scatter
        The :class:`jscatter.Scatter` (``scatter.widget`` is the ipywidget); ``None`` before
        there is an embedding.
    frame
        The DataFrame it shows: ``x``, ``y``, ``cell`` (obs name) and the colour column.
    caption
        What is shown: basis, cells, colour (and the clipped range of a numeric colour).
    selection_column, selection_label, save_selection, clear_selection, selection_info
        A lasso selection (``scatter.widget.selection``, row indices) written to
        ``obs[selection_column]`` as ``selection_label`` (others keep their value, new
        columns start as ``"unselected"``); ``saved_columns`` lists the columns written so.
    figure_format, save_figure, figure_info
        Save the embedding as PNG, SVG or PDF (file in the working directory + download link).
    n_renders, render_seconds, render_cpu_seconds
        Updates of the plot and the wall and CPU time of the last.
    """

    def __init__(self, adata: Any, on_change: Callable[[], None] | None = None) -> None:
        self.adata = adata
        self.on_change = on_change or (lambda: None)
        self.n_renders = 0
        self.render_seconds = 0.0
        self.render_cpu_seconds = 0.0
        self.scatter: Any = None
        self.frame: pd.DataFrame | None = None
        self.saved_columns: list[str] = []  # obs columns written from lasso selections
        self.basis = w.Dropdown(description="Embedding", options=[], style=_STYLE)
        self.color = Dropdown(description="Colour by", options=[], style=_STYLE)
        self.color.add_class("convnetvae-color")
        self.message = html_box("no embedding yet: train a model, then embed", "info")
        self.caption = w.HTML("")
        self.caption.add_class("convnetvae-embedding-caption")
        self.plot = w.VBox([self.message], layout=w.Layout(width="100%", min_height="120px"))
        self.plot.add_class("convnetvae-embedding-plot")
        self._selection_row()
        self._figure_row()
        self.widget = w.VBox([w.HBox([self.basis, self.color]), self.caption, self.plot,
                              self.selection_box, self.figure_box],
                             layout=w.Layout(width="100%"))
        self.widget.add_class("convnetvae-embedding")
        self._quiet = False
        self.refresh(render=False)
        self.basis.observe(lambda _c: self.render(), names="value")
        self.color.observe(lambda _c: self.render(), names="value")
        self.render()

    # ---- controls ----------------------------------------------------------------------
    def _selection_row(self) -> None:
        self.selection_info = w.HTML("no cells selected: choose the lasso in the plot's toolbar "
                                     "(or hold Shift) and draw around cells")
        self.selection_info.add_class("convnetvae-selection-info")
        self.selection_column = w.Text(value="selection", description="Column", style=_STYLE,
                                       layout=w.Layout(width="220px"))
        self.selection_label = w.Text(value="selected", description="Label", style=_STYLE,
                                      layout=w.Layout(width="220px"))
        self.save_selection = w.Button(description="Save selection to obs", icon="save",
                                       disabled=True, layout=w.Layout(width="auto"))
        self.save_selection.add_class("convnetvae-save-selection")
        self.save_selection.on_click(lambda _b: self.write_selection())
        self.clear_selection = w.Button(description="Clear", disabled=True,
                                        layout=w.Layout(width="auto"))
        self.clear_selection.on_click(lambda _b: self.select(None))
        self.selection_box = w.VBox([self.selection_info, w.HBox(
            [self.selection_column, self.selection_label, self.save_selection,
             self.clear_selection], layout=w.Layout(flex_flow="row wrap"))])

    def _figure_row(self) -> None:
        self.figure_format = w.Dropdown(options=["png", "svg", "pdf"], value="png",
                                        description="Figure", style=_STYLE,
                                        layout=w.Layout(width="160px"))
        self.save_figure = w.Button(description="Save figure", icon="image")
        self.save_figure.add_class("convnetvae-save-figure")
        self.save_figure.on_click(lambda _b: self.write_figure())
        self.figure_info = w.HTML("")
        self.figure_box = w.HBox([self.figure_format, self.save_figure, self.figure_info],
                                 layout=w.Layout(flex_flow="row wrap"))

    # ---- data --------------------------------------------------------------------------
    def refresh(self, render: bool = True, basis: str | None = None,
                color: str | None = None) -> None:
        """Re-read obsm keys and obs columns (after new results), optionally switch to a basis /
        colour, then redraw."""
        bases = embedding_bases(self.adata)
        cols = [str(c) for c in self.adata.obs.columns]
        old_b, old_c = self.basis.value, self.color.value
        self._quiet = True  # one render at the end, not one per option change
        try:
            if list(self.basis.options) != bases:
                self.basis.options = bases
            self.basis.value = basis if basis in bases else (
                old_b if old_b in bases else (bases[0] if bases else None))
            copts = [("(none)", None)] + [(c, c) for c in cols]
            if [o[1] for o in self.color.options] != [o[1] for o in copts]:
                self.color.options = copts
            default = (categorical_columns(self.adata) or [None])[0]
            self.color.value = color if color in cols else (
                old_c if old_c in cols else default)
        finally:
            self._quiet = False
        if render:
            self.render()

    def _frame(self, basis: str, color: str | None) -> tuple[pd.DataFrame, dict]:
        """The DataFrame to plot and the colour encoding for jupyter-scatter."""
        xy = np.asarray(self.adata.obsm[basis])[:, :2].astype(np.float32)
        df = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1],
                           "cell": self.adata.obs_names.astype(str)})
        if color is None:
            return df, {"default": "#777777", "by": None}
        name = color if color not in ("x", "y", "cell") else f"obs:{color}"
        values = self.adata.obs[color]
        if is_categorical(values):
            cat = values if isinstance(values.dtype, pd.CategoricalDtype) else \
                pd.Categorical(values.astype(str))
            cat = pd.Categorical(cat)
            if cat.isna().any():
                cat = cat.add_categories(["(missing)"]).fillna("(missing)")
            cats = [str(c) for c in cat.categories]
            df[name] = pd.Categorical(np.asarray(cat.astype(str)), categories=cats)
            cols = categorical_palette(len(cats))
            return df, {"by": name, "map": {c: tuple(cols[i]) for i, c in enumerate(cats)},
                        "n": len(cats)}
        v = np.asarray(values, dtype=float)
        lo, hi = clip_range(v)
        df[name] = np.clip(np.nan_to_num(v, nan=lo), lo, hi)
        return df, {"by": name, "map": "viridis", "norm": (lo, hi), "range": (lo, hi)}

    def render(self) -> None:
        """Show the current basis and colour (the plot keeps its zoom when only the colour
        changes)."""
        if self._quiet:
            return
        basis, color = self.basis.value, self.color.value
        if basis is None or basis not in self.adata.obsm:
            self.plot.children = [self.message]
            self.caption.value = ""
            return
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            df, enc = self._frame(basis, color)
            self._show(df, enc, new_basis=self.frame is None or self._basis != basis)
        except Exception as exc:  # a view must not die: show why
            self.plot.children = [error_widget(exc)]
            return
        self._basis = basis
        self.frame = df
        self.caption.value = self._caption(basis, color, enc)
        self.n_renders += 1
        self.render_seconds = time.perf_counter() - t0
        self.render_cpu_seconds = time.process_time() - c0

    def _show(self, df: pd.DataFrame, enc: dict, new_basis: bool) -> None:
        """A new scatter widget for every change, keeping the old one's view (zoom, pan) when
        only the colour changed, and the selection. (Updating one widget's points while its
        previous draw is still running makes jupyter-scatter drop the update, so quick
        successive changes could leave stale colours on screen; a new widget cannot.)"""
        n = len(df)
        size = float(np.clip(12.0 - 2.0 * np.log10(max(n, 1)), 1.5, 8.0))
        props = ["cell"] + ([enc["by"]] if enc.get("by") else [])
        color_kw = {k: v for k, v in enc.items() if k in ("by", "map", "norm", "default")}
        if enc.get("by") and "range" in enc:
            lo, hi = enc["range"]
            color_kw["labeling"] = (f"{lo:.3g} (1st pct.)", f"{hi:.3g} (99th pct.)", enc["by"])
        old = self.scatter
        view: dict[str, Any] = {}
        selection = self.selected
        if old is not None and not new_basis:
            ow = old.widget
            view = {"camera_target": list(ow.camera_target),
                    "camera_distance": float(ow.camera_distance),
                    "camera_view": list(ow.camera_view) if ow.camera_view is not None else None}
        scatter = Scatter(data=df, x="x", y="y", height=520, size=size, axes=False,
                          legend=True, legend_position="top-right", tooltip=True,
                          tooltip_properties=props, **{k: v for k, v in view.items()
                                                       if v is not None})
        scatter.color(**color_kw)
        if selection.size:
            scatter.selection(selection)
        widget = scatter.widget
        widget.observe(self._on_selection, names="selection")
        widget.add_class("convnetvae-scatter")
        widget.layout = w.Layout(width="100%")
        self.scatter = scatter
        self.plot.children = [scatter.show()]
        if old is not None:  # closed a little later: its view may still be finishing a draw
            old.widget.unobserve(self._on_selection, names="selection")
            timer = threading.Timer(_CLOSE_AFTER_S, old.widget.close)
            timer.daemon = True
            timer.start()

    def _caption(self, basis: str, color: str | None, enc: dict) -> str:
        text = f"<b>{html.escape(basis)}</b>: {self.adata.n_obs:,} cells"
        if color is not None:
            text += f", coloured by <b>{html.escape(color)}</b>"
            if "n" in enc:
                text += f" ({enc['n']} groups)"
            if "range" in enc:
                lo, hi = enc["range"]
                text += (f"; colour scale clipped at the {CLIP_PERCENTILES[0]:g}st&ndash;"
                         f"{CLIP_PERCENTILES[1]:g}th percentile ({lo:.3g} to {hi:.3g})")
        return f"<small>{text}</small>"

    # ---- selection ---------------------------------------------------------------------
    @property
    def selected(self) -> np.ndarray:
        """Row indices of the cells in the current lasso selection."""
        if self.scatter is None or self.scatter.widget.selection is None:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.scatter.widget.selection, dtype=np.int64)

    def select(self, rows: Any) -> None:
        """Select cells by row index (as a lasso would); ``None`` clears the selection."""
        if self.scatter is None:
            raise ConvNetVAEError("no embedding to select in yet")
        self.scatter.widget.selection = (np.zeros(0, dtype=np.uint32) if rows is None
                                         else np.asarray(rows, dtype=np.uint32))

    def _on_selection(self, _change: Any = None) -> None:
        n = self.selected.size
        self.save_selection.disabled = self.clear_selection.disabled = n == 0
        if n:
            self.selection_info.value = (f"<b>{n:,}</b> cell{'s' * (n != 1)} selected: name a "
                                         "column and a label, then save")
        else:
            self.selection_info.value = ("no cells selected: choose the lasso in the plot's "
                                         "toolbar (or hold Shift) and draw around cells")

    def write_selection(self, column: str | None = None, label: str | None = None) -> str:
        """Write the selected cells to ``obs[column]`` as ``label`` (a categorical column; cells
        outside keep their value, or ``"unselected"`` in a new column). Returns the column."""
        column = (column or self.selection_column.value).strip()
        label = (label or self.selection_label.value).strip() or "selected"
        rows = self.selected
        try:
            if not rows.size:
                raise ConvNetVAEError("no cells selected: draw a lasso around some first")
            if not re.fullmatch(r"[A-Za-z0-9_.\- ]+", column or ""):
                raise ConvNetVAEError(f"column name {column!r}: use letters, digits, _ . - or "
                                      "spaces")
            obs = self.adata.obs
            if column in obs.columns and not is_categorical(obs[column]):
                raise ConvNetVAEError(f"obs[{column!r}] exists and is numeric: choose another "
                                      "column name")
            old = obs[column].astype(str).to_numpy() if column in obs.columns else \
                np.full(self.adata.n_obs, UNSELECTED, dtype=object)
            new = np.asarray(old, dtype=object)
            new[rows] = label
            cats = [c for c in pd.unique(np.concatenate([[label], new])) if c != UNSELECTED]
            cats = sorted(cats) + ([UNSELECTED] if UNSELECTED in set(new) else [])
            obs[column] = pd.Categorical(new, categories=cats)
            if column not in self.saved_columns:
                self.saved_columns.append(column)
        except ConvNetVAEError as exc:
            self.selection_info.value = error_widget(exc).value
            raise
        self.selection_info.value = (f"<b>{rows.size:,}</b> cell{'s' * (rows.size != 1)} written to "
                                     f"<code>obs[{html.escape(column)!r}]</code> as "
                                     f"<i>{html.escape(label)}</i>")
        self.selection_info.add_class("convnetvae-selection-saved")
        self.on_change()
        return column

    # ---- figure ------------------------------------------------------------------------
    def figure(self) -> Any:
        """The current embedding as a matplotlib figure (the palette of the plot)."""
        basis, color = self.basis.value, self.color.value
        if basis is None or basis not in self.adata.obsm:
            raise ConvNetVAEError("no embedding to save yet")
        values = self.adata.obs[color] if color else None
        return embedding_figure(self.adata.obsm[basis], values, basis=basis,
                                title=f"{basis}: {self.adata.n_obs:,} cells"
                                + (f", coloured by {color}" if color else ""))

    def write_figure(self, path: str | Path | None = None, fmt: str | None = None) -> Path:
        """Save the embedding (PNG, SVG or PDF) and offer it for download; returns the path."""
        fmt = (fmt or self.figure_format.value).lower()
        try:
            if fmt not in ("png", "svg", "pdf"):
                raise ConvNetVAEError(f"figure format must be png, svg or pdf, got {fmt!r}")
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_",
                          f"{self.basis.value}_{self.color.value or 'plain'}") + f".{fmt}"
            path = Path(path) if path is not None else Path.cwd() / name
            fig = self.figure()
            fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight")
        except Exception as exc:
            self.figure_info.value = error_widget(exc).value
            raise
        mime = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}[fmt]
        self.figure_info.value = (f"<small>saved {html.escape(str(path))} &middot; "
                                  f"{_download_link(path.read_bytes(), path.name, mime)}</small>")
        return path


class GenomeTrackView:
    """Per-group signal of each modality over a region, observed and (with a model) imputed.

    Attributes: ``region`` (text; Enter shows it), ``group_by`` (dropdown), ``modalities``
    (multi-select), ``show`` (button), ``caption`` (the inputs of the tracks shown), ``body``
    (notes and ``image``), ``widget``; ``tracks`` holds the last computed
    :class:`~convnetvae.widgets.tracks.Tracks` and ``job`` runs them in the background.
    """

    def __init__(self, adata: Any, modalities: list[str],
                 get_model: Callable[[], Any] | None = None,
                 get_latent: Callable[[], np.ndarray | None] | None = None) -> None:
        self.adata = adata
        self.get_model = get_model or (lambda: None)
        self.get_latent = get_latent or (lambda: None)
        self.tracks = None
        self.n_renders = 0
        self.max_groups = 12  # the largest groups shown; the others are named in a note
        has_bins = {"chrom", "start", "end"} <= set(adata.var.columns) and adata.n_vars > 0
        self.region = w.Text(value=default_region(adata.var) if has_bins else "",
                             description="Region", placeholder="chr1:0-2,000,000 (Enter)",
                             style=_STYLE, continuous_update=False,
                             layout=w.Layout(width="360px"))
        self.region.add_class("convnetvae-region")
        self.group_by = Dropdown(description="Group by", options=[], style=_STYLE)
        self.modalities = w.SelectMultiple(options=list(adata.layers.keys()),
                                           value=tuple(m for m in modalities
                                                       if m in adata.layers),
                                           description="Modalities", rows=3, style=_STYLE)
        self.show = w.Button(description="Show tracks", icon="bar-chart")
        self.show.add_class("convnetvae-show-tracks")
        self.show.on_click(lambda _b: self.render())
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.image.add_class("convnetvae-tracks-image")
        self.body = w.VBox([html_box("choose a region and press <i>Show tracks</i> (or Enter)",
                                     "info")], layout=w.Layout(width="100%"))
        self.caption = w.HTML("")
        self.job = Job("Show tracks", self.show, self.body, when_busy="latest",
                       busy_text="Computing…", caption=self.caption)
        self.widget = w.VBox([w.HBox([self.region, self.group_by],
                                     layout=w.Layout(flex_flow="row wrap")),
                              w.HBox([self.modalities, self.show]), self.caption, self.body],
                             layout=w.Layout(width="100%"))
        self.widget.add_class("convnetvae-tracks")
        self.refresh()
        self.region.observe(lambda _c: self.render(), names="value")  # Enter (or leaving)

    def refresh(self, group_by: str | None = None) -> None:
        """Re-read the categorical obs columns (e.g. after clustering)."""
        cols = ObsColumn("categorical").choices(self.adata)
        old = self.group_by.value
        opts = [("(all cells)", None)] + [(c, c) for c in cols]
        if [o[1] for o in self.group_by.options] != [o[1] for o in opts]:
            self.group_by.options = opts
        self.group_by.value = group_by if group_by in cols else (old if old in cols else None)

    def render(self, wait: bool = False) -> None:
        """Compute and draw the tracks for the current region, grouping and modalities, in the
        background (``wait=True``: in this thread); the output is captioned with them."""
        mods = list(self.modalities.value)
        model = self.get_model()
        latent = self.get_latent() if model is not None else None
        inputs = {"region": self.region.value, "group_by": self.group_by.value,
                  "modalities": mods, "model": "trained" if model is not None else "none"}

        def compute() -> Any:
            if not mods:
                raise ConvNetVAEError("choose at least one modality to show")
            tracks = compute_tracks(self.adata, inputs["region"], inputs["group_by"], mods,
                                    model=model, latent=latent, max_groups=self.max_groups)
            return tracks, figure_to_png(tracks_figure(tracks))

        self.job.submit(compute, inputs, self._show, wait=wait)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the tracks being computed; ``True`` when done."""
        return self.job.wait(timeout)

    def _show(self, result: Any) -> list[w.Widget]:
        tracks, png = result
        self.tracks = tracks
        self.image.value = png
        self.n_renders += 1
        out: list[w.Widget] = []
        if tracks.dropped:
            shown = len(tracks.groups)
            names = ", ".join(tracks.dropped[:8]) + (" ..." if len(tracks.dropped) > 8 else "")
            note = html_box(f"showing the {shown} largest of {shown + len(tracks.dropped)} "
                            f"groups; {len(tracks.dropped)} left out: {html.escape(names)}",
                            "warning")
            note.add_class("convnetvae-dropped-groups")
            out.append(note)
        if tracks.imputed:
            out.append(w.HTML(f"<small>imputed: mean of {sum(tracks.n_imputed_cells):,} "
                              "randomly chosen cells' decoded signal "
                              f"({min(tracks.n_imputed_cells or [0])}&ndash;"
                              f"{max(tracks.n_imputed_cells or [0])} per group)</small>"))
        return [*out, self.image]
