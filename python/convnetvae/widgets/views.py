"""The workbench's main views: embedding scatter and genome tracks, as widgets over an AnnData."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import ConvNetVAEError
from .annotations import ObsColumn, categorical_columns
from .plots import embedding_figure, tracks_figure
from .render import error_widget, figure_to_png, html_box
from .tracks import compute_tracks, default_region

#: embeddings the view prefers, in order, when several exist
PREFERRED_BASES = ("X_umap", "X_convnetvae_umap", "X_tsne", "X_convnetvae", "X_pca")


def embedding_bases(adata: Any) -> list[str]:
    """``obsm`` keys with at least two columns, preferred ones first."""
    keys = [k for k in adata.obsm.keys()
            if getattr(adata.obsm[k], "ndim", 0) == 2 and adata.obsm[k].shape[1] >= 2
            and k != "modality_mask"]
    return sorted(keys, key=lambda k: (PREFERRED_BASES.index(k) if k in PREFERRED_BASES
                                       else len(PREFERRED_BASES), k))


class EmbeddingView:
    """2D scatter of an ``obsm`` embedding coloured by any obs column, rendered as a PNG.

    Attributes: ``basis`` and ``color`` (dropdowns), ``image`` (the PNG), ``message`` (shown
    when there is nothing to draw), ``widget`` (the whole view), ``n_renders``,
    ``render_seconds`` and ``render_cpu_seconds`` (wall and CPU time of the last render).
    """

    def __init__(self, adata: Any) -> None:
        self.adata = adata
        self.n_renders = 0
        self.render_seconds = 0.0
        self.render_cpu_seconds = 0.0
        self.basis = w.Dropdown(description="Embedding", options=[],
                                style={"description_width": "80px"})
        self.color = w.Dropdown(description="Colour by", options=[],
                                style={"description_width": "80px"})
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.image.add_class("convnetvae-embedding-image")
        self.message = html_box("no embedding yet: train a model, then embed", "info")
        self.body = w.VBox([self.message])
        self.widget = w.VBox([w.HBox([self.basis, self.color]), self.body])
        self.widget.add_class("convnetvae-embedding")
        self.refresh(render=False)
        self.basis.observe(lambda _c: self.render(), names="value")
        self.color.observe(lambda _c: self.render(), names="value")
        self.render()

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

    def render(self) -> None:
        """Draw the current basis and colour into :attr:`image`."""
        if getattr(self, "_quiet", False):
            return
        basis = self.basis.value
        if basis is None or basis not in self.adata.obsm:
            self.body.children = [self.message]
            return
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            values = self.adata.obs[self.color.value] if self.color.value else None
            fig = embedding_figure(self.adata.obsm[basis], values, basis=basis,
                                   title=f"{basis}: {self.adata.n_obs:,} cells"
                                   + (f", coloured by {self.color.value}" if values is not None
                                      else ""))
            self.image.value = figure_to_png(fig)
            self.body.children = [self.image]
        except Exception as exc:  # a view must not die: show why
            self.body.children = [error_widget(exc)]
            return
        self.n_renders += 1
        self.render_seconds = time.perf_counter() - t0
        self.render_cpu_seconds = time.process_time() - c0


class GenomeTrackView:
    """Per-group signal of each modality over a region, observed and (with a model) imputed.

    Attributes: ``region`` (text), ``group_by`` (dropdown), ``modalities`` (multi-select),
    ``show`` (button), ``image``, ``widget``; ``tracks`` holds the last computed
    :class:`~convnetvae.widgets.tracks.Tracks`.
    """

    def __init__(self, adata: Any, modalities: list[str],
                 get_model: Callable[[], Any] | None = None) -> None:
        self.adata = adata
        self.get_model = get_model or (lambda: None)
        self.tracks = None
        self.n_renders = 0
        style = {"description_width": "80px"}
        has_bins = {"chrom", "start", "end"} <= set(adata.var.columns) and adata.n_vars > 0
        self.region = w.Text(value=default_region(adata.var) if has_bins else "",
                             description="Region", placeholder="chr1:0-2,000,000",
                             style=style, continuous_update=False)
        self.group_by = w.Dropdown(description="Group by", options=[], style=style)
        self.modalities = w.SelectMultiple(options=list(adata.layers.keys()),
                                           value=tuple(m for m in modalities
                                                       if m in adata.layers),
                                           description="Modalities", rows=3, style=style)
        self.show = w.Button(description="Show tracks", icon="bar-chart")
        self.show.add_class("convnetvae-show-tracks")
        self.show.on_click(lambda _b: self.render())
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.body = w.VBox([html_box("choose a region and press <i>Show tracks</i>", "info")])
        self.widget = w.VBox([w.HBox([self.region, self.group_by]),
                              w.HBox([self.modalities, self.show]), self.body])
        self.widget.add_class("convnetvae-tracks")
        self.refresh()

    def refresh(self, group_by: str | None = None) -> None:
        """Re-read the categorical obs columns (e.g. after clustering)."""
        cols = ObsColumn("categorical").choices(self.adata)
        old = self.group_by.value
        opts = [("(all cells)", None)] + [(c, c) for c in cols]
        if [o[1] for o in self.group_by.options] != [o[1] for o in opts]:
            self.group_by.options = opts
        self.group_by.value = group_by if group_by in cols else (old if old in cols else None)

    def render(self) -> None:
        """Compute and draw the tracks for the current region, grouping and modalities."""
        try:
            mods = list(self.modalities.value)
            if not mods:
                raise ConvNetVAEError("choose at least one modality to show")
            model = self.get_model()
            self.tracks = compute_tracks(self.adata, self.region.value, self.group_by.value,
                                         mods, model=model)
            self.image.value = figure_to_png(tracks_figure(self.tracks))
            self.body.children = [self.image]
            self.n_renders += 1
        except Exception as exc:
            self.body.children = [error_widget(exc)]
