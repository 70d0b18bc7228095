"""Count-matrix inputs (AnnData, MuData, 10x HDF5, MatrixMarket) -> the data contract."""

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from convnetvae.data.bins import format_bin_names
from convnetvae.data.genome import make_bins
from convnetvae.data.readers import read_10x_h5, read_counts, read_mtx, reads_to_fragments, rebin
from convnetvae.errors import ConvNetVAEError
from helpers_fragments import shared_file

SIZES = {"chr1": 100_000, "chr2": 60_000}


def _bins_adata(n_cells=12, bin_size=10_000, style="snapatac", seed=0, prefix="c"):
    rng = np.random.default_rng(seed)
    var = make_bins(SIZES, bin_size)
    X = sp.csr_matrix(rng.poisson(1.0, (n_cells, len(var))).astype(np.int64))
    a = ad.AnnData(X=X, obs=pd.DataFrame({"label": rng.choice(["a", "b"], n_cells)},
                                         index=[f"{prefix}{i}" for i in range(n_cells)]),
                   var=pd.DataFrame(index=format_bin_names(var, style=style)))
    return a


def test_reads_to_fragments_ceil_half():
    x = sp.csr_matrix(np.array([[1, 2, 3, 4, 0, 7]]))
    np.testing.assert_array_equal(reads_to_fragments(x).toarray(), [[1, 1, 2, 2, 0, 4]])
    np.testing.assert_array_equal(reads_to_fragments(np.array([5, 6])), [3, 3])


@pytest.mark.parametrize("style", ["signac", "snapatac", "underscore"])
def test_the_three_name_styles_give_the_same_result(style):
    ref = read_counts({"ATAC": _bins_adata(style="snapatac")})
    got = read_counts({"ATAC": _bins_adata(style=style)})
    assert list(got.var_names) == list(ref.var_names)
    assert (got.layers["ATAC"] != ref.layers["ATAC"]).nnz == 0
    assert got.uns["modalities"] == ["ATAC"] and got.obsm["modality_mask"].all()
    assert got.obs["label"].tolist() == ref.obs["label"].tolist()


def test_bins_merge_into_coarser_grid_and_totals_are_conserved():
    a = _bins_adata(bin_size=5_000)
    out = read_counts({"ATAC": a}, bin_size=20_000, chrom_sizes=SIZES)
    assert out.n_vars == 5 + 3 and out.layers["ATAC"].sum() == a.X.sum()
    np.testing.assert_array_equal(out.obs["n_counts_ATAC"], np.asarray(a.X.sum(axis=1)).ravel())


def test_peaks_rebinned_and_conserved_with_midpoint_rule():
    peaks = pd.DataFrame({"chrom": ["chr1", "chr1", "chr2", "chr1"],
                          "start": [9_000, 100, 15_000, 55_000], "end": [10_500, 900, 15_500, 56_000]})
    X = sp.csr_matrix(np.array([[1, 2, 3, 4], [5, 0, 0, 1]]))
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=["x", "y"]),
                   var=pd.DataFrame(index=format_bin_names(peaks, style="signac")))
    out = read_counts({"ATAC": a}, bin_size=10_000)
    # midpoints 9750 -> chr1:0-10000, 500 -> chr1:0-10000, 15250 -> chr2:10000-, 55500 -> chr1:50000-
    assert list(out.var_names) == ["chr1:0-10000", "chr1:50000-56000", "chr2:10000-15500"]
    np.testing.assert_array_equal(out.layers["ATAC"].toarray(), [[3, 4, 3], [5, 1, 0]])
    assert out.uns["convnetvae_counts"]["per_modality"]["ATAC"]["bin_width_in"] == 0
    with pytest.raises(ConvNetVAEError, match="variable-width features.*pass bin_size"):
        read_counts({"ATAC": a})


def test_two_modalities_with_missing_cells_and_read_conversion():
    a = _bins_adata(n_cells=10, seed=1)
    b = _bins_adata(n_cells=6, seed=2, style="signac")
    out = read_counts({"ATAC": a, "H3K27ac": b}, reads_to_fragment_counts=["ATAC"])
    assert out.n_obs == 10
    assert out.obsm["modality_mask"][:, 1].sum() == 6 and out.obsm["modality_mask"][:, 0].all()
    assert out.layers["ATAC"].sum() == reads_to_fragments(a.X).sum()
    assert out.layers["H3K27ac"].sum() == b.X.sum()
    both = read_counts({"ATAC": a, "H3K27ac": b}, drop_incomplete=True)
    assert both.n_obs == 6


def test_mudata_input():
    md = pytest.importorskip("mudata")
    m = md.MuData({"ATAC": _bins_adata(seed=3), "H3K27me3": _bins_adata(seed=4, style="underscore")})
    out = read_counts(m)
    assert out.uns["modalities"] == ["ATAC", "H3K27me3"] and out.n_obs == 12


def test_blacklist_and_chrom_sizes(tmp_path):
    bl = tmp_path / "bl.bed.gz"
    with gzip.open(bl, "wt") as fh:
        fh.write("chr1\t15000\t15001\n")
    out = read_counts({"ATAC": _bins_adata()}, blacklist=bl, chrom_sizes=SIZES)
    assert "chr1:10000-20000" not in out.var_names and out.n_vars == 15
    assert out.uns["convnetvae_counts"]["n_bins_blacklisted"] == 1


def test_bad_inputs_are_clear_errors():
    genes = ad.AnnData(X=sp.csr_matrix(np.ones((2, 2))), var=pd.DataFrame(index=["Gapdh", "Actb"]))
    with pytest.raises(ConvNetVAEError, match="'ATAC'.*'Gapdh' is not a genomic range"):
        read_counts({"ATAC": genes})
    with pytest.raises(ConvNetVAEError, match="mismatched bin sizes.*ATAC: 10000.*H3K27ac: 5000"):
        read_counts({"ATAC": _bins_adata(), "H3K27ac": _bins_adata(bin_size=5_000)})
    with pytest.raises(ConvNetVAEError, match="never split"):
        read_counts({"ATAC": _bins_adata()}, bin_size=5_000)
    with pytest.raises(ConvNetVAEError, match="not in chrom_sizes"):
        read_counts({"ATAC": _bins_adata()}, chrom_sizes={"chr1": 100_000})
    with pytest.raises(ConvNetVAEError, match="beyond its chromosome"):
        read_counts({"ATAC": _bins_adata()}, chrom_sizes={"chr1": 50_000, "chr2": 60_000})
    neg = _bins_adata()
    neg.X = neg.X * -1
    with pytest.raises(ConvNetVAEError, match="negative"):
        read_counts({"ATAC": neg})
    with pytest.raises(ConvNetVAEError, match="not found"):
        read_counts({"ATAC": "/nonexistent/x.h5ad"})
    with pytest.raises(ConvNetVAEError, match="no cell is present in every modality"):
        read_counts({"A": _bins_adata(prefix="x"), "B": _bins_adata(prefix="y")}, drop_incomplete=True)


def test_h5ad_and_rebin_helper(tmp_path):
    a = _bins_adata(bin_size=5_000)
    a.write_h5ad(tmp_path / "a.h5ad")
    out = read_counts({"ATAC": tmp_path / "a.h5ad"}, bin_size=10_000)
    assert out.layers["ATAC"].sum() == a.X.sum()
    both = read_counts({"ATAC": a, "H3K27ac": a}, bin_size=5_000)
    coarse = rebin(both, 10_000)
    assert coarse.n_vars == 16 and coarse.layers["H3K27ac"].sum() == a.X.sum()


def _write_10x_h5(path, X_features_by_cells, ids, types, barcodes):
    import h5py

    csc = sp.csc_matrix(X_features_by_cells)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"] = csc.data, csc.indices, csc.indptr
        g["shape"] = np.array(csc.shape)
        g["barcodes"] = np.array([b.encode() for b in barcodes])
        fg = g.create_group("features")
        fg["id"] = np.array([i.encode() for i in ids])
        fg["name"] = np.array([i.encode() for i in ids])
        fg["feature_type"] = np.array([t.encode() for t in types])


def test_10x_h5_multiome_keeps_peaks(tmp_path):
    ids = ["ENSG0001", "chr1:100-600", "chr1:20000-20400", "chr2:5-300"]
    types = ["Gene Expression", "Peaks", "Peaks", "Peaks"]
    X = np.array([[9, 9, 9], [1, 0, 2], [3, 1, 0], [0, 0, 5]])  # features x cells
    _write_10x_h5(tmp_path / "m.h5", X, ids, types, ["A-1", "B-1", "C-1"])
    a = read_10x_h5(tmp_path / "m.h5")
    assert a.shape == (3, 3) and list(a.var_names) == ids[1:]
    out = read_counts({"ATAC": tmp_path / "m.h5"}, bin_size=10_000)
    assert out.layers["ATAC"].sum() == X[1:].sum()
    assert list(out.var_names) == ["chr1:0-10000", "chr1:20000-20400", "chr2:0-300"]
    bad = tmp_path / "bad.h5"
    import h5py
    with h5py.File(bad, "w") as f:
        f["x"] = 1
    with pytest.raises(ConvNetVAEError, match="not a 10x HDF5"):
        read_10x_h5(bad)


def test_mtx_with_features_names_and_orientation(tmp_path):
    a = _bins_adata(style="signac")
    with gzip.open(tmp_path / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, a.X.T.tocoo())
    (tmp_path / "features.tsv").write_text("\n".join(a.var_names) + "\n")
    (tmp_path / "barcodes.tsv").write_text("\n".join(a.obs_names) + "\n")
    out = read_counts({"ATAC": tmp_path / "matrix.mtx.gz"})
    assert (out.layers["ATAC"] != a.X).nnz == 0
    (tmp_path / "barcodes.tsv").write_text("\n".join(a.obs_names[:-1]) + "\n")
    with pytest.raises(ConvNetVAEError, match="has shape"):
        read_mtx(tmp_path / "matrix.mtx.gz")


def test_real_signac_bins_and_peaks():
    d = ("real", "signac_atac_small_pbmc")
    meta = shared_file(*d, "cells_metadata.csv")
    bins = read_mtx(shared_file(*d, "counts_bins_x_cells.mtx.gz"), shared_file(*d, "bins.bed"), meta)
    peaks = read_mtx(shared_file(*d, "counts_peaks_x_cells.mtx.gz"), shared_file(*d, "peaks.bed"), meta)
    assert bins.X.sum() == 6283 and peaks.X.sum() == 14077  # README numbers
    out = read_counts({"bins": bins, "peaks": peaks}, bin_size=10_000,
                      chrom_sizes=shared_file("genome", "chrom_sizes", "hg19.main.chrom.sizes"))
    assert out.layers["bins"].sum() == 6283 and out.layers["peaks"].sum() == 14077
    assert "seurat_clusters" in out.obs and out.n_obs == 100


def test_real_50kb_histone_bins_with_blacklist():
    d = ("labelled", "zeller2023_sortchic_h3k4me3_mouse_bm_50kb_200cells")
    out = read_counts({"H3K4me3": shared_file(*d, "matrix.mtx.gz")},
                      chrom_sizes=shared_file("genome", "chrom_sizes", "mm10.chrom.sizes"),
                      blacklist=shared_file("genome", "blacklist", "mm10-blacklist.v2.bed.gz"),
                      main_chromosomes_only=True)
    assert out.n_obs == 200 and out.uns["convnetvae_counts"]["bin_size"] == 50_000
    assert out.uns["convnetvae_counts"]["n_bins_blacklisted"] > 0
    assert list(pd.unique(out.var["chrom"]))[:3] == ["chr1", "chr2", "chr3"]


def test_real_chromscape_underscore_names():
    d = ("real", "chromscape_scchip_h3k4me3_jurkat_ramos")
    feats = pd.read_csv(shared_file(*d, "features.tsv.gz"), sep="\t")
    X = scipy.io.mmread(shared_file(*d, "counts_features_x_cells.mtx.gz")).T.tocsr()
    a = ad.AnnData(X=X, var=pd.DataFrame(index=feats["name"].to_numpy()))
    out = read_counts({"H3K4me3": a}, bin_size=5_000)
    assert out.layers["H3K4me3"].sum() == X.sum() == 151_024
    assert out.n_vars == 5499
