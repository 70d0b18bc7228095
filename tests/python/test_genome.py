"""Genome handling: natural chromosome order, sizes and blacklist files, bin grids."""

import gzip

import numpy as np
import pandas as pd
import pytest

from convnetvae.data.genome import (
    chrom_sort_key,
    is_main_chromosome,
    make_bins,
    overlaps_intervals,
    read_bed,
    read_blacklist,
    read_chrom_sizes,
    sort_chromosomes,
)
from convnetvae.errors import ConvNetVAEError
from helpers_fragments import shared_file


def test_natural_chromosome_order():
    names = ["chr10", "chrY", "chr2", "chrM", "chr1_KI270706v1_random", "chrX", "chr1", "chr22",
             "chrUn_GL000220v1"]
    assert sort_chromosomes(names)[:7] == ["chr1", "chr2", "chr10", "chr22", "chrX", "chrY", "chrM"]
    assert sort_chromosomes(["10", "2", "X", "1"]) == ["1", "2", "10", "X"]
    from convnetvae.data.contract import natural_chrom_key
    assert sorted(names, key=chrom_sort_key) == sorted(names, key=natural_chrom_key)


def test_main_chromosomes():
    for c in ["chr1", "chr19", "chrX", "chrY", "2", "X"]:
        assert is_main_chromosome(c), c
    for c in ["chrM", "MT", "chr1_KI270706v1_random", "chrUn_GL000220v1", "chr6_GL000250v2_alt",
              "chrEBV", "GL456210.1", "chrGL456210.1", "JH584299.1"]:
        assert not is_main_chromosome(c), c


def test_read_chrom_sizes_real_hg38():
    path = shared_file("genome", "chrom_sizes", "hg38.chrom.sizes")
    full = read_chrom_sizes(path)
    assert len(full) == 455 and full["chr1"] == 248956422
    main = read_chrom_sizes(path, main_only=True)
    assert list(main.index) == [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY"]
    no_m = read_chrom_sizes(path, drop_mito=True)
    assert "chrM" not in no_m.index and "chr1_KI270706v1_random" in no_m.index


def test_read_chrom_sizes_gz_mapping_and_errors(tmp_path):
    p = tmp_path / "g.sizes.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("chr2\t500\nchr10\t300\nchr1\t1000\n")
    s = read_chrom_sizes(p)
    assert list(s.index) == ["chr1", "chr2", "chr10"] and s["chr10"] == 300
    assert list(read_chrom_sizes({"chrX": 5, "chr3": 7}).index) == ["chr3", "chrX"]
    bad = tmp_path / "bad.sizes"
    bad.write_text("chr1\t1000\nchr2\tlots\n")
    with pytest.raises(ConvNetVAEError, match="line 2"):
        read_chrom_sizes(bad)
    with pytest.raises(ConvNetVAEError, match="not found"):
        read_chrom_sizes(tmp_path / "missing.sizes")


def test_read_blacklist_real_mm10():
    bl = read_blacklist(shared_file("genome", "blacklist", "mm10-blacklist.v2.bed.gz"))
    assert len(bl) == 3435
    assert list(bl.columns) == ["chrom", "start", "end"] and (bl["end"] > bl["start"]).all()


def test_read_bed_errors(tmp_path):
    p = tmp_path / "x.bed"
    p.write_text("track name=x\nchr1\t10\t20\nchr1\tten\t20\n")
    with pytest.raises(ConvNetVAEError, match="line 3"):
        read_bed(p, name="blacklist")
    p.write_text("chr1\t30\t20\n")
    with pytest.raises(ConvNetVAEError, match="end < start"):
        read_bed(p)


def test_make_bins_truncates_last_bin_and_names():
    bins = make_bins({"chr2": 25, "chr1": 30}, 10)
    assert list(bins.index) == ["chr1:0-10", "chr1:10-20", "chr1:20-30", "chr2:0-10",
                                "chr2:10-20", "chr2:20-25"]
    with pytest.raises(ConvNetVAEError, match="bin_size"):
        make_bins({"chr1": 30}, 0)


def test_make_bins_mm10_count():
    sizes = read_chrom_sizes(shared_file("genome", "chrom_sizes", "mm10.main.chrom.sizes"))
    assert len(make_bins(sizes, 10_000)) == 272_564  # README: about 272.6k


def test_overlaps_intervals_matches_brute_force():
    rng = np.random.default_rng(0)
    bins = make_bins({"chr1": 1000, "chr2": 500}, 37)
    iv = pd.DataFrame({"chrom": rng.choice(["chr1", "chr2", "chr3"], 40),
                       "start": rng.integers(0, 600, 40)})
    iv["end"] = iv["start"] + rng.integers(1, 90, 40)
    got = overlaps_intervals(bins, iv)
    want = np.array([((iv.chrom == b.chrom) & (iv.start < b.end) & (iv.end > b.start)).any()
                     for b in bins.itertuples()])
    np.testing.assert_array_equal(got, want)
    assert got.any() and not got.all()
