"""Cost of one training epoch of the default model, per cell, on this machine (issue 14).

The default training length is capped so that training fits the time budget (1 minute per 1,000
cells for one modality, 3 for three). The cap comes from a cost model fitted here:

    seconds per epoch = cells * (a * training FLOPs per cell + b * bins x modalities)
                        + c * optimiser steps

(FLOPs of matrix products counted by torch's FlopCounterMode on one step; the second term is the
element-wise work over every bin; the third the fixed cost of a step, which dominates on a few
hundred cells). The measured time is the whole ``train()`` call, validation pass included. This script times default models on simulated data of several
sizes, fits a, b, c by least squares and writes them with every measurement to JSON;
``convnetvae.schedule`` holds the fitted values.

    .venv/bin/python benchmarks/default_cost.py --out benchmarks/results/default_cost.json

Measure on an otherwise idle machine with the threads the user has (2 here): the values are
wall-clock seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))


def measure(n_cells: int, n_bins: int, n_modalities: int, epochs: int, seed: int = 0) -> dict:
    """Train the default model for ``epochs`` and return seconds per cell-epoch and its work."""
    import convnetvae as cv
    from convnetvae.schedule import training_flops_per_cell

    mods = ("ATAC", "H3K27ac", "H3K27me3")[:n_modalities]
    a = cv.simulate(n_cells=n_cells, n_bins=n_bins, modalities=mods, n_batches=1, seed=seed)
    cv.ConvNetVAE.setup_anndata(a, modalities=list(mods))
    model = cv.ConvNetVAE(a, seed=seed)
    model.train(max_epochs=1, lr_schedule="onecycle", progress=False)  # warm-up
    model = cv.ConvNetVAE(a, seed=seed)
    t0 = time.perf_counter()
    model.train(max_epochs=epochs, lr_schedule="onecycle", progress=False)
    seconds = time.perf_counter() - t0
    return {"cells": n_cells, "bins": n_bins, "modalities": n_modalities,
            "architecture": model.module.config.architecture, "epochs": epochs,
            "seconds": seconds, "seconds_per_epoch": seconds / epochs,
            "n_train": model.trainer_.train_idx.size,
            "steps_per_epoch": model.trainer_.plan.steps_per_epoch,
            "flops_per_cell": training_flops_per_cell(model.module),
            "bins_x_modalities": n_bins * n_modalities}


def fit(rows: list[dict]) -> dict:
    """Least-squares a, b, c of the cost model (non-negative)."""
    from scipy.optimize import nnls

    x = np.array([[r["n_train"] * r["flops_per_cell"], r["n_train"] * r["bins_x_modalities"],
                   r["steps_per_epoch"]] for r in rows], dtype=float)
    y = np.array([r["seconds_per_epoch"] for r in rows])
    scale = x.max(axis=0)
    coef, _ = nnls(x / scale[None, :] / y[:, None], np.ones_like(y))  # relative errors
    coef = coef / scale
    pred = x @ coef
    return {"a_seconds_per_flop": coef[0], "b_seconds_per_bin": coef[1],
            "c_seconds_per_step": coef[2],
            "max_relative_error": float(np.max(np.abs(pred - y) / y))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="256,1024")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bins", default="3000,10000,25000")
    p.add_argument("--modalities", default="1,3")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "default_cost.json"))
    args = p.parse_args(argv)
    import torch

    rows = []
    grid = [(int(m), int(g), int(n)) for m in args.modalities.split(",")
            for g in args.bins.split(",") for n in args.cells.split(",")]
    for m, g, n in grid:
        r = measure(n, g, m, args.epochs)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(),
           "load_average": os.getloadavg(), "fit": fit(rows), "measurements": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["fit"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
