"""Quality benchmark: the `convnetvae benchmark` harness on the simulator and real labelled data.

Not part of the test suite. Reads ../shared/data (skips datasets that are absent), writes each
dataset's harness outputs (results.csv, sweep.csv, figures, report.md) under --out/<dataset>/ and
one JSON summary, --out/quality.json. docs/benchmarks.md records the table.

    .venv/bin/python benchmarks/quality.py --epochs 50 --folds 3 --out benchmarks/results/quality

Datasets (see each folder's README under ../shared/data):

=================  ============================================  ======================  ======================
name               data                                          features used           labels / batch
=================  ============================================  ======================  ======================
simulator          convnetvae.simulate, ATAC+H3K27ac+H3K27me3     contiguous 10 kb bins   cell_type / batch
schep2017          Schep 2017 scATAC, 600 cells                  500 bp peaks -> 10 kb   cell_type_merged / -
buenrostro2018     Buenrostro 2018 BM0828 scATAC, 533 cells       500 bp peaks -> 10 kb   cell_type (FACS) / -
satpathy2019       Satpathy 2019 BCC scATAC, 309 cells            1 Mb bins               cluster / -
zeller2023         Zeller 2023 sortChIC H3K4me3, 200 cells        50 kb bins (top bins)   cell_type (FACS) / -
pairedtag          Paired-Tag H3K27ac mouse brain, 2000 cells     5000 ~200 kb windows    Annotation / Rep
chromscape         ChromSCape H3K4me3 Jurkat/Ramos, 106 cells     5 kb bins               sample_id (line) / -
chromvar_example   chromVAR example scATAC GM12878/H1, 50 cells   500 bp peaks -> 10 kb   Cell_Type (line) / -
=================  ============================================  ======================  ======================

The last two are not in the default ``--datasets``: two cell lines each, and far fewer cells
than the issue's five labelled sets (``EXTRA``; docs/benchmarks.md, "The two small labelled
sets").

The reserved Granja 2019 set is never read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

from convnetvae.data.contract import natural_chrom_key  # noqa: E402
from convnetvae.evaluate.harness import BenchmarkConfig, run_benchmark, summary_table  # noqa: E402
from convnetvae.evaluate.report import write_outputs  # noqa: E402
from convnetvae.io_utils import write_json  # noqa: E402

RESERVED = "granja2019_bmmc_scatac_10kpeaks"


def shared_data() -> Path | None:
    """``../shared/data`` relative to the repository root, or ``None`` when absent."""
    for cand in (REPO.parent / "shared" / "data", REPO / ".." / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    return None


def _read_mtx_bed(folder: Path, matrix: str, features: str, meta: str, modality: str,
                  bed_cols: int = 3, meta_sep: str = "\t") -> ad.AnnData:
    """MatrixMarket (features x cells) + BED-like features + metadata -> contract AnnData.

    Features are put into natural genome order; overlapping or duplicated features are not
    expected in these sets (checked by the contract when the model is set up).
    """
    assert RESERVED not in str(folder)
    with gzip.open(folder / matrix, "rb") as fh:
        x = sp.csr_matrix(scipy.io.mmread(fh).T, dtype=np.int32)
    f = pd.read_csv(folder / features, sep="\t", header=None, dtype=str)
    if f.iloc[0, 0] == "chrom":
        f = f.iloc[1:].reset_index(drop=True)
    var = pd.DataFrame({"chrom": f[0].astype(str), "start": f[1].astype(np.int64), "end": f[2].astype(np.int64)})
    obs = pd.read_csv(folder / meta, sep=meta_sep, dtype=str)
    obs.index = obs.iloc[:, 0].astype(str).to_numpy()
    obs.index.name = None
    order = sorted(range(len(var)), key=lambda i: (natural_chrom_key(var.chrom[i]), var.start[i]))
    var = var.iloc[order].reset_index(drop=True)
    var.index = [f"{c}:{s}-{e}" for c, s, e in zip(var.chrom, var.start, var.end)]
    x = x[:, order].tocsr()
    a = ad.AnnData(obs=obs, var=var, layers={modality: x}, uns={"modalities": [modality]})
    a.obs[f"n_counts_{modality}"] = np.asarray(x.sum(axis=1)).ravel()
    return a


def _rebin(a: ad.AnnData, bin_size: int) -> ad.AnnData:
    """Peaks -> fixed windows with the package's own reader (midpoint rule), obs carried over."""
    from convnetvae.data.readers import rebin

    out = rebin(a, bin_size)
    for c in a.obs.columns:
        if c not in out.obs.columns:
            out.obs[c] = a.obs[c].reindex(out.obs_names).to_numpy()
    return out


def _top_bins(a: ad.AnnData, n_bins: int | None) -> ad.AnnData:
    if n_bins is None or a.n_vars <= n_bins:
        return a
    from convnetvae.data.bins import select_top_bins

    return select_top_bins(a, n_bins=n_bins)


def load_dataset(name: str, root: Path, max_bins: int | None, n_sim_cells: int) -> tuple[ad.AnnData, str, str | None]:
    """Return (adata, labels_key, batch_key) for a benchmark dataset."""
    lab = root / "labelled"
    if name == "simulator":
        import convnetvae as cv

        a = cv.simulate(n_cells=n_sim_cells, n_bins=min(max_bins or 10_000, 10_000),
                        modalities=("ATAC", "H3K27ac", "H3K27me3"), n_types=8, n_batches=2, seed=0)
        return a, "cell_type", "batch"
    if name == "schep2017":
        a = _read_mtx_bed(lab / "schep2017_chromvar_scatac_600cells", "matrix.mtx.gz", "features.bed.gz",
                          "metadata.tsv.gz", "ATAC")
        return _top_bins(_rebin(a, 10_000), max_bins), "cell_type_merged", None
    if name == "buenrostro2018":
        a = _read_mtx_bed(lab / "buenrostro2018_bm0828_facs_scatac_533cells", "matrix.mtx.gz", "features.bed.gz",
                          "metadata.tsv.gz", "ATAC")
        return _top_bins(_rebin(a, 10_000), max_bins), "cell_type", None
    if name == "satpathy2019":
        a = _read_mtx_bed(lab / "satpathy2019_bcc_su008_scatac_1mb_bins_309cells", "matrix.mtx.gz",
                          "features.bed.gz", "metadata.tsv.gz", "ATAC")
        return _top_bins(a, max_bins), "cluster", None
    if name == "zeller2023":
        a = _read_mtx_bed(lab / "zeller2023_sortchic_h3k4me3_mouse_bm_50kb_200cells", "matrix.mtx.gz",
                          "features.bed.gz", "metadata.tsv.gz", "H3K4me3")
        main = a.var["chrom"].str.fullmatch(r"chr(\d+|X|Y)").to_numpy()
        return _top_bins(a[:, main].copy(), max_bins), "cell_type", None
    if name == "pairedtag":
        a = _read_mtx_bed(root / "real" / "pairedtag_h3k27ac_mouse_brain_IDclust", "counts_features_x_cells.mtx.gz",
                          "features.tsv.gz", "cells_metadata.tsv.gz", "H3K27ac")
        a.obs["Rep"] = "rep" + a.obs["Rep"].astype(str)
        return _top_bins(a, max_bins), "Annotation", "Rep"
    if name == "chromscape":
        a = _read_mtx_bed(root / "real" / "chromscape_scchip_h3k4me3_jurkat_ramos",
                          "counts_features_x_cells.mtx.gz", "features.tsv.gz",
                          "cells_metadata.tsv.gz", "H3K4me3")
        return _top_bins(a, max_bins), "sample_id", None
    if name == "chromvar_example":
        a = _read_mtx_bed(root / "real" / "chromvar_example_counts_gm12878_h1_scatac",
                          "counts_peaks_x_cells.mtx.gz", "peaks.bed", "cells_metadata.csv", "ATAC",
                          meta_sep=",")
        return _top_bins(_rebin(a, 10_000), max_bins), "Cell_Type", None
    raise SystemExit(f"unknown dataset {name!r} (known: {', '.join(ALL + EXTRA)})")


ALL = ("simulator", "schep2017", "buenrostro2018", "satpathy2019", "zeller2023", "pairedtag")
#: labelled, but two cell lines each and 50-106 cells: run only when named
EXTRA = ("chromscape", "chromvar_example")


def _merge_summary(path: Path, name: str, entry: dict) -> None:
    """Add one dataset's entry to the JSON summary under an exclusive lock (runs may overlap)."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary.setdefault("datasets", {})[name] = entry
        summary["cpus"] = os.cpu_count()
        write_json(path, summary)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(ALL))
    p.add_argument("--models", default="conv-k51s51,conv-k11s3x2,fc-l1,lsi")
    p.add_argument("--shuffle-control", default="simulator",
                   help="datasets on which the first neural model's +shuffle control is added "
                        "(comma-separated, or 'none')")
    p.add_argument("--epochs", type=lambda t: None if t.lower() in ("auto", "none") else int(t),
                   default=None, help="epochs per fold (constant learning rate, as the paper); "
                   "default 'auto': the package's default training")
    p.add_argument("--curves", action="store_true",
                   help="quality per minute: best ARI against training time on all cells for the "
                        "default ConvNet-VAE, fc-l1 and LSI (benchmarks/curves.py); writes "
                        "--out/curves.json and curves.png")
    p.add_argument("--fractions", default="0.25,0.5,1,2",
                   help="--curves: training lengths as multiples of the default's")
    p.add_argument("--seeds", default="0", help="--curves: seeds of the neural models")
    p.add_argument("--curve-models", default="default,fc-l1",
                   help="--curves: neural models; model@f1/f2 runs one at its own fractions")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the models (k-fold runs)")
    p.add_argument("--max-bins", type=int, default=10_000, help="top-bin selection cap (paper: 25,000)")
    p.add_argument("--sim-cells", type=int, default=1500)
    p.add_argument("--n-importance", type=int, default=100)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality"))
    args = p.parse_args(argv)
    root = shared_data()
    if root is None:
        print("../shared/data not found: only the simulator can run", file=sys.stderr)
    out = Path(args.out)
    command = " ".join(["benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)])
    # one summary per output folder; datasets run separately (even concurrently) are merged into it
    out.mkdir(parents=True, exist_ok=True)
    if args.curves:
        return _curves(args, root, out, command)
    shuffle_on = set(args.shuffle_control.split(","))
    for name in [d for d in args.datasets.split(",") if d]:
        if name != "simulator" and root is None:
            continue
        t0 = time.perf_counter()
        adata, labels_key, batch_key = load_dataset(name, root or Path("."), args.max_bins, args.sim_cells)
        models = args.models.split(",")
        if name in shuffle_on:  # the control of the first neural model
            first = next((m for m in models if m not in ("lsi", "lsi-unscaled")), "conv-k51s51")
            models = models + [f"{first}+shuffle"]
        cfg = BenchmarkConfig(models=models, labels_key=labels_key, batch_key=batch_key, folds=args.folds,
                              epochs=args.epochs, n_importance=args.n_importance, seed=args.seed)
        print(f"== {name}: {adata.n_obs} cells x {adata.n_vars} bins, labels {labels_key}, batch {batch_key}",
              file=sys.stderr, flush=True)
        res = run_benchmark(adata, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
        elapsed = time.perf_counter() - t0
        write_outputs(res, out / name, command=command, started=dt.datetime.now().isoformat(
            timespec="seconds"), elapsed_s=elapsed)
        s = summary_table(res.results)
        entry = {"date": dt.date.today().isoformat(), "command": command, "epochs": args.epochs,
                 "folds": args.folds, "max_bins": args.max_bins, "data": res.data,
                 "threads": int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count(),
                 "elapsed_s": elapsed, "summary": json.loads(s.to_json(orient="records"))}
        _merge_summary(out / "quality.json", name, entry)
    return 0


def _curves(args: argparse.Namespace, root: Path | None, out: Path, command: str) -> int:
    import torch

    from curves import merge, plot_curves, run_curves

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    meta = {"command": command, "date": dt.date.today().isoformat(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "max_bins": args.max_bins}
    summary: dict = {}
    for name in [d for d in args.datasets.split(",") if d]:
        if name != "simulator" and root is None:
            continue
        adata, labels_key, batch_key = load_dataset(name, root or Path("."), args.max_bins, args.sim_cells)
        log(f"== {name}: {adata.n_obs} cells x {adata.n_vars} bins")
        entry = run_curves(name, adata, labels_key, batch_key,
                           [float(f) for f in args.fractions.split(",")],
                           [int(s) for s in args.seeds.split(",")], args.curve_models.split(","), log)
        summary = merge(out / "curves.json", name, entry, meta)
        plot_curves(summary, out / "curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
