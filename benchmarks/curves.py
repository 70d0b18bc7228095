"""Quality per minute: best ARI against training time for the default ConvNet-VAE, the FC-VAE and
Signac-style LSI, on all cells of each dataset (issue 14).

Called by ``benchmarks/quality.py --curves`` (which loads the datasets). For each dataset:

* LSI as Signac runs it (TF-IDF, SVD with 30 components, components scaled to SD 1, the first
  dropped when it tracks depth) and unscaled (components keep their singular values); time = the
  fit and transform;
* the default ConvNet-VAE: ``ConvNetVAE(adata).train()`` exactly (the "1x" point), and the same
  model trained for a fraction or a multiple of that length with the same one-cycle schedule
  (``max_epochs=round(f x default epochs), lr_schedule="onecycle"``);
* the FC-VAE (``fc-l1``) with the default's other settings at the same lengths.

Every cell is embedded; the score is the best ARI over a Louvain resolution sweep (k = 20,
5 starts, resolutions 0.1-2.0), as the paper. Times are wall-clock seconds of ``train()`` on this
machine; each point also records LSI's time in the same process, so ratios stay meaningful on
shared machines. The budget line is the issue's 1 minute per 1,000 cells and modality, up to
three (``schedule.full_budget_seconds``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np


def _best_ari(z: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    from convnetvae.evaluate.clustering import clustering_sweep

    return float(clustering_sweep(z, labels, k=20, n_starts=5, seed=seed)["ari"].max())


def lsi_points(a: ad.AnnData, mods: list[str], labels: np.ndarray) -> list[dict[str, Any]]:
    """Signac-style LSI (scaled, Signac's default) and unscaled, on all cells."""
    from convnetvae.evaluate.baselines import LSIModel

    out = []
    for scale, name in ((True, "lsi"), (False, "lsi-unscaled")):
        t0 = time.perf_counter()
        z = LSIModel(mods, n_components=30, scale=scale).fit(a).transform(a)
        out.append({"model": name, "seconds": time.perf_counter() - t0,
                    "ari": _best_ari(z, labels)})
    return out


def vae_point(a: ad.AnnData, mods: list[str], batch_key: str | None, labels: np.ndarray,
              architecture: str | None, fraction: float, seed: int,
              model_kw: dict | None = None) -> dict[str, Any]:
    """One training run: the default (``fraction == 1``, no arguments) or a scaled length."""
    import convnetvae as cv

    a = a.copy()
    cv.ConvNetVAE.setup_anndata(a, modalities=mods, batch_key=batch_key)
    kw = dict(model_kw or {})
    if architecture is not None:
        kw["architecture"] = architecture
    t0 = time.perf_counter()
    model = cv.ConvNetVAE(a, seed=seed, **kw)
    t_init = time.perf_counter() - t0
    if fraction == 1.0:
        train_kw: dict[str, Any] = {}
    else:
        from convnetvae import schedule

        n_train = a.n_obs - int(round(a.n_obs * 0.1))
        default = schedule.plan(n_train, a.n_vars, len(mods),
                                schedule.auto_batch_size(n_train), None, None, "auto",
                                schedule.training_flops_per_cell(model.module),
                                sum(p.numel() for p in model.module.parameters()))
        train_kw = {"max_epochs": max(1, int(round(fraction * default.epochs))),
                    "lr_schedule": "onecycle"}
    t0 = time.perf_counter()
    model.train(progress=False, **train_kw)
    seconds = time.perf_counter() - t0
    z = model.get_latent_representation()
    plan = model.trainer_.plan
    return {"architecture": model.module.config.architecture, "fraction": fraction,
            "seed": seed, "seconds": seconds, "init_seconds": t_init, "epochs": plan.epochs,
            "steps": plan.total_steps, "ari": _best_ari(z, labels)}


def run_curves(name: str, a: ad.AnnData, labels_key: str, batch_key: str | None,
               fractions: list[float], seeds: list[int], models: list[str],
               log: Any = print) -> dict[str, Any]:
    """Every point of one dataset (see the module docstring)."""
    from convnetvae.schedule import full_budget_seconds

    mods = list(a.uns["modalities"])
    labels = a.obs[labels_key].astype(str).to_numpy()
    budget = full_budget_seconds(a.n_obs, len(mods))
    entry: dict[str, Any] = {"cells": a.n_obs, "bins": a.n_vars, "modalities": mods,
                             "labels_key": labels_key, "batch_key": batch_key,
                             "budget_seconds": budget, "points": []}
    for p in lsi_points(a, mods, labels):
        entry["points"].append(p)
        log(f"  {name} {p['model']}: ARI {p['ari']:.3f} in {p['seconds']:.1f} s")
    lsi_s = entry["points"][0]["seconds"]
    for spec in models:
        # "fc-l1@1/4": this model at its own fractions of the default length
        model, _, own = spec.partition("@")
        arch = None if model == "default" else model
        for seed in seeds:
            for f in ([float(v) for v in own.split("/")] if own else fractions):
                p = {"model": model, **vae_point(a, mods, batch_key, labels, arch, f, seed),
                     "lsi_seconds_same_run": lsi_s}
                entry["points"].append(p)
                log(f"  {name} {model} x{f} seed {seed}: ARI {p['ari']:.3f} in "
                    f"{p['seconds']:.1f} s ({p['epochs']} epochs, {p['steps']} steps, "
                    f"{p['architecture']})")
    return entry


def curves_figure(summary: dict[str, Any]):
    """One panel per dataset: best ARI against training seconds (log scale); returns the figure.

    The log axis is labelled at 1, 2 and 5 times each power of ten only (matplotlib's default
    labels every minor tick on a panel spanning less than a decade, and they overlapped), and
    one legend below the panels names every marker (inside a panel it hid points).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(summary["datasets"])
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.5), squeeze=False)
    legend: dict[str, Any] = {}
    for ax, name in zip(axes.ravel(), names):
        d = summary["datasets"][name]
        pts = d["points"]
        for model, colour in (("default", "C0"), ("fc-l1", "C1")):
            mine = [p for p in pts if p["model"] == model]
            if not mine:
                continue
            fr = sorted({p["fraction"] for p in mine})
            xs = [np.mean([p["seconds"] for p in mine if p["fraction"] == f]) for f in fr]
            ys = [np.mean([p["ari"] for p in mine if p["fraction"] == f]) for f in fr]
            label = "ConvNet-VAE (default; star: 1x)" if model == "default" else "FC-VAE (fc-l1)"
            (line,) = ax.plot(xs, ys, "o-", color=colour)
            legend.setdefault(label, line)
            for f, x, y in zip(fr, xs, ys):
                if f == 1.0:
                    ax.plot([x], [y], "*", ms=14, color=colour)
        for p, colour, marker in zip([q for q in pts if q["model"].startswith("lsi")],
                                     ("C2", "C3"), ("s", "D")):
            (dot,) = ax.plot([max(p["seconds"], 0.1)], [p["ari"]], marker, color=colour, ms=8)
            legend.setdefault("LSI (Signac)" if p["model"] == "lsi" else "LSI unscaled", dot)
        legend.setdefault("1 min / 1,000 cells",
                          ax.axvline(d["budget_seconds"], color="grey", ls="--", lw=1))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{name} ({d['cells']:,} x {d['bins']:,})", fontsize=10)
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("best ARI")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0.0, 0.5 / fig.get_figheight(), 1.0, 1.0))
    return fig


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Write :func:`curves_figure` of ``summary`` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(summary)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge(path: Path, name: str, entry: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Add one dataset to the curves JSON (locked: datasets may run concurrently)."""
    import fcntl

    from convnetvae.io_utils import write_json

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
        summary.update(meta)
        summary["datasets"][name] = entry
        write_json(path, summary)
    return summary
