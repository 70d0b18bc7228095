"""Genome handling: natural chromosome order, chromosome sizes, BED/blacklist files, bin grids.

Nothing here downloads anything: chromosome sizes and blacklists come from files the user gives
(two-column ``chrom length`` sizes files; BED files, gzipped or not).
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConvNetVAEError

ChromSizesLike = str | os.PathLike | Mapping[str, int] | pd.Series
BedLike = str | os.PathLike | pd.DataFrame

_SEX = {"X": 1, "Y": 2, "M": 3, "MT": 3}
# contigs that are not assembled chromosomes: unplaced, random, alt, fix, decoys, viral, lambda...
_CONTIG_RE = re.compile(
    r"(_|random|^chrun|^un$|^gl\d|^kn\d|^ki\d|^jh\d|^nc_|^hs\d|alt$|fix$|decoy|^ebv$|^chrebv$|lambda)",
    re.IGNORECASE,
)
_MITO = {"chrm", "m", "mt", "chrmt"}


def chrom_sort_key(name: str) -> tuple:
    """Sort key giving natural chromosome order.

    ``chr1, chr2, ..., chr10, ..., chr22, chrX, chrY, chrM``, then every other contig by name
    (the ``chr`` prefix is optional and ignored). The data contract uses this order too.

    Parameters
    ----------
    name
        A chromosome name.

    Returns
    -------
    tuple
        A key for :func:`sorted`.
    """
    s = str(name)
    core = s[3:] if s.lower().startswith("chr") else s
    if core.isdigit():
        return (0, int(core), "")
    if core.upper() in _SEX:
        return (1, _SEX[core.upper()], "")
    return (2, 0, core)


def sort_chromosomes(names: Iterable[str]) -> list[str]:
    """Return the unique chromosome names in natural genome order (see :func:`chrom_sort_key`)."""
    return sorted(set(names), key=chrom_sort_key)


def is_main_chromosome(name: str) -> bool:
    """True for assembled nuclear chromosomes (chr1..chrN, X, Y, Z, W); False for chrM and contigs.

    Unplaced (``chrUn_*``), random (``*_random``), alt/fix haplotypes, decoys, EBV and the
    mitochondrion are not main chromosomes.
    """
    if name.lower() in _MITO:
        return False
    bare = name[3:] if name.lower().startswith("chr") else name
    if _CONTIG_RE.search(name) or _CONTIG_RE.search(bare) or "." in bare:
        return False
    return True


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    path = Path(path)
    if not path.exists():
        raise ConvNetVAEError(f"file not found: {str(path)!r}")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_chrom_sizes(
    chrom_sizes: ChromSizesLike,
    main_only: bool = False,
    drop_mito: bool = False,
) -> pd.Series:
    """Read chromosome sizes into a Series (index = chromosome, values = length) in natural order.

    Parameters
    ----------
    chrom_sizes
        Path to a two-column ``chrom<TAB>length`` file (UCSC ``.chrom.sizes``, gzipped or not;
        a ``.fai`` index also works, extra columns are ignored), or a mapping / Series.
    main_only
        Keep only assembled nuclear chromosomes (drops chrM, ``chrUn_*``, ``*_random``, alts).
    drop_mito
        Drop the mitochondrial chromosome (chrM / MT) even when ``main_only`` is False.

    Returns
    -------
    pandas.Series
        int64 lengths indexed by chromosome name, naturally ordered.
    """
    if isinstance(chrom_sizes, pd.Series):
        sizes = chrom_sizes.copy()
    elif isinstance(chrom_sizes, Mapping):
        sizes = pd.Series(dict(chrom_sizes))
    else:
        with _open_text(chrom_sizes) as fh:
            rows = []
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                fields = line.split()
                if len(fields) < 2 or not fields[1].isdigit():
                    raise ConvNetVAEError(
                        f"chrom sizes file {str(chrom_sizes)!r}, line {lineno}: expected "
                        f"'chrom<TAB>length', got {line[:80]!r}"
                    )
                rows.append((fields[0], int(fields[1])))
        if not rows:
            raise ConvNetVAEError(f"chrom sizes file {str(chrom_sizes)!r} has no chromosomes")
        sizes = pd.Series(dict(rows))
    try:
        sizes = sizes.astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ConvNetVAEError(
            f"chrom_sizes must map chromosome names to integer lengths: {exc}") from None
    if (sizes <= 0).any():
        bad = sizes.index[sizes <= 0][0]
        raise ConvNetVAEError(f"chrom_sizes: chromosome {bad!r} has non-positive length")
    keep = [
        c
        for c in sizes.index
        if (not main_only or is_main_chromosome(c)) and not (drop_mito and c.lower() in _MITO)
    ]
    if not keep:
        raise ConvNetVAEError("chrom_sizes: no chromosome left after removing contigs/chrM")
    sizes = sizes.loc[sort_chromosomes(keep)]
    sizes.index.name = "chrom"
    sizes.name = "length"
    return sizes


def read_bed(bed: BedLike, name: str = "BED file") -> pd.DataFrame:
    """Read the first three columns of a BED file (gzipped or not) as chrom/start/end.

    ``track``, ``browser`` and ``#`` lines are skipped. Coordinates are 0-based half-open.

    Parameters
    ----------
    bed
        Path, or a DataFrame that already has ``chrom``, ``start``, ``end`` columns.
    name
        What the file is, for error messages (e.g. ``"blacklist"``).

    Returns
    -------
    pandas.DataFrame
        Columns ``chrom`` (str), ``start``, ``end`` (int64).
    """
    if isinstance(bed, pd.DataFrame):
        missing = {"chrom", "start", "end"} - set(bed.columns)
        if missing:
            raise ConvNetVAEError(f"{name}: DataFrame lacks columns {sorted(missing)}")
        df = bed[["chrom", "start", "end"]].copy()
    else:
        with _open_text(bed) as fh:
            rows = []
            for lineno, line in enumerate(fh, start=1):
                if not line.strip() or line.startswith(("#", "track", "browser")):
                    continue
                f = line.rstrip("\n").split("\t")
                if len(f) < 3:
                    f = line.split()
                if len(f) < 3 or not f[1].isdigit() or not f[2].isdigit():
                    raise ConvNetVAEError(
                        f"{name} {str(bed)!r}, line {lineno}: expected 'chrom start end' with "
                        f"integer coordinates, got {line.strip()[:80]!r}"
                    )
                rows.append((f[0], int(f[1]), int(f[2])))
        df = pd.DataFrame(rows, columns=["chrom", "start", "end"])
    df["chrom"] = df["chrom"].astype(str)
    df["start"] = df["start"].astype(np.int64)
    df["end"] = df["end"].astype(np.int64)
    bad = df["end"] < df["start"]
    if bad.any():
        r = df[bad].iloc[0]
        raise ConvNetVAEError(f"{name}: interval {r.chrom}:{r.start}-{r.end} has end < start")
    return df.reset_index(drop=True)


def read_blacklist(blacklist: BedLike) -> pd.DataFrame:
    """Read an ENCODE-style blacklist BED file (gzipped or not). See :func:`read_bed`."""
    return read_bed(blacklist, name="blacklist")


MAX_BINS = 50_000_000  # 60 bp bins over a human genome; more is a mistake, not a request


def make_bins(chrom_sizes: ChromSizesLike, bin_size: int) -> pd.DataFrame:
    """Tile the genome into fixed windows, in natural chromosome order.

    The last window of each chromosome is truncated at the chromosome end.

    Parameters
    ----------
    chrom_sizes
        See :func:`read_chrom_sizes` (used as given: filter contigs there).
    bin_size
        Window width in base pairs.

    Returns
    -------
    pandas.DataFrame
        ``chrom``, ``start``, ``end`` (0-based half-open), index ``chr1:0-10000`` style names.
    """
    bin_size = check_bin_size(bin_size)
    sizes = chrom_sizes if isinstance(chrom_sizes, pd.Series) else read_chrom_sizes(chrom_sizes)
    sizes = sizes.loc[sort_chromosomes(sizes.index)]
    n_per = ((sizes.to_numpy() + bin_size - 1) // bin_size).astype(np.int64)
    if n_per.sum() > MAX_BINS:  # a typo'd coordinate or bin size would otherwise exhaust memory
        raise ConvNetVAEError(
            f"{int(n_per.sum()):,} bins of {bin_size} bp (longest chromosome "
            f"{sizes.idxmax()!r}: {int(sizes.max()):,} bp): more than {MAX_BINS:,}. Check the "
            "bin size and the chromosome sizes / feature coordinates (a wrong coordinate?)")
    names: list[str] = []
    starts, ends = [], []
    for c, length, n in zip(sizes.index, sizes.to_numpy(), n_per):
        st = np.arange(n, dtype=np.int64) * bin_size
        en = np.minimum(st + bin_size, length)
        names += [f"{c}:{a}-{b}" for a, b in zip(st.tolist(), en.tolist())]
        starts.append(st)
        ends.append(en)
    chrom = np.repeat(np.asarray(sizes.index, dtype=object), n_per)
    return pd.DataFrame(
        {"chrom": chrom,
         "start": np.concatenate(starts) if starts else np.zeros(0, np.int64),
         "end": np.concatenate(ends) if ends else np.zeros(0, np.int64)},
        index=pd.Index(names, dtype=object),
    )


def check_bin_size(bin_size: int) -> int:
    """Validate a bin size (positive integer) and return it as ``int``."""
    try:
        b = int(bin_size)
    except (TypeError, ValueError):
        raise ConvNetVAEError(f"bin_size must be a positive integer, got {bin_size!r}") from None
    if b <= 0 or b != bin_size:
        raise ConvNetVAEError(f"bin_size must be a positive integer, got {bin_size!r}")
    return b


def overlaps_intervals(bins: pd.DataFrame, intervals: pd.DataFrame) -> np.ndarray:
    """Boolean mask of ``bins`` rows overlapping any of ``intervals`` (both 0-based half-open).

    ``bins`` must be sorted and non-overlapping within each chromosome (as from
    :func:`make_bins`); ``intervals`` may be in any order and may overlap each other.
    """
    mask = np.zeros(len(bins), dtype=bool)
    if len(intervals) == 0 or len(bins) == 0:
        return mask
    positions = np.arange(len(bins))
    for chrom, grp in bins.groupby("chrom", sort=False, observed=True):
        iv = intervals[intervals["chrom"] == chrom]
        if len(iv) == 0:
            continue
        idx = positions[bins["chrom"].to_numpy() == chrom]
        starts = grp["start"].to_numpy()
        ends = grp["end"].to_numpy()
        s = iv["start"].to_numpy()
        e = iv["end"].to_numpy()
        lo = np.searchsorted(ends, s, side="right")  # first bin with end > s
        hi = np.searchsorted(starts, e, side="left")  # bins with start < e are < hi
        ok = hi > lo
        diff = np.zeros(len(grp) + 1, dtype=np.int64)
        np.add.at(diff, lo[ok], 1)
        np.add.at(diff, hi[ok], -1)
        mask[idx] = np.cumsum(diff[:-1]) > 0
    return mask
