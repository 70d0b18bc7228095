"""The workbench never freezes: long actions in the background with a busy state, captioned
output, no stale output, no silent queueing; layout; the UMAP on the workbench's own graph;
export."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

import convnetvae
from convnetvae.widgets import Workbench, panel
from convnetvae.widgets.jobs import Job


@pytest.fixture(scope="module")
def trained():
    adata = convnetvae.simulate(n_cells=300, n_bins=400, n_types=4, n_batches=2, seed=5)
    wb = Workbench(adata)
    wb.panels["Embed & cluster"].set_values(layout="pca")
    wb.train(wait=True, max_epochs=2, batch_size=64, early_stopping=False)
    return wb


def test_a_background_panel_is_busy_refuses_clicks_and_captions_its_output():
    gate = threading.Event()
    calls = []

    def slow(n: int = 1) -> str:
        calls.append(n)
        gate.wait(30)
        return f"done with {n}"

    p = panel(slow, background=True)
    p.set_values(n=7)
    t0 = time.perf_counter()
    p.button.click()
    assert time.perf_counter() - t0 < 1.0  # the click handler returns at once
    assert p.busy and p.button.disabled and p.button.description == "Running…"
    busy = p.output.children[0]
    assert "convnetvae-busy" in busy._dom_classes and "n=7" in busy.value
    assert p.caption.value == ""  # no caption of an older result while running
    p.set_values(n=8)
    p.button.click()  # a click while running: refused, and the panel says so
    assert p.job.n_refused == 1 and "1 request while running ignored" in \
        p.output.children[0].value
    gate.set()
    assert p.wait(30)
    assert calls == [7]  # the refused click did not run later either
    assert p.result == "done with 7" and not p.busy and not p.button.disabled
    assert p.button.description == "Run"
    assert "n=7" in p.caption.value and " s &middot; " in p.caption.value
    # the next run replaces the output: nothing stale
    p.button.click()
    assert p.wait(30) and p.result == "done with 8" and "n=8" in p.caption.value
    assert [c.value for c in p.output.children] == ["<pre>&#x27;done with 8&#x27;</pre>"]


def test_latest_request_wins_and_the_older_result_is_dropped():
    import ipywidgets as w

    out = w.VBox()
    button = w.Button(description="Show")
    job = Job("Show", button, out, when_busy="latest")
    gates = {k: threading.Event() for k in "abc"}
    shown = []

    def request(k):
        def run():
            gates[k].wait(30)
            return k
        job.submit(run, {"region": k}, lambda r: shown.append(r) or [w.HTML(r)])

    request("a")
    request("b")  # while a runs: b waits, visibly
    assert "then, as asked last" in out.children[0].value and "b" in out.children[0].value
    request("c")  # c replaces b as the latest request
    assert "&#x27;c&#x27;" in out.children[0].value
    for k in "abc":
        gates[k].set()
    assert job.wait(30)
    assert shown == ["c"]  # a's result was superseded, b never ran
    assert job.n_superseded == 1 and "region=&#x27;c&#x27;" in job.caption.value
    assert out.children[0].value == "c" and not button.disabled


def test_clicking_elsewhere_while_a_long_action_runs(trained):
    wb = trained
    gate = threading.Event()

    def long_action(n: int = 1) -> str:
        gate.wait(30)
        return "long done"

    p = wb.add_panel(long_action)
    p.button.click()
    assert p.busy and wb.busy() == ["Long action"]
    # meanwhile: colour the embedding, compute tracks, evaluate
    wb.embedding.color.value = "batch"
    assert "coloured by <b>batch</b>" in wb.embedding.caption.value
    wb.tracks.render(wait=True)
    assert wb.tracks.tracks is not None and wb.tracks.job.error is None
    ev = wb.panels["Evaluate"]
    ev.button.click()
    assert ev.wait(120) and ev.error is None
    assert p.busy  # still running, untouched
    gate.set()
    assert p.wait(30) and p.result == "long done"


def test_tracks_reuse_current_latent_means_and_not_stale_ones(trained, monkeypatch):
    wb = trained
    model = wb.model
    assert wb._current_latent() is not None  # embedded by this model
    calls = []
    orig = model.get_latent_representation
    monkeypatch.setattr(model, "get_latent_representation",
                        lambda *a, **k: calls.append(1) or orig(*a, **k))
    wb.tracks.group_by.value = "cell_type"
    wb.tracks.render(wait=True)
    assert calls == [] and set(wb.tracks.tracks.imputed) == set(model.modalities)
    assert "model=&#x27;trained&#x27;" in wb.tracks.caption.value
    wb.use_model(model)  # e.g. training goes on: the stored latent means are stale
    assert wb._current_latent() is None
    wb.tracks.render(wait=True)
    assert calls == [1]


def test_layout_several_panels_open_training_monitor_in_view(trained):
    wb = trained
    side, main = wb.widget.children[1].children
    assert side.children[0] is wb.trainer.monitor  # above the panels, outside any of them
    assert wb.trainer.progress in wb.trainer.monitor.children
    assert wb.trainer.loss_image in wb.trainer.monitor.children
    wb.open_panel("Train")
    wb.open_panel("Evaluate")
    wb.open_panel("Export")
    assert wb.is_open("Train") and wb.is_open("Evaluate") and wb.is_open("Export")
    wb.open_panel("Export", open=False)
    assert not wb.is_open("Export") and wb.is_open("Train")
    assert wb.widget.layout.width == "100%" and main.layout.flex == "1 1 0%"
    # None choices show their label
    assert wb.tracks.group_by.options[0] == ("(all cells)", None)
    wb.tracks.group_by.value = None
    assert wb.tracks.group_by.label == "(all cells)"
    ev = wb.panels["Evaluate"].widgets["batch_key"]
    ev.value = None
    assert ev.label == "(none)" and ev.index == 0


def test_umap_reuses_the_knn_graph_without_scanpy_neighbors(trained, monkeypatch):
    import scanpy as sc

    from convnetvae.evaluate.embedding import NEIGHBORS_KEY
    from convnetvae.evaluate.neighbors import fuzzy_connectivities, knn

    def forbidden(*a, **k):
        raise AssertionError("sc.pp.neighbors must not run: the graph is reused")

    monkeypatch.setattr(sc.pp, "neighbors", forbidden)
    wb = trained
    emb = wb.panels["Embed & cluster"]
    emb.set_values(layout="umap", n_neighbors=20)
    emb.run(wait=True)
    assert emb.error is None, emb.error
    adata = wb.adata
    assert adata.obsm["X_convnetvae_umap"].shape == (adata.n_obs, 2)
    nb = adata.uns[NEIGHBORS_KEY]
    assert nb["params"]["n_neighbors"] == 15 and nb["params"]["method"] == "umap"
    expected = fuzzy_connectivities(knn(adata.obsm["X_convnetvae"], k=20).subset_k(14))
    got = adata.obsp[nb["connectivities_key"]]
    # the same graph (threaded distance sums may swap a near-tied 14th neighbour of a cell)
    assert got.nnz == expected.nnz
    assert (abs(got - expected) > 1e-9).nnz <= 0.01 * expected.nnz
    assert wb.embedding.basis.value == "X_convnetvae_umap"
    emb.set_values(layout="pca")


def test_export_clusters_and_selections_to_csv_and_h5ad(trained, tmp_path):
    import anndata as ad

    wb = trained
    wb.embedding.select(np.arange(0, 300, 3))
    wb.embedding.write_selection("lasso_a", "A")
    ex = wb.panels["Export"]
    ex(path=str(tmp_path / "cells.csv"))
    assert ex.error is None, ex.error
    table = pd.read_csv(tmp_path / "cells.csv", index_col="cell")
    basis = wb.embedding.basis.value
    assert list(table.columns) == ["convnetvae_clusters", "lasso_a", f"{basis}_1", f"{basis}_2"]
    assert (table["lasso_a"] == "A").sum() == 100
    assert table.index.tolist() == wb.adata.obs_names.tolist()
    ex(path=str(tmp_path / "all"), file_format="h5ad")
    back = ad.read_h5ad(tmp_path / "all.h5ad")
    assert (back.obs["lasso_a"] == "A").sum() == 100 and "convnetvae_clusters" in back.obs


def test_an_auto_call_panel_shows_the_latest_values_only():
    gate = threading.Event()
    seen = []

    def echo(n: int = 0) -> int:
        gate.wait(30)
        seen.append(n)
        return n

    p = panel(echo, auto_call=True, background=True)
    for n in (1, 2, 3):  # quick successive edits while the first one runs
        p.widgets["n"].value = n
    gate.set()
    assert p.wait(30)
    assert seen[-1] == 3 and 2 not in seen  # 2 was replaced by 3 before it ran
    assert p.result == 3 and "n=3" in p.caption.value
