"""The Workbench: a napari-Viewer-like notebook object with a main view and docked panels.

::

    wb = Workbench(adata)          # displays itself as the last expression of a cell
    wb.train(max_epochs=20)        # or press Train; the notebook stays usable
    wb.add_panel(my_function)      # any annotated function becomes a docked panel

Main view: an interactive embedding (jupyter-scatter: zoom, pan, hover, lasso) coloured by any
obs column, and genome tracks of per-cluster signal. Docked panels: Data, Train, Embed &
cluster, Evaluate, Export and the user's own; several may be open at once, and training's
progress and loss stay visible above them. Every long action runs in the background. Standard
ipywidgets plus one anywidget (its JavaScript ships in the wheel): JupyterLab, Notebook 7,
VS Code and Voila all show it.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ipywidgets as w
import pandas as pd

from ..errors import ConvNetVAEError
from ..evaluate.embedding import CLUSTER_KEY
from .builtin_panels import TrainPanel, data_panel, embed_panel, evaluate_panel, export_panel, first_list
from .panel import Panel, panel
from .views import EmbeddingView, GenomeTrackView


class _Context(Mapping):
    """What a docked function may ask for by parameter name: ``workbench``, ``model``."""

    def __init__(self, wb: Workbench) -> None:
        self._wb = wb

    def __getitem__(self, key: str) -> Any:
        if key == "workbench":
            return self._wb
        if key == "model":
            if self._wb.model is None:
                raise ConvNetVAEError("no model yet: train one in the Train panel first")
            return self._wb.model
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in ("workbench", "model")

    def __iter__(self) -> Iterator[str]:
        return iter(("workbench", "model"))

    def __len__(self) -> int:
        return 2


class Workbench:
    """Explore an AnnData and a ConvNet-VAE in a notebook: views plus docked panels.

    Parameters
    ----------
    adata
        Cells x bins following the data contract (``layers[modality]`` counts, ``var`` with
        ``chrom``/``start``/``end``).
    model
        An existing :class:`~convnetvae.ConvNetVAE` (optional; the Train panel makes one).
    labels_key
        obs column of known labels (default: the data setup's, or a guess like
        ``"cell_type"``).

    Attributes
    ----------
    panels
        ``{title: Panel}`` of the docked panels, built-in and added.
    embedding, tracks
        The main views (:class:`EmbeddingView`, :class:`GenomeTrackView`).
    trainer
        The train panel (:class:`~convnetvae.widgets.builtin_panels.TrainPanel`).
    widget
        The whole workbench as one ipywidget.
    """

    def __init__(self, adata: Any, model: Any = None, labels_key: str | None = None) -> None:
        if not hasattr(adata, "layers") or not hasattr(adata, "obs"):
            raise ConvNetVAEError(f"Workbench needs an AnnData, got {type(adata).__name__}")
        if len(adata.layers) == 0:
            raise ConvNetVAEError("adata has no layers: the workbench needs one count layer "
                                  "per modality (adata.layers['ATAC'], ...)")
        self.adata = adata
        self.model = model
        self.scib: pd.DataFrame | None = None
        reg = adata.uns.get("convnetvae") if isinstance(adata.uns.get("convnetvae"), dict) else {}
        self.labels_key = labels_key or reg.get("labels_key") or next(
            (c for c in ("cell_type", "celltype", "labels", "label") if c in adata.obs), None)
        self._context = _Context(self)
        self._refresh_lock = threading.RLock()
        self.model_version = 0  # bumped whenever the model's weights may change
        self._latent_version: int | None = None  # model_version of obsm["X_convnetvae"]
        mods = first_list(reg.get("modalities"), adata.uns.get("modalities"), adata.layers.keys())
        self.embedding = EmbeddingView(adata, on_change=self.refresh)
        self.tracks = GenomeTrackView(adata, mods, get_model=self._trained_model,
                                      get_latent=self._current_latent)
        self.panels: dict[str, Panel] = {}
        self._sections: dict[str, w.Accordion] = {}
        self._dock = w.VBox([], layout=w.Layout(width="100%"))
        self._dock.add_class("convnetvae-dock")
        self._add(data_panel(self))
        self.trainer = TrainPanel(self)
        self._add(self.trainer.panel)
        self._add(embed_panel(self))
        self._add(evaluate_panel(self))
        self._add(export_panel(self))
        self.panels["Data"].run(wait=True)  # set the data up with its defaults, show the summary
        self.open_panel("Train" if self.panels["Data"].error is None else "Data")
        self.main = w.Tab(children=[self.embedding.widget, self.tracks.widget],
                          layout=w.Layout(width="100%"))
        self.main.set_title(0, "Embedding")
        self.main.set_title(1, "Genome tracks")
        self.main.add_class("convnetvae-main")
        header = w.HTML(f"<b>convnetvae workbench</b> &mdash; {adata.n_obs:,} cells &times; "
                        f"{adata.n_vars:,} bins, layers: "
                        f"{html.escape(', '.join(map(str, adata.layers.keys())))}")
        side = w.VBox([self.trainer.monitor, self._dock],
                      layout=w.Layout(flex="0 0 34%", min_width="340px", max_width="560px"))
        side.add_class("convnetvae-side")
        self.widget = w.VBox([header, w.HBox(
            [side, w.Box([self.main], layout=w.Layout(flex="1 1 0%", min_width="0"))],
            layout=w.Layout(width="100%"))], layout=w.Layout(width="100%"))
        self.widget.add_class("convnetvae-workbench")

    # ---- display -------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show(self) -> None:
        """Display the workbench (as the last expression of a cell does)."""
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return (f"Workbench({self.adata.n_obs} cells x {self.adata.n_vars} bins, "
                f"panels={list(self.panels)}, model={'yes' if self.model else 'none'})")

    # ---- panels --------------------------------------------------------------------------
    def _add(self, p: Panel) -> Panel:
        if p.title in self.panels:
            raise ConvNetVAEError(f"a panel titled {p.title!r} is already docked; give "
                                  "add_panel(..., title='another name')")
        self.panels[p.title] = p
        p.docked = True
        p.header.layout.display = "none"  # the section shows the title
        section = w.Accordion(children=[p.box], titles=(p.title,), selected_index=None,
                              layout=w.Layout(width="100%"))
        section.add_class("convnetvae-section")
        self._sections[p.title] = section
        self._dock.children = list(self._dock.children) + [section]
        if p is not getattr(getattr(self, "trainer", None), "panel", None):
            p.on_result(lambda _p: self.refresh())
        return p

    def open_panel(self, title: str, open: bool = True) -> None:
        """Open (or close) a docked panel; any number may be open at once."""
        if title not in self._sections:
            raise ConvNetVAEError(f"no panel titled {title!r}; panels: {list(self.panels)}")
        self._sections[title].selected_index = 0 if open else None

    def is_open(self, title: str) -> bool:
        """Whether the docked panel ``title`` is open."""
        return self._sections[title].selected_index == 0

    def add_panel(self, func: Callable[..., Any], *, title: str | None = None,
                  button_text: str = "Run", auto_call: bool = False, background: bool = True,
                  **options: dict) -> Panel:
        """Dock a panel built from ``func`` (see :func:`~convnetvae.widgets.panel`) and open it.

        ``ObsColumn`` / ``Layer`` parameters list this workbench's AnnData; a parameter
        annotated ``AnnData`` receives it; parameters named ``model`` and ``workbench``
        receive the current model and the workbench. It runs in the background
        (``background=False``: in the click handler); ``panel.wait()`` waits for it. After
        each run the views re-read the AnnData, so a function that adds an obs column or an
        ``obsm`` embedding shows up at once. The returned panel is shown in the workbench only,
        also when ``wb.add_panel(f)`` ends a cell.

        Returns
        -------
        Panel
        """
        p = panel(func, self.adata, title=title, button_text=button_text, auto_call=auto_call,
                  context=self._context, background=background, **options)
        self._add(p)
        self.open_panel(p.title)
        return p

    def busy(self) -> list[str]:
        """Names of the actions running now (training, panels, tracks)."""
        names = ["Train"] if self.is_training else []
        names += [t for t, p in self.panels.items() if p.busy and t != "Train"]
        return names + (["Show tracks"] if self.tracks.job.busy else [])

    def refresh(self) -> None:
        """Re-read the AnnData in every view and panel (new obs columns, obsm keys)."""
        with self._refresh_lock:  # background actions may finish at the same time
            for p in self.panels.values():
                p.refresh_choices()
            self.tracks.refresh()
            self.embedding.refresh()

    # ---- model ---------------------------------------------------------------------------
    @property
    def is_training(self) -> bool:
        """Whether a training run is in progress."""
        return self.trainer.is_training if hasattr(self, "trainer") else False

    def _trained_model(self) -> Any:
        m = self.model
        if m is None or self.is_training or not getattr(m, "is_trained", False):
            return None
        return m

    def _current_latent(self) -> Any:
        """``obsm["X_convnetvae"]`` when the current model made it (else ``None``)."""
        from ..evaluate.embedding import LATENT_KEY

        if self._latent_version != self.model_version or LATENT_KEY not in self.adata.obsm:
            return None
        z = self.adata.obsm[LATENT_KEY]
        return z if getattr(z, "shape", (0,))[0] == self.adata.n_obs else None

    def train(self, wait: bool = False, **values: Any) -> Any:
        """Set the Train panel's values and press Train (as a user would).

        Parameters
        ----------
        wait
            Block until training (and the embedding after it) has finished. Ctrl-C while
            waiting stops training and keeps the model and history so far.
        **values
            Train panel values: ``architecture``, ``likelihood``, ``max_epochs``,
            ``batch_size``, ``lr``, ``n_latent``, ``early_stopping``, ``continue_training``,
            ``embed_when_done``.

        Returns
        -------
        The model.
        """
        p = self.trainer.panel
        p.set_values(**values)
        p.run()
        if p.error is not None:
            raise p.error
        if wait:
            self.trainer.wait()
            if self.trainer.error is not None:
                raise self.trainer.error
        return self.model

    def use_data(self, modalities: list[str], labels_key: str | None) -> None:
        """The data panel's setup changed: the tracks show ``modalities``, scores use
        ``labels_key``."""
        self.labels_key = labels_key
        self.tracks.modalities.value = tuple(modalities)

    def use_model(self, model: Any) -> None:
        """Make ``model`` the workbench's model (the Train panel calls this, also when it goes
        on training the same model: its weights change)."""
        self.model = model
        self.model_version += 1

    def record_scib(self, table: pd.DataFrame) -> None:
        """Keep the Evaluate panel's last scIB table in ``self.scib``."""
        self.scib = table

    def stop(self) -> None:
        """Stop training after the current minibatch, keeping the model so far."""
        self.trainer.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for training (and the embedding after it) to end; ``True`` if it ended."""
        return self.trainer.wait(timeout)

    def embed_and_cluster(self, resolution: float = 1.0, method: str = "louvain",
                          n_neighbors: int = 20, layout: str = "umap",
                          labels_key: str | None = None, seed: int = 0) -> w.HTML:
        """Latent means -> ``obsm["X_convnetvae"]``, 2D layout -> ``obsm["X_convnetvae_umap"]``
        (or ``_pca``), clusters -> ``obs["convnetvae_clusters"]``; ARI/NMI against labels.

        The pipeline is :func:`convnetvae.evaluate.embedding.embed_and_cluster` (the demo's too).
        Returns an HTML summary; the views switch to the new embedding.
        """
        from ..evaluate.embedding import LATENT_KEY, embed_and_cluster

        if self.model is None:
            raise ConvNetVAEError("no model yet: train one in the Train panel first")
        if self.is_training:
            raise ConvNetVAEError("training is running: stop it or wait for it to finish")
        if not getattr(self.model, "is_trained", True):
            raise ConvNetVAEError("the model is not trained yet: press Train first")
        version = self.model_version
        res = embed_and_cluster(self.adata, self.model, resolution=resolution, method=method,
                                n_neighbors=n_neighbors, layout=layout, labels_key=labels_key,
                                seed=seed)
        self._latent_version = version
        lines = [f"{res.n_clusters} clusters ({method}, resolution {resolution:g}) in "
                 f"<code>obs[{CLUSTER_KEY!r}]</code>; embedding in "
                 f"<code>obsm[{LATENT_KEY!r}]</code>, layout in <code>obsm[{res.basis!r}]</code>"]
        self.cluster_scores: dict[str, float] = dict(res.scores)
        if labels_key:
            lines.append(f"against <i>{html.escape(labels_key)}</i>: ARI "
                         f"<b>{res.scores['ARI']:.3f}</b>, NMI <b>{res.scores['NMI']:.3f}</b>")
        with self._refresh_lock:
            for p in self.panels.values():
                p.refresh_choices()
            self.embedding.refresh(basis=res.basis, color=CLUSTER_KEY)
            self.tracks.refresh(group_by=CLUSTER_KEY)
        return w.HTML("<br>".join(lines))
