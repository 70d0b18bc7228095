"""Views of the workbench: embedding scatter (100,000 cells), genome tracks, loss curve."""

from __future__ import annotations

import anndata as ad
import ipywidgets as w
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

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


def test_embedding_of_100k_cells_renders_in_a_second_or_two(big):
    view = EmbeddingView(big)
    assert view.basis.value == "X_umap" and view.color.value == "cluster"
    assert view.body.children == (view.image,)
    assert view.image.value[:8] == PNG
    # CPU time, so a busy machine does not make the test flaky (about 0.5 s when idle)
    assert view.render_cpu_seconds < 2.0, f"100,000 cells took {view.render_cpu_seconds:.2f} s"
    assert view.render_seconds < 20.0
    categorical_png = view.image.value
    view.color.value = "depth"  # a continuous column: colour bar instead of legend
    assert view.render_cpu_seconds < 2.0
    assert view.n_renders == 2 and view.image.value != categorical_png
    view.color.value = None
    assert view.n_renders == 3


def test_embedding_view_without_an_embedding_says_what_to_do():
    a = ad.AnnData(obs=pd.DataFrame({"t": ["a", "b"]}, index=["x", "y"]))
    view = EmbeddingView(a)
    assert view.basis.value is None
    assert "train a model" in view.body.children[0].value
    # an embedding appears (e.g. from a user's panel) and a refresh shows it
    a.obsm["X_pca"] = np.array([[0.0, 1.0], [1.0, 0.0]])
    a.obsm["modality_mask"] = np.ones((2, 3), dtype=bool)
    view.refresh()
    assert view.basis.value == "X_pca" and view.body.children == (view.image,)
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


class _FakeModel:
    """Stands in for ConvNetVAE.get_normalized_signal with known rates."""

    modalities = ["ATAC"]

    def __init__(self) -> None:
        self.calls: list[int] = []

    def get_normalized_signal(self, adata, modality):
        self.calls.append(adata.n_obs)
        idx = np.array([int(n[1:]) for n in adata.obs_names], dtype=float)
        return np.tile(np.arange(1, 11, dtype=float), (adata.n_obs, 1)) * (1 + idx[:, None])


def test_imputed_tracks_use_the_model_rates_on_a_subsample(small):
    model = _FakeModel()
    tr = compute_tracks(small, "chr1", "group", ["ATAC", "K27"], model=model,
                        max_cells_per_group=2, seed=0)
    assert model.calls == [4]  # 2 cells per group, one call, only the model's modality
    assert set(tr.imputed) == {"ATAC"}
    # rates are scaled per cell to sum to 1e4, so every cell has the same profile here
    expected = np.arange(1, 6) / np.arange(1, 11).sum() * 1e4
    np.testing.assert_allclose(tr.imputed["ATAC"], np.vstack([expected, expected]))


def test_track_view_renders_and_reports_errors(small):
    view = GenomeTrackView(small, ["ATAC", "K27"])
    assert view.region.value == "chr1:0-5000"
    assert [o[1] for o in view.group_by.options] == [None, "group"]
    view.show.click()  # all cells together: one track per modality
    assert view.n_renders == 1 and view.image.value[:8] == PNG
    _w, h_all = _png_size(view.image.value)
    view.group_by.value = "group"
    view.show.click()
    assert view.n_renders == 2 and view.image.value[:8] == PNG
    _w, h_groups = _png_size(view.image.value)
    assert h_groups > h_all  # 2 modalities x 2 groups stacked
    view.region.value = "chrZ"
    view.show.click()
    assert "convnetvae-error" in view.body.children[0]._dom_classes
    assert "chrZ" in view.body.children[0].value
    view.region.value = "chr1"
    view.modalities.value = ()
    view.show.click()
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
