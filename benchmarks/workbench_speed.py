"""Workbench speed: genome tracks with a trained model, and the embedding after training.

Data: ``convnetvae.simulate`` with 3,000 cells x 25,000 bins x 3 modalities, 8 cell types, 2
batches; a ConvNet-VAE (default architecture) trained for one epoch (the weights do not change
the cost). Each measurement runs in a fresh process, wall and CPU seconds (the machine may be
shared: CPU time is the fairer number; the load average is recorded).

tracks
    ``compute_tracks`` + the PNG for an 8-group, 3-modality, 2 Mb region, as *Show tracks*
    runs it: ``new_cached_latent`` (the workbench's latent means are current: no encoder),
    ``new_encode`` (encoder + one decoder pass), and ``old`` (the previous code: one
    ``get_normalized_signal`` call per modality over up to 200 cells per group, then the
    figure of one subplot per group and modality, re-implemented here for the ratio). The
    imputed signal over the 600-cell budget is compared with the mean over every cell of each
    group (``accuracy``).
embed_after_training
    A Workbench in a fresh process trains one epoch with *Embed when done* (UMAP layout):
    seconds from the end of training to the embedding shown (``new``). ``fresh_embed`` presses
    Embed on a workbench opened on a saved model (no training to overlap the umap import
    with). ``old_layout`` is the previous layout step in a fresh process: ``sc.pp.neighbors``
    then ``sc.tl.umap`` on the same latent means.

    .venv/bin/python benchmarks/workbench_speed.py [--out benchmarks/results/workbench_speed.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODS = ["ATAC", "H3K27ac", "H3K27me3"]
REGION = "chr1:0-2000000"


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t):
    return {"wall_s": round(time.perf_counter() - t[0], 3), "cpu_s": round(time.process_time() - t[1], 3)}


def prepare(work: Path) -> None:
    import convnetvae
    from convnetvae import ConvNetVAE

    adata = convnetvae.simulate(n_cells=3000, n_bins=25_000, modalities=MODS, n_types=8, seed=0)
    ConvNetVAE.setup_anndata(adata, modalities=MODS, batch_key="batch", labels_key="cell_type")
    model = ConvNetVAE(adata)
    model.train(max_epochs=1, progress=False)
    model.save(work / "model", overwrite=True)
    adata.obsm["X_convnetvae"] = model.get_latent_representation()
    adata.write_h5ad(work / "data.h5ad")


def _old_tracks(adata, model):
    """The previous Show tracks: one model call per modality, one subplot per group x modality."""
    import numpy as np
    import scipy.sparse as sp

    from convnetvae.widgets.render import figure_to_png, new_figure
    from convnetvae.widgets.tracks import _group_mean, _groups_of, parse_region

    reg = parse_region(REGION, adata.var)
    names, codes, _ = _groups_of(adata, "cell_type", 12)
    for m in MODS:
        x = sp.csr_matrix(adata.layers[m])
        lib = np.asarray(x.sum(axis=1)).ravel().astype(float)
        _group_mean(x[:, reg.bins].astype(np.float64), codes, len(names), 1e4 / np.maximum(lib, 1))
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(np.flatnonzero(codes == g), min(200, (codes == g).sum()), replace=False))
             for g in range(len(names))]
    sub_idx = np.concatenate(picks)
    sub = adata[sub_idx].copy()
    for m in MODS:
        rates = np.asarray(model.get_normalized_signal(adata=sub, modality=m), dtype=np.float64)
        tot = rates.sum(axis=1)
        _group_mean(rates[:, reg.bins], codes[sub_idx], len(names), 1e4 / tot)
    fig = new_figure(8, 0.9 + 0.42 * len(names) * len(MODS))
    axes = fig.subplots(len(names) * len(MODS), 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        y = rng.random(len(reg.bins))
        ax.fill_between(np.arange(len(y)), y, step="post", alpha=0.55, linewidth=0)
        ax.step(np.arange(len(y)), y, where="post", linewidth=0.8)
    return figure_to_png(fig)


def tracks_case(work: Path, case: str) -> dict:
    import anndata as ad
    import numpy as np

    from convnetvae import ConvNetVAE
    from convnetvae.widgets.plots import tracks_figure
    from convnetvae.widgets.render import figure_to_png
    from convnetvae.widgets.tracks import _groups_of, compute_tracks, imputed_means, parse_region

    adata = ad.read_h5ad(work / "data.h5ad")
    model = ConvNetVAE.load(work / "model", adata)
    latent = adata.obsm["X_convnetvae"]
    compute_tracks(adata, REGION, "cell_type", MODS, model=model, max_imputed_cells=16,
                   latent=latent)  # first torch call in the process: not what a click costs
    t = _clock()
    if case == "old":
        _old_tracks(adata, model)
        return {"case": case, **_since(t)}
    tr = compute_tracks(adata, REGION, "cell_type", MODS, model=model,
                        latent=latent if case == "new_cached_latent" else None)
    figure_to_png(tracks_figure(tr))
    out = {"case": case, **_since(t), "n_imputed_cells": int(sum(tr.n_imputed_cells)),
           "n_groups": len(tr.groups)}
    if case == "new_cached_latent":  # the 600-cell budget against every cell of each group
        reg = parse_region(REGION, adata.var)
        names, codes, _ = _groups_of(adata, "cell_type", 12)
        full = imputed_means(model, adata, np.arange(adata.n_obs), codes, len(names), reg.bins,
                             MODS, latent=latent)
        acc = {}
        for m in MODS:
            a, b = tr.imputed[m].ravel(), full[m].ravel()
            acc[m] = {"pearson_r": round(float(np.corrcoef(a, b)[0, 1]), 5),
                      "median_rel_diff": round(float(np.median(np.abs(a - b) / np.maximum(b, 1e-9))), 5)}
        out["accuracy_vs_all_cells"] = acc
    return out


def embed_case(work: Path, case: str) -> dict:
    import anndata as ad

    t_import = _clock()
    from convnetvae import ConvNetVAE
    from convnetvae.widgets import Workbench

    adata = ad.read_h5ad(work / "data.h5ad")
    imports = _since(t_import)
    if case == "old_layout":
        import scanpy as sc

        t = _clock()
        sc.pp.neighbors(adata, use_rep="X_convnetvae", n_neighbors=15, key_added="nb", random_state=0)
        sc.tl.umap(adata, neighbors_key="nb", random_state=0)
        return {"case": case, "layout_only": True, **_since(t)}
    if case == "fresh_embed":
        wb = Workbench(adata, model=ConvNetVAE.load(work / "model", adata))
        emb = wb.panels["Embed & cluster"]
        emb.set_values(layout="umap")
        t = _clock()
        emb.run(wait=True)
        assert emb.error is None, emb.error
        return {"case": case, **_since(t), "job_seconds": round(emb.job.seconds, 3)}
    wb = Workbench(adata)
    wb.panels["Embed & cluster"].set_values(layout="umap")
    marks = {}
    orig = wb.panels["Embed & cluster"].run

    def run(wait=None):
        marks["train_end"] = _clock()
        return orig(wait=wait)

    wb.panels["Embed & cluster"].run = run
    t_train = _clock()
    wb.train(wait=True, max_epochs=1, early_stopping=False, embed_when_done=True)
    emb = wb.panels["Embed & cluster"]
    assert emb.error is None, emb.error
    return {"case": case, "after_training": _since(marks["train_end"]),
            "training_and_embedding": _since(t_train), "imports": imports,
            "job_seconds": round(emb.job.seconds, 3)}


def _fresh(func: str, work: Path, case: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
            f"import workbench_speed as b; from pathlib import Path; "
            f"print('RESULT' + json.dumps(b.{func}(Path({str(work)!r}), {case!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{func}({case}) failed:\n{out.stderr[-3000:]}")
    res = json.loads(lines[-1][6:])
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "workbench_speed.json"))
    ap.add_argument("--work", default=None, help="folder for the data and model (default: temporary)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / "data.h5ad").exists():
            subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); "
                            f"import workbench_speed as b; from pathlib import Path; b.prepare(Path({str(work)!r}))"],
                           check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        load_before = os.getloadavg()
        tracks = {c: _fresh("tracks_case", work, c) for c in ("new_cached_latent", "new_encode", "old")}
        embed = {c: _fresh("embed_case", work, c) for c in ("new", "fresh_embed", "old_layout")}
        load_after = os.getloadavg()
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": "simulate(n_cells=3000, n_bins=25000, 3 modalities, 8 types, 2 batches); default model, 1 epoch",
        "machine": {"cpus": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "tracks": tracks,
        "tracks_ratio_old_over_new_cpu": round(tracks["old"]["cpu_s"] / tracks["new_cached_latent"]["cpu_s"], 1),
        "embed_after_training": embed,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
