"""Views of the workbench: embedding scatter (100,000 cells), genome tracks, loss curve."""

from __future__ import annotations

import anndata as ad
import ipywidgets as w
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from convnetvae.errors import ConvNetVAEError
from convnetvae.widgets.plots import loss_figure
from convnetvae.widgets.render import figure_to_png
from convnetvae.widgets.tracks import compute_tracks, default_region, parse_region
from convnetvae.widgets.views import EmbeddingView, GenomeTrackView, embedding_bases

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def big() -> ad.AnnData:
    rng = np.random.default_rng(0)
    n = 100_000
    centres = rng.normal(scale=6, size=(12, 2))
    cluster = rng.integers(0, 12, n)
    obs = pd.DataFrame({
        "cluster": pd.Categorical(cluster.astype(str)),
        "depth": rng.lognormal(7, 0.5, n),
    }, index=[f"c{i}" for i in range(n)])
    a = ad.AnnData(obs=obs, var=pd.DataFrame(index=["b0"]))
    a.obsm["X_umap"] = centres[cluster] + rng.normal(size=(n, 2))
    return a


def test_embedding_of_100k_cells_is_interactive(big, tmp_path, monkeypatch):
    view = EmbeddingView(big)
    assert view.basis.value == "X_umap" and view.color.value == "cluster"
    # a jupyter-scatter widget (WebGL: zoom, pan, hover, lasso in the browser)
    assert view.plot.children == (view.scatter.widget,)
    assert view.scatter.widget.points.shape == (100_000, 4)
    assert list(view.frame.columns) == ["x", "y", "cell", "cluster"]
    assert view.scatter.widget.tooltip_enable
    assert view.scatter.widget.mouse_mode == "panZoom"
    assert "100,000 cells" in view.caption.value and "12 groups" in view.caption.value
    # CPU time, so a busy machine does not make the test flaky (about 0.3 s when idle)
    assert view.render_cpu_seconds < 2.0, f"100,000 cells took {view.render_cpu_seconds:.2f} s"
    view.color.value = "depth"  # a continuous column: colour bar clipped at percentiles
    lo, hi = np.percentile(big.obs["depth"], [1, 99])
    assert view.scatter.widget.color_domain == pytest.approx([lo, hi])
    assert view.frame["depth"].max() == pytest.approx(hi)
    assert "clipped at the 1st&ndash;99th percentile" in view.caption.value
    assert view.render_cpu_seconds < 2.0
    view.color.value = None
    assert view.n_renders == 3 and view.scatter.widget.color_by is None
    assert view.color.index == 0 and view.color.label == "(none)"  # not an empty box

    # a lasso selection (what the browser writes into the widget) becomes an obs column
    assert view.save_selection.disabled
    view.scatter.widget.selection = np.arange(0, 100_000, 7, dtype=np.uint32)
    assert "14,286</b> cells selected" in view.selection_info.value
    assert not view.save_selection.disabled
    view.selection_column.value = "picked"
    view.selection_label.value = "arm A"
    view.save_selection.click()
    col = big.obs["picked"]
    assert isinstance(col.dtype, pd.CategoricalDtype)
    assert (col == "arm A").sum() == 14_286 and (col == "unselected").sum() == 100_000 - 14_286
    assert col.iloc[7] == "arm A" and col.iloc[8] == "unselected"
    # a second lasso adds a label to the same column
    view.select([1, 2])
    view.selection_label.value = "arm B"
    view.save_selection.click()
    assert big.obs["picked"].value_counts()["arm B"] == 2
    assert list(big.obs["picked"].cat.categories) == ["arm A", "arm B", "unselected"]
    assert view.saved_columns == ["picked"]
    with pytest.raises(ConvNetVAEError, match="numeric"):
        view.write_selection(column="depth")
    assert "numeric" in view.selection_info.value
    view.clear_selection.click()
    assert view.selected.size == 0 and view.save_selection.disabled

    # save figure: PNG of 100,000 cells, with a download link
    monkeypatch.chdir(tmp_path)
    view.color.value = "cluster"
    view.save_figure.click()
    out = tmp_path / "X_umap_cluster.png"
    assert out.read_bytes()[:8] == PNG
    assert 'download="X_umap_cluster.png"' in view.figure_info.value


def test_save_figure_formats(tmp_path):
    a = ad.AnnData(obs=pd.DataFrame({"t": list("abcab"), "v": [1.0, 2, 3, 4, 500]},
                                    index=[f"c{i}" for i in range(5)]))
    a.obsm["X_umap"] = np.arange(10, dtype=float).reshape(5, 2)
    view = EmbeddingView(a)
    for fmt, magic in (("png", PNG), ("svg", b"<?xml"), ("pdf", b"%PDF")):
        view.figure_format.value = fmt
        path = view.write_figure(tmp_path / f"e.{fmt}")
        assert path.read_bytes()[:len(magic)] == magic, fmt
    view.color.value = "v"  # numeric: the colour bar says it is clipped
    fig = view.figure()
    assert "clipped at percentiles 1-99" in fig.axes[1].get_ylabel()
    with pytest.raises(ConvNetVAEError, match="png, svg or pdf"):
        view.write_figure(tmp_path / "e.gif", "gif")


def test_palette_neighbours_differ_for_many_groups():
    from convnetvae.widgets.plots import categorical_palette

    for n in (5, 12, 20, 25, 40, 60):
        cols = categorical_palette(n)[:, :3]
        assert cols.shape == (n, 3)
        step = np.linalg.norm(np.diff(cols, axis=0), axis=1)
        assert step.min() > 0.2, (n, step.min())  # neighbouring groups never look alike
        d = np.linalg.norm(cols[:, None] - cols[None], axis=2) + np.eye(n)
        assert d.min() > 0.02, n  # and no two groups share a colour


def test_embedding_view_without_an_embedding_says_what_to_do():
    a = ad.AnnData(obs=pd.DataFrame({"t": ["a", "b"]}, index=["x", "y"]))
    view = EmbeddingView(a)
    assert view.basis.value is None
    assert "train a model" in view.plot.children[0].value
    # an embedding appears (e.g. from a user's panel) and a refresh shows it
    a.obsm["X_pca"] = np.array([[0.0, 1.0], [1.0, 0.0]])
    a.obsm["modality_mask"] = np.ones((2, 3), dtype=bool)
    view.refresh()
    assert view.basis.value == "X_pca" and view.plot.children == (view.scatter.widget,)
    assert embedding_bases(a) == ["X_pca"]  # a mask is not an embedding


def test_embedding_bases_prefer_umap():
    a = ad.AnnData(obs=pd.DataFrame(index=["x", "y", "z"]))
    a.obsm["X_pca"] = np.zeros((3, 5))
    a.obsm["X_umap"] = np.zeros((3, 2))
    a.obsm["X_convnetvae"] = np.zeros((3, 30))
    a.obsm["one"] = np.zeros((3, 1))
    assert embedding_bases(a) == ["X_umap", "X_convnetvae", "X_pca"]


@pytest.fixture()
def small() -> ad.AnnData:
    # 6 cells, 2 chromosomes of 5 bins; groups g0 (cells 0-2) and g1 (cells 3-5)
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 5, size=(6, 10)).astype(np.int32)
    counts[5] = 0  # cell 5 lacks this modality
    var = pd.DataFrame({"chrom": ["chr1"] * 5 + ["chr2"] * 5,
                        "start": np.r_[np.arange(5), np.arange(5)] * 1000,
                        "end": np.r_[np.arange(1, 6), np.arange(1, 6)] * 1000},
                       index=[f"b{i}" for i in range(10)])
    obs = pd.DataFrame({"group": ["g0"] * 3 + ["g1"] * 3}, index=[f"c{i}" for i in range(6)])
    return ad.AnnData(obs=obs, var=var, layers={"ATAC": sp.csr_matrix(counts),
                                                "K27": sp.csr_matrix(counts[::-1].copy())})


def test_parse_region_forms_and_errors(small):
    r = parse_region("chr2:1,000-3,000", small.var)
    assert (r.chrom, r.start, r.end) == ("chr2", 1000, 3000)
    assert r.bins.tolist() == [6, 7]
    assert parse_region("chr1", small.var).bins.tolist() == [0, 1, 2, 3, 4]
    assert parse_region(" chr1:500-1500 ", small.var).bins.tolist() == [0, 1]
    assert default_region(small.var) == "chr1:0-5000"
    with pytest.raises(ConvNetVAEError, match="chromosome 'chr9' has no bins; available: chr1, chr2"):
        parse_region("chr9:0-10", small.var)
    with pytest.raises(ConvNetVAEError, match="does not parse"):
        parse_region("chr1:abc", small.var)
    with pytest.raises(ConvNetVAEError, match="end must be greater"):
        parse_region("chr1:3000-1000", small.var)
    with pytest.raises(ConvNetVAEError, match="overlaps no bin"):
        parse_region("chr1:90000-99000", small.var)


def test_observed_tracks_are_group_means_of_library_normalised_counts(small):
    tr = compute_tracks(small, "chr1:0-5000", "group", ["ATAC"])
    x = small.layers["ATAC"].toarray().astype(float)
    lib = x.sum(1)
    assert tr.groups == ["g0", "g1"] and tr.n_cells == [3, 3]
    with np.errstate(invalid="ignore"):
        norm = x[:, :5] / lib[:, None] * 1e4
    np.testing.assert_allclose(tr.observed["ATAC"][0], norm[:3].mean(0))
    # cell 5 lacks the modality: it is left out of its group's mean
    np.testing.assert_allclose(tr.observed["ATAC"][1], norm[3:5].mean(0))
    assert tr.imputed == {}
    assert tr.positions.tolist() == [0, 1000, 2000, 3000, 4000]
    whole = compute_tracks(small, "chr2", None, ["ATAC", "K27"])
    assert whole.groups == ["all cells"] and set(whole.observed) == {"ATAC", "K27"}
    with pytest.raises(ConvNetVAEError, match="not a column of adata.obs"):
        compute_tracks(small, "chr1", "nope", ["ATAC"])
    with pytest.raises(ConvNetVAEError, match="modality 'X' is not a layer"):
        compute_tracks(small, "chr1", "group", ["X"])


class _FakeModule(torch.nn.Module):
    """A decoder with known output: cell i's weights over the 10 bins are proportional to
    (1 + i) * [1..10] for modality ATAC, i.e. the same profile for every cell."""

    def decode(self, z, batch):
        w = torch.arange(1, 11, dtype=torch.float32).expand(z.shape[0], 1, 10) * (1 + z[:, :1, None])
        return torch.log(w / w.sum(-1, keepdim=True))


class _FakeModel:
    """Stands in for a trained ConvNetVAE: latent = cell index; a known decoder."""

    modalities = ["ATAC"]
    registry: dict = {}
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.module = _FakeModule()
        self.encoded: list[int] = []

    def get_latent_representation(self, adata, batch_size=512):
        self.encoded.append(adata.n_obs)
        idx = np.array([int(n[1:]) for n in adata.obs_names], dtype=np.float32)
        return np.repeat(idx[:, None], 3, axis=1)


def test_imputed_tracks_are_one_decoder_pass_on_a_subsample(small):
    model = _FakeModel()
    tr = compute_tracks(small, "chr1", "group", ["ATAC", "K27"], model=model,
                        max_imputed_cells=4, seed=0)
    assert model.encoded == [4]  # 2 cells per group, one encoder call
    assert tr.n_imputed_cells == [2, 2]
    assert set(tr.imputed) == {"ATAC"}  # only the model's modalities
    # weights sum to 1 per cell: times 1e4, every cell has the same profile here
    expected = np.arange(1, 6) / np.arange(1, 11).sum() * 1e4
    np.testing.assert_allclose(tr.imputed["ATAC"], np.vstack([expected, expected]), rtol=1e-5)
    # latent means passed in (current for this model): the encoder is not run
    tr2 = compute_tracks(small, "chr1", "group", ["ATAC"], model=model,
                         latent=np.zeros((6, 3), dtype=np.float32))
    assert model.encoded == [4] and tr2.n_imputed_cells == [3, 3]
    np.testing.assert_allclose(tr2.imputed["ATAC"], np.vstack([expected, expected]), rtol=1e-5)


def test_only_the_largest_groups_are_shown_and_the_others_named(small):
    small.obs["many"] = [f"g{i}" for i in range(6)]
    small.obs.loc["c0", "many"] = "g1"
    tr = compute_tracks(small, "chr1", "many", ["ATAC"], max_groups=2)
    assert tr.groups[0] == "g1" and len(tr.groups) == 2 and len(tr.dropped) == 3
    view = GenomeTrackView(small, ["ATAC"])
    view.group_by.value = "many"
    view.render(wait=True)
    assert view.tracks.dropped == [] and len(view.body.children) == 1  # 5 groups: all shown
    view.max_groups = 2
    view.render(wait=True)
    note = view.body.children[0]
    assert "convnetvae-dropped-groups" in note._dom_classes
    assert "showing the 2 largest of 5 groups; 3 left out" in note.value


def test_track_view_renders_in_the_background_and_reports_errors(small):
    view = GenomeTrackView(small, ["ATAC", "K27"])
    assert view.region.value == "chr1:0-5000"
    assert [o[1] for o in view.group_by.options] == [None, "group"]
    assert view.group_by.label == "(all cells)"  # the None choice shows its label
    view.show.click()  # all cells together: one track per modality
    assert view.wait(60)
    assert view.n_renders == 1 and view.image.value[:8] == PNG
    assert "region=&#x27;chr1:0-5000&#x27;" in view.caption.value
    _w, h_all = _png_size(view.image.value)
    view.group_by.value = "group"
    view.show.click()
    view.wait(60)
    assert view.n_renders == 2 and view.image.value[:8] == PNG
    assert "group_by=&#x27;group&#x27;" in view.caption.value
    _w, h_groups = _png_size(view.image.value)
    assert h_groups > h_all  # 2 groups stacked in each modality's panel
    view.region.value = "chrZ"  # Enter in the region box runs it
    view.wait(60)
    assert "convnetvae-error" in view.body.children[0]._dom_classes
    assert "chrZ" in view.body.children[0].value and "chrZ" in view.caption.value
    view.region.value = "chr1"
    view.wait(60)
    assert view.n_renders == 3 and view.job.error is None
    view.modalities.value = ()
    view.show.click()
    view.wait(60)
    assert "at least one modality" in view.body.children[0].value


def test_tracks_and_loss_figures():
    small_hist = [{"epoch": 1, "train_loss": 10.0, "validation_loss": 11.0},
                  {"epoch": 2, "train_loss": 8.0, "validation_loss": 9.5}]
    png = figure_to_png(loss_figure(small_hist, max_epochs=5))
    assert png[:8] == PNG
    assert figure_to_png(loss_figure([]))[:8] == PNG
    ax = loss_figure(small_hist).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train loss", "validation loss"]
    assert isinstance(w.Image(value=png), w.Image)
