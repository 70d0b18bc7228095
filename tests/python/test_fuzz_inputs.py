"""Property-based (hypothesis) tests of the input readers (issue 9, part 4).

For arbitrary input each reader either returns a valid result or raises the package's own
:class:`ConvNetVAEError`; never an unrelated exception (IndexError, KeyError, TypeError, a
pandas or numpy error...). Example counts are kept modest so the file runs in well under a
minute.
"""

from __future__ import annotations

import json
import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import convnetvae as cv
from convnetvae.data import contract
from convnetvae.data.bins import format_bin_names, parse_bin_names, rebin_matrix
from convnetvae.data.fragments import read_fragments
from convnetvae.data.genome import make_bins
from convnetvae.errors import ConvNetVAEError

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
FEW = settings(FUZZ, max_examples=60)

CHROMS = ["chr1", "chr2", "chr10", "chrX", "chrM", "chrUn_KI270302v1", "1", "scaffold_7"]
SIZES = {"chr1": 95_000, "chr2": 61_000, "chr10": 23_000, "chrX": 40_000, "chrM": 16_569,
         "chrUn_KI270302v1": 2_274}

# text that looks a bit like genomic ranges, and anything else
_range_char = st.sampled_from(list("chr0123456789:-_XYMm.,\t #ab") + ["\x00", "é", "\n"])
range_like = st.one_of(
    st.text(_range_char, max_size=24),
    st.builds(lambda c, s, e, sep: f"{c}{sep[0]}{s}{sep[1]}{e}",
              st.sampled_from(CHROMS + ["", "chr1:2", "chr-1", "chr_1"]),
              st.integers(-5, 10 ** 12), st.integers(-5, 10 ** 12),
              st.sampled_from([(":", "-"), ("-", "-"), ("_", "_"), (":", "_"), ("-", ":")])),
    st.text(max_size=12),
)
valid_range = st.builds(
    lambda c, s, w, fmt: fmt.format(c=c, s=s, e=s + w, s1=s + 1),
    st.sampled_from(CHROMS), st.integers(0, 10 ** 9), st.integers(1, 10 ** 5),
    st.sampled_from(["{c}:{s}-{e}", "{c}-{s1}-{e}", "{c}_{s}_{e}"]))
# the grid of read_counts spans each chromosome up to its last feature: keep positions small
small_range = st.builds(
    lambda c, s, w, fmt: fmt.format(c=c, s=s, e=s + w, s1=s + 1),
    st.sampled_from(CHROMS), st.integers(0, 2 * 10 ** 6), st.integers(1, 10 ** 5),
    st.sampled_from(["{c}:{s}-{e}", "{c}-{s1}-{e}", "{c}_{s}_{e}"]))
names_st = st.one_of(st.lists(range_like, min_size=1, max_size=8),
                     st.lists(valid_range, min_size=1, max_size=8),
                     st.lists(st.one_of(valid_range, valid_range, valid_range, range_like),
                              min_size=1, max_size=8))


def _own_error_only(fn, *a, **k):
    """Call fn; ConvNetVAEError -> None; anything else propagates (and fails the test)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*a, **k)
    except ConvNetVAEError as err:
        assert str(err), "empty error message"
        event("own error")  # --hypothesis-show-statistics shows the share of each outcome
        return None
    event("valid result")
    return out


# ---------------------------------------------------------------------- bin names
@FUZZ
@given(names=names_st,
       style=st.sampled_from(["auto", "signac", "snapatac", "underscore", "bed", ""]))
def test_parse_bin_names_valid_or_own_error(names, style):
    df = _own_error_only(parse_bin_names, names, style)
    if df is None:
        return
    assert len(df) == len(names)
    assert list(df.columns) == ["chrom", "start", "end"]
    assert (df["start"].to_numpy() >= 0).all()
    assert (df["end"].to_numpy() > df["start"].to_numpy()).all()
    assert df["start"].dtype == np.int64 and df["end"].dtype == np.int64
    assert all(isinstance(c, str) and c for c in df["chrom"])


@FUZZ
@given(rows=st.lists(st.tuples(st.sampled_from(CHROMS + ["chr1_random", "a:b", "x-y"]),
                               st.integers(0, 10 ** 10), st.integers(1, 10 ** 6)),
                     min_size=1, max_size=8),
       style=st.sampled_from(["signac", "snapatac", "underscore"]))
def test_format_then_parse_roundtrips(rows, style):
    df = pd.DataFrame({"chrom": [r[0] for r in rows], "start": [r[1] for r in rows],
                       "end": [r[1] + r[2] for r in rows]})
    back = parse_bin_names(format_bin_names(df, style), style)
    np.testing.assert_array_equal(back["start"].to_numpy(), df["start"].to_numpy())
    np.testing.assert_array_equal(back["end"].to_numpy(), df["end"].to_numpy())
    assert list(back["chrom"]) == list(df["chrom"])


# ---------------------------------------------------------------------- rebinning
features_st = st.lists(
    st.tuples(st.sampled_from(["chr1", "chr2", "chrX", "chr7"]), st.integers(-50, 100_000),
              st.integers(-10, 30_000)),
    min_size=0, max_size=12)


@FUZZ
@given(feats=features_st, n_cells=st.integers(0, 4), bin_size=st.integers(200, 50_000),
       seed=st.integers(0, 2 ** 16), extra_col=st.booleans())
def test_rebin_matrix_conserves_counts_or_own_error(feats, n_cells, bin_size, seed, extra_col):
    features = pd.DataFrame({"chrom": [f[0] for f in feats],
                             "start": np.array([f[1] for f in feats], dtype=np.int64),
                             "end": np.array([f[1] + f[2] for f in feats], dtype=np.int64)})
    bins = make_bins({"chr1": 95_000, "chr2": 61_000, "chrX": 40_000}, bin_size)
    rng = np.random.default_rng(seed)
    counts = sp.random(n_cells, len(feats) + int(extra_col), density=0.5, random_state=rng,
                       data_rvs=lambda k: rng.integers(1, 50, k)).astype(np.int64)
    res = _own_error_only(rebin_matrix, counts, features, bins)
    if extra_col:
        assert res is None, "a column-count mismatch must be an error"
        return
    if res is None:
        return
    out, report = res
    assert out.shape == (n_cells, len(bins))
    total = counts.sum()
    assert out.sum() + report["counts_outside"] == total
    assert (out.data >= 0).all() if out.nnz else True


@FEW
@given(names=st.one_of(st.lists(range_like, min_size=1, max_size=6, unique=True),
                      st.lists(small_range, min_size=1, max_size=6, unique=True)),
       bin_size=st.sampled_from([1000, 10_000, 0, -5, 2.5, "10kb"]), seed=st.integers(0, 1000))
def test_read_counts_rebin_of_arbitrary_features(names, bin_size, seed):
    from convnetvae.data.readers import read_counts

    rng = np.random.default_rng(seed)
    x = sp.csr_matrix(rng.integers(0, 4, size=(3, len(names))))
    a = ad.AnnData(X=x, var=pd.DataFrame(index=pd.Index(names, dtype=str)),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(3)]))
    out = _own_error_only(read_counts, {"ATAC": a}, bin_size=bin_size)
    if out is None:
        return
    contract.check_var_coordinates(out.var)
    assert out.layers["ATAC"].shape == (out.n_obs, out.n_vars)


# ---------------------------------------------------------------------- fragment lines
_good_line = st.builds(
    lambda c, s, w, b, n: f"{c}\t{s}\t{s + w}\t{b}\t{n}",
    st.sampled_from(list(SIZES)), st.integers(0, 60_000), st.integers(1, 800),
    st.sampled_from(["AAAC-1", "GGTT-1", "CCGA-1"]), st.integers(1, 5))
_bad_line = st.one_of(
    st.text(st.sampled_from(list("chr1\t0123456789 -+.eE#ACGT,\"'\\x")), max_size=40),
    st.builds(lambda c, s, e, b: f"{c}\t{s}\t{e}\t{b}",
              st.sampled_from(list(SIZES) + ["chrZ", "", "chr1 "]),
              st.sampled_from(["0", "-1", "1.5", "1e3", "", "NaN", "99999999999", "x"]),
              st.sampled_from(["10", "0", "-3", "2.0", "", "inf", "10000000000"]),
              st.sampled_from(["AAAC-1", "", "\"q\"", "a b"])),
    st.builds(lambda c, s, e: f"{c}\t{s}\t{e}", st.sampled_from(list(SIZES)),
              st.integers(0, 100), st.integers(101, 200)),
    st.builds(lambda line, k: line + "\tEXTRA" * k, _good_line, st.integers(1, 10)),
)
lines_st = st.lists(st.one_of(_good_line, _good_line, _bad_line), min_size=0, max_size=25)


@FUZZ
@given(lines=lines_st, header=st.booleans(), skip=st.booleans(),
       unknown=st.sampled_from(["error", "skip"]), main_only=st.booleans())
def test_fragment_lines_valid_or_own_error(tmp_path_factory, lines, header, skip, unknown,
                                           main_only):
    d = tmp_path_factory.mktemp("frag")
    p = d / "atac.tsv"
    text = ("# id=test\n# reference=x\n" if header else "") + "\n".join(lines) + "\n"
    p.write_text(text, encoding="utf-8")
    out = _own_error_only(read_fragments, {"ATAC": p}, bin_size=10_000, chrom_sizes=SIZES,
                          min_counts=1, skip_malformed=skip, unknown_chroms=unknown,
                          main_chromosomes_only=main_only)
    shutil.rmtree(d, ignore_errors=True)
    if out is None:
        return
    x = out.layers["ATAC"]
    assert sp.issparse(x) and x.shape == (out.n_obs, out.n_vars)
    assert (x.data >= 0).all() if x.nnz else True
    contract.check_var_coordinates(out.var)
    n_good = sum(1 for ln in lines if ln.count("\t") == 4)
    assert x.sum() <= 2 * max(n_good, len(lines))  # a fragment counts in at most two bins


@FEW
@given(data=st.binary(max_size=200), gz=st.booleans())
def test_fragment_file_of_random_bytes(tmp_path_factory, data, gz):
    import gzip

    d = tmp_path_factory.mktemp("bytes")
    p = d / ("f.tsv.gz" if gz else "f.tsv")
    if gz:
        raw = gzip.compress(data)
        p.write_bytes(raw[: max(1, len(raw) - (len(data) % 7))])  # sometimes truncated
    else:
        p.write_bytes(data)
    _own_error_only(read_fragments, {"ATAC": p}, bin_size=10_000, chrom_sizes=SIZES,
                    min_counts=1)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------- setup_anndata
value_st = st.sampled_from([0, 1, 3, 7, 10 ** 6, -1, 0.5, 2.0, np.nan, np.inf])


@st.composite
def anndata_st(draw):
    clean = draw(st.booleans())  # half the cases are valid except for chance
    n_cells = draw(st.integers(0 if not clean else 1, 5))
    n_bins = draw(st.integers(1, 6))
    chrom = draw(st.lists(st.sampled_from(["chr1", "chr2", "chrX"]), min_size=n_bins,
                          max_size=n_bins))
    start = draw(st.lists(st.integers(-2, 50), min_size=n_bins, max_size=n_bins))
    width = draw(st.lists(st.integers(-1, 20), min_size=n_bins, max_size=n_bins))
    if clean or draw(st.booleans()):  # valid layout: sorted, contiguous, non-overlapping
        chrom = sorted(chrom, key=contract.natural_chrom_key)
        start = [10 * i for i in range(n_bins)]
        width = [10] * n_bins
    var = pd.DataFrame({"chrom": chrom, "start": start,
                        "end": [s + w for s, w in zip(start, width)]},
                       index=[f"b{i}" for i in range(n_bins)])
    drop = None if clean else draw(st.sampled_from([None, None, "chrom", "start", "end"]))
    if drop:
        var = var.drop(columns=drop)
    layers = {}
    for m in draw(st.lists(st.sampled_from(["ATAC", "K27ac", "K27me3"]), min_size=int(clean),
                           max_size=3, unique=True)):
        vals = draw(st.lists(st.integers(0, 9) if clean else value_st,
                             min_size=n_cells * n_bins, max_size=n_cells * n_bins))
        arr = np.array(vals, dtype=np.float64).reshape(n_cells, n_bins)
        kind = draw(st.sampled_from(["csr", "csc", "dense_int", "dense_float"]))
        if kind == "dense_int":
            arr = np.nan_to_num(arr, nan=0, posinf=0).astype(np.int64)
        layers[m] = {"csr": sp.csr_matrix, "csc": sp.csc_matrix}.get(kind, np.asarray)(arr)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    if draw(st.booleans()):
        obs["batch"] = draw(st.lists(st.sampled_from(["a", "b"] if clean else ["a", "b", None]),
                                     min_size=n_cells, max_size=n_cells))
    a = ad.AnnData(X=sp.csr_matrix((n_cells, n_bins)), obs=obs, var=var)
    for k, v in layers.items():
        a.layers[k] = v
    if draw(st.booleans()):
        shape = "right" if clean else draw(st.sampled_from(["right", "wrong"]))
        ncol = len(layers) if shape == "right" else len(layers) + 1
        mask = draw(st.lists(st.sampled_from([0, 1] if clean else [0, 1, 2]),
                             min_size=n_cells * ncol,
                             max_size=n_cells * ncol))
        a.obsm["modality_mask"] = np.array(mask, dtype=np.int64).reshape(n_cells, ncol)
        a.uns["modalities"] = list(layers)
    mods = list(layers) if clean else draw(st.one_of(st.none(), st.just(list(layers)),
                          st.lists(st.sampled_from(["ATAC", "K27ac", "K27me3", "X"]),
                                   max_size=3)))
    keys = [None, "batch"] if clean and "batch" in obs else [None, "batch", "nope"]
    return a, mods, draw(st.sampled_from(keys)), draw(st.sampled_from(keys))


@FUZZ
@given(case=anndata_st())
def test_setup_anndata_valid_or_own_error(case):
    adata, mods, batch_key, labels_key = case
    reg = _own_error_only(contract.setup_anndata, adata, mods, batch_key, labels_key)
    if reg is None:
        return
    json.dumps(reg)  # the registry is JSON-serialisable
    assert reg["n_bins"] == adata.n_vars
    for m in reg["modalities"]:
        x = adata.layers[m]
        data = x.data if sp.issparse(x) else np.asarray(x)
        assert np.isfinite(data).all() and (data >= 0).all() and (data == np.round(data)).all()
    if reg["batch_key"] is not None:
        assert not adata.obs[reg["batch_key"]].isna().any()


# ---------------------------------------------------------------------- saved model configs
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    adata = cv.simulate(n_cells=40, n_bins=120, n_chromosomes=2, n_types=2, seed=0)
    cv.ConvNetVAE.setup_anndata(adata, modalities=["ATAC", "H3K27ac"], batch_key="batch")
    m = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=3)
    d = tmp_path_factory.mktemp("saved") / "m"
    m.save(d)
    return d, adata


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and obj:
        yield from _paths(obj[0], prefix + (0,))


json_value = st.recursive(
    # integers stay small: a hand-edited n_hidden of 10**9 would allocate that many weights
    st.one_of(st.none(), st.booleans(), st.integers(-3, 300),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=5)


@FEW
@given(data=st.data())
def test_mutated_model_config_loads_or_own_error(saved_model, tmp_path_factory, data):
    src, adata = saved_model
    d = tmp_path_factory.mktemp("mut") / "m"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    paths = [p for p in _paths(cfg) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = cfg
        try:
            for k in path[:-1]:
                parent = parent[k]
            key = path[-1]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(key, None)
            else:
                parent[key] = data.draw(json_value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    (d / "config.json").write_text(json.dumps(cfg))
    m = _own_error_only(cv.ConvNetVAE.load, d, adata)
    shutil.rmtree(d.parent, ignore_errors=True)
    if m is not None:
        z = _own_error_only(m.get_latent_representation)
        assert z is None or np.isfinite(z).all()


# ---------------------------------------------------------------------- regressions found by fuzzing
def test_regression_huge_coordinate_is_a_clear_error_not_out_of_memory():
    """A typo'd coordinate (1e12) once made read_counts build a grid of 1e8+ bins."""
    from convnetvae.data.readers import read_counts

    a = ad.AnnData(X=sp.csr_matrix(np.ones((2, 2), dtype=np.int64)),
                   var=pd.DataFrame(index=["chr1:0-1000", "chr1:999999999999-1000000000999"]))
    with pytest.raises(ConvNetVAEError, match="bins of 1000 bp"):
        read_counts({"ATAC": a}, bin_size=1000)
    with pytest.raises(ConvNetVAEError, match="bin size"):
        make_bins({"chr1": 3_000_000_000}, 10)


def test_regression_empty_modalities_list():
    a = cv.simulate(n_cells=10, n_bins=50, n_chromosomes=1, seed=0)
    with pytest.raises(ConvNetVAEError, match="modalities is empty"):
        contract.setup_anndata(a, [])
