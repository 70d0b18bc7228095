"""Bin-size sweep on Schep 2017 scATAC: ConvNet-VAE vs LSI at several window sizes.

Not part of the test suite. For each bin size the 500 bp peaks are rebinned into windows
(``convnetvae.data.readers.rebin``), the top-bin union is capped at 25,000, and on all 600 cells
(training-cell scores, no folds) a ConvNet-VAE is trained (``--epochs``, no early stopping) and
LSI (Signac-scaled and unscaled components) is fitted; the best Louvain ARI over the resolution
grid against ``cell_type_merged`` is recorded. Writes ``--out`` (JSON).

    .venv/bin/python benchmarks/bin_size.py --sizes 5000,10000,20000,50000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

import convnetvae as cv  # noqa: E402
import quality as q  # noqa: E402
from convnetvae.evaluate import clustering_sweep  # noqa: E402
from convnetvae.evaluate.baselines import LSIModel  # noqa: E402
from convnetvae.io_utils import write_json  # noqa: E402


def run_size(bin_size: int, architecture: str, epochs: int, threads: int) -> dict:
    """Scores of one bin size."""
    root = q.shared_data()
    a = q._read_mtx_bed(root / "labelled" / "schep2017_chromvar_scatac_600cells", "matrix.mtx.gz",
                        "features.bed.gz", "metadata.tsv.gz", "ATAC")
    a = q._top_bins(q._rebin(a, bin_size), 25_000)
    y = a.obs["cell_type_merged"].to_numpy()
    cv.ConvNetVAE.setup_anndata(a, modalities=["ATAC"])
    res: dict = {"bin_size": bin_size, "n_bins": int(a.n_vars), "architecture": architecture,
                 "epochs": epochs}
    for scaled, key in ((True, "lsi_ari"), (False, "lsi_unscaled_ari")):
        z = LSIModel(["ATAC"], n_components=30, seed=0, scale=scaled).fit(a).transform(a)
        res[key] = float(clustering_sweep(z, y).ari.max())
    t = time.perf_counter()
    m = cv.ConvNetVAE(a, architecture=architecture)
    m.train(max_epochs=epochs, early_stopping=False, validation_size=0, progress=False,
            n_threads=threads)
    res["train_seconds"] = time.perf_counter() - t
    res["convnetvae_ari"] = float(clustering_sweep(m.get_latent_representation(), y).ari.max())
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="5000,10000,20000,50000")
    p.add_argument("--architecture", default="conv-k31s31")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bin_size.json"))
    args = p.parse_args(argv)
    if q.shared_data() is None:
        print("../shared/data not found: nothing to run", file=sys.stderr)
        return 0
    rows = []
    for size in [int(s) for s in args.sizes.split(",") if s]:
        rows.append(run_size(size, args.architecture, args.epochs, args.threads))
        print(rows[-1], file=sys.stderr, flush=True)
        write_json(Path(args.out), {
            "benchmark": "bin_size", "dataset": "schep2017", "scores": "training cells (all 600)",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "threads": args.threads, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
