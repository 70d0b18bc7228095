"""Bin names (three styles), rebinning peaks into windows, and the paper's top-bin selection."""

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from convnetvae.data.bins import (
    SELECTION_KEY,
    format_bin_names,
    infer_bin_size,
    parse_bin_names,
    rebin_matrix,
    select_top_bins,
    top_bins_union,
)
from convnetvae.data.genome import make_bins
from convnetvae.errors import ConvNetVAEError


def test_parse_three_styles_to_same_coordinates():
    want = pd.DataFrame({"chrom": ["chr1", "chr10"], "start": [0, 20000], "end": [10000, 30000]})
    for names in (["chr1-1-10000", "chr10-20001-30000"], ["chr1:0-10000", "chr10:20000-30000"],
                  ["chr1_0_10000", "chr10_20000_30000"]):
        got = parse_bin_names(names)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
        assert list(got.index) == names


def test_parse_contig_names_with_separators():
    got = parse_bin_names(["chrUn_GL000220v1-1-100", "chr1_KI270706v1_random:5-50",
                           "chrUn_GL000220v1_100_200"])
    assert list(got["chrom"]) == ["chrUn_GL000220v1", "chr1_KI270706v1_random", "chrUn_GL000220v1"]
    assert list(got["start"]) == [0, 5, 100] and list(got["end"]) == [100, 50, 200]


@pytest.mark.parametrize("style", ["signac", "snapatac", "underscore"])
def test_round_trip_between_styles(style):
    rng = np.random.default_rng(1)
    start = rng.integers(0, 10**8, 200)
    df = pd.DataFrame({"chrom": rng.choice(["chr1", "chr2", "chrX", "chrUn_x1"], 200),
                       "start": start, "end": start + rng.integers(1, 5000, 200)})
    names = format_bin_names(df, style=style)
    back = parse_bin_names(names, style=style)
    np.testing.assert_array_equal(back["start"], df["start"])
    np.testing.assert_array_equal(back["end"], df["end"])
    np.testing.assert_array_equal(back["chrom"], df["chrom"])
    # and across styles: signac -> snapatac -> underscore gives the same coordinates
    for other in ("signac", "snapatac", "underscore"):
        again = parse_bin_names(format_bin_names(back, style=other))
        np.testing.assert_array_equal(again[["start", "end"]].to_numpy(), df[["start", "end"]].to_numpy())
    assert format_bin_names(df.iloc[:1].assign(chrom="chr1", start=0, end=10000), style=style)[0] == \
        {"signac": "chr1-1-10000", "snapatac": "chr1:0-10000", "underscore": "chr1_0_10000"}[style]


def test_bad_names_raise_naming_the_first_bad_one():
    with pytest.raises(ConvNetVAEError, match="'Gapdh' is not a genomic range"):
        parse_bin_names(["chr1:0-100", "Gapdh", "Actb"])
    with pytest.raises(ConvNetVAEError, match="'chr1:500-100'.*end must be greater"):
        parse_bin_names(["chr1:0-100", "chr1:500-100"])
    with pytest.raises(ConvNetVAEError, match="style"):
        parse_bin_names(["chr1:0-100"], style="archr")
    with pytest.raises(ConvNetVAEError, match="not a genomic range"):
        parse_bin_names(["chr1:0-100"], style="underscore")


def test_infer_bin_size():
    bins = make_bins({"chr1": 95, "chr2": 41}, 10)
    assert infer_bin_size(bins) == 10
    peaks = pd.DataFrame({"chrom": ["chr1"] * 3, "start": [3, 50, 90], "end": [20, 60, 130]})
    assert infer_bin_size(peaks) is None


def _random_peaks(rng, n, sizes):
    chrom = rng.choice(list(sizes), n)
    width = rng.integers(100, 3000, n)
    start = np.array([rng.integers(0, sizes[c] - w) for c, w in zip(chrom, width)])
    return pd.DataFrame({"chrom": chrom, "start": start, "end": start + width})


def test_rebin_conserves_totals_and_matches_midpoint_rule():
    rng = np.random.default_rng(2)
    sizes = {"chr1": 200_000, "chr2": 120_000}
    peaks = _random_peaks(rng, 300, sizes)
    X = sp.random(40, 300, density=0.2, random_state=3, format="csr",
                  data_rvs=lambda k: rng.integers(1, 9, k)).astype(np.int64)
    grid = make_bins(sizes, 10_000)
    out, rep = rebin_matrix(X, peaks, grid)
    assert out.shape == (40, len(grid))
    assert out.sum() == X.sum() and rep["n_features_outside"] == 0
    np.testing.assert_array_equal(np.asarray(out.sum(axis=1)).ravel(), np.asarray(X.sum(axis=1)).ravel())
    # reference: loop over peaks
    ref = np.zeros((40, len(grid)), dtype=np.int64)
    dense = X.toarray()
    for j, p in enumerate(peaks.itertuples()):
        mid = (p.start + p.end) // 2
        b = np.flatnonzero((grid.chrom == p.chrom).to_numpy() & (grid.start <= mid).to_numpy()
                           & (grid.end > mid).to_numpy())[0]
        ref[:, b] += dense[:, j]
    np.testing.assert_array_equal(out.toarray(), ref)


def test_rebin_reports_features_outside_the_grid():
    grid = make_bins({"chr1": 100}, 10)
    feats = pd.DataFrame({"chrom": ["chr1", "chr9"], "start": [5, 5], "end": [15, 15]})
    out, rep = rebin_matrix(sp.csr_matrix(np.array([[2, 3]])), feats, grid)
    assert out.sum() == 2 and rep["n_features_outside"] == 1 and rep["counts_outside"] == 3
    with pytest.raises(ConvNetVAEError, match="feature coordinates"):
        rebin_matrix(sp.csr_matrix(np.ones((1, 3))), feats, grid)


def _reference_union(totals, n_bins):
    """Brute force: grow k until the union of per-modality top-k reaches n_bins."""
    G = len(totals[0])
    orders = [sorted([g for g in range(G) if t[g] > 0], key=lambda g: (-t[g], g)) for t in totals]
    for k in range(1, G + 1):
        union = set().union(*(o[:k] for o in orders))
        if len(union) >= n_bins:
            prev = set().union(*(o[:k - 1] for o in orders))
            adds = [o[k - 1] for o in orders if len(o) >= k]
            sel = set(prev)
            for g in adds:
                if len(sel) == n_bins:
                    break
                sel.add(g)
            return sorted(sel), k
    return sorted(set().union(*orders)), None


@pytest.mark.parametrize("seed", range(5))
def test_top_bins_union_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    G = 300
    totals = [rng.poisson(rng.gamma(0.5, 20, G)).astype(float) for _ in range(3)]
    for n in (1, 7, 50, 123):
        got, k = top_bins_union(totals, n)
        want, kk = _reference_union(totals, n)
        assert list(got) == want and k == kk and len(got) == n


def _adata(layers, n_bins=50):
    var = make_bins({"chr1": 10 * n_bins}, 10)
    n = next(iter(layers.values())).shape[0]
    a = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]), var=var,
                   layers={k: sp.csr_matrix(v) for k, v in layers.items()})
    a.uns["modalities"] = list(layers)
    return a


def test_select_top_bins_is_the_union_in_genome_order():
    A = np.zeros((3, 50), dtype=np.int32)
    B = np.zeros((3, 50), dtype=np.int32)
    A[:, [40, 10, 3]] = [[9, 5, 1]] * 3    # A ranks 40 > 10 > 3
    B[:, [7, 10, 30]] = [[8, 6, 2]] * 3    # B ranks 7 > 10 > 30
    a = _adata({"A": A, "B": B})
    out = select_top_bins(a, n_bins=3)     # k=1: {40, 7}; k=2 adds 10 (A) -> 3 bins
    assert list(out.var["start"] // 10) == [7, 10, 40]
    rec = out.uns[SELECTION_KEY]
    assert rec["n_bins"] == 3 and rec["k"] == 2 and rec["modalities"] == ["A", "B"]
    out4 = select_top_bins(a, n_bins=4)    # k=3 adds A's 3 first (modality order) -> {3,7,10,40}
    assert list(out4.var["start"] // 10) == [3, 7, 10, 40]
    np.testing.assert_array_equal(out4.layers["A"].toarray(), A[:, [3, 7, 10, 40]])
    # more bins than have counts: every non-zero bin, nothing else
    assert select_top_bins(a, n_bins=1000).n_vars == 5
    everything = select_top_bins(a, n_bins=None)
    assert everything.n_vars == 50 and everything.uns[SELECTION_KEY]["n_bins_requested"] == "all"


def test_select_top_bins_errors():
    a = _adata({"A": np.zeros((2, 50), dtype=np.int32)})
    with pytest.raises(ConvNetVAEError, match="zero counts"):
        select_top_bins(a, n_bins=10)
    with pytest.raises(ConvNetVAEError, match="not a layer"):
        select_top_bins(a, modalities=["H3K27ac"], n_bins=10)
    with pytest.raises(ConvNetVAEError, match="n_bins"):
        select_top_bins(a, n_bins=0)


def test_select_top_bins_on_simulated_data_writes_h5ad(tmp_path):
    from convnetvae.data import simulate

    a = simulate(n_cells=60, n_bins=2000, n_chromosomes=3, seed=0)
    out = select_top_bins(a, n_bins=500)
    assert out.n_vars == 500
    v = out.var
    keys = list(zip(v["chrom"].map({"chr1": 0, "chr2": 1, "chr3": 2}), v["start"]))
    assert keys == sorted(keys)
    out.write_h5ad(tmp_path / "sel.h5ad")
    back = ad.read_h5ad(tmp_path / "sel.h5ad")
    assert back.uns[SELECTION_KEY]["n_bins"] == 500


def test_sort_bins_into_natural_order():
    from convnetvae.data import sort_bins

    names = ["chr10:0-10", "chr2:10-20", "chrX:0-10", "chr2:0-10", "chr1-1-10"]
    a = ad.AnnData(obs=pd.DataFrame(index=["c"]), var=pd.DataFrame(index=names),
                   layers={"A": sp.csr_matrix(np.arange(5)[None, :])})
    out = sort_bins(a)
    assert list(out.var_names) == ["chr1-1-10", "chr2:0-10", "chr2:10-20", "chr10:0-10", "chrX:0-10"]
    assert list(out.var["start"]) == [0, 0, 10, 0, 0]
    np.testing.assert_array_equal(out.layers["A"].toarray(), [[4, 3, 1, 0, 2]])


# ---------------------------------------------------------------------------- shared with R
FEATURE_BINS = Path(__file__).resolve().parents[1] / "testthat" / "feature_bins.tsv"


def _feature_bin_cases() -> list[dict]:
    table = pd.read_csv(FEATURE_BINS, sep="\t", comment="#", dtype=str, keep_default_na=False)
    return table.to_dict("records")


@pytest.mark.parametrize("case", _feature_bin_cases(), ids=lambda c: f"{c['name']}@{c['bin_size']}")
def test_feature_to_bin_table_shared_with_r(case):
    """The same table runs in tests/testthat/test-feature-bins.R: R and Python agree."""
    from convnetvae.data.bins import feature_windows
    from convnetvae.errors import ConvNetVAEError

    name, bin_size = case["name"], int(case["bin_size"])
    if case["ok"] == "FALSE":
        with pytest.raises(ConvNetVAEError):
            parse_bin_names([name])
        return
    f = parse_bin_names([name])
    assert f.iloc[0].tolist() == [case["chrom"], int(case["start"]), int(case["end"])]
    window = int(case["window"])
    assert feature_windows(f, bin_size).tolist() == [window]
    # the rebinning puts the feature's counts in that window of the genome-wide grid
    grid = make_bins({case["chrom"]: (window + 5) * bin_size}, bin_size)
    out, rep = rebin_matrix(sp.csr_matrix(np.array([[3]])), f, grid)
    assert rep["n_features_outside"] == 0 and out.toarray()[0].tolist().index(3) == window
