"""Default training timed as users run it: one fresh Python process per run (issue 14, point 2).

``ConvNetVAE(adata).train()`` with every default, in a new process for every dataset and round,
``import convnetvae`` first (as a user's session: the passive OpenMP wait policy), the threads
given (2: the issue's 2 CPU cores). Per run it records the whole ``train()`` call, the epochs'
own seconds (``history_``, the first epoch's warm-up included), what no epoch accounts for
(``overhead_s``: mostly torch's lazy import of ``torch._dynamo`` when the first optimiser is
built, then the FLOP count and the split), the cost model's estimate of an epoch and of the
epochs (epochs x ``schedule.seconds_per_epoch``: the model has no term for the overhead), and the
share of the time budget (60 ms per cell and modality, up to three, all cells) the run took; with
four runs or more, the cost model's coefficients fitted to the runs' epochs, and their median
overhead (``fit``; ``schedule.COST_*`` hold the coefficients in use).

    .venv/bin/python benchmarks/fresh_timing.py --rounds 2 \\
        --out benchmarks/results/fresh_timing/fresh_timing.json

Run it on an otherwise idle machine: the values are wall-clock seconds. The datasets are
``benchmarks/quality.py``'s (the real ones need ``../shared/data``). ``--busy N`` keeps N other
processes busy during every run (a busier machine), ``--no-time-guard`` trains the planned
length (``train(time_guard=False)``), ``--score`` adds each run's best Louvain ARI of all cells
(computed after the timing); each run records its planned and trained epochs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

DATASETS = "zeller2023,buenrostro2018,schep2017,satpathy2019,pairedtag,simulator"


def run_once(name: str, data: Path, max_bins: int, sim_cells: int, seed: int,
             time_guard: bool = True, score: bool = False) -> dict:
    """Train the default model on one dataset in this process and return its timings.

    Meant for a fresh process (``main`` starts one per run): ``torch_dynamo_loaded_before``
    says whether the process had already paid torch's lazy import before ``train()``.
    ``time_guard``: the ``train`` setting; ``score``: also the best ARI of the embedding of all
    cells (after the timing).
    """
    import convnetvae as cv  # noqa: I001 - before torch, as in a user's session
    import numpy as np
    from convnetvae import schedule
    from curves import _best_ari
    from quality import load_dataset

    adata, labels_key, batch_key = load_dataset(name, data, max_bins, sim_cells)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key=batch_key)
    dynamo_before = "torch._dynamo" in sys.modules
    t0 = time.perf_counter()
    model = cv.ConvNetVAE(adata, seed=seed)
    t1 = time.perf_counter()
    model.train(progress=False, time_guard=time_guard)
    t2 = time.perf_counter()
    trainer = model.trainer_
    source = trainer.train_loader.source
    seconds = [row["seconds"] for row in model.history_]
    n_train = len(trainer.train_idx)
    flops = schedule.training_flops_per_cell(model.module)
    params = sum(p.numel() for p in model.module.parameters())  # as the trainer counts them
    per_epoch = schedule.seconds_per_epoch(n_train, source.n_bins, source.n_modalities,
                                           trainer.config.batch_size, flops, params)
    # the budget: per cell of the data (training and validation cells alike)
    budget = schedule.full_budget_seconds(adata.n_obs, source.n_modalities)
    train_s = t2 - t1
    return {"dataset": name, "seed": seed, "cells": adata.n_obs, "n_train": n_train,
            "bins": source.n_bins, "modalities": source.n_modalities,
            "architecture": model.module.config.architecture,
            "tie_loadings": model.module.config.tie_loadings, "parameters": params,
            "flops_per_cell": flops,
            "batch_size": trainer.config.batch_size, "epochs": len(seconds),
            "steps_per_epoch": trainer.plan.steps_per_epoch,
            "build_s": t1 - t0, "train_s": train_s, "epochs_s": float(sum(seconds)),
            "overhead_s": train_s - float(sum(seconds)),
            "first_epoch_s": seconds[0] if seconds else None,
            "median_epoch_s": float(np.median(seconds[1:] or seconds)) if seconds else None,
            "predicted_epoch_s": per_epoch,
            "predicted_epochs_s": len(seconds) * per_epoch,
            "budget_s": budget, "budget_share": train_s / budget,
            "time_guard": time_guard, "planned_epochs": trainer.plan.planned_epochs,
            "shortened": trainer.plan.shortened,
            "ari": _best_ari(model.get_latent_representation(),
                             adata.obs[labels_key].to_numpy()) if score else None,
            "torch_dynamo_loaded_before": dynamo_before,
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
            "load_average": os.getloadavg()[0]}


def busy_processes(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep a CPU core busy each (a busier machine) until terminated."""
    code = "while True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def summarise(rows: list[dict]) -> dict:
    """Per dataset: the range of budget shares and epochs; overall: the median overhead (what
    no epoch accounts for) and of measured / estimated epoch time.
    Runs marked ``"disturbed"`` (another job overlapped them) are left out."""
    import numpy as np

    rows = [r for r in rows if not r.get("disturbed")]
    out: dict = {"datasets": {}}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == name]
        out["datasets"][name] = {
            "runs": len(mine), "epochs": sorted({r["epochs"] for r in mine}),
            "architecture": mine[0]["architecture"],
            "train_s": [min(r["train_s"] for r in mine), max(r["train_s"] for r in mine)],
            "budget_s": mine[0]["budget_s"],
            "budget_share": [min(r["budget_share"] for r in mine),
                             max(r["budget_share"] for r in mine)],
            "epoch_measured_over_estimated": float(np.median(
                [r["median_epoch_s"] / r["predicted_epoch_s"] for r in mine]))}
    out["median_overhead_s"] = float(np.median([r["overhead_s"] for r in rows]))
    out["median_epoch_measured_over_estimated"] = float(np.median(
        [r["median_epoch_s"] / r["predicted_epoch_s"] for r in rows]))
    out["largest_budget_share"] = max(r["budget_share"] for r in rows)
    return out


def fit_epochs(rows: list[dict]) -> dict:
    """The cost model's coefficients fitted to the runs' median epochs (``default_cost.fit``:
    A per training FLOP and cell, B per bin, modality and cell, C per step, D per step and
    parameter), with the median overhead as the setup each run pays; runs marked
    ``"disturbed"`` are left out."""
    import numpy as np

    from default_cost import fit

    rows = [r for r in rows if not r.get("disturbed")]
    fitted = fit([{"n_train": r["n_train"], "flops_per_cell": r["flops_per_cell"],
                   "bins_x_modalities": r["bins"] * r["modalities"],
                   "steps_per_epoch": r["steps_per_epoch"], "parameters": r["parameters"],
                   "seconds_per_epoch": r["median_epoch_s"]} for r in rows])
    fitted["setup_seconds"] = float(np.median([r["overhead_s"] for r in rows]))
    return fitted


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=DATASETS)
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over the datasets (each run a fresh process)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--max-bins", type=int, default=25_000)
    p.add_argument("--sim-cells", type=int, default=1500)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fresh_timing"
                                        / "fresh_timing.json"))
    p.add_argument("--busy", type=int, default=0,
                   help="keep this many other processes busy during every run (a busier machine)")
    p.add_argument("--no-time-guard", action="store_true", help="train(time_guard=False)")
    p.add_argument("--score", action="store_true",
                   help="also the best ARI of each run's embedding (after the timing)")
    p.add_argument("--fit", default=None, metavar="JSON",
                   help="only fit the cost model to the runs of an earlier output and print it")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.fit:
        print(json.dumps(fit_epochs(json.loads(Path(args.fit).read_text())["runs"]), indent=1))
        return 0
    if args.worker:  # one run, in the fresh process main() started
        print(json.dumps(run_once(args.worker, Path(args.data), args.max_bins, args.sim_cells,
                                  args.seed, not args.no_time_guard, args.score)), flush=True)
        return 0
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    from quality import ALL, EXTRA

    unknown = [n for n in names if n not in ALL + EXTRA]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)} in --datasets "
                         f"(known: {', '.join(ALL + EXTRA)})")
    if any(n != "simulator" for n in names) and not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a folder: give the shared data folder "
                         "(../shared/data beside the project) or time only --datasets simulator")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env.pop("OMP_WAIT_POLICY", None)  # convnetvae sets it, as for a user
    rows = []
    for round_ in range(1, args.rounds + 1):
        for name in names:
            hogs = busy_processes(args.busy)
            try:
                run = subprocess.run(
                    [sys.executable, __file__, "--worker", name, "--data", args.data,
                     "--max-bins", str(args.max_bins), "--sim-cells", str(args.sim_cells),
                     "--seed", str(args.seed)]
                    + ["--no-time-guard"] * args.no_time_guard + ["--score"] * args.score,
                    env=env, capture_output=True, text=True, check=False)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            if run.returncode != 0:
                raise SystemExit(f"the run on {name} failed:\n{run.stderr[-3000:]}")
            row = dict(json.loads(run.stdout.strip().splitlines()[-1]), round=round_,
                       busy=args.busy)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    from convnetvae.io_utils import write_json

    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "threads": args.threads, "summary": summarise(rows),
           "fit": fit_epochs(rows) if len(rows) >= 4 else None, "runs": rows}
    write_json(args.out, out)  # atomically, the folder made if needed
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
