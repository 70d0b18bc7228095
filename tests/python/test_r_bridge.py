"""The R bridge, both directions.

* ``convnetvae.r.bridge`` (what the R package calls through reticulate): decoding of the byte-packed
  sparse matrices R sends, alignment, training, projection, model description, errors.
* ``convnetvae.r.rds`` (rpy2 + anndata2ri): read an .rds written by R, write a reduction back,
  read it again in R (marked ``r``; skipped without R/rpy2).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from convnetvae.errors import ConvNetVAEError
from convnetvae.r import bridge
from convnetvae.r.align import build_anndata

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inst" / "extdata" / "example_seurat.rds"
FAST = {"architecture": "conv-k11s11", "max_epochs": 2, "n_latent": 4, "batch_size": 64,
        "verbose": False, "extra": {"validation_size": 0.0}}


def signac_names(chrom: str, n: int, size: int = 10_000) -> list[str]:
    return [f"{chrom}-{i * size + 1}-{(i + 1) * size}" for i in range(n)]


def encode_like_r(m: sp.spmatrix, orientation: str = "features_x_cells") -> dict:
    """Pack a matrix exactly as R/validate.R's .encode_csc does (CSC arrays as LE bytes)."""
    csc = sp.csc_matrix(m)
    return {"format": "csc", "shape": list(csc.shape), "orientation": orientation,
            "indptr": [bytearray(csc.indptr.astype("<i4").tobytes())],
            "indices": [bytearray(csc.indices.astype("<i4").tobytes())],
            "data": [bytearray(csc.data.astype("<f8").tobytes())]}


@pytest.fixture(scope="module")
def toy() -> dict:
    rng = np.random.default_rng(3)
    n = 120
    names = signac_names("chr1", 150) + signac_names("chr2", 100)
    # two cell groups with different domains so the model has something to learn
    group = np.repeat([0, 1], n // 2)
    prof = rng.gamma(1.0, 1.0, size=(2, len(names)))
    mats = {}
    for k, m in enumerate(["ATAC", "H3K27ac"]):
        lam = prof[group] * 0.6 * (k + 1)
        mats[m] = sp.csr_matrix(rng.poisson(lam).astype(np.float64))
    cells = [f"cell{i:03d}" for i in range(n)]
    batch = ["b1" if i % 2 else "b2" for i in range(n)]
    return {"mats": mats, "names": {m: names for m in mats}, "cells": cells, "batch": batch}


def decode_embedding(res: dict) -> np.ndarray:
    shape = res["embedding"]["shape"]
    return np.frombuffer(bytes(res["embedding"]["data"]), dtype="<f8").reshape(shape, order="F")


# ---------------------------------------------------------------------------- decoding


def test_the_reticulate_side_never_starts_r():
    """R loads convnetvae.r.bridge inside its own process: it must not import rpy2."""
    import sys

    code = ("import sys, convnetvae.r, convnetvae.r.bridge; "
            "print(any(m.startswith('rpy2') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_decode_sparse_matches_r_packing_in_both_orientations():
    rng = np.random.default_rng(0)
    x = sp.random(30, 20, density=0.2, random_state=1, format="csr")
    x.data = rng.integers(1, 9, x.nnz).astype(float)
    got = bridge.decode_sparse(encode_like_r(x.T, "features_x_cells"), "A")
    assert sp.isspmatrix_csr(got) and got.shape == (30, 20)
    assert (got != x).nnz == 0
    got2 = bridge.decode_sparse(encode_like_r(x, "cells_x_features"), "A")
    assert (got2 != x).nnz == 0
    # a single chunk or several chunks of bytes give the same matrix
    enc = encode_like_r(x.T)
    b = bytes(enc["data"][0])
    enc["data"] = [bytearray(b[:16]), bytearray(b[16:])]
    assert (bridge.decode_sparse(enc, "A") != x).nnz == 0


def test_decode_sparse_rejects_corrupted_input():
    enc = encode_like_r(sp.eye(5, format="csr"))
    enc["indptr"] = [bytearray(np.arange(3, dtype="<i4").tobytes())]
    with pytest.raises(ConvNetVAEError, match="arrived corrupted from R"):
        bridge.decode_sparse(enc, "ATAC")
    with pytest.raises(ConvNetVAEError, match="modality 'X'"):
        bridge.decode_sparse([1, 2, 3], "X")


def test_encode_dense_is_column_major_float64():
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    enc = bridge.encode_dense(z)
    assert enc["shape"] == [3, 2]
    flat = np.frombuffer(bytes(enc["data"]), dtype="<f8")
    np.testing.assert_array_equal(flat, [0, 2, 4, 1, 3, 5])


# ---------------------------------------------------------------------------- alignment


def test_build_anndata_rebins_and_aligns_modalities():
    obs = pd.DataFrame(index=["a", "b"])
    # modality A: 10 kb windows (Signac names); modality B: 2 peaks (SnapATAC2 names) in window 1
    a = sp.csr_matrix(np.array([[1, 2, 0], [0, 1, 3]]))
    b = sp.csr_matrix(np.array([[4, 1], [0, 2]]))
    adata = build_anndata({"A": a, "B": b},
                          {"A": signac_names("chr1", 3), "B": ["chr1:10100-10600", "chr1:15000-16000"]},
                          obs, bin_size=10_000)
    assert list(adata.var_names) == ["chr1:0-10000", "chr1:10000-20000", "chr1:20000-30000"]
    np.testing.assert_array_equal(adata.layers["A"].toarray(), a.toarray())
    np.testing.assert_array_equal(adata.layers["B"].toarray(), [[0, 5, 0], [0, 2, 0]])
    assert list(adata.obs["n_counts_B"]) == [5, 2]
    assert adata.uns["modalities"] == ["A", "B"]


def test_bins_are_in_natural_genome_order_and_cells_keep_their_order():
    obs = pd.DataFrame({"batch": ["x", "y", "x"]}, index=["c", "a", "b"])
    x = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 3, 0, 1], [1, 1, 1, 1]]))
    names = ["chr10-1-10000", "chr2-50001-60000", "chrX-1-10000", "chr2-1-10000"]
    adata = build_anndata({"A": x}, {"A": names}, obs)
    assert list(adata.var_names) == ["chr2:0-10000", "chr2:50000-60000", "chr10:0-10000",
                                     "chrX:0-10000"]
    assert list(adata.obs_names) == ["c", "a", "b"]
    assert list(adata.obs["batch"]) == ["x", "y", "x"]
    np.testing.assert_array_equal(adata.layers["A"].toarray(), x.toarray()[:, [3, 1, 0, 2]])


def test_no_shared_bins_and_bad_names_are_clear_errors():
    obs = pd.DataFrame(index=["a"])
    x = sp.csr_matrix(np.ones((1, 2)))
    with pytest.raises(ConvNetVAEError, match="'A' and 'B' share no genomic bins.*'chr1' vs '1'"):
        build_anndata({"A": x, "B": x}, {"A": signac_names("chr1", 2), "B": signac_names("1", 2)},
                      obs)
    with pytest.raises(ConvNetVAEError, match="modality 'B': feature name 'Gene1' is not a genomic"):
        build_anndata({"A": x, "B": x}, {"A": signac_names("chr1", 2), "B": ["Gene1", "Gene2"]},
                      obs)


def test_blacklist_and_top_bins():
    obs = pd.DataFrame(index=["a", "b"])
    x = sp.csr_matrix(np.array([[5, 1, 0, 7], [5, 0, 1, 7]]))
    bl = pd.DataFrame({"chrom": ["chr1"], "start": [30_500], "end": [30_600]})
    ad_ = build_anndata({"A": x}, {"A": signac_names("chr1", 4)}, obs, blacklist=bl, n_bins=2)
    assert list(ad_.var_names) == ["chr1:0-10000", "chr1:10000-20000"]


# ---------------------------------------------------------------------------- train / project


def test_run_then_project_gives_the_same_embedding(toy, tmp_path):
    enc = {m: encode_like_r(x.T) for m, x in toy["mats"].items()}
    cfg = dict(FAST, model_dir=str(tmp_path / "model"), n_bins=200, group_by_vars=["sample"])
    res = bridge.run_from_r(enc, toy["names"], toy["cells"], {"batch": toy["batch"]}, "batch", cfg)
    z = decode_embedding(res)
    assert z.shape == (120, 4) and np.isfinite(z).all()
    assert set(res["history"]) >= {"epoch", "train_loss"} and len(res["history"]["epoch"]) == 2
    c = res["config"]
    assert c["n_bins"] == 200 and c["n_cells"] == 120 and c["batch_categories"] == ["b1", "b2"]
    assert c["modalities"] == ["ATAC", "H3K27ac"] and c["architecture"] == "conv-k11s11"
    assert len(res["bins"]) == 200
    info = bridge.model_info(tmp_path / "model")
    assert info["modalities"] == ["ATAC", "H3K27ac"] and info["bin_size"] == 10_000
    assert info["group_by_vars"] == ["sample"] and info["n_latent"] == 4
    # projection: same cells -> same embedding; a reversed subset -> the same rows
    p = bridge.project_from_r(enc, toy["names"], toy["cells"], {"batch": toy["batch"]}, "batch",
                              str(tmp_path / "model"), {})
    np.testing.assert_allclose(decode_embedding(p), z, atol=1e-6)
    idx = np.arange(119, 59, -1)
    sub = {m: x[idx] for m, x in toy["mats"].items()}
    p2 = bridge.project_from_r(sub, toy["names"], [toy["cells"][i] for i in idx],
                               {"batch": [toy["batch"][i] for i in idx]}, "batch",
                               str(tmp_path / "model"), {})
    np.testing.assert_allclose(decode_embedding(p2), z[idx], atol=1e-5)
    # unseen batch labels and wrong modalities are clear errors
    with pytest.raises(ConvNetVAEError, match="not seen when the model was trained"):
        bridge.project_from_r(sub, toy["names"], [toy["cells"][i] for i in idx],
                              {"batch": ["b9"] * len(idx)}, "batch", str(tmp_path / "model"), {})
    with pytest.raises(ConvNetVAEError, match="trained on modalities"):
        bridge.project_from_r({"ATAC": sub["ATAC"]}, toy["names"], [toy["cells"][i] for i in idx],
                              None, None, str(tmp_path / "model"), {})


def test_the_core_runs_with_one_blas_thread_from_r(toy, tmp_path, monkeypatch):
    # inside R, torch's products use R's OpenBLAS, whose threads fight torch's own
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    assert blas_threads(), "numpy/scipy load a BLAS the limit can be checked on"
    seen: dict[str, list[int]] = {}
    train, project = bridge._train, bridge._project

    def spy_train(*args, **kwargs):
        seen["train"] = blas_threads()
        return train(*args, **kwargs)

    def spy_project(*args, **kwargs):
        seen["project"] = blas_threads()
        return project(*args, **kwargs)

    monkeypatch.setattr(bridge, "_train", spy_train)
    monkeypatch.setattr(bridge, "_project", spy_project)
    enc = {m: encode_like_r(x.T) for m, x in toy["mats"].items()}
    cfg = dict(FAST, model_dir=str(tmp_path / "model"), n_bins=200)
    with threadpool_limits(limits=2, user_api="blas"):  # as R's OpenBLAS on 2 cores
        bridge.run_from_r(enc, toy["names"], toy["cells"], None, None, cfg)
        bridge.project_from_r(enc, toy["names"], toy["cells"], None, None,
                              str(tmp_path / "model"), {})
        assert set(blas_threads()) == {2}  # restored afterwards
    assert set(seen["train"]) == {1} and set(seen["project"]) == {1}


def test_run_from_r_rejects_unknown_arguments_and_foreign_model_dirs(toy, tmp_path):
    with pytest.raises(ConvNetVAEError, match="unknown argument 'no.such'"):
        bridge.run_from_r(toy["mats"], toy["names"], toy["cells"], None, None,
                          dict(FAST, extra={"no_such": 1}))
    # settings that contradict each other are named as R names them
    with pytest.raises(ConvNetVAEError, match=r"time\.budget = 2 sets the length of automatic "
                       r"training, but max\.epochs = 5 fixes it: give one of them \(time\.budget "
                       r"with max\.epochs = NULL\)"):
        bridge.run_from_r(toy["mats"], toy["names"], toy["cells"], None, None,
                          dict(FAST, max_epochs=5, extra={"time_budget": 2}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConvNetVAEError, match="holds no ConvNetVAE model"):
        bridge.run_from_r(toy["mats"], toy["names"], toy["cells"], None, None,
                          dict(FAST, model_dir=str(tmp_path / "other"), n_bins=100))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(ConvNetVAEError, match="not a saved ConvNetVAE model"):
        bridge.model_info(tmp_path / "other")
    with pytest.raises(ConvNetVAEError, match="cell names must be unique"):
        bridge.run_from_r(toy["mats"], toy["names"], ["same"] * 120, None, None, FAST)


def test_extra_arguments_reach_the_model_and_the_trainer(toy):
    res = bridge.run_from_r(toy["mats"], toy["names"], toy["cells"], None, None,
                            dict(FAST, n_bins=100, extra={"validation_size": 0.0,
                                                          "early_stopping": False,
                                                          "dropout": 0.1, "patience": 3.0}))
    c = res["config"]
    assert c["extra"] == {"validation_size": 0.0, "early_stopping": False, "dropout": 0.1,
                          "patience": 3}
    assert c["train"]["early_stopping"] is False and c["train"]["patience"] == 3


# ---------------------------------------------------------------------------- rpy2 direction


def _have_r() -> bool:
    if shutil.which("Rscript") is None:
        return False
    try:
        import anndata2ri  # noqa: F401
        import rpy2.robjects  # noqa: F401
    except Exception:
        return False
    return True




def rscript(code: str) -> str:
    out = subprocess.run(["Rscript", "--vanilla", "-e", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.r
@pytest.mark.skipif(not _have_r(), reason="needs R, rpy2, anndata2ri")
def test_read_seurat_write_reduction_and_read_back_in_r(tmp_path):
    from convnetvae.r import read_seurat, write_reduction

    adata = read_seurat(EXAMPLE, assays=["ATAC", "H3K27ac", "H3K27me3"])
    assert adata.shape == (300, 2000)
    assert list(adata.layers) == ["ATAC", "H3K27ac", "H3K27me3"]
    assert all(sp.isspmatrix_csr(adata.layers[m]) for m in adata.layers)
    assert adata.var_names[0] == "chr1:0-10000" and adata.var["start"].iloc[1] == 10_000
    assert adata.obs_names[0] == "batch1_cell001"
    assert set(adata.obs["batch"]) == {"batch1", "batch2"}
    assert adata.obs["cell_type"].notna().all()
    # the same totals as R reports
    tot = rscript(f"o <- readRDS('{EXAMPLE}'); cat(sum(SeuratObject::GetAssayData(o, "
                  "assay = 'H3K27me3', slot = 'counts')))")
    assert float(tot) == adata.layers["H3K27me3"].sum()

    z = np.random.default_rng(1).normal(size=(300, 5))
    out = write_reduction(EXAMPLE, z, tmp_path / "with_red.rds", name="convnetvae")
    assert out.exists() and not list(tmp_path.glob(".*.rds"))  # no temp file left
    txt = rscript(
        f"suppressMessages(library(SeuratObject)); o <- readRDS('{out}'); e <- Embeddings(o, "
        "'convnetvae'); cat(Key(o[['convnetvae']]), nrow(e), ncol(e), identical(rownames(e), "
        "colnames(o)), sprintf('%.10f', e[2, 3]), DefaultAssay(o[['convnetvae']]))")
    key, nr, nc, same, val, assay = txt.split()
    assert (key, nr, nc, same, assay) == ("convnetvae_", "300", "5", "TRUE", "ATAC")
    assert float(val) == pytest.approx(z[1, 2], abs=1e-9)
    # read again in Python: the reduction comes back in obsm
    again = read_seurat(out, assays=["ATAC"])
    np.testing.assert_allclose(again.obsm["X_convnetvae"], z)

    # a DataFrame indexed by cell names is reordered to the object's cells
    df = pd.DataFrame(z, index=adata.obs_names).iloc[::-1]
    write_reduction(EXAMPLE, df, tmp_path / "df.rds", name="cnv2")
    np.testing.assert_allclose(read_seurat(tmp_path / "df.rds", assays=["ATAC"]).obsm["X_cnv2"], z)


@pytest.mark.r
@pytest.mark.skipif(not _have_r(), reason="needs R, rpy2, anndata2ri")
def test_read_sce_main_plus_altexps_and_write_reduced_dim(tmp_path):
    import rpy2.robjects as ro

    from convnetvae.r import read_sce, write_reduction

    # written by R (the R embedded in this process, to load Bioconductor only once)
    sce_path = tmp_path / "sce.rds"
    ro.r(
        "suppressMessages({library(SingleCellExperiment)}); "
        f"o <- readRDS('{EXAMPLE}'); "
        "cnt <- function(a) SeuratObject::GetAssayData(o, assay = a, slot = 'counts'); "
        "sce <- SingleCellExperiment(list(counts = cnt('ATAC')), colData = DataFrame(o[[]])); "
        "mainExpName(sce) <- 'ATAC'; "
        "altExp(sce, 'H3K27ac') <- SummarizedExperiment(list(counts = cnt('H3K27ac'))); "
        f"saveRDS(sce, '{sce_path}')")
    adata = read_sce(sce_path)
    assert list(adata.layers) == ["ATAC", "H3K27ac"] and adata.shape == (300, 2000)
    assert adata.obs["cell_type"].notna().all()
    z = np.arange(600, dtype=float).reshape(300, 2)
    out = write_reduction(sce_path, z, tmp_path / "sce_out.rds", name="CONVNETVAE")
    got = ro.r(f"r <- reducedDim(readRDS('{out}'), 'CONVNETVAE'); c(dim(r), r[300, 2])")
    assert list(got) == [300, 2, 599]
    np.testing.assert_allclose(read_sce(out).obsm["X_CONVNETVAE"], z)


@pytest.mark.r
@pytest.mark.skipif(not _have_r(), reason="needs R, rpy2, anndata2ri")
def test_example_fragment_file_bins_to_the_example_atac_counts():
    from convnetvae.data.fragments import read_fragments
    from convnetvae.r import read_seurat

    frags = read_fragments({"ATAC": ROOT / "inst" / "extdata" / "example_fragments.tsv.gz"},
                           chrom_sizes={"chr1": 8_000_000, "chr2": 7_000_000, "chr3": 5_000_000},
                           min_counts=1)
    seurat = read_seurat(EXAMPLE, assays=["ATAC"])
    cells = list(seurat.obs_names[:30])
    assert sorted(frags.obs_names) == sorted(cells)
    a = frags[cells, seurat.var_names].layers["ATAC"].toarray()
    np.testing.assert_array_equal(a, seurat[cells].layers["ATAC"].toarray())


@pytest.mark.r
@pytest.mark.skipif(not _have_r(), reason="needs R, rpy2, anndata2ri")
def test_rds_bad_input_is_a_clear_error(tmp_path):
    from convnetvae.r import read_sce, read_seurat, write_reduction

    with pytest.raises(ConvNetVAEError, match="does not exist or is not a file"):
        read_seurat(tmp_path / "missing.rds")
    with pytest.raises(ConvNetVAEError, match="not a SingleCellExperiment; use read_seurat"):
        read_sce(EXAMPLE)
    with pytest.raises(ConvNetVAEError, match="assay 'RNA' does not exist"):
        read_seurat(EXAMPLE, assays=["ATAC", "RNA"])
    with pytest.raises(ConvNetVAEError, match="expected \\(300, n_dims\\)"):
        write_reduction(EXAMPLE, np.zeros((10, 2)), tmp_path / "x.rds")
    with pytest.raises(ConvNetVAEError, match="must match"):
        write_reduction(EXAMPLE, np.zeros((300, 2)), tmp_path / "x.rds", key="bad_key_")
    assert not (tmp_path / "x.rds").exists()
