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


def _count_file(
    path: Path,
    genome: _Genome,
    resolve: Callable[[str], str | None],
    skip_malformed: bool,
    unknown_chroms: str,
    chunk_size: int,
    progress: Any | None,
) -> tuple[sp.csr_matrix, list[str], np.ndarray, dict]:
    """Bin one fragment file. Returns (cells x bins CSR, cell ids, fragments per cell, stats)."""
    if not path.exists():
        raise ConvNetVAEError(f"fragment file not found: {str(path)!r}")
    n_header, n_fields = _peek_layout(path)
    if n_fields < 4:
        raise _bad_line(path, n_header + 1,
                        f"expected at least 4 tab-separated columns (chrom start end barcode), "
                        f"found {n_fields}")
    n_extra = _N_EXTRA if skip_malformed else 1
    names = [f"f{i}" for i in range(n_fields + n_extra)]
    extra_cols = [names[i] for i in range(n_fields, n_fields + n_extra)]
    # barcode lookup: raw barcode -> cell row (or -1 = not a wanted cell)
    bc_index: dict[str, int] = {}
    cell_ids: list[str] = []
    cell_row: dict[str, int] = {}
    acc = _CsrAccumulator(genome.n_bins)
    frag_per_cell = np.zeros(0, dtype=np.int64)
    stats = {"file": str(path), "n_lines": 0, "n_fragments": 0, "n_malformed": 0,
             "n_other_chrom": 0, "n_unwanted_barcode": 0, "first_malformed_line": None}
    src = _Source(path)
    rows_before = 0
    last_pos = 0
    bs = genome.bin_size
    try:
        reader = pd.read_csv(
            src.stream, sep="\t", header=None, names=names,
            skiprows=n_header, chunksize=chunk_size, engine="c", quoting=csv.QUOTE_NONE,
            dtype={"f0": str, "f3": str}, skip_blank_lines=False,
            na_filter=True, keep_default_na=False, na_values=[""], low_memory=True,
        )
        for chunk in reader:
            n = len(chunk)
            first_line = n_header + rows_before + 1
            bad = np.zeros(n, dtype=bool)
            # hash-based factorisation (no sorting of categories), -1 for missing values
            chrom_codes, cats = pd.factorize(chunk["f0"].to_numpy(), sort=False)
            bcodes, bcats = pd.factorize(chunk["f3"].to_numpy(), sort=False)
            # wrong column count: a missing barcode (fewer fields) or a sentinel value (more)
            fewer = bcodes < 0
            more = np.zeros(n, dtype=bool)
            for c in extra_cols:
                more |= chunk[c].notna().to_numpy()
            wrong = fewer | more
            blank = fewer & (chrom_codes < 0) & chunk["f1"].isna().to_numpy()
            wrong &= ~blank
            bad |= wrong
            # integer coordinates
            coords = []
            nonint_any = np.zeros(n, dtype=bool)
            for col in ("f1", "f2"):
                v = chunk[col]
                if v.dtype.kind in "iu":
                    coords.append(v.to_numpy(np.int64))
                    continue
                num = pd.to_numeric(v, errors="coerce").to_numpy(np.float64)
                nonint = ~np.isfinite(num) | (num != np.round(num))
                nonint_any |= nonint & ~blank & ~wrong
                bad |= nonint_any
                coords.append(np.where(nonint, 0, num).astype(np.int64))
            start, end = coords
            invalid = (end <= start) | (start < 0)
            bad |= invalid & ~blank
            # chromosome lookup per category
            off = np.full(len(cats), -1, dtype=np.int64)
            length = np.zeros(len(cats), dtype=np.int64)
            for i, c in enumerate(cats):
                if c in genome.offsets:
                    off[i] = genome.offsets[c]
                    length[i] = genome.lengths[c]
                elif c in genome.excluded or unknown_chroms == "skip":
                    off[i] = -2
                else:
                    off[i] = -3
            o = np.where(chrom_codes >= 0, off[chrom_codes], -1) if len(cats) else \
                np.full(n, -1, dtype=np.int64)
            unknown = (o == -3) & ~bad & ~blank
            if unknown.any():
                r = int(np.flatnonzero(unknown)[0])
                raise ConvNetVAEError(
                    f"fragment file {str(path)!r}, line {first_line + r}: chromosome "
                    f"{chunk['f0'].iloc[r]!r} is not in chrom_sizes (known: "
                    f"{list(genome.sizes.index[:5])}...). Use the chrom sizes of the genome build "
                    "the fragments were aligned to, or pass unknown_chroms='skip'")
            on_chrom = o >= 0
            chrom_len = length[chrom_codes] if len(cats) else np.zeros(n, dtype=np.int64)
            beyond = on_chrom & (end > chrom_len) & ~bad
            bad |= beyond
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                if not skip_malformed:
                    src.check_truncated()
                    text = "\t".join(str(x) for x in chunk.iloc[r, :4].tolist())
                    if wrong[r]:
                        why = f"wrong number of columns (expected {n_fields})"
                    elif beyond[r]:
                        why = ("fragment end lies beyond the chromosome's length in chrom_sizes "
                               "(wrong genome build?)")
                    elif nonint_any[r]:
                        why = "start/end are not integers"
                    else:
                        why = "end must be greater than start (0-based half-open, start >= 0)"
                    raise _bad_line(path, first_line + r, why, text)
                stats["n_malformed"] += int(bad.sum())
                if stats["first_malformed_line"] is None:
                    stats["first_malformed_line"] = first_line + r
            stats["n_lines"] += int(n - blank.sum())
            keep = on_chrom & ~bad & ~blank
            stats["n_other_chrom"] += int(((o == -2) & ~bad & ~blank).sum())
            # barcodes -> cell rows
            bmap = np.fromiter((_lookup(b, bc_index, cell_ids, cell_row, resolve) for b in bcats),
                               dtype=np.int64, count=len(bcats))
            cell = np.where(bcodes >= 0, bmap[bcodes] if len(bmap) else -1, -1)
            unwanted = keep & (cell < 0)
            stats["n_unwanted_barcode"] += int(unwanted.sum())
            keep &= cell >= 0
            cell = cell[keep]
            oo = o[keep]
            b1 = oo + start[keep] // bs
            b2 = oo + (end[keep] - 1) // bs
            two = b2 != b1
            rows = np.concatenate([cell, cell[two]])
            cols = np.concatenate([b1, b2[two]])
            n_cells = len(cell_ids)
            acc.add(rows, cols, n_cells)
            fc = np.bincount(cell, minlength=n_cells)
            if len(frag_per_cell) < n_cells:
                frag_per_cell = np.concatenate(
                    [frag_per_cell, np.zeros(n_cells - len(frag_per_cell), dtype=np.int64)])
            frag_per_cell += fc
            stats["n_fragments"] += int(len(cell))
            rows_before += n
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
            raise _bad_line(path, int(m.group(1)),
                            f"wrong number of columns (expected {n_fields}, saw {m.group(2)})"
                            + ("; too many to skip" if skip_malformed else "")) from None
        raise ConvNetVAEError(f"fragment file {str(path)!r} could not be parsed: {msg}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        src.close()
        raise ConvNetVAEError(
            f"fragment file {str(path)!r} is a truncated or corrupt gzip file ({exc}); "
            "re-download or re-create it") from None
    except BaseException:
        src.close()
        raise
    counts = acc.result(len(cell_ids))
    return counts, cell_ids, frag_per_cell[: len(cell_ids)], stats


def _lookup(b: str, bc_index: dict, cell_ids: list, cell_row: dict, resolve) -> int:
    r = bc_index.get(b)
    if r is not None:
        return r
    cid = resolve(b)
    if cid is None:
        r = -1
    else:
        r = cell_row.get(cid)
        if r is None:
            r = len(cell_ids)
            cell_row[cid] = r
            cell_ids.append(cid)
    bc_index[b] = r
    return r


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
    import anndata as ad

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
    modalities = [str(m) for m in fragments]
    files: dict[str, list[Path]] = {}
    for m, v in fragments.items():
        lst = [v] if isinstance(v, (str, os.PathLike)) else list(v)
        if not lst:
            raise ConvNetVAEError(f"fragments[{m!r}] is an empty list of files")
        files[str(m)] = [Path(p) for p in lst]
        for p in files[str(m)]:
            if not p.exists():
                raise ConvNetVAEError(f"fragment file for modality {m!r} not found: {str(p)!r}")
    n_samples = {len(v) for v in files.values()}
    if len(n_samples) != 1:
        raise ConvNetVAEError(
            "every modality needs the same number of fragment files (one per sample); got "
            + ", ".join(f"{m}: {len(v)}" for m, v in files.items()))
    n_samples = n_samples.pop()
    if samples is None:
        first = files[modalities[0]]
        samples = [_stem(p) for p in first]
        if len(set(samples)) != len(samples):
            samples = [f"sample{i + 1}" for i in range(n_samples)]
    samples = [str(s) for s in samples]
    if len(samples) != n_samples or len(set(samples)) != len(samples):
        raise ConvNetVAEError(
            f"samples must be {n_samples} distinct names (one per file of each modality), got "
            f"{samples}")
    multi = n_samples > 1

    all_sizes = read_chrom_sizes(chrom_sizes)
    sizes = read_chrom_sizes(all_sizes, main_only=main_chromosomes_only)
    genome = _Genome(sizes, set(all_sizes.index), bin_size)
    bins = make_bins(sizes, bin_size)

    wanted: set[str] | None = None
    if barcodes is not None:
        wanted = set(_read_list(barcodes, "barcodes"))
        if not wanted:
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

    pbar = None
    if progress:
        from tqdm.auto import tqdm

        total = sum(p.stat().st_size for v in files.values() for p in v)
        pbar = tqdm(total=total, unit="B", unit_scale=True, desc="binning fragments")

    per_mod: dict[str, list[tuple[sp.csr_matrix, list[str], np.ndarray]]] = {m: [] for m in modalities}
    file_stats = []
    try:
        for m in modalities:
            for si, path in enumerate(files[m]):
                resolve = _make_resolver(maps.get(m), samples[si] if multi else None, wanted)
                if pbar is not None:
                    pbar.set_postfix_str(f"{m} {path.name}")
                counts, ids, nfrag, st = _count_file(
                    path, genome, resolve, skip_malformed, unknown_chroms, chunk_size, pbar)
                st.update({"modality": m, "sample": samples[si]})
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
                file_stats.append(st)
                per_mod[m].append((counts, ids, nfrag))
    finally:
        if pbar is not None:
            pbar.close()

    # cells observed per modality and file (vectorised: files can hold 10^5-10^6 barcodes)
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
    # cell order: by sample, then by cell id
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
    n_cells_total = len(cell_index)
    keep_bins = ~blacklist_bins(bins, blacklist)
    col_map = np.cumsum(keep_bins) - 1  # old bin -> new column (blacklisted bins dropped)
    n_keep = int(keep_bins.sum())
    layers = {}
    mask = np.zeros((n_cells_total, len(modalities)), dtype=bool)
    nfr = {}
    for mi, m in enumerate(modalities):
        nf = np.zeros(n_cells_total, dtype=np.int64)
        pieces = []
        for fi, (counts, ids, nfrag) in enumerate(per_mod[m]):
            cids, rows = observed[m][fi]
            pos = cell_index.get_indexer(cids)
            ok = pos >= 0
            if not ok.any():
                continue
            src = np.full(n_cells_total, -1, dtype=np.int64)
            src[pos[ok]] = rows[ok]
            hit = src >= 0
            nf[hit] = nfrag[src[hit]]
            mask[hit, mi] = True
            pieces.append(_take_rows(counts, src, keep_bins, col_map, n_keep))
            per_mod[m][fi] = (None, ids, nfrag)  # free the file's matrix early
            del counts
        if not pieces:
            X = sp.csr_matrix((n_cells_total, n_keep), dtype=np.int32)
        else:
            X = pieces[0]
            for extra in pieces[1:]:  # cells are disjoint across files: a sum places them
                X = X + extra
        X.sort_indices()
        layers[m] = X
        nfr[m] = nf
    var = bins[keep_bins].copy()
    obs = pd.DataFrame(index=cell_index)
    if multi:
        sample_idx = np.repeat(np.arange(n_samples), [len(c) for c in per_sample])
        obs[batch_key] = pd.Categorical.from_codes(sample_idx, categories=samples)
    for m in modalities:
        obs[f"n_counts_{m}"] = np.asarray(layers[m].sum(axis=1)).ravel().astype(np.int64)
        obs[f"n_fragments_{m}"] = nfr[m]
    adata = ad.AnnData(obs=obs, var=var, layers=layers)
    adata.obsm["modality_mask"] = mask
    adata.uns["modalities"] = modalities
    adata.uns[FRAGMENTS_KEY] = {
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
    }
    return adata


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
