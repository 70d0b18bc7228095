"""Markdown table of `benchmarks/quality.py` summaries (the table in docs/benchmarks.md).

    .venv/bin/python benchmarks/quality_table.py benchmarks/results/quality/quality.json \
        benchmarks/results/quality_lsi_unscaled/quality.json

One row per dataset and model, validation scores (mean ± SD over folds) and the training-cell ARI;
datasets in the order of quality.py, models in the order given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("schep2017", "buenrostro2018", "satpathy2019", "zeller2023", "pairedtag", "simulator")


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def rows(paths: list[str]) -> list[str]:
    """Markdown lines of the merged summaries."""
    merged: dict[str, dict] = {}
    for p in paths:
        for name, entry in json.loads(Path(p).read_text())["datasets"].items():
            d = merged.setdefault(name, {"data": entry["data"], "runs": []})
            d["runs"].append(entry)
    out = ["| dataset (cells x bins; epochs, folds) | model | ARI (validation) | ARI (train) | NMI | "
           "scIB bio / overall | −log p(x) | parameters | time/fold (s) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name in sorted(merged, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        d = merged[name]
        first = True
        for run in d["runs"]:
            by = {}
            for r in run["summary"]:
                by.setdefault(r["model"], {})[r["split"]] = r
            for model, sp in by.items():
                va, tr = sp.get("validation", sp.get("train")), sp.get("train")
                label = (f"{name} ({d['data']['n_cells']:,} x {d['data']['n_bins']:,}; "
                         f"{run['epochs']} ep, {run['folds']} folds)") if first else ""
                first = False
                neural = not model.startswith(("lsi", "mofa"))
                out.append(
                    f"| {label} | {model} | {_f(va['best_ari_mean'])} ± {_f(va['best_ari_sd'])} | "
                    f"{_f(tr['best_ari_mean']) if tr else '–'} | {_f(va['best_nmi_mean'])} | "
                    f"{_f(va['bio_mean'])} / {_f(va['overall_mean'])} | "
                    f"{_f(va['neg_mll_mean'], 0) if neural else '–'} | "
                    f"{int(va['n_parameters_mean']):,} | {_f(va['train_time_s_mean'], 0)} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows(sys.argv[1:])))
