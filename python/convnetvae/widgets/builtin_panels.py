"""The workbench's built-in panels: data, train, embed & cluster, evaluate, export.

Each is an ordinary annotated function turned into a form with :func:`panel`, exactly as a
user's own panel is; the train panel adds a stop button, and a monitor (progress bar, status,
live loss curve) that the workbench keeps visible above its panels. Embed & cluster, Evaluate
and Export run in the background.
The functions reach the workbench through a closure, so they stay plain functions; they read its
``adata``, ``model`` and ``labels_key`` and change it only through its public methods
(``use_data``, ``use_model``, ``record_scib``, ``embed_and_cluster``, ``refresh``). This module
does not import the workbench.
"""

from __future__ import annotations

import html
import inspect
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import ipywidgets as w
import numpy as np
import pandas as pd

from .. import settings
from ..errors import ConvNetVAEError
from ..evaluate.embedding import CLUSTER_KEY, LATENT_KEY, NEIGHBORS_KEY  # noqa: F401
from ..settings import ModelSettings, TrainSettings
from .annotations import Layer, ObsColumn
from .panel import Panel, panel
from .plots import loss_figure
from .render import error_widget, figure_to_png, html_box

#: the Train panel's own options (not model or training settings): name, default, doc
_TRAIN_PANEL_OPTIONS = (
    ("continue_training", False, "Keep training the current model instead of starting a new one."),
    ("embed_when_done", True, "Embed, lay out and cluster as soon as training ends."),
)


def _train_function(start: Any) -> Any:
    """The Train panel's function: its parameters are the settings the schema marks for the
    panel (:func:`convnetvae.settings.widget_parameters`) plus the panel's own options."""
    params = (settings.widget_parameters(ModelSettings)
              + settings.widget_parameters(TrainSettings)
              + [(n, bool, d, doc) for n, d, doc in _TRAIN_PANEL_OPTIONS])

    def train(**values: Any) -> w.HTML:
        return start(**values)

    train.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
         for n, a, d, _ in params])
    train.__doc__ = ("Train a ConvNet-VAE in the background (the notebook stays usable).\n\n"
                     "Parameters\n----------\n"
                     + "".join(f"{n}\n    {doc}\n" for n, _, _, doc in params))
    return train

_BATCH_GUESSES = ("batch", "sample", "batch_key", "donor", "library")
_LABEL_GUESSES = ("cell_type", "celltype", "cell_types", "labels", "label", "annotation")


def _names(cls: type) -> set[str]:
    return {s.name for s in settings.schema(cls)}


def _guess(adata: Any, names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in adata.obs.columns:
            return n
    return None


def first_list(*candidates: Any) -> list[str]:
    """The first non-empty candidate as a list of str (``uns`` lists come back from an h5ad
    file as numpy arrays, whose truth value is ambiguous)."""
    for c in candidates:
        if c is not None and len(c) > 0:
            return [str(x) for x in c]
    return []


def _summary_html(adata: Any, reg: dict) -> str:
    mods = reg["modalities"]
    rows = []
    for m in mods:
        lib = np.asarray(adata.layers[m].sum(axis=1)).ravel()
        observed = lib > 0
        med = float(np.median(lib[observed])) if observed.any() else 0.0
        rows.append(f"<tr><td>{html.escape(m)}</td><td>{med:,.0f}</td>"
                    f"<td>{observed.mean():.0%}</td></tr>")
    parts = [f"<b>{adata.n_obs:,}</b> cells &times; <b>{adata.n_vars:,}</b> bins on "
             f"{len(reg.get('chromosomes', []))} chromosomes",
             "<table><tr><th>modality</th><th>median counts</th><th>cells with it</th></tr>"
             + "".join(rows) + "</table>"]
    if reg.get("batch_key"):
        counts = adata.obs[reg["batch_key"]].astype(str).value_counts()
        parts.append(f"batches ({html.escape(reg['batch_key'])}): "
                     + ", ".join(f"{html.escape(k)} {v:,}" for k, v in counts.items()))
    if reg.get("labels_key"):
        n = adata.obs[reg["labels_key"]].nunique()
        parts.append(f"labels ({html.escape(reg['labels_key'])}): {n} categories")
    return "<br>".join(parts)


def data_panel(wb: Any) -> Panel:
    """The data panel: modalities, batch and label columns, and a summary of the data."""
    adata = wb.adata
    reg = adata.uns.get("convnetvae") if isinstance(adata.uns.get("convnetvae"), dict) else {}
    mods_default = tuple(first_list(reg.get("modalities"), adata.uns.get("modalities"),
                                    adata.layers.keys()))
    batch_default = reg.get("batch_key", _guess(adata, _BATCH_GUESSES)) if reg else \
        _guess(adata, _BATCH_GUESSES)
    labels_default = reg.get("labels_key", _guess(adata, _LABEL_GUESSES)) if reg else \
        _guess(adata, _LABEL_GUESSES)

    def data(modalities: list[Layer] = mods_default,
             batch_key: ObsColumn | None = batch_default,
             labels_key: ObsColumn | None = labels_default) -> w.HTML:
        """Choose the modalities (layers) to model, the batch column to correct and the label
        column to score against.

        Parameters
        ----------
        modalities
            Count layers, one per modality, in channel order.
        batch_key
            obs column with the sample / batch of each cell (its effect is removed).
        labels_key
            obs column with known cell labels (for ARI / NMI and scIB; optional).
        """
        if not modalities:
            raise ConvNetVAEError("choose at least one modality (a layer of adata)")
        if wb.is_training or "Embed & cluster" in wb.busy():
            raise ConvNetVAEError("training or embedding is running: wait for it (or stop "
                                  "training) before changing the data setup")
        from ..api import ConvNetVAE

        ConvNetVAE.setup_anndata(adata, modalities=list(modalities), batch_key=batch_key,
                                 labels_key=labels_key)
        wb.use_data(list(modalities), labels_key)
        return w.HTML(_summary_html(adata, adata.uns["convnetvae"]))

    return panel(data, adata, title="Data", button_text="Apply")


class TrainPanel:
    """The train panel: a form (architecture, likelihood, epochs...), start and stop buttons,
    a progress bar and a live loss curve. Training runs in a background thread, so the
    notebook stays responsive; stopping keeps the model (best weights) and history so far."""

    def __init__(self, wb: Any) -> None:
        self.wb = wb
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.done.set()
        self.error: BaseException | None = None
        self.history: list[dict] = []
        self.n_loss_renders = 0
        self.state = "idle"  # idle | training | stopping | finished | stopped | failed

        train = _train_function(self.start)
        self.panel = panel(train, wb.adata, title="Train", button_text="Train")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning",
                                    disabled=True, tooltip="stop after the current minibatch, "
                                    "keeping the best model so far")
        self.stop_button.add_class("convnetvae-stop")
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Epochs",
                                      style={"description_width": "60px"},
                                      layout=w.Layout(width="98%"))
        self.status = w.HTML("not trained yet")
        self.status.add_class("convnetvae-train-status")
        self.loss_image = w.Image(format="png", layout=w.Layout(max_width="100%",
                                                                display="none"))
        self.loss_image.add_class("convnetvae-loss")
        #: progress, status and loss: shown above the workbench's panels, whichever are open
        self.monitor = w.VBox([self.progress, self.status, self.loss_image],
                              layout=w.Layout(width="100%"))
        self.monitor.add_class("convnetvae-train-monitor")
        box = self.panel.box
        kids = list(box.children)
        i = kids.index(self.panel.button)
        kids[i] = w.HBox([self.panel.button, self.stop_button])
        box.children = kids

    # ---- control -----------------------------------------------------------------------
    @property
    def is_training(self) -> bool:
        """True from pressing Train until the model has stopped changing."""
        return self.state in ("training", "stopping")

    def start(self, **cfg: Any) -> w.HTML:
        """Create (or reuse) the model and start training it in a background thread."""
        wb = self.wb
        if self.is_training or not self.done.is_set():
            raise ConvNetVAEError("training is already running: press Stop or wait for it")
        if "convnetvae" not in wb.adata.uns:
            raise ConvNetVAEError("the data is not set up: press Apply in the Data panel first")
        others = [n for n in wb.busy() if n in ("Embed & cluster", "Data")]
        if others:
            raise ConvNetVAEError(f"{others[0]} is running: wait for it, then train")
        from ..api import ConvNetVAE

        model = wb.model
        model_kw = {k: v for k, v in cfg.items() if k in _names(ModelSettings)}
        train_kw = {k: v for k, v in cfg.items() if k in _names(TrainSettings)}
        if model is None or not cfg["continue_training"]:
            model = ConvNetVAE(wb.adata, **model_kw)
        wb.use_model(model)  # new weights from now on: cached embeddings are stale
        embed = wb.panels.get("Embed & cluster")
        if cfg["embed_when_done"] and embed is not None and \
                embed.widgets["layout"].value == "umap":
            warm_up_layout()
        self.stop_event = threading.Event()
        self.done.clear()
        self.error = None
        self.history = []
        self.state = "training"
        self._model = model
        # an auto-length run: the planned epochs are known once training starts (_on_epoch)
        self.progress.max = int(cfg.get("max_epochs") or 1)
        self.progress.value = 0
        self.progress.bar_style = "info"
        self.stop_button.disabled = False
        self.loss_image.layout.display = None
        self.status.value = f"training {html.escape(model.module.config.architecture)} &hellip;"
        self._render_loss(self.progress.max)
        self.thread = threading.Thread(target=self._worker, name="convnetvae-train",
                                       args=(model, train_kw, bool(cfg["embed_when_done"])),
                                       daemon=True)
        self.thread.start()
        return html_box(f"started: {html.escape(repr(model))}", "info")

    def stop(self) -> None:
        """Ask training to stop after the current minibatch (the model so far is kept)."""
        if self.is_training:
            self.state = "stopping"
            self.status.value = "stopping after the current minibatch &hellip;"
            self.stop_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until training (and the embedding after it) has finished; ``True`` if it did.

        Ctrl-C (a kernel interrupt) while waiting stops training cleanly and keeps the model
        and history so far.
        """
        try:
            return self.done.wait(timeout)
        except KeyboardInterrupt:
            self.stop()
            self.done.wait()
            return True

    # ---- the background thread ---------------------------------------------------------
    def _on_epoch(self, epoch: int, row: dict) -> None:
        self.history.append(dict(row))
        planned = self._model.trainer_.plan.epochs  # trainer_ is set when training starts
        if planned != self.progress.max:
            self.progress.max = int(planned)
        self.progress.value = min(int(epoch), self.progress.max)
        loss = row.get("train_loss", float("nan"))
        val = row.get("validation_loss")
        self.status.value = (f"epoch {epoch}/{self.progress.max}: loss {loss:,.1f}"
                             + (f", validation {val:,.1f}" if val is not None else ""))
        self._render_loss(self.progress.max)

    def _render_loss(self, max_epochs: int | None = None) -> None:
        self.loss_image.value = figure_to_png(loss_figure(self.history, max_epochs=max_epochs))
        self.n_loss_renders += 1

    def _worker(self, model: Any, kwargs: dict, embed_when_done: bool) -> None:
        try:
            model.train(progress=False, callback=self._on_epoch, stop_event=self.stop_event,
                        **kwargs)
            self.history = list(model.history_)
            stopped = bool(model.train_config.get("interrupted")) or self.stop_event.is_set()
            self.state = "stopped" if stopped else "finished"
            n = len(model.history_)
            best = model.train_config.get("best_epoch")
            self.status.value = (
                f"{'stopped' if stopped else 'finished'} after {n} epoch{'s' * (n != 1)}"
                + (f"; best epoch {best}" if best else "")
                + (" (model so far kept)" if stopped else ""))
            self.progress.bar_style = "warning" if stopped else "success"
            self._render_loss(self.progress.max)
            with self.panel._lock:  # after the Train press has shown "started"
                self.panel.output.children = [html_box(html.escape(repr(model)),
                                                       "warning" if stopped else "success")]
        except Exception as exc:  # shown in the panel; the workbench keeps working
            self.error = exc
            self.state = "failed"
            self.progress.bar_style = "danger"
            self.status.value = html.escape(f"training failed: {type(exc).__name__}: {exc}")
            with self.panel._lock:
                self.panel.output.children = [error_widget(exc)]
        finally:
            self.stop_button.disabled = True
        try:
            if embed_when_done and self.error is None and model.is_trained:
                self.wb.panels["Embed & cluster"].run(wait=True)
            self.wb.refresh()
        finally:
            self.done.set()


def embed_panel(wb: Any) -> Panel:
    """Embed (latent means), lay out (UMAP or PCA) and cluster (Louvain / Leiden)."""

    def embed_and_cluster(resolution: Annotated[float, {"min": 0.1, "max": 3.0,
                                                        "step": 0.1}] = 1.0,
                          method: Literal["louvain", "leiden"] = "louvain",
                          n_neighbors: Annotated[int, {"min": 5, "max": 100}] = 20,
                          layout: Literal["umap", "pca"] = "umap",
                          labels_key: ObsColumn | None = None) -> w.HTML:
            """Embed the cells with the model, lay the embedding out in 2D and cluster it.

            Parameters
            ----------
            resolution
                Clustering resolution (higher gives more clusters).
            n_neighbors
                k of the kNN graph (the paper uses 20).
            layout
                UMAP (scanpy) or the first two principal components of the latent space.
            labels_key
                Known labels to score the clusters against (ARI / NMI).
            """
            return wb.embed_and_cluster(resolution=resolution, method=method,
                                        n_neighbors=n_neighbors, layout=layout,
                                        labels_key=labels_key)

    # runs from the training thread too: do not swap sys.stdout under the user's feet
    p = panel(embed_and_cluster, wb.adata, title="Embed & cluster", button_text="Embed",
              capture_stdout=False, background=True)
    if wb.labels_key in wb.adata.obs.columns:
        p.widgets["labels_key"].value = wb.labels_key
    return p


def evaluate_panel(wb: Any) -> Panel:
    """scIB integration metrics of the embedding (batch removal and biology conservation)."""

    def evaluate(labels_key: Annotated[str, ObsColumn(kind="categorical")] = wb.labels_key or "",
                 batch_key: Annotated[str, ObsColumn(kind="categorical")] | None = None
                 ) -> pd.DataFrame:
        """scIB metrics of the embedding: batch removal (ASW batch, graph connectivity, iLISI,
        kBET) and biology conservation (ASW label, NMI, cLISI); overall = 0.4 batch + 0.6 bio.

        Parameters
        ----------
        labels_key
            obs column with the known cell labels.
        batch_key
            obs column with the batches (default: the data panel's batch column).
        """
        if LATENT_KEY not in wb.adata.obsm:
            raise ConvNetVAEError(f"no embedding in adata.obsm[{LATENT_KEY!r}]: train, then "
                                  "press Embed first")
        from ..evaluate.scib import scib_metrics

        reg = wb.adata.uns.get("convnetvae", {})
        batch_key = batch_key or reg.get("batch_key")
        batches = wb.adata.obs[batch_key].astype(str).to_numpy() if batch_key else None
        res = scib_metrics(wb.adata.obsm[LATENT_KEY],
                           wb.adata.obs[labels_key].astype(str).to_numpy(), batches)
        d = res.to_dict()
        d.pop("undefined", None)
        reasons = dict(res.reasons)
        if d.get("overall") is None:
            reasons.setdefault("overall", "batch or biology score undefined")
        table = pd.DataFrame({"metric": list(d), "value": list(d.values()),
                              "note": [reasons.get(k, "") for k in d]})
        wb.record_scib(table)
        return table

    return panel(evaluate, wb.adata, title="Evaluate", button_text="Evaluate",
                 capture_stdout=False, background=True)


def export_panel(wb: Any) -> Panel:
    """Export clusters, selections (or any obs columns) and the 2D layout to CSV, or the whole
    AnnData to an h5ad file."""

    def export(columns: list[ObsColumn] = (),
               path: Path = Path("convnetvae_cells.csv"),
               file_format: Literal["csv", "h5ad"] = "csv",
               with_layout: bool = True) -> w.HTML:
        """Write the chosen obs columns (clusters, saved lasso selections...) to a CSV file, one
        row per cell, or the AnnData with all its columns to an h5ad file.

        Parameters
        ----------
        columns
            obs columns to write to the CSV (none chosen: the clusters and the saved lasso
            selections; the AnnData holds them all already).
        path
            File to write (relative to the notebook's folder).
        file_format
            csv: cell id and the chosen columns; h5ad: the whole AnnData.
        with_layout
            Add the 2D coordinates shown in the Embedding view to the CSV.
        """
        path = Path(path)
        if file_format == "h5ad":
            if path.suffix != ".h5ad":
                path = path.with_suffix(".h5ad")
            wb.adata.write_h5ad(path)
            what = "the AnnData (all obs columns, embeddings and layers)"
        else:
            columns = list(columns) or [c for c in [CLUSTER_KEY, *wb.embedding.saved_columns]
                                        if c in wb.adata.obs.columns]
            if not columns and not with_layout:
                raise ConvNetVAEError("nothing to export: no clusters or saved selections yet; "
                                      "choose obs columns")
            table = wb.adata.obs[list(dict.fromkeys(columns))].copy()
            basis = wb.embedding.basis.value
            if with_layout and basis in wb.adata.obsm:
                xy = np.asarray(wb.adata.obsm[basis])[:, :2]
                table[f"{basis}_1"], table[f"{basis}_2"] = xy[:, 0], xy[:, 1]
            table.index.name = "cell"
            table.to_csv(path)
            what = f"{len(table.columns)} columns ({html.escape(', '.join(table.columns))})"
        return html_box(f"wrote {what} of {wb.adata.n_obs:,} cells to "
                        f"<code>{html.escape(str(path.resolve()))}</code>", "success")

    return panel(export, wb.adata, title="Export", button_text="Export", capture_stdout=False,
                 background=True)


_WARM = threading.Lock()
_warmed = False


def warm_up_layout() -> None:
    """Prepare UMAP in a background thread while training runs: import umap (pynndescent
    compiles numba code for about 15 s at import) and lay out 64 random points the way
    :func:`~convnetvae.evaluate.embedding.embed_and_cluster` does (numba compiles UMAP's
    optimiser on first use), so the embedding after training waits for neither."""
    global _warmed
    with _WARM:
        if _warmed:
            return
        _warmed = True
    threading.Thread(target=_warm_umap, name="convnetvae-warm-umap", daemon=True).start()


def _warm_umap() -> None:
    try:
        import anndata
        import scanpy as sc

        from ..evaluate.embedding import store_neighbors
        from ..evaluate.neighbors import knn

        z = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
        a = anndata.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(64)]))
        a.obsm[LATENT_KEY] = z
        store_neighbors(a, knn(z, k=14), "warm")
        sc.tl.umap(a, neighbors_key="warm", maxiter=2)
    except Exception:  # the real layout will say what is wrong
        pass
