"""Fragment files -> the AnnData contract, streamed in chunks with bounded memory.

Input: 10x / Signac style fragment files, one fragment a line,
``chrom <TAB> start <TAB> end <TAB> barcode [<TAB> count ...]`` (0-based half-open), gzipped
(plain or bgzip, tabix-indexed or not) or plain text; leading ``#`` header lines are skipped.

Counting rule (the paper's, via Signac's ``GenomeBinMatrix``/``FeatureMatrix``): a fragment counts
once in every bin it overlaps, i.e. once in the bin of its start and, when different, once in
the bin of its last base (``end - 1``). Fragments are shorter than a bin in practice, so a
fragment counts in one bin, or in two when it straddles a boundary. The duplicate-count column
(5th) is ignored, as Signac and SnapATAC2 do. This equals SnapATAC2's
``add_tile_matrix(counting_strategy="fragment")`` (and ``"paired-insertion"``) for fragments
shorter than the bin.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ConvNetVAEError
from .bins import blacklist_bins
from .contract import build
from .genome import BedLike, ChromSizesLike, check_bin_size, make_bins, read_chrom_sizes

PathLike = str | os.PathLike
FRAGMENTS_KEY = "convnetvae_fragments"
_N_EXTRA = 8  # sentinel columns catching lines with too many fields when skipping malformed lines


# --------------------------------------------------------------------------------------------
# opening files
# --------------------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class _Source:
    """A fragment file opened for reading text, with compressed-bytes progress.

    Gzipped files are decompressed by a ``gzip -dc`` child process when available (so
    decompression runs on the second core in parallel with parsing), else by Python's gzip.
    """

    def __init__(self, path: Path, use_subprocess: bool = True):
        self.path = path
        self.size = path.stat().st_size
        self._raw = open(path, "rb")
        self._proc: subprocess.Popen | None = None
        self.gz = _is_gzip(path)
        if self.gz and use_subprocess and shutil.which("gzip"):
            self._proc = subprocess.Popen(
                ["gzip", "-dc"], stdin=self._raw, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                bufsize=1 << 20,
            )
            self.stream: Any = self._proc.stdout
        elif self.gz:
            self.stream = gzip.GzipFile(fileobj=self._raw, mode="rb")
        else:
            self.stream = self._raw

    def position(self) -> int:
        """Bytes of the (compressed) file consumed so far."""
        try:
            return os.lseek(self._raw.fileno(), 0, os.SEEK_CUR)
        except (OSError, ValueError):
            return 0

    def check_truncated(self) -> None:
        """Raise the truncated-gzip error if the decompressor already failed (called before
        reporting a malformed line, which at the end of a cut file is the partial last line)."""
        if self._proc is not None:
            try:
                rc = self._proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                return
            if rc != 0:
                self.finish()

    def finish(self) -> None:
        """Close and raise a clear error if the gzip stream was truncated or corrupt."""
        err = b""
        rc = 0
        if self._proc is not None:
            self._proc.stdout.close()
            err = self._proc.stderr.read() if self._proc.stderr else b""
            rc = self._proc.wait()
            self._proc.stderr.close()
        self.close()
        if rc != 0:
            raise ConvNetVAEError(
                f"fragment file {str(self.path)!r} is a truncated or corrupt gzip file "
                f"({err.decode(errors='replace').strip() or f'gzip exit code {rc}'}); "
                "re-download or re-create it (e.g. with bgzip)")

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for fh in (getattr(self, "stream", None), self._raw):
            try:
                if fh is not None:
                    fh.close()
            except Exception:
                pass


def _peek_layout(path: Path) -> tuple[int, int]:
    """(number of leading '#' header lines, number of tab-separated fields of the first line)."""
    opener = gzip.open if _is_gzip(path) else open
    n_header = 0
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("#"):
                    n_header += 1
                    continue
                if not line.strip():
                    n_header += 1
                    continue
                return n_header, len(line.rstrip("\n").split("\t"))
    except (EOFError, OSError, zlib.error) as exc:
        raise ConvNetVAEError(
            f"fragment file {str(path)!r} cannot be read as gzip: {exc}; it may be truncated or "
            "not a fragment file") from None
    raise ConvNetVAEError(f"fragment file {str(path)!r} contains no fragments (empty file)")


# --------------------------------------------------------------------------------------------
# sparse accumulation with bounded work: a binary counter of CSR matrices
# --------------------------------------------------------------------------------------------


class _CsrAccumulator:
    """Sum many (rows x n_cols) COO chunks into one CSR with O(N log C) work and memory ~ nnz."""

    def __init__(self, n_cols: int):
        self.n_cols = n_cols
        self.levels: list[sp.csr_matrix | None] = []

    @staticmethod
    def _grow(m: sp.csr_matrix, n_rows: int) -> sp.csr_matrix:
        if m.shape[0] < n_rows:
            indptr = np.concatenate([m.indptr, np.full(n_rows - m.shape[0], m.indptr[-1],
                                                       dtype=m.indptr.dtype)])
            m = sp.csr_matrix((m.data, m.indices, indptr), shape=(n_rows, m.shape[1]))
        return m

    def add(self, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> None:
        if len(rows) == 0:
            return
        carry = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n_rows, self.n_cols))
        carry.sum_duplicates()
        i = 0
        while i < len(self.levels) and self.levels[i] is not None:
            other = self.levels[i]
            n = max(carry.shape[0], other.shape[0])
            carry = self._grow(carry, n) + self._grow(other, n)
            self.levels[i] = None
            i += 1
        if i == len(self.levels):
            self.levels.append(None)
        self.levels[i] = carry

    def result(self, n_rows: int) -> sp.csr_matrix:
        out = sp.csr_matrix((n_rows, self.n_cols), dtype=np.int32)
        for m in self.levels:
            if m is not None:
                out = out + self._grow(m, n_rows)
        out.sum_duplicates()
        return out


# --------------------------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------------------------


class _Genome:
    """Chromosome -> global bin offset lookup for the retained chromosomes."""

    def __init__(self, sizes: pd.Series, all_names: set[str], bin_size: int):
        self.sizes = sizes
        self.bin_size = bin_size
        n_per = (sizes.to_numpy() + bin_size - 1) // bin_size
        self.offsets = dict(zip(sizes.index, np.concatenate([[0], np.cumsum(n_per)[:-1]])))
        self.lengths = dict(zip(sizes.index, sizes.to_numpy()))
        self.excluded = set(all_names) - set(sizes.index)  # known but removed contigs
        self.n_bins = int(n_per.sum())


def _bad_line(path: Path, line: int, why: str, text: str | None = None) -> ConvNetVAEError:
    shown = f": {text!r}" if text else ""
    return ConvNetVAEError(
        f"fragment file {str(path)!r}, line {line}: {why}{shown}. Fix the file, or pass "
        "skip_malformed=True (--skip-malformed) to skip and count such lines")


class _FileCounter:
    """Bins one fragment file chunk by chunk: validation, chromosome and barcode lookup, counts.

    State: the barcode -> cell row lookup, the cell ids in order of appearance, the counts
    accumulator, fragments per cell and the file's statistics.
    """

    def __init__(self, path: Path, genome: _Genome, resolve: Callable[[str], str | None],
                 skip_malformed: bool, unknown_chroms: str) -> None:
        if not path.exists():
            raise ConvNetVAEError(f"fragment file not found: {str(path)!r}")
        self.path, self.genome, self.resolve = path, genome, resolve
        self.skip_malformed, self.unknown_chroms = skip_malformed, unknown_chroms
        self.n_header, self.n_fields = _peek_layout(path)
        if self.n_fields < 4:
            raise _bad_line(path, self.n_header + 1,
                            f"expected at least 4 tab-separated columns (chrom start end barcode), "
                            f"found {self.n_fields}")
        n_extra = _N_EXTRA if skip_malformed else 1
        self.names = [f"f{i}" for i in range(self.n_fields + n_extra)]
        self.extra_cols = self.names[self.n_fields:]
        # barcode lookup: raw barcode -> cell row (or -1 = not a wanted cell)
        self.bc_index: dict[str, int] = {}
        self.cell_ids: list[str] = []
        self.cell_row: dict[str, int] = {}
        self.acc = _CsrAccumulator(genome.n_bins)
        self.frag_per_cell = np.zeros(0, dtype=np.int64)
        self.stats = {"file": str(path), "n_lines": 0, "n_fragments": 0, "n_malformed": 0,
                      "n_other_chrom": 0, "n_unwanted_barcode": 0, "first_malformed_line": None}

    # ---- reading -----------------------------------------------------------------------
    def run(self, chunk_size: int, progress: Any | None
            ) -> tuple[sp.csr_matrix, list[str], np.ndarray, dict]:
        """Read the file; returns (cells x bins CSR, cell ids, fragments per cell, stats)."""
        src = _Source(self.path)
        rows_before = last_pos = 0
        try:
            reader = pd.read_csv(
                src.stream, sep="\t", header=None, names=self.names,
                skiprows=self.n_header, chunksize=chunk_size, engine="c",
                quoting=csv.QUOTE_NONE, dtype={"f0": str, "f3": str}, skip_blank_lines=False,
                na_filter=True, keep_default_na=False, na_values=[""], low_memory=True,
            )
            for chunk in reader:
                self._chunk(chunk, self.n_header + rows_before + 1, src)
                rows_before += len(chunk)
                if progress is not None:
                    pos = src.position()
                    progress.update(max(pos - last_pos, 0))
                    last_pos = pos
            src.finish()
        except pd.errors.ParserError as exc:
            src.close()
            msg = str(exc)
            m = re.search(r"line (\d+), saw (\d+)", msg)
            if m:
                raise _bad_line(self.path, int(m.group(1)),
                                f"wrong number of columns (expected {self.n_fields}, saw "
                                f"{m.group(2)})"
                                + ("; too many to skip" if self.skip_malformed else "")) from None
            raise ConvNetVAEError(
                f"fragment file {str(self.path)!r} could not be parsed: {msg}") from None
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            src.close()
            raise ConvNetVAEError(
                f"fragment file {str(self.path)!r} is a truncated or corrupt gzip file ({exc}); "
                "re-download or re-create it") from None
        except BaseException:
            src.close()
            raise
        n = len(self.cell_ids)
        return self.acc.result(n), self.cell_ids, self.frag_per_cell[:n], self.stats

    # ---- one chunk -----------------------------------------------------------------------
    def _chunk(self, chunk: pd.DataFrame, first_line: int, src: _Source) -> None:
        n = len(chunk)
        # hash-based factorisation (no sorting of categories), -1 for missing values
        chrom_codes, cats = pd.factorize(chunk["f0"].to_numpy(), sort=False)
        bcodes, bcats = pd.factorize(chunk["f3"].to_numpy(), sort=False)
        # wrong column count: a missing barcode (fewer fields) or a sentinel value (more)
        fewer = bcodes < 0
        more = np.zeros(n, dtype=bool)
        for c in self.extra_cols:
            more |= chunk[c].notna().to_numpy()
        blank = fewer & (chrom_codes < 0) & chunk["f1"].isna().to_numpy()
        wrong = (fewer | more) & ~blank
        start, end, nonint = self._coordinates(chunk, blank | wrong)
        bad = wrong | nonint | (((end <= start) | (start < 0)) & ~blank)
        o, chrom_len = self._chromosomes(chunk, chrom_codes, cats, bad, blank, first_line)
        on_chrom = o >= 0
        beyond = on_chrom & (end > chrom_len) & ~bad
        bad |= beyond
        if bad.any():
            self._malformed(chunk, bad, wrong, beyond, nonint, first_line, src)
        self.stats["n_lines"] += int(n - blank.sum())
        keep = on_chrom & ~bad & ~blank
        self.stats["n_other_chrom"] += int(((o == -2) & ~bad & ~blank).sum())
        # barcodes -> cell rows
        bmap = np.fromiter((self._lookup(b) for b in bcats), dtype=np.int64, count=len(bcats))
        cell = np.where(bcodes >= 0, bmap[bcodes] if len(bmap) else -1, -1)
        self.stats["n_unwanted_barcode"] += int((keep & (cell < 0)).sum())
        keep &= cell >= 0
        self._count(cell[keep], o[keep], start[keep], end[keep])

    @staticmethod
    def _coordinates(chunk: pd.DataFrame, skip: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer start and end, and the lines whose coordinates are not integers."""
        coords = []
        nonint_any = np.zeros(len(chunk), dtype=bool)
        for col in ("f1", "f2"):
            v = chunk[col]
            if v.dtype.kind in "iu":
                coords.append(v.to_numpy(np.int64))
                continue
            num = pd.to_numeric(v, errors="coerce").to_numpy(np.float64)
            nonint = ~np.isfinite(num) | (num != np.round(num))
            nonint_any |= nonint & ~skip
            coords.append(np.where(nonint, 0, num).astype(np.int64))
        return coords[0], coords[1], nonint_any

    def _chromosomes(self, chunk: pd.DataFrame, chrom_codes: np.ndarray, cats: Any,
                     bad: np.ndarray, blank: np.ndarray, first_line: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Per line the chromosome's bin offset (-2: an excluded chromosome, -1: none) and
        length; an unknown chromosome is an error unless ``unknown_chroms="skip"``."""
        g = self.genome
        off = np.full(len(cats), -1, dtype=np.int64)
        length = np.zeros(len(cats), dtype=np.int64)
        for i, c in enumerate(cats):
            if c in g.offsets:
                off[i], length[i] = g.offsets[c], g.lengths[c]
            elif c in g.excluded or self.unknown_chroms == "skip":
                off[i] = -2
            else:
                off[i] = -3
        n = len(chunk)
        if not len(cats):
            return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        o = np.where(chrom_codes >= 0, off[chrom_codes], -1)
        unknown = (o == -3) & ~bad & ~blank
        if unknown.any():
            r = int(np.flatnonzero(unknown)[0])
            raise ConvNetVAEError(
                f"fragment file {str(self.path)!r}, line {first_line + r}: chromosome "
                f"{chunk['f0'].iloc[r]!r} is not in chrom_sizes (known: "
                f"{list(g.sizes.index[:5])}...). Use the chrom sizes of the genome build "
                "the fragments were aligned to, or pass unknown_chroms='skip'")
        return o, length[chrom_codes]

    def _malformed(self, chunk: pd.DataFrame, bad: np.ndarray, wrong: np.ndarray,
                   beyond: np.ndarray, nonint: np.ndarray, first_line: int, src: _Source) -> None:
        """Raise for the first malformed line, or count them when skipping."""
        r = int(np.flatnonzero(bad)[0])
        if not self.skip_malformed:
            src.check_truncated()
            text = "\t".join(str(x) for x in chunk.iloc[r, :4].tolist())
            if wrong[r]:
                why = f"wrong number of columns (expected {self.n_fields})"
            elif beyond[r]:
                why = ("fragment end lies beyond the chromosome's length in chrom_sizes "
                       "(wrong genome build?)")
            elif nonint[r]:
                why = "start/end are not integers"
            else:
                why = "end must be greater than start (0-based half-open, start >= 0)"
            raise _bad_line(self.path, first_line + r, why, text)
        self.stats["n_malformed"] += int(bad.sum())
        if self.stats["first_malformed_line"] is None:
            self.stats["first_malformed_line"] = first_line + r

    def _count(self, cell: np.ndarray, offset: np.ndarray, start: np.ndarray,
               end: np.ndarray) -> None:
        """Count each fragment in the bin of its start and, if different, of its last base."""
        bs = self.genome.bin_size
        b1 = offset + start // bs
        b2 = offset + (end - 1) // bs
        two = b2 != b1
        n_cells = len(self.cell_ids)
        self.acc.add(np.concatenate([cell, cell[two]]), np.concatenate([b1, b2[two]]), n_cells)
        if len(self.frag_per_cell) < n_cells:
            self.frag_per_cell = np.concatenate(
                [self.frag_per_cell, np.zeros(n_cells - len(self.frag_per_cell), dtype=np.int64)])
        self.frag_per_cell += np.bincount(cell, minlength=n_cells)
        self.stats["n_fragments"] += int(len(cell))

    def _lookup(self, b: str) -> int:
        r = self.bc_index.get(b)
        if r is not None:
            return r
        cid = self.resolve(b)
        if cid is None:
            r = -1
        else:
            r = self.cell_row.get(cid)
            if r is None:
                r = len(self.cell_ids)
                self.cell_row[cid] = r
                self.cell_ids.append(cid)
        self.bc_index[b] = r
        return r


def _count_file(path: Path, genome: _Genome, resolve: Callable[[str], str | None],
                skip_malformed: bool, unknown_chroms: str, chunk_size: int,
                progress: Any | None) -> tuple[sp.csr_matrix, list[str], np.ndarray, dict]:
    """Bin one fragment file. Returns (cells x bins CSR, cell ids, fragments per cell, stats)."""
    return _FileCounter(path, genome, resolve, skip_malformed, unknown_chroms).run(
        chunk_size, progress)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _read_list(x: Any, what: str) -> list[str]:
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        if not p.exists():
            raise ConvNetVAEError(f"{what} file not found: {str(p)!r}")
        opener = gzip.open if _is_gzip(p) else open
        with opener(p, "rt") as fh:
            return [ln.split()[0] for ln in fh if ln.strip() and not ln.startswith("#")]
    return [str(v) for v in x]


def _read_map(x: Any, modality: str) -> dict[str, str]:
    if isinstance(x, Mapping):
        return {str(k): str(v) for k, v in x.items()}
    if isinstance(x, pd.Series):
        return {str(k): str(v) for k, v in x.items()}
    p = Path(x)
    if not p.exists():
        raise ConvNetVAEError(f"barcode map for modality {modality!r}: file not found {str(p)!r}")
    opener = gzip.open if _is_gzip(p) else open
    out = {}
    with opener(p, "rt") as fh:
        for lineno, ln in enumerate(fh, start=1):
            if not ln.strip() or ln.startswith("#"):
                continue
            f = ln.split()
            if len(f) < 2:
                raise ConvNetVAEError(
                    f"barcode map {str(p)!r}, line {lineno}: expected 'modality_barcode cell_id'")
            out[f[0]] = f[1]
    return out


def read_fragments(
    fragments: Mapping[str, PathLike | Sequence[PathLike]],
    bin_size: int = 10_000,
    chrom_sizes: ChromSizesLike | None = None,
    blacklist: BedLike | None = None,
    barcodes: Sequence[str] | PathLike | None = None,
    min_counts: int | Mapping[str, int] | None = None,
    samples: Sequence[str] | None = None,
    barcode_maps: Mapping[str, Mapping[str, str] | PathLike] | None = None,
    drop_incomplete: bool = False,
    main_chromosomes_only: bool = True,
    unknown_chroms: str = "error",
    skip_malformed: bool = False,
    chunk_size: int = 250_000,
    progress: bool = False,
    batch_key: str = "sample",
):
    """Bin fragment files of one or several modalities into one AnnData (the data contract).

    Each file is streamed in chunks of ``chunk_size`` lines: memory grows with the number of
    non-zero (cell, bin) counts, never with the file size.

    Parameters
    ----------
    fragments
        ``{modality: path}`` or ``{modality: [path_sample1, path_sample2, ...]}``. With lists,
        the i-th file of every modality belongs to sample i; cells are then named
        ``"<sample>#<barcode>"`` and ``obs[batch_key]`` holds the sample.
    bin_size
        Window width in bp (10 kb as in the paper).
    chrom_sizes
        Chromosome sizes (path to a ``.chrom.sizes`` file, or a mapping). Required: it fixes the
        bins and catches files of another genome build.
    blacklist
        BED file (gzipped or not) of regions to exclude: bins overlapping any are dropped.
    barcodes
        Cells to keep (list or a file with one barcode a line). Matched against the cell ids
        (``sample#barcode`` with several samples). When given, ``min_counts`` defaults to 1.
    min_counts
        Minimum fragments (on retained chromosomes) for a cell to count as observed in a
        modality; an int or ``{modality: int}``. Default 500, or 1 when ``barcodes`` is given.
        Cells observed in no modality are dropped.
    samples
        Sample names when lists of files are given (default: file names without extensions).
    barcode_maps
        ``{modality: {modality_barcode: cell_id}}`` (or a two-column file) for technologies whose
        modalities carry different barcodes for the same cell. Barcodes absent from a map are
        not cells.
    drop_incomplete
        Drop cells missing any modality instead of keeping them with the modality masked.
    main_chromosomes_only
        Drop chrM, unplaced, random and alt contigs from the bins (their fragments are skipped
        and counted in ``uns``).
    unknown_chroms
        ``"error"`` (default) for fragments on chromosomes absent from ``chrom_sizes``, or
        ``"skip"`` to skip and count them.
    skip_malformed
        Skip malformed lines (wrong column count, non-integer coordinates, end <= start, end
        beyond the chromosome) and report their number, instead of raising an error naming
        the file and line.
    chunk_size
        Lines parsed per chunk.
    progress
        Show a progress bar (tqdm) over the compressed bytes read.
    batch_key
        obs column holding the sample when several samples are given.

    Returns
    -------
    anndata.AnnData
        ``layers[modality]`` CSR int32 cells x bins; ``var`` chrom/start/end in genome order
        (names ``chr1:0-10000``), blacklisted bins removed; ``obs`` with ``n_counts_<modality>``,
        ``n_fragments_<modality>`` (and ``batch_key``), cells ordered by sample then id;
        ``obsm["modality_mask"]``;
        ``uns["modalities"]`` and ``uns["convnetvae_fragments"]`` (per-file statistics).
    """
    if not isinstance(fragments, Mapping) or not fragments:
        raise ConvNetVAEError(
            "fragments must be a non-empty mapping {modality: path or [paths]}, e.g. "
            "{'ATAC': 'atac_fragments.tsv.gz'}")
    if chrom_sizes is None:
        raise ConvNetVAEError(
            "chrom_sizes is required: pass the .chrom.sizes file of the genome build the "
            "fragments were aligned to (e.g. mm10.chrom.sizes); nothing is downloaded")
    if unknown_chroms not in ("error", "skip"):
        raise ConvNetVAEError(f"unknown_chroms must be 'error' or 'skip', got {unknown_chroms!r}")
    bin_size = check_bin_size(bin_size)
    chunk_size = int(chunk_size)
    if chunk_size <= 0:
        raise ConvNetVAEError(f"chunk_size must be positive, got {chunk_size}")
    # 1. the files of every modality and sample, the genome's bins, the cell filters
    modalities = [str(m) for m in fragments]
    files, samples = _files_and_samples(fragments, samples)
    all_sizes = read_chrom_sizes(chrom_sizes)
    sizes = read_chrom_sizes(all_sizes, main_only=main_chromosomes_only)
    genome = _Genome(sizes, set(all_sizes.index), bin_size)
    bins = make_bins(sizes, bin_size)
    wanted = None if barcodes is None else set(_read_list(barcodes, "barcodes"))
    if wanted is not None and not wanted:
        raise ConvNetVAEError("barcodes is empty: give the cell barcodes to keep, or None")
    if min_counts is None:
        min_counts = 1 if wanted is not None else 500
    mins = {m: int(min_counts[m]) if isinstance(min_counts, Mapping) else int(min_counts)
            for m in modalities}
    maps = {str(k): _read_map(v, str(k)) for k, v in (barcode_maps or {}).items()}
    unknown_maps = set(maps) - set(modalities)
    if unknown_maps:
        raise ConvNetVAEError(
            f"barcode_maps has modalities {sorted(unknown_maps)} that are not in fragments "
            f"({modalities})")
    # 2. count every file
    per_mod, file_stats = _count_files(files, samples, genome, maps, wanted, skip_malformed,
                                       unknown_chroms, chunk_size, progress)
    # 3. the cells (observed in some modality, or in all with drop_incomplete) and their counts
    observed, per_sample, cell_index = _select_cells(per_mod, mins, modalities, len(samples),
                                                     drop_incomplete)
    keep_bins = ~blacklist_bins(bins, blacklist)
    layers, mask, nfr = _assemble(per_mod, observed, cell_index, keep_bins, modalities)
    # 4. the contract
    obs = pd.DataFrame(index=cell_index)
    if len(samples) > 1:
        sample_idx = np.repeat(np.arange(len(samples)), [len(c) for c in per_sample])
        obs[batch_key] = pd.Categorical.from_codes(sample_idx, categories=samples)
    for m in modalities:
        obs[f"n_fragments_{m}"] = nfr[m]
    return build(layers, bins[keep_bins], obs, mask, uns={FRAGMENTS_KEY: {
        "bin_size": bin_size,
        "counting_rule": "fragment counted once in each bin containing its start or its last "
                         "base (end - 1); duplicate-count column ignored",
        "n_bins_genome": int(len(bins)),
        "n_bins_blacklisted": int((~keep_bins).sum()),
        "min_counts": mins,
        "samples": samples,
        "main_chromosomes_only": bool(main_chromosomes_only),
        # keyed "0", "1", ... in reading order (h5ad cannot store a list of dicts)
        "files": {str(i): {k: (v if v is not None else -1) for k, v in st.items()}
                  for i, st in enumerate(file_stats)},
        "n_malformed": int(sum(st["n_malformed"] for st in file_stats)),
    }})


def _files_and_samples(fragments: Mapping[str, Any], samples: Sequence[str] | None
                       ) -> tuple[dict[str, list[Path]], list[str]]:
    """The files of every modality (one per sample, all existing) and the sample names."""
    files: dict[str, list[Path]] = {}
    for m, v in fragments.items():
        lst = [v] if isinstance(v, (str, os.PathLike)) else list(v)
        if not lst:
            raise ConvNetVAEError(f"fragments[{m!r}] is an empty list of files")
        files[str(m)] = [Path(p) for p in lst]
        for p in files[str(m)]:
            if not p.exists():
                raise ConvNetVAEError(f"fragment file for modality {m!r} not found: {str(p)!r}")
    counts = {len(v) for v in files.values()}
    if len(counts) != 1:
        raise ConvNetVAEError(
            "every modality needs the same number of fragment files (one per sample); got "
            + ", ".join(f"{m}: {len(v)}" for m, v in files.items()))
    n_samples = counts.pop()
    if samples is None:
        samples = [_stem(p) for p in next(iter(files.values()))]
        if len(set(samples)) != len(samples):
            samples = [f"sample{i + 1}" for i in range(n_samples)]
    samples = [str(s) for s in samples]
    if len(samples) != n_samples or len(set(samples)) != len(samples):
        raise ConvNetVAEError(
            f"samples must be {n_samples} distinct names (one per file of each modality), got "
            f"{samples}")
    return files, samples


def _count_files(files: Mapping[str, list[Path]], samples: list[str], genome: _Genome,
                 maps: Mapping[str, dict], wanted: set[str] | None, skip_malformed: bool,
                 unknown_chroms: str, chunk_size: int, progress: bool
                 ) -> tuple[dict[str, list[tuple]], list[dict]]:
    """Count every file: ``{modality: [(counts, cell ids, fragments per cell) per sample]}``
    and the per-file statistics."""
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(p.stat().st_size for v in files.values() for p in v)
        pbar = tqdm(total=total, unit="B", unit_scale=True, desc="binning fragments")
    multi = len(samples) > 1
    per_mod: dict[str, list[tuple]] = {m: [] for m in files}
    file_stats = []
    try:
        for m, paths in files.items():
            for si, path in enumerate(paths):
                resolve = _make_resolver(maps.get(m), samples[si] if multi else None, wanted)
                if pbar is not None:
                    pbar.set_postfix_str(f"{m} {path.name}")
                counts, ids, nfrag, st = _count_file(
                    path, genome, resolve, skip_malformed, unknown_chroms, chunk_size, pbar)
                st.update({"modality": m, "sample": samples[si]})
                _check_counted(path, m, st)
                file_stats.append(st)
                per_mod[m].append((counts, ids, nfrag))
    finally:
        if pbar is not None:
            pbar.close()
    return per_mod, file_stats


def _check_counted(path: Path, m: str, st: dict) -> None:
    if st["n_lines"] == 0:
        raise ConvNetVAEError(f"fragment file {str(path)!r} contains no fragments")
    if st["n_fragments"] == 0:
        raise ConvNetVAEError(
            f"fragment file {str(path)!r} ({m}): none of its {st['n_lines']} fragments "
            "was counted: "
            + ("no barcode matches the barcodes list / barcode map"
               if st["n_unwanted_barcode"] else
               "all lie on excluded chromosomes or are malformed")
            + ". Check barcodes (e.g. the '-1' suffix, sample prefixes "
            "'sample#barcode' with several samples), barcode_maps and chrom_sizes")


def _select_cells(per_mod: Mapping[str, list[tuple]], mins: Mapping[str, int],
                  modalities: list[str], n_samples: int, drop_incomplete: bool
                  ) -> tuple[dict, list[np.ndarray], pd.Index]:
    """Cells observed per modality and file (vectorised: files can hold 10^5-10^6 barcodes),
    and the cell order: by sample, then by cell id."""
    observed: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # m -> [(cell ids, rows)]
    for m in modalities:
        observed[m] = []
        for _counts, ids, nfrag in per_mod[m]:
            rows = np.flatnonzero(nfrag >= mins[m])
            observed[m].append((np.asarray(ids, dtype=object)[rows], rows))
        allm = pd.Index(np.concatenate([c for c, _ in observed[m]]))
        if allm.has_duplicates:
            raise ConvNetVAEError(
                f"cell {allm[allm.duplicated()][0]!r} appears in two {m} fragment files; give "
                "distinct sample names or barcodes")
    per_sample = []
    for fi in range(n_samples):
        ids_fi = [observed[m][fi][0] for m in modalities]
        if drop_incomplete:
            common = pd.Index(ids_fi[0])
            for other in ids_fi[1:]:
                common = common.intersection(pd.Index(other))
            per_sample.append(np.sort(common.to_numpy(dtype=object).astype(str)))
        else:
            per_sample.append(np.unique(np.concatenate(ids_fi).astype(str)))
    cell_index = pd.Index(np.concatenate(per_sample).astype(object))
    if len(cell_index) == 0:
        raise ConvNetVAEError(
            "no cell passes the filters: "
            + ", ".join(f"{m}: {sum(len(c) for c, _ in observed[m])} cells with >= {mins[m]} "
                        "fragments" for m in modalities)
            + (" (drop_incomplete=True keeps only cells observed in every modality)"
               if drop_incomplete else "")
            + ". Lower min_counts or check the barcodes")
    if not cell_index.is_unique:  # the same cell id in two samples (only with barcode maps)
        raise ConvNetVAEError(
            f"cell {cell_index[cell_index.duplicated()][0]!r} appears in two samples")
    return observed, per_sample, cell_index


def _assemble(per_mod: dict[str, list[tuple]], observed: dict, cell_index: pd.Index,
              keep_bins: np.ndarray, modalities: list[str]
              ) -> tuple[dict[str, sp.csr_matrix], np.ndarray, dict[str, np.ndarray]]:
    """Every modality's counts over ``cell_index`` and the kept bins, the modality mask and
    the fragments per cell. Each file's matrix is freed once placed."""
    n_cells = len(cell_index)
    col_map = np.cumsum(keep_bins) - 1  # old bin -> new column (blacklisted bins dropped)
    n_keep = int(keep_bins.sum())
    layers, nfr = {}, {}
    mask = np.zeros((n_cells, len(modalities)), dtype=bool)
    for mi, m in enumerate(modalities):
        nf = np.zeros(n_cells, dtype=np.int64)
        X = sp.csr_matrix((n_cells, n_keep), dtype=np.int32)
        for fi, (counts, ids, nfrag) in enumerate(per_mod[m]):
            cids, rows = observed[m][fi]
            pos = cell_index.get_indexer(cids)
            ok = pos >= 0
            if not ok.any():
                continue
            src = np.full(n_cells, -1, dtype=np.int64)
            src[pos[ok]] = rows[ok]
            hit = src >= 0
            nf[hit] = nfrag[src[hit]]
            mask[hit, mi] = True
            # cells are disjoint across files: a sum places them
            X = X + _take_rows(counts, src, keep_bins, col_map, n_keep)
            per_mod[m][fi] = (None, ids, nfrag)  # free the file's matrix early
            del counts
        layers[m] = X
        nfr[m] = nf
    return layers, mask, nfr


def _take_rows(counts: sp.csr_matrix, src: np.ndarray, keep_cols: np.ndarray,
               col_map: np.ndarray, n_cols: int) -> sp.csr_matrix:
    """Rows ``src`` of ``counts`` (-1 = an empty row) restricted to ``keep_cols``, in one copy."""
    lengths = np.where(src >= 0, np.diff(counts.indptr)[np.maximum(src, 0)], 0)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    starts = counts.indptr[np.maximum(src, 0)]
    # positions of the gathered entries in counts.data
    pos = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    cols = counts.indices[pos]
    data = counts.data[pos].astype(np.int32, copy=False)
    ok = keep_cols[cols]
    if not ok.all():
        row_of = np.repeat(np.arange(len(src)), lengths)[ok]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of, minlength=len(src)))])
        cols, data = cols[ok], data[ok]
    return sp.csr_matrix((data, col_map[cols].astype(np.int32), indptr), shape=(len(src), n_cols))


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".gz", ".bgz", ".tsv", ".bed", ".txt", ".tbi"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    for suf in (".tsv", ".bed", ".txt"):
        if name.endswith(suf):
            name = name[: -len(suf)]
    return name


def _make_resolver(bmap: dict[str, str] | None, sample: str | None,
                   wanted: set[str] | None) -> Callable[[str], str | None]:
    def resolve(b: str) -> str | None:
        cid = b
        if bmap is not None:
            cid = bmap.get(b)
            if cid is None:
                return None
        if sample is not None:
            cid = f"{sample}#{cid}"
        if wanted is not None and cid not in wanted:
            return None
        return cid

    return resolve
