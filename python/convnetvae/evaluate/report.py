"""Write a benchmark's tables, figures (as the paper's Figs 2-5) and a Markdown report.

Files written into the output directory (each through a temporary file renamed on success):
``results.csv``, ``sweep.csv``, ``summary.csv``, ``config.json``, ``report.md`` and
``figures/{ari_vs_resolution,parameters,training_time,neg_marginal_ll,scib}.png``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io_utils import atomic_path, atomic_write, write_json
from .harness import BenchmarkResult, config_dict, summary_table
from .models import SHUFFLE_SUFFIX, bin_order_matters
from .scib import BATCH_METRICS, BIO_METRICS

FIGURES = ("ari_vs_resolution.png", "parameters.png", "training_time.png", "neg_marginal_ll.png", "scib.png")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_write(path, "w") as fh:
        df.to_csv(fh, index=False, na_rep="")


def plot_ari_vs_resolution(sweep: pd.DataFrame, path: Path, method: str = "louvain") -> None:
    """ARI (mean +/- SD over folds) and median cluster count vs resolution, train and validation."""
    plt = _plt()
    splits = [s for s in ("train", "validation") if s in set(sweep["split"])]
    fig, axes = plt.subplots(2, len(splits), figsize=(5.5 * len(splits), 7), squeeze=False, sharex=True)
    sw = sweep[sweep["method"] == method].copy()
    sw["ari"] = pd.to_numeric(sw["ari"], errors="coerce")
    for j, split in enumerate(splits):
        d = sw[sw["split"] == split]
        for model in dict.fromkeys(d["model"]):
            g = d[d["model"] == model].groupby("resolution")
            ari_m, ari_s = g["ari"].mean(), g["ari"].std(ddof=0).fillna(0)
            axes[0, j].errorbar(ari_m.index, ari_m.values, yerr=ari_s.values, marker="o", ms=3, capsize=2,
                                label=model)
            nc = g["n_clusters"].median()
            axes[1, j].plot(nc.index, nc.values, marker="s", ms=3, label=model)
        axes[0, j].set_title(f"{split}: ARI vs resolution ({method})")
        axes[0, j].set_ylabel("ARI (mean ± SD over folds)")
        axes[1, j].set_ylabel("number of clusters (median)")
        axes[1, j].set_xlabel("resolution")
    axes[0, -1].legend(fontsize=8, loc="best")
    _save(fig, path)


def _bar(values: pd.DataFrame, col: str, ylabel: str, title: str, path: Path, err: str | None = None,
         log: bool = False) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(values) + 2), 3.8))
    v = pd.to_numeric(values[col], errors="coerce")
    ok = v.notna().to_numpy()
    x = np.arange(len(values))
    yerr = None if err is None else pd.to_numeric(values[err], errors="coerce").fillna(0).to_numpy()[ok]
    ax.bar(x[ok], v.to_numpy()[ok], yerr=yerr, capsize=3, color="#4C72B0")
    for xi in x[~ok]:
        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(values["model"].astype(str), rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log and ok.any():
        ax.set_yscale("log")
    _save(fig, path)


def plot_scib(results: pd.DataFrame, path: Path, split: str) -> None:
    """Grouped bars of the scIB metrics (mean over folds) per model; undefined metrics are omitted."""
    plt = _plt()
    metrics = [m for m in (*BATCH_METRICS, *BIO_METRICS, "overall") if m in results.columns]
    d = results[results["split"] == split]
    models = list(dict.fromkeys(d["model"]))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(metrics) * max(1, len(models)) / 2), 4))
    width = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        vals = [pd.to_numeric(d.loc[d["model"] == model, m], errors="coerce").mean() for m in metrics]
        xs = np.arange(len(metrics)) + i * width
        ax.bar(xs, np.nan_to_num(vals, nan=0.0), width=width, label=model)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(models) - 1) / 2)
    ax.set_xticklabels(metrics, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (higher is better)")
    ax.set_title(f"scIB metrics ({split}; undefined metrics drawn as 0, see report)")
    ax.legend(fontsize=8)
    _save(fig, path)


def write_outputs(result: BenchmarkResult, out_dir: str | os.PathLike, command: str | None = None,
                  started: str | None = None, elapsed_s: float | None = None) -> Path:
    """Write every table, figure and ``report.md`` of a benchmark into ``out_dir``.

    Returns
    -------
    pathlib.Path
        The report's path.
    """
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    res, sweep = result.results, result.sweep
    summary = summary_table(res)
    _write_csv(res, out / "results.csv")
    _write_csv(sweep, out / "sweep.csv")
    _write_csv(summary, out / "summary.csv")
    meta = {"config": config_dict(result.config), "data": result.data, "command": command,
            "started": started, "elapsed_s": elapsed_s, "machine": machine_description()}
    write_json(out / "config.json", meta)

    plot_ari_vs_resolution(sweep, figs / FIGURES[0], method=result.config.methods[0])
    per_model = summary[summary["split"] == "train"]
    _bar(per_model, "n_parameters_mean", "parameters", "trainable parameters (fitted values for LSI)",
         figs / FIGURES[1], log=True)
    _bar(per_model, "train_time_s_mean", "seconds", "training time per fold", figs / FIGURES[2],
         err="train_time_s_sd")
    mll_split = "validation" if "validation" in set(summary["split"]) else "train"
    _bar(summary[summary["split"] == mll_split], "neg_mll_mean", "-log p(x) (nats per cell)",
         f"negative marginal log-likelihood ({mll_split}; lower is better)", figs / FIGURES[3],
         err="neg_mll_sd")
    score_split = "validation" if "validation" in set(res["split"]) else "train"
    if "overall" in res.columns:
        plot_scib(res, figs / FIGURES[4], score_split)
    report = render_report(result, summary, command=command, started=started, elapsed_s=elapsed_s)
    with atomic_write(out / "report.md", "w") as fh:
        fh.write(report)
    return out / "report.md"


def machine_description() -> dict:
    """CPU count, platform and torch device of this machine."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    return info


def _cell(mean, sd, digits: int = 3) -> str:
    if mean is None or pd.isna(mean):
        return "undefined"
    if sd is None or pd.isna(sd) or sd == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(summary: pd.DataFrame, splits: Sequence[str] = ("train", "validation")) -> str:
    """The headline table: best ARI, NMI, clusters, scIB overall/batch/bio, -log p(x), params, time."""
    head = ("| model | split | best ARI | best NMI | clusters at best ARI | scIB overall | batch | bio | "
            "−log p(x) | parameters | train time (s) |")
    lines = [head, "|" + "---|" * 11]
    for _, r in summary.iterrows():
        if r["split"] not in splits:
            continue
        params = r.get("n_parameters_mean")
        lines.append(
            f"| {r['model']} | {r['split']} | {_cell(r.get('best_ari_mean'), r.get('best_ari_sd'))} | "
            f"{_cell(r.get('best_nmi_mean'), r.get('best_nmi_sd'))} | "
            f"{_cell(r.get('n_clusters_at_best_mean'), None, 1)} | "
            f"{_cell(r.get('overall_mean'), r.get('overall_sd'))} | {_cell(r.get('batch_mean'), None)} | "
            f"{_cell(r.get('bio_mean'), None)} | {_cell(r.get('neg_mll_mean'), r.get('neg_mll_sd'), 1)} | "
            f"{'n/a' if params is None or pd.isna(params) else f'{int(params):,}'} | "
            f"{_cell(r.get('train_time_s_mean'), r.get('train_time_s_sd'), 1)} |")
    return "\n".join(lines)


def render_report(result: BenchmarkResult, summary: pd.DataFrame | None = None, command: str | None = None,
                  started: str | None = None, elapsed_s: float | None = None) -> str:
    """The Markdown report of a benchmark run."""
    summary = summary_table(result.results) if summary is None else summary
    cfg, data = result.config, result.data
    started = started or _dt.datetime.now().isoformat(timespec="seconds")
    m = machine_description()
    out = [
        "# convnetvae benchmark report",
        "",
        f"- date: {started}" + (f" (took {elapsed_s:.0f} s)" if elapsed_s else ""),
        f"- machine: {m.get('cpus')} CPUs, {m.get('platform')}, torch {m.get('torch')}, CUDA {m.get('cuda')}",
        f"- command: `{command}`" if command else "- command: (Python API)",
        f"- data: {data['n_cells']} cells x {data['n_bins']} bins, modalities {', '.join(data['modalities'])}; "
        f"labels `{data['labels_key']}` ({data['n_labels']} classes); batch "
        + (f"`{data['batch_key']}` ({data['n_batches']} batches)" if data.get("batch_key") else "none"),
        f"- models: {', '.join(cfg.models)}; folds {cfg.folds}; epochs {cfg.epochs}; seed {cfg.seed}; "
        f"kNN k = {cfg.k}; {cfg.n_starts} Louvain starts per resolution over {len(cfg.resolutions)} resolutions "
        f"({min(cfg.resolutions)}-{max(cfg.resolutions)}); importance samples {cfg.n_importance}",
        "",
        "## Results (mean ± SD over folds)",
        "",
        "Best ARI/NMI are the best over the resolution grid for each fold, then averaged. "
        "−log p(x) is the importance-sampled negative marginal log-likelihood per cell "
        "(validation cells; neural models only). 'undefined' means the metric does not exist for "
        "these data (e.g. one batch), never a failure.",
        "",
        markdown_table(summary),
        "",
    ]
    und = result.results.get("undefined")
    if und is not None:
        notes = sorted({u for u in und.fillna("") if u})
        if notes:
            out += ["### Undefined metrics", ""] + [f"- {n}" for n in notes] + [""]
    out += _comparison_notes(summary)
    out += ["## Figures", ""] + [f"![{f[:-4]}](figures/{f})" for f in FIGURES] + [""]
    out += ["Files: `results.csv` (one row per model, fold and split), `sweep.csv` (one row per "
            "resolution), `summary.csv`, `config.json`.", ""]
    return "\n".join(out)


def _comparison_notes(summary: pd.DataFrame) -> list[str]:
    """Plain statements of who beat whom on validation ARI, including losses of ConvNet-VAEs."""
    split = "validation" if "validation" in set(summary["split"]) else "train"
    d = summary[summary["split"] == split].dropna(subset=["best_ari_mean"])
    if d.empty:
        return []
    best = d.loc[d["best_ari_mean"].idxmax()]
    lines = ["## Comparison", "", f"- Best {split} ARI: **{best['model']}** ({best['best_ari_mean']:.3f})."]
    names = d["model"].astype(str)
    ordered = names.map(bin_order_matters).astype(bool)
    conv = d[ordered & ~names.str.endswith(SHUFFLE_SUFFIX)]
    base = d[~ordered]
    if not conv.empty and not base.empty:
        bc, bb = conv.loc[conv["best_ari_mean"].idxmax()], base.loc[base["best_ari_mean"].idxmax()]
        if bc["best_ari_mean"] < bb["best_ari_mean"]:
            lines.append(f"- The best ConvNet-VAE ({bc['model']}, {bc['best_ari_mean']:.3f}) **loses** to the "
                         f"baseline {bb['model']} ({bb['best_ari_mean']:.3f}) on {split} ARI.")
        else:
            lines.append(f"- The best ConvNet-VAE ({bc['model']}, {bc['best_ari_mean']:.3f}) beats or ties the "
                         f"best baseline {bb['model']} ({bb['best_ari_mean']:.3f}) on {split} ARI.")
    for _, r in d[names.str.endswith(SHUFFLE_SUFFIX)].iterrows():
        orig = str(r["model"])[: -len(SHUFFLE_SUFFIX)]
        o = d[d["model"].astype(str) == orig]
        if not o.empty:
            delta = r["best_ari_mean"] - o["best_ari_mean"].iloc[0]
            lines.append(f"- Bin-shuffle control: {orig} {o['best_ari_mean'].iloc[0]:.3f} -> shuffled "
                         f"{r['best_ari_mean']:.3f} (change {delta:+.3f}).")
    return lines + [""]
