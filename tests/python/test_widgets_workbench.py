"""The Workbench driven headless: data -> train -> embed -> cluster, stop, Ctrl-C, own panels."""

from __future__ import annotations

import os
import signal
import threading
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import convnetvae
from convnetvae.errors import ConvNetVAEError
from convnetvae.widgets import ObsColumn, Workbench

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def adata() -> ad.AnnData:
    return convnetvae.simulate(n_cells=300, n_bins=400, n_types=4, n_batches=2, seed=3)


def _wait_for(cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_data_train_embed_cluster_tracks_evaluate(adata):
    wb = Workbench(adata)
    assert list(wb.panels) == ["Data", "Train", "Embed & cluster", "Evaluate", "Export"]
    bundle = wb._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == wb.widget.model_id

    # data: set up with guessed defaults on construction, summary shown
    data = wb.panels["Data"]
    assert data.error is None
    assert adata.uns["convnetvae"]["batch_key"] == "batch"
    assert adata.uns["convnetvae"]["labels_key"] == "cell_type"
    summary = data.output.children[0].value
    assert "300</b> cells" in summary and "H3K27me3" in summary
    data.set_values(modalities=["ATAC", "H3K27me3"])
    data.button.click()
    assert data.error is None
    assert adata.uns["convnetvae"]["modalities"] == ["ATAC", "H3K27me3"]
    assert wb.tracks.modalities.value == ("ATAC", "H3K27me3")
    # nothing to show in the embedding yet
    assert "train a model" in wb.embedding.plot.children[0].value

    # train: pressing the button returns at once; the run goes on in the background
    # PCA layout keeps this test fast; the UMAP layout runs in the notebook and browser tests
    wb.panels["Embed & cluster"].set_values(layout="pca", resolution=0.8)
    tp = wb.trainer
    tp.panel.set_values(max_epochs=4, batch_size=64, early_stopping=False)
    renders_before = tp.n_loss_renders
    t0 = time.perf_counter()
    tp.panel.button.click()
    assert time.perf_counter() - t0 < 2.0
    assert tp.panel.error is None
    assert wb.is_training and not tp.stop_button.disabled
    # a second press while training shows an error in the panel instead of a second run
    tp.panel.button.click()
    assert "already running" in str(tp.panel.error)
    # so does embedding before the model is ready
    wb.panels["Embed & cluster"].run(wait=True)
    assert "training is running" in str(wb.panels["Embed & cluster"].error)
    assert wb.wait(timeout=300)
    assert tp.error is None and tp.state == "finished"
    assert tp.progress.value == 4 == tp.progress.max and tp.progress.bar_style == "success"
    assert tp.stop_button.disabled
    assert len(wb.model.history_) == 4 and len(tp.history) == 4
    assert tp.n_loss_renders >= renders_before + 5  # one per epoch, and the final one
    assert tp.loss_image.value[:8] == PNG
    assert "finished after 4 epochs" in tp.status.value
    from convnetvae.model.registry import auto_architecture

    config = wb.model.module.config
    assert config.architecture == auto_architecture(wb.adata.n_vars, config.tie_loadings)  # auto

    # embed & cluster ran by itself when training ended
    emb = wb.panels["Embed & cluster"]
    assert emb.error is None, emb.error
    assert adata.obsm["X_convnetvae"].shape == (300, 30)
    assert adata.obsm["X_convnetvae_pca"].shape == (300, 2)
    clusters = adata.obs["convnetvae_clusters"]
    assert isinstance(clusters.dtype, pd.CategoricalDtype) and clusters.nunique() >= 2
    assert set(wb.cluster_scores) == {"ARI", "NMI"}
    assert -0.5 <= wb.cluster_scores["ARI"] <= 1 and 0 <= wb.cluster_scores["NMI"] <= 1
    assert "ARI" in emb.output.children[0].value
    # the embedding view switched to the new layout, coloured by cluster
    assert wb.embedding.basis.value == "X_convnetvae_pca"
    assert wb.embedding.color.value == "convnetvae_clusters"
    assert wb.embedding.plot.children == (wb.embedding.scatter.widget,)
    assert wb.embedding.scatter.widget.points.shape == (300, 4)
    wb.embedding.color.value = "batch"
    assert "coloured by <b>batch</b>" in wb.embedding.caption.value

    # re-cluster at a higher resolution with Leiden: more clusters, views follow
    n_before = clusters.nunique()
    emb.set_values(resolution=2.5, method="leiden")
    emb.button.click()
    assert emb.busy and emb.button.disabled  # in the background, the button disabled
    assert emb.wait(120)
    assert emb.error is None and not emb.button.disabled
    assert adata.obs["convnetvae_clusters"].nunique() >= n_before
    assert "leiden, resolution 2.5" in emb.output.children[0].value
    assert "resolution=2.5, method=&#x27;leiden&#x27;" in emb.caption.value

    # genome tracks per cluster, observed and imputed by the model
    assert wb.tracks.group_by.value == "convnetvae_clusters"
    wb.tracks.show.click()
    assert wb.tracks.wait(120)
    tr = wb.tracks.tracks
    assert tr is not None, wb.tracks.body.children[0].value
    assert set(tr.observed) == set(tr.imputed) == {"ATAC", "H3K27me3"}
    assert len(tr.groups) == min(12, adata.obs["convnetvae_clusters"].nunique())
    assert np.isfinite(tr.imputed["ATAC"]).all()
    assert wb.tracks.image.value[:8] == PNG

    # evaluate: scIB table
    ev = wb.panels["Evaluate"]
    assert ev.widgets["labels_key"].value == "cell_type"
    ev.button.click()
    assert ev.wait(120)
    assert ev.error is None, ev.error
    table = ev.result
    assert {"asw_batch", "asw_label", "nmi", "batch", "bio", "overall"} <= set(table["metric"])
    assert "<table" in ev.output.children[0].value
    assert table.set_index("metric").loc["overall", "value"] is not None
    # with a single batch the batch-removal metrics are undefined, and the table says why
    adata.obs["one_batch"] = "all"
    wb.refresh()
    ev.set_values(batch_key="one_batch")
    ev.button.click()
    assert ev.wait(120)
    assert ev.error is None, ev.error
    t1 = ev.result.set_index("metric")
    assert t1.loc["asw_batch", "value"] is None or np.isnan(t1.loc["asw_batch", "value"])
    assert "batch" in t1.loc["asw_batch", "note"]
    assert t1.loc["asw_label", "note"] == ""


def test_stop_mid_run_keeps_the_model_and_history(adata):
    wb = Workbench(adata)
    wb.panels["Embed & cluster"].set_values(layout="pca")
    tp = wb.trainer
    tp.panel.set_values(max_epochs=300, batch_size=32, early_stopping=False,
                        embed_when_done=True)
    tp.panel.button.click()
    _wait_for(lambda: tp.progress.value >= 2 or not wb.is_training)
    assert wb.is_training, f"training ended early: {tp.state} {tp.error!r}"
    tp.stop_button.click()
    assert wb.wait(timeout=120)
    assert tp.state == "stopped" and tp.error is None
    n = len(wb.model.history_)
    assert 2 <= n < 300
    assert tp.progress.bar_style == "warning"
    assert "stopped after" in tp.status.value and "model so far kept" in tp.status.value
    assert wb.model.is_trained
    # the model so far is usable and was embedded
    assert adata.obsm["X_convnetvae"].shape == (300, 30)
    assert np.isfinite(adata.obsm["X_convnetvae"]).all()
    assert wb.embedding.basis.value == "X_convnetvae_pca"
    # continue training the same model
    model = wb.model
    wb.train(wait=True, max_epochs=2, continue_training=True, embed_when_done=False)
    assert wb.model is model and len(model.history_) == 2 and tp.state == "finished"
    # a new workbench on a trained model embeds it straight away
    del adata.obsm["X_convnetvae"]
    wb2 = Workbench(adata, model=model)
    wb2.panels["Embed & cluster"].set_values(layout="pca")
    wb2.panels["Embed & cluster"].button.click()
    assert wb2.panels["Embed & cluster"].wait(120)
    assert wb2.panels["Embed & cluster"].error is None
    assert adata.obsm["X_convnetvae"].shape == (300, 30)


def test_ctrl_c_while_waiting_stops_cleanly(adata):
    wb = Workbench(adata)
    tp = wb.trainer
    fired = threading.Event()
    original = tp._on_epoch

    class _Done(threading.Event):
        """The trainer's done-event, noting when the main thread is blocked waiting on it."""

        def __init__(self) -> None:
            super().__init__()
            self.waiting = threading.Event()

        def wait(self, timeout=None):
            self.waiting.set()
            return super().wait(timeout)

    tp.done = _Done()
    tp.done.set()

    def on_epoch(epoch, row):  # once the main thread waits, the user presses Ctrl-C
        original(epoch, row)
        if tp.done.waiting.is_set() and not fired.is_set():
            fired.set()
            os.kill(os.getpid(), signal.SIGINT)

    tp._on_epoch = on_epoch
    # far more epochs than the interrupt needs: on a loaded machine the main thread may reach
    # its wait late, and a Ctrl-C at the last epoch rightly ends as "finished" (seen once at 300)
    model = wb.train(wait=True, max_epochs=3000, batch_size=32, early_stopping=False,
                     embed_when_done=False)
    assert fired.is_set()
    assert tp.state == "stopped" and not wb.is_training
    assert 1 <= len(model.history_) < 3000
    assert model.is_trained
    assert model.get_latent_representation().shape == (300, 30)


def test_training_errors_are_shown_not_raised_into_the_void(adata):
    wb = Workbench(adata)
    tp = wb.trainer
    tp.panel.set_values(max_epochs=2, lr=0.01)
    wb.model = None
    # a training failure inside the thread is shown in the train panel
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    import convnetvae.api as api

    orig = api.ConvNetVAE.train
    api.ConvNetVAE.train = boom
    try:
        tp.panel.button.click()
        assert wb.wait(timeout=60)
    finally:
        api.ConvNetVAE.train = orig
    assert tp.state == "failed" and isinstance(tp.error, RuntimeError)
    assert "out of memory (simulated)" in tp.status.value
    assert "convnetvae-error" in tp.panel.output.children[0]._dom_classes
    assert tp.progress.bar_style == "danger"
    assert not wb.is_training  # and the workbench can train again
    wb.train(wait=True, max_epochs=1, embed_when_done=False)
    assert tp.state == "finished"


def test_train_panel_time_budget_reaches_the_length_rule(adata, monkeypatch):
    from convnetvae import schedule

    seen = []

    def rule(n_train, n_bins, n_modalities, batch_size, flops_per_cell, n_parameters, *,
             time_budget):
        seen.append(time_budget)
        return 2 * schedule.steps_per_epoch(n_train, batch_size)

    monkeypatch.setattr(schedule, "AUTO_RULE", rule)
    wb = Workbench(adata)
    tp = wb.trainer
    field = tp.panel.widgets["time_budget"]
    assert field.value == 1.0 and (field.min, field.max) == (0.25, 16.0)
    tp.panel.set_values(time_budget=3.0, batch_size=64)
    tp.panel.button.click()
    assert wb.wait(timeout=300)
    assert tp.error is None and tp.state == "finished"
    assert seen == [3.0] and len(wb.model.history_) == 2
    # with a fixed length the budget has no say: the error is shown in the panel
    tp.panel.set_values(max_epochs=2)
    tp.panel.button.click()
    assert wb.wait(timeout=60)
    assert tp.state == "failed" and "max_epochs=2 fixes it" in str(tp.error)


def test_user_panels_dock_and_update_the_views(adata):
    wb = Workbench(adata)

    def mark_deep_cells(data: ad.AnnData, layer_total: ObsColumn = "n_counts_ATAC",
                        quantile: float = 0.5) -> str:
        """Flag cells above a quantile of a count column."""
        cut = data.obs[layer_total].quantile(quantile)
        data.obs["deep"] = pd.Categorical(np.where(data.obs[layer_total] > cut, "deep",
                                                   "shallow"))
        data.obsm["X_counts2d"] = np.log1p(data.obs[["n_counts_ATAC",
                                                     "n_counts_H3K27ac"]].to_numpy(float))
        return f"cut at {cut:.0f}"

    p = wb.add_panel(mark_deep_cells, quantile={"min": 0.0, "max": 1.0})
    assert wb.panels["Mark deep cells"] is p
    assert wb._sections["Mark deep cells"].children == (p.box,)
    assert wb.is_open("Mark deep cells") and wb.is_open("Train")  # several panels open
    # as the last line of a cell it is not displayed a second time (it is in the workbench)
    assert "application/vnd.jupyter.widget-view+json" not in p._repr_mimebundle_()
    assert "docked" in p._repr_mimebundle_()["text/plain"]
    assert p.widgets["layer_total"].value == "n_counts_ATAC"
    p.button.click()
    assert p.wait(60)
    assert p.error is None and p.result.startswith("cut at")
    # the views re-read the AnnData: new column and new embedding are offered and drawn
    assert "deep" in [o[1] for o in wb.embedding.color.options]
    assert "deep" in [o[1] for o in wb.tracks.group_by.options]
    assert wb.embedding.basis.value == "X_counts2d"
    assert wb.embedding.scatter.widget.points.shape == (300, 4)
    # other panels' column dropdowns see it too
    assert "deep" in [o[1] for o in wb.panels["Evaluate"].widgets["labels_key"].options]

    def needs_model(model, n: int = 3) -> int:
        return model.n_parameters

    q = wb.add_panel(needs_model)
    assert list(q.widgets) == ["n"]
    q.run(wait=True)
    assert isinstance(q.error, ConvNetVAEError) and "Train panel" in str(q.error)

    def broken(x: int = 1) -> None:
        raise KeyError("no such bin")

    b = wb.add_panel(broken, title="Broken", background=False)
    b.button.click()
    assert "KeyError" in b.output.children[0].value and not b.button.disabled
    with pytest.raises(ConvNetVAEError, match="already docked"):
        wb.add_panel(broken, title="Broken")


def test_embed_without_a_model_and_bad_inputs(adata):
    wb = Workbench(adata)
    emb = wb.panels["Embed & cluster"]
    emb.run(wait=True)
    assert isinstance(emb.error, ConvNetVAEError) and "Train panel" in str(emb.error)
    ev = wb.panels["Evaluate"]
    ev.run(wait=True)
    assert "press Embed first" in str(ev.error)
    data = wb.panels["Data"]
    data.set_values(modalities=[])
    data.run()
    assert "at least one modality" in str(data.error)
    with pytest.raises(ConvNetVAEError, match="needs an AnnData"):
        Workbench(np.zeros((3, 3)))
    with pytest.raises(ConvNetVAEError, match="no layers"):
        Workbench(ad.AnnData(np.zeros((3, 3))))
    # data that breaks the contract (no bin coordinates): the workbench opens and says why
    bad = ad.AnnData(obs=pd.DataFrame({"batch": ["a", "b", "a"]}, index=["x", "y", "z"]),
                     var=pd.DataFrame(index=["b0", "b1"]),
                     layers={"ATAC": sp.csr_matrix(np.ones((3, 2), dtype=np.int32))})
    wb_bad = Workbench(bad)
    assert isinstance(wb_bad.panels["Data"].error, ConvNetVAEError)
    assert "chrom" in str(wb_bad.panels["Data"].error)
    assert wb_bad.is_open("Data")  # the Data panel is open, showing the error
    wb_bad.tracks.show.click()
    assert wb_bad.tracks.wait(60)
    assert "convnetvae-error" in wb_bad.tracks.body.children[0]._dom_classes
