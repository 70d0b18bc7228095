"""``convnetvae bin``: fragment files or count matrices -> one .h5ad following the data contract.

Examples
--------
::

    convnetvae bin --fragments ATAC=atac.tsv.gz --fragments H3K27ac=k27ac.tsv.gz \\
        --chrom-sizes mm10.chrom.sizes --blacklist mm10-blacklist.v2.bed.gz \\
        --bin-size 10000 --n-bins 25000 --out data.h5ad

    # several samples: repeat a modality, one file per sample, in the same sample order
    convnetvae bin --fragments ATAC=s1_atac.tsv.gz --fragments ATAC=s2_atac.tsv.gz \\
        --fragments H3K27ac=s1_ac.tsv.gz --fragments H3K27ac=s2_ac.tsv.gz --samples s1,s2 ...

    # count matrices (h5ad, 10x h5, MatrixMarket with features/barcodes next to it)
    convnetvae bin --counts ATAC=peaks.h5 --bin-size 10000 --reads-to-fragments --out atac.h5ad
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConvNetVAEError
from .settings import DataSettings, default


def _pairs(values: list[str] | None, flag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values or []:
        if "=" not in v:
            raise ConvNetVAEError(
                f"{flag} expects MODALITY=PATH (e.g. {flag} ATAC=atac_fragments.tsv.gz), got {v!r}")
        m, p = v.split("=", 1)
        if not m or not p:
            raise ConvNetVAEError(f"{flag} expects MODALITY=PATH, got {v!r}")
        out.setdefault(m, []).append(p)
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``bin`` subcommand on ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "bin",
        help="bin fragment files / count matrices into one .h5ad (cells x bins per modality)",
        description="Bin fragment files (chrom start end barcode [count], gzipped or not) or "
        "count matrices into fixed genomic windows, one layer per modality, and write an .h5ad.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("inputs (give --fragments or --counts)")
    src.add_argument("--fragments", action="append", metavar="MODALITY=PATH",
                     help="fragment file of a modality; repeat for modalities and samples")
    src.add_argument("--counts", action="append", metavar="MODALITY=PATH",
                     help="count matrix of a modality (.h5ad, 10x .h5, .mtx[.gz])")
    p.add_argument("--out", "-o", required=True, help="output .h5ad")
    p.add_argument("--bin-size", type=int, default=None,
                   help=f"window width in bp (default {default(DataSettings, 'bin_size')} for "
                   "fragments; for counts the inputs' own bin width)")
    p.add_argument("--chrom-sizes", help="chromosome sizes file (required for --fragments)")
    p.add_argument("--blacklist", help="BED file (gz or not) of regions whose bins are dropped")
    p.add_argument("--n-bins", default=str(default(DataSettings, "n_bins")),
                   help="keep the union of each modality's top bins, this many in total "
                   "(default: %(default)s, the paper's); 'all' keeps every bin")
    p.add_argument("--barcodes", help="file of cell barcodes to keep, one a line")
    p.add_argument("--barcode-map", action="append", metavar="MODALITY=PATH",
                   help="two-column file mapping a modality's barcodes to cell ids")
    p.add_argument("--min-counts", type=int, default=None,
                   help="min fragments for a cell to count as observed in a modality "
                   "(default 500, or 1 with --barcodes)")
    p.add_argument("--samples", help="comma-separated sample names (one per file of a modality)")
    p.add_argument("--drop-incomplete", action="store_true",
                   help="drop cells missing a modality (default: keep them, masked)")
    p.add_argument("--keep-contigs", action="store_true",
                   help="keep chrM, unplaced and random contigs (default: drop them)")
    p.add_argument("--skip-unknown-chroms", action="store_true",
                   help="skip fragments on chromosomes absent from --chrom-sizes (default: error)")
    p.add_argument("--skip-malformed", action="store_true",
                   help="skip and count malformed lines instead of stopping at the first")
    p.add_argument("--reads-to-fragments", action="store_true",
                   help="counts: convert read (fragment-end) counts to fragment counts ceil(x/2)")
    p.add_argument("--chunk-size", type=int, default=250_000, help="lines parsed per chunk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``convnetvae bin``; returns the exit code (errors raise ConvNetVAEError)."""
    import numpy as np

    from .data.bins import select_top_bins
    from .data.fragments import read_fragments
    from .data.readers import read_counts
    from .io_utils import atomic_path

    frags = _pairs(args.fragments, "--fragments")
    counts = _pairs(args.counts, "--counts")
    if bool(frags) == bool(counts):
        raise ConvNetVAEError("give either --fragments MODALITY=PATH or --counts MODALITY=PATH "
                              "(at least one, not both)")
    n_bins_arg = str(args.n_bins).lower()
    if n_bins_arg in ("all", "none", "0"):
        n_bins = None
    else:
        try:
            n_bins = int(n_bins_arg)
        except ValueError:
            raise ConvNetVAEError(
                f"--n-bins must be an integer or 'all', got {args.n_bins!r}") from None
    out = Path(args.out)
    if out.suffix != ".h5ad":
        raise ConvNetVAEError(f"--out must end in .h5ad, got {str(out)!r}")
    if frags:
        if not args.chrom_sizes:
            raise ConvNetVAEError("--chrom-sizes is required with --fragments (e.g. "
                                  "--chrom-sizes mm10.chrom.sizes); nothing is downloaded")
        samples = args.samples.split(",") if args.samples else None
        adata = read_fragments(
            {m: (v if len(v) > 1 else v[0]) for m, v in frags.items()},
            bin_size=args.bin_size or default(DataSettings, "bin_size"),
            chrom_sizes=args.chrom_sizes,
            blacklist=args.blacklist,
            barcodes=args.barcodes,
            min_counts=args.min_counts,
            samples=samples,
            barcode_maps={m: v[0] for m, v in _pairs(args.barcode_map, "--barcode-map").items()}
            or None,
            drop_incomplete=args.drop_incomplete,
            main_chromosomes_only=not args.keep_contigs,
            unknown_chroms="skip" if args.skip_unknown_chroms else "error",
            skip_malformed=args.skip_malformed,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        )
        n_bad = adata.uns["convnetvae_fragments"]["n_malformed"]
        if n_bad:
            print(f"skipped {n_bad} malformed line(s)", file=sys.stderr)
    else:
        many = [m for m, v in counts.items() if len(v) > 1]
        if many:
            raise ConvNetVAEError(f"--counts: give one matrix per modality (repeated: {many})")
        adata = read_counts(
            {m: v[0] for m, v in counts.items()},
            bin_size=args.bin_size,
            chrom_sizes=args.chrom_sizes,
            blacklist=args.blacklist,
            reads_to_fragment_counts=args.reads_to_fragments,
            drop_incomplete=args.drop_incomplete,
            main_chromosomes_only=not args.keep_contigs,
        )
    if n_bins is not None and n_bins < adata.n_vars:
        adata = select_top_bins(adata, n_bins=n_bins)
    else:
        adata = select_top_bins(adata, n_bins=None)
    with atomic_path(out) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    mods = adata.uns["modalities"]
    mask = np.asarray(adata.obsm["modality_mask"])
    print(f"wrote {out}: {adata.n_obs} cells x {adata.n_vars} bins, modalities "
          + ", ".join(f"{m} ({int(mask[:, i].sum())} cells)" for i, m in enumerate(mods)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m convnetvae.cli_bin``), for use before cli.py dispatches."""
    parser = argparse.ArgumentParser(prog="convnetvae")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConvNetVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
