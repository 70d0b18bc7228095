"""Test helpers: write fragment files (10x/Signac style) from random data or from the simulator,
and a naive reference binning to check the fast reader against."""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

CHROM_SIZES = {"chr1": 1_000_000, "chr2": 800_000, "chr10": 300_000, "chrX": 500_000, "chrM": 16_299}


def random_fragments(
    n: int,
    chrom_sizes: dict[str, int] = CHROM_SIZES,
    n_cells: int = 50,
    seed: int = 0,
    max_len: int = 800,
    barcode_prefix: str = "",
) -> pd.DataFrame:
    """``n`` random fragments (chrom, start, end, barcode, count), sorted by chrom and start."""
    rng = np.random.default_rng(seed)
    chroms = list(chrom_sizes)
    w = np.array([chrom_sizes[c] for c in chroms], dtype=float)
    ci = rng.choice(len(chroms), size=n, p=w / w.sum())
    length = rng.integers(20, max_len, size=n)
    size = np.array([chrom_sizes[c] for c in chroms])[ci]
    start = (rng.random(n) * (size - length)).astype(np.int64)
    bc = np.array([f"{barcode_prefix}CELL{i:05d}-1" for i in range(n_cells)])
    df = pd.DataFrame({
        "chrom": np.array(chroms)[ci],
        "start": start,
        "end": start + length,
        "barcode": bc[rng.integers(0, n_cells, size=n)],
        "count": rng.integers(1, 4, size=n),
    })
    return df.sort_values(["chrom", "start"], kind="stable").reset_index(drop=True)


def fragments_from_counts(counts, var: pd.DataFrame, barcodes, seed: int = 0) -> pd.DataFrame:
    """Fragments reproducing a cells x bins count matrix exactly: each count becomes one fragment
    lying wholly inside its bin (so binning them gives ``counts`` back)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    coo = sp.coo_matrix(counts)
    reps = coo.data.astype(np.int64)
    cell = np.repeat(coo.row, reps)
    b = np.repeat(coo.col, reps)
    bstart = var["start"].to_numpy(np.int64)[b]
    bend = var["end"].to_numpy(np.int64)[b]
    length = np.minimum(rng.integers(40, 600, size=len(b)), bend - bstart)
    start = bstart + (rng.random(len(b)) * (bend - bstart - length + 1)).astype(np.int64)
    df = pd.DataFrame({
        "chrom": var["chrom"].astype(str).to_numpy()[b],
        "start": start,
        "end": start + length,
        "barcode": np.asarray(barcodes)[cell],
        "count": rng.integers(1, 3, size=len(b)),
    })
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_fragments(df: pd.DataFrame, path: str | Path, compress: bool = True,
                    header: bool = False, n_columns: int = 5) -> Path:
    """Write fragments as a tab-separated file (gzipped if ``compress``), optional '#' header."""
    path = Path(path)
    opener = gzip.open if compress else open
    with opener(path, "wt") as fh:
        if header:
            fh.write("# id=test\n# pipeline=cellranger-atac-like\n")
        df.iloc[:, :n_columns].to_csv(fh, sep="\t", header=False, index=False)
    return path


def naive_bin(df: pd.DataFrame, chrom_sizes: dict[str, int], bin_size: int):
    """Reference binning with plain Python: a fragment counts once in the bin of its start and,
    if different, once in the bin of its last base (end - 1). Returns {(barcode, bin_name): n}."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for chrom, start, end, bc in zip(df["chrom"], df["start"], df["end"], df["barcode"]):
        if chrom not in chrom_sizes:
            continue
        b1 = start // bin_size
        b2 = (end - 1) // bin_size
        for b in {b1, b2}:
            s = b * bin_size
            e = min(s + bin_size, chrom_sizes[chrom])
            out[(bc, f"{chrom}:{s}-{e}")] += 1
    return dict(out)


def shared_data() -> Path | None:
    """``../shared/data`` next to the repository root, or None when absent."""
    root = Path(__file__).resolve().parents[2]
    p = root.parent / "shared" / "data"
    return p if p.is_dir() else None


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the calling test cleanly when it is absent."""
    import pytest

    base = shared_data()
    if base is None or not base.joinpath(*parts).exists():
        pytest.skip(f"shared data file {'/'.join(parts)} not available")
    return base.joinpath(*parts)
