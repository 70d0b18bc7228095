"""Fragment files -> AnnData: against a naive reference, round trips, alignment, bad input."""

import gzip
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from convnetvae.data.fragments import read_fragments
from convnetvae.errors import ConvNetVAEError
from helpers_fragments import (
    CHROM_SIZES,
    fragments_from_counts,
    naive_bin,
    random_fragments,
    shared_file,
    write_fragments,
)


def _as_dict(adata, layer):
    X = adata.layers[layer].tocoo()
    return {(adata.obs_names[i], adata.var_names[j]): int(v) for i, j, v in zip(X.row, X.col, X.data)}


@pytest.mark.parametrize("compress,header,n_columns", [(True, True, 5), (False, False, 4)])
def test_matches_naive_reference(tmp_path, compress, header, n_columns):
    df = random_fragments(6000, n_cells=30, seed=1, max_len=3000)  # many straddle bin edges
    path = write_fragments(df, tmp_path / ("f.tsv.gz" if compress else "f.tsv"), compress=compress,
                           header=header, n_columns=n_columns)
    a = read_fragments({"ATAC": path}, bin_size=5000, chrom_sizes=CHROM_SIZES, min_counts=1,
                       main_chromosomes_only=False, chunk_size=700)
    sizes = dict(CHROM_SIZES)
    assert _as_dict(a, "ATAC") == naive_bin(df, sizes, 5000)
    assert a.layers["ATAC"].dtype == np.int32 and sp.isspmatrix_csr(a.layers["ATAC"])
    assert list(a.var.columns) == ["chrom", "start", "end"]
    assert list(pd.unique(a.var["chrom"])) == ["chr1", "chr2", "chr10", "chrX", "chrM"]
    assert a.var_names[0] == "chr1:0-5000"
    per_cell = df.groupby("barcode").size()
    np.testing.assert_array_equal(a.obs["n_fragments_ATAC"], per_cell.loc[a.obs_names].to_numpy())
    assert a.uns["modalities"] == ["ATAC"] and a.obsm["modality_mask"].all()
    assert a.uns["convnetvae_fragments"]["files"]["0"]["n_fragments"] == len(df)


def test_contigs_dropped_and_blacklist(tmp_path):
    df = random_fragments(3000, n_cells=10, seed=2)
    path = write_fragments(df, tmp_path / "f.tsv.gz")
    bl = tmp_path / "bl.bed"
    bl.write_text("chr2\t100500\t100600\treason\nchr1\t0\t25000\tx\n")
    a = read_fragments({"ATAC": path}, bin_size=10_000, chrom_sizes=CHROM_SIZES, blacklist=bl,
                       min_counts=1)
    assert "chrM" not in set(a.var["chrom"])  # main chromosomes only by default
    assert a.uns["convnetvae_fragments"]["files"]["0"]["n_other_chrom"] == int((df.chrom == "chrM").sum())
    assert not {"chr1:0-10000", "chr1:10000-20000", "chr1:20000-30000", "chr2:100000-110000"} & set(a.var_names)
    assert "chr1:30000-40000" in a.var_names
    assert a.uns["convnetvae_fragments"]["n_bins_blacklisted"] == 4


def test_round_trip_from_simulator(tmp_path):
    from convnetvae.data import simulate

    sim = simulate(n_cells=80, n_bins=600, n_chromosomes=3, seed=3,
                   modalities=("ATAC", "H3K27me3"), library_size=300)
    sizes = sim.var.groupby("chrom", observed=True)["end"].max().to_dict()
    paths = {}
    for m in ("ATAC", "H3K27me3"):
        frag = fragments_from_counts(sim.layers[m], sim.var, sim.obs_names, seed=4)
        paths[m] = write_fragments(frag, tmp_path / f"{m}.tsv.gz")
    a = read_fragments(paths, bin_size=10_000, chrom_sizes=sizes, min_counts=1, chunk_size=5000)
    assert list(a.var_names) == list(sim.var_names)
    a = a[sim.obs_names]
    for m in ("ATAC", "H3K27me3"):
        np.testing.assert_array_equal(a.layers[m].toarray(), sim.layers[m].toarray())
        np.testing.assert_array_equal(a.obs[f"n_counts_{m}"], sim.obs[f"n_counts_{m}"])


def test_missing_modality_masked_or_dropped(tmp_path):
    df_a = random_fragments(4000, n_cells=20, seed=5)
    df_b = random_fragments(4000, n_cells=20, seed=6)
    df_b = df_b[~df_b.barcode.isin(["CELL00000-1", "CELL00001-1"])]
    pa, pb = write_fragments(df_a, tmp_path / "a.tsv.gz"), write_fragments(df_b, tmp_path / "b.tsv.gz")
    a = read_fragments({"ATAC": pa, "H3K27ac": pb}, bin_size=50_000, chrom_sizes=CHROM_SIZES,
                       min_counts=1)
    assert a.n_obs == 20
    mask = pd.DataFrame(a.obsm["modality_mask"], index=a.obs_names, columns=a.uns["modalities"])
    assert not mask.loc["CELL00000-1", "H3K27ac"] and mask.loc["CELL00000-1", "ATAC"]
    assert mask["H3K27ac"].sum() == 18 and mask["ATAC"].all()
    assert a.layers["H3K27ac"][a.obs_names.get_loc("CELL00001-1")].nnz == 0
    b = read_fragments({"ATAC": pa, "H3K27ac": pb}, bin_size=50_000, chrom_sizes=CHROM_SIZES,
                       min_counts=1, drop_incomplete=True)
    assert b.n_obs == 18 and b.obsm["modality_mask"].all()
    # min_counts per modality marks low-count cells missing
    c = read_fragments({"ATAC": pa, "H3K27ac": pb}, bin_size=50_000, chrom_sizes=CHROM_SIZES,
                       min_counts={"ATAC": 1, "H3K27ac": 10**6})
    assert c.n_obs == 20 and not c.obsm["modality_mask"][:, 1].any()


def test_samples_concatenate_with_batch_column(tmp_path):
    files = {m: [write_fragments(random_fragments(1500, n_cells=8, seed=s + i), tmp_path / f"{m}{s}.tsv.gz")
                 for s in range(2)] for i, m in enumerate(["ATAC", "H3K27ac"])}
    a = read_fragments(files, bin_size=100_000, chrom_sizes=CHROM_SIZES, min_counts=1,
                       samples=["rep1", "rep2"])
    assert a.n_obs == 16
    assert list(a.obs["sample"].cat.categories) == ["rep1", "rep2"]
    assert (a.obs["sample"] == "rep1").sum() == 8
    assert a.obs_names[0].startswith("rep1#CELL")
    with pytest.raises(ConvNetVAEError, match="same number of fragment files"):
        read_fragments({"ATAC": files["ATAC"], "H3K27ac": files["H3K27ac"][:1]},
                       chrom_sizes=CHROM_SIZES)


def test_barcode_list_and_barcode_maps(tmp_path):
    df_a = random_fragments(3000, n_cells=10, seed=7)
    df_b = random_fragments(3000, n_cells=10, seed=8, barcode_prefix="AB_")
    pa, pb = write_fragments(df_a, tmp_path / "a.tsv.gz"), write_fragments(df_b, tmp_path / "b.tsv.gz")
    bmap = tmp_path / "map.tsv"
    bmap.write_text("".join(f"AB_CELL{i:05d}-1\tCELL{i:05d}-1\n" for i in range(10)))
    wl = tmp_path / "cells.txt"
    wl.write_text("CELL00002-1\nCELL00003-1\nNOT_A_CELL\n")
    a = read_fragments({"ATAC": pa, "H3K27me3": pb}, bin_size=100_000, chrom_sizes=CHROM_SIZES,
                       barcodes=wl, barcode_maps={"H3K27me3": bmap})
    assert list(a.obs_names) == ["CELL00002-1", "CELL00003-1"]
    assert a.obsm["modality_mask"].all()
    want = ((df_b.barcode == "AB_CELL00002-1") & (df_b.chrom != "chrM")).sum()
    assert a.obs.loc["CELL00002-1", "n_fragments_H3K27me3"] == want
    with pytest.raises(ConvNetVAEError, match="no barcode matches"):
        read_fragments({"ATAC": pa}, chrom_sizes=CHROM_SIZES, barcodes=["AAAA-1", "CCCC-1"])


def test_min_counts_filter_and_no_cell_passes(tmp_path):
    df = random_fragments(2000, n_cells=10, seed=9)
    p = write_fragments(df, tmp_path / "a.tsv.gz")
    a = read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=200)
    assert (a.obs["n_fragments_ATAC"] >= 200).all() and 0 < a.n_obs < 10
    with pytest.raises(ConvNetVAEError, match="no cell passes"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES)  # default 500 fragments per cell


GOOD = "chr1\t100\t200\tAAA-1\t1\nchr1\t300\t400\tCCC-1\t2\n"


@pytest.mark.parametrize("bad,why", [
    ("chr1\t500\t600\tAAA-1\t1\textra\n", "wrong number of columns"),
    ("chr1\t500\t600\n", "wrong number of columns"),
    ("chr1\t5x0\t600\tAAA-1\t1\n", "not integers"),
    ("chr1\t500.5\t600\tAAA-1\t1\n", "not integers"),
    ("chr1\t700\t600\tAAA-1\t1\n", "end must be greater than start"),
    ("chr1\t999990\t1000090\tAAA-1\t1\n", "beyond the chromosome"),
])
def test_malformed_line_errors_name_file_and_line(tmp_path, bad, why):
    p = tmp_path / "frag.tsv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("# header\n" + GOOD + bad + GOOD)
    with pytest.raises(ConvNetVAEError, match=rf"frag\.tsv\.gz'?, line 4: .*{why}"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1)
    a = read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, skip_malformed=True)
    rec = a.uns["convnetvae_fragments"]
    assert rec["n_malformed"] == 1 and rec["files"]["0"]["first_malformed_line"] == 4
    assert a.layers["ATAC"].sum() == 4


def test_many_extra_columns_error_and_skip(tmp_path):
    p = tmp_path / "frag.tsv"
    p.write_text(GOOD + "chr1\t1\t2\tA\t1\t" + "\t".join("x" * 12) + "\n" + GOOD)
    with pytest.raises(ConvNetVAEError, match="line 3: wrong number of columns"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1)
    with pytest.raises(ConvNetVAEError, match="line 3: wrong number of columns.*too many to skip"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, skip_malformed=True)


def test_truncated_gzip(tmp_path):
    df = random_fragments(20000, n_cells=10, seed=10)
    full = write_fragments(df, tmp_path / "full.tsv.gz")
    data = full.read_bytes()
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConvNetVAEError, match="truncated or corrupt gzip"):
        read_fragments({"ATAC": cut}, chrom_sizes=CHROM_SIZES, min_counts=1)


def test_unknown_chromosome_error_and_skip(tmp_path):
    p = tmp_path / "frag.tsv"
    p.write_text(GOOD + "chrZZ\t100\t200\tAAA-1\t1\n")
    with pytest.raises(ConvNetVAEError, match="line 3: chromosome 'chrZZ' is not in chrom_sizes"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1)
    a = read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, unknown_chroms="skip")
    assert a.layers["ATAC"].sum() == 2
    assert a.uns["convnetvae_fragments"]["files"]["0"]["n_other_chrom"] == 1


def test_argument_errors(tmp_path):
    p = write_fragments(random_fragments(100, n_cells=3), tmp_path / "f.tsv.gz")
    with pytest.raises(ConvNetVAEError, match="chrom_sizes is required"):
        read_fragments({"ATAC": p})
    with pytest.raises(ConvNetVAEError, match="not found"):
        read_fragments({"ATAC": tmp_path / "nope.tsv.gz"}, chrom_sizes=CHROM_SIZES)
    with pytest.raises(ConvNetVAEError, match="bin_size"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, bin_size=-5)
    empty = tmp_path / "empty.tsv"
    empty.write_text("# only a header\n")
    with pytest.raises(ConvNetVAEError, match="no fragments"):
        read_fragments({"ATAC": empty}, chrom_sizes=CHROM_SIZES)


def test_real_signac_fragment_file():
    frag = shared_file("real", "signac_atac_small_pbmc", "signac_extdata_fragments.tsv.gz")
    sizes = shared_file("genome", "chrom_sizes", "hg19.main.chrom.sizes")
    df = pd.read_csv(frag, sep="\t", header=None, comment="#")
    a = read_fragments({"ATAC": frag}, chrom_sizes=sizes, min_counts=1, bin_size=10_000)
    assert a.obs["n_fragments_ATAC"].sum() == len(df) == 100
    ref = naive_bin(df.rename(columns={0: "chrom", 1: "start", 2: "end", 3: "barcode"}),
                    pd.read_csv(sizes, sep="\t", header=None, index_col=0)[1].to_dict(), 10_000)
    assert _as_dict(a, "ATAC") == ref


@pytest.mark.slow
def test_memory_stays_bounded_on_millions_of_fragments(tmp_path):
    """Peak RSS when binning 3M fragments stays close to binning 300k (same cells and bins)."""
    df = random_fragments(100_000, n_cells=200, seed=11, chrom_sizes={"chr1": 2_000_000})
    block = df.to_csv(sep="\t", header=False, index=False).encode()
    big, small = tmp_path / "big.tsv", tmp_path / "small.tsv"
    with open(big, "wb") as fh:
        for _ in range(30):
            fh.write(block)
    small.write_bytes(block * 3)
    code = textwrap.dedent("""
        import resource, sys
        from convnetvae.data.fragments import read_fragments
        a = read_fragments({"ATAC": sys.argv[1]}, chrom_sizes={"chr1": 2_000_000}, min_counts=1,
                           chunk_size=100_000)
        print(a.obs["n_fragments_ATAC"].sum(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    res = {}
    for name, path in (("small", small), ("big", big)):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                             text=True, check=True).stdout.split()
        res[name] = (int(out[0]), int(out[1]) / 1024)
    assert res["big"][0] == 3_000_000 and res["small"][0] == 300_000
    file_mb = big.stat().st_size / 2**20
    growth = res["big"][1] - res["small"][1]
    assert growth < 60, (res, file_mb)  # the 3M-line file itself is ~100 MB


def test_python_gzip_fallback_and_truncation(tmp_path, monkeypatch):
    import convnetvae.data.fragments as fr

    monkeypatch.setattr(fr.shutil, "which", lambda name: None)  # no gzip binary
    df = random_fragments(20000, n_cells=10, seed=12)
    full = write_fragments(df, tmp_path / "full.tsv.gz")
    a = read_fragments({"ATAC": full}, chrom_sizes=CHROM_SIZES, min_counts=1)
    assert a.obs["n_fragments_ATAC"].sum() == (df.chrom != "chrM").sum()
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(full.read_bytes()[:-3000])
    with pytest.raises(ConvNetVAEError, match="truncated or corrupt gzip"):
        read_fragments({"ATAC": cut}, chrom_sizes=CHROM_SIZES, min_counts=1)


def test_cli_bin_writes_h5ad_with_selection(tmp_path, capsys):
    import anndata as ad

    from convnetvae import cli_bin

    pa = write_fragments(random_fragments(5000, n_cells=12, seed=13), tmp_path / "a.tsv.gz")
    pb = write_fragments(random_fragments(5000, n_cells=12, seed=14), tmp_path / "b.tsv.gz")
    sizes = tmp_path / "g.sizes"
    sizes.write_text("".join(f"{c}\t{n}\n" for c, n in CHROM_SIZES.items()))
    bl = tmp_path / "bl.bed"
    bl.write_text("chr1\t0\t10\n")
    out = tmp_path / "out" / "data.h5ad"
    rc = cli_bin.main(["bin", "--fragments", f"ATAC={pa}", "--fragments", f"H3K27ac={pb}",
                       "--chrom-sizes", str(sizes), "--blacklist", str(bl), "--bin-size", "10000",
                       "--n-bins", "40", "--min-counts", "1", "--out", str(out), "--no-progress"])
    assert rc == 0 and "12 cells x 40 bins" in capsys.readouterr().out
    a = ad.read_h5ad(out)
    assert a.n_vars == 40 and set(a.layers) == {"ATAC", "H3K27ac"}
    assert a.uns["convnetvae_bin_selection"]["n_bins"] == 40
    assert "chr1:0-10000" not in a.var_names
    rc = cli_bin.main(["bin", "--fragments", f"ATAC={pa}", "--out", str(out)])
    assert rc == 2 and "--chrom-sizes is required" in capsys.readouterr().err
    rc = cli_bin.main(["bin", "--fragments", str(pa), "--chrom-sizes", str(sizes), "--out", str(out)])
    assert rc == 2 and "MODALITY=PATH" in capsys.readouterr().err


def test_cli_bin_counts_input(tmp_path, capsys):
    import anndata as ad

    from convnetvae import cli_bin

    a = ad.AnnData(X=sp.csr_matrix(np.array([[1, 3], [2, 0]])),
                   obs=pd.DataFrame(index=["x", "y"]),
                   var=pd.DataFrame(index=["chr1-1-5000", "chr1-5001-10000"]))
    a.write_h5ad(tmp_path / "in.h5ad")
    out = tmp_path / "o.h5ad"
    rc = cli_bin.main(["bin", "--counts", f"ATAC={tmp_path / 'in.h5ad'}", "--bin-size", "10000",
                       "--reads-to-fragments", "--n-bins", "all", "--out", str(out)])
    assert rc == 0
    b = ad.read_h5ad(out)
    assert b.var_names.tolist() == ["chr1:0-10000"]
    np.testing.assert_array_equal(b.layers["ATAC"].toarray().ravel(), [3, 1])


def test_progress_bar_reports_bytes(tmp_path, capsys):
    p = write_fragments(random_fragments(3000, n_cells=5, seed=15), tmp_path / "a.tsv.gz")
    read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, progress=True)
    err = capsys.readouterr().err
    assert "binning fragments" in err and "100%" in err


def test_blank_lines_are_ignored_and_keep_line_numbers(tmp_path):
    p = tmp_path / "frag.tsv"
    p.write_text(GOOD + "\n\n" + "chr1\t700\t600\tAAA-1\t1\n")
    with pytest.raises(ConvNetVAEError, match="line 5: end must be greater"):
        read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, chunk_size=2)
    p.write_text(GOOD + "\n\n\n" + GOOD)
    a = read_fragments({"ATAC": p}, chrom_sizes=CHROM_SIZES, min_counts=1, chunk_size=2)
    assert a.layers["ATAC"].sum() == 4 and a.uns["convnetvae_fragments"]["n_malformed"] == 0


def test_convnetvae_cli_dispatches_bin(tmp_path):
    pytest.importorskip("convnetvae.cli")
    p = write_fragments(random_fragments(3000, n_cells=6, seed=16), tmp_path / "a.tsv.gz")
    sizes = tmp_path / "g.sizes"
    sizes.write_text("".join(f"{c}\t{n}\n" for c, n in CHROM_SIZES.items()))
    out = tmp_path / "d.h5ad"
    res = subprocess.run([sys.executable, "-m", "convnetvae.cli", "bin", "--fragments", f"ATAC={p}",
                          "--chrom-sizes", str(sizes), "--min-counts", "1", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.exists() and "6 cells" in res.stdout
    assert "binning fragments" in res.stderr  # the progress bar
    bad = tmp_path / "bad.tsv"
    bad.write_text("chr1\t5\t2\tA\t1\n")
    res = subprocess.run([sys.executable, "-m", "convnetvae.cli", "bin", "--fragments", f"ATAC={bad}",
                          "--chrom-sizes", str(sizes), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "line 1: end must be greater" in res.stderr


@pytest.mark.slow
def test_output_passes_the_data_contract_and_trains(tmp_path):
    """read_fragments -> select_top_bins -> setup_anndata -> a one-epoch model: the pipeline's
    output is what the model consumes, missing modalities included."""
    from convnetvae.data.bins import select_top_bins
    from convnetvae.data.contract import setup_anndata

    files = {}
    for i, m in enumerate(["ATAC", "H3K27me3"]):
        files[m] = []
        for s in range(2):
            df = random_fragments(3000, n_cells=30, seed=20 + 2 * i + s)
            if m == "H3K27me3":  # five cells without this modality
                df = df[~df.barcode.isin([f"CELL{j:05d}-1" for j in range(5)])]
            files[m].append(write_fragments(df, tmp_path / f"{m}{s}.tsv.gz"))
    a = read_fragments(files, bin_size=20_000, chrom_sizes=CHROM_SIZES, min_counts=1,
                       samples=["s1", "s2"])
    assert a.obsm["modality_mask"].sum(axis=0).tolist() == [60, 50]
    a = select_top_bins(a, n_bins=60)
    reg = setup_anndata(a, batch_key="sample")
    assert reg["modalities"] == ["ATAC", "H3K27me3"] and reg["n_bins"] == 60
    api = pytest.importorskip("convnetvae.api")
    model = api.ConvNetVAE(a, architecture="conv-k11s11", n_latent=4)
    model.train(max_epochs=1, batch_size=16, progress=False, early_stopping=False)
    assert model.get_latent_representation().shape == (a.n_obs, 4)
