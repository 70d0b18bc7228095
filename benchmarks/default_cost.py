"""Cost of one training epoch of the default model, per cell, on this machine (issue 14).

The default training length is capped so that training fits the time budget (1 minute per 1,000
cells for one modality, 3 for three). The cap comes from a cost model fitted here:

    seconds per epoch = cells * (a * training FLOPs per cell + b * bins x modalities)
                        + c * optimiser steps

(FLOPs of matrix products counted by torch's FlopCounterMode on one step,
schedule.training_flops_per_cell; the second term is the element-wise work over every bin; the
third the fixed cost of a step, which dominates on a few hundred cells). The measured time is
the whole ``train()`` call, validation pass included. This script times default models on
simulated data of several sizes, fits a, b, c by least squares and writes them with every
measurement to JSON; ``convnetvae.schedule`` holds the fitted values.

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


def measure(n_cells: int, n_bins: int, n_modalities: int, epochs: int, batch_size: int,
            seed: int = 0) -> dict:
    """Train the default model for ``epochs`` and return seconds per epoch and its work."""
    import convnetvae as cv
    from convnetvae.schedule import training_flops_per_cell

    mods = ("ATAC", "H3K27ac", "H3K27me3")[:n_modalities]
    a = cv.simulate(n_cells=n_cells, n_bins=n_bins, modalities=mods, n_batches=1, seed=seed)
    cv.ConvNetVAE.setup_anndata(a, modalities=list(mods))
    model = cv.ConvNetVAE(a, seed=seed)
    model.train(max_epochs=1, lr_schedule="onecycle", progress=False,
                batch_size=batch_size)  # warm-up
    model = cv.ConvNetVAE(a, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train(max_epochs=epochs, lr_schedule="onecycle", progress=False, batch_size=batch_size)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"cells": n_cells, "bins": n_bins, "modalities": n_modalities,
            "architecture": model.module.config.architecture, "epochs": epochs,
            "batch_size": batch_size, "seconds": seconds, "cpu_seconds": cpu,
            "seconds_per_epoch": seconds / epochs, "load_average": os.getloadavg()[0],
            "parameters": sum(p.numel() for p in model.module.parameters()),
            "n_train": model.trainer_.train_idx.size,
            "steps_per_epoch": model.trainer_.plan.steps_per_epoch,
            "flops_per_cell": training_flops_per_cell(model.module),
            "bins_x_modalities": n_bins * n_modalities}


def _parameters(n_bins: int, n_modalities: int) -> int:
    """Parameters of the default model on simulated data of this size."""
    import convnetvae as cv

    mods = ["ATAC", "H3K27ac", "H3K27me3"][:n_modalities]
    a = cv.simulate(n_cells=40, n_bins=n_bins, modalities=mods, n_batches=1, seed=0)
    cv.ConvNetVAE.setup_anndata(a, modalities=mods)
    return sum(p.numel() for p in cv.ConvNetVAE(a).module.parameters())


def _design(rows: list[dict]) -> np.ndarray:
    return np.array([[r["n_train"] * r["flops_per_cell"], r["n_train"] * r["bins_x_modalities"],
                      r["steps_per_epoch"], r["steps_per_epoch"] * r["parameters"]]
                     for r in rows], dtype=float)


def fit(rows: list[dict], reference: list[dict] | None = None) -> dict:
    """Non-negative least squares (relative errors) of the cost model's coefficients.

    With ``reference`` (the measurements of a run on an idle machine), the fitted shape is
    rescaled so that it predicts the reference's times on average: a busy machine slows every
    term alike, so the ratios between the terms survive while the absolute scale does not.
    """
    from scipy.optimize import nnls

    x = _design(rows)
    y = np.array([r["seconds_per_epoch"] for r in rows])
    scale = x.max(axis=0)
    coef, _ = nnls(x / scale[None, :] / y[:, None], np.ones_like(y))
    coef = coef / scale
    rel = np.abs(x @ coef - y) / y
    factor = 1.0
    if reference:
        xr = _design(reference)
        yr = np.array([r["seconds_per_epoch"] for r in reference])
        factor = float(np.exp(np.mean(np.log(yr / (xr @ coef)))))
        rel = np.abs(xr @ coef * factor - yr) / yr
    coef = coef * factor
    return {"a_seconds_per_flop": coef[0], "b_seconds_per_bin": coef[1],
            "c_seconds_per_step": coef[2], "d_seconds_per_step_and_parameter": coef[3],
            "rescaled_to_reference_by": factor,
            "max_relative_error": float(np.max(rel)), "median_relative_error": float(np.median(rel))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="256,1024")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bins", default="3000,10000,25000")
    p.add_argument("--modalities", default="1,3")
    p.add_argument("--batches", default="128", help="minibatch sizes (the per-step cost)")
    p.add_argument("--reference", default=None,
                   help="JSON of an earlier run on an idle machine: rescale the fit to its times")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "default_cost.json"))
    args = p.parse_args(argv)
    # convnetvae before torch, as in a user's session: it sets OMP_WAIT_POLICY=PASSIVE, which the
    # OpenMP runtime reads when torch loads; with torch first the threads spin, 1.1-1.4x faster
    # on an idle machine, and the fit under-predicts what users get (docs/benchmarks.md, "The
    # cost model refitted, and why it stays as it was")
    torch_first = "torch" in sys.modules
    import convnetvae  # noqa: F401, I001 - this order on purpose
    import torch
    from convnetvae.io_utils import write_json

    rows = []
    reference = None
    if args.reference:
        reference = [dict(r, batch_size=r.get("batch_size", 128)) for r in
                     json.loads(Path(args.reference).read_text())["measurements"]]
        for r in reference:  # runs before the per-step term was modelled
            r.setdefault("parameters", _parameters(r["bins"], r["modalities"]))
    grid = [(int(m), int(g), int(n), int(b)) for m in args.modalities.split(",")
            for g in args.bins.split(",") for n in args.cells.split(",")
            for b in args.batches.split(",")]
    for m, g, n, b in grid:
        r = measure(n, g, m, args.epochs, b)
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "torch_threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "torch_loaded_before_convnetvae": torch_first,
           "load_average": os.getloadavg(), "fit": fit(rows, reference), "measurements": rows,
           "reference": args.reference}
    write_json(args.out, out)  # atomically, the folder made if needed
    print(json.dumps(out["fit"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
