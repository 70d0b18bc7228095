"""Do unseen cells land among the training cells? The encoder's held-out gap.

A model is trained on two thirds of a dataset's cells (a seeded split) and embeds the other
third, as ``ProjectConvNetVAE``, ``get_latent_representation(new_cells)`` and query mapping do.
If the encoder generalises, the held-out cells sit among the training cells like any other
training cell. Two numbers per model (:func:`gap_metrics`):

- ``heldout_mixing``: the fraction of each held-out cell's k nearest neighbours (in the pooled
  embedding) that are training cells, over its expected value (n_train / (n - 1)); 1 when the
  held-out cells are placed like training cells, near 0 when they form a cloud of their own;
- ``spread_ratio``: the held-out cells' mean standard deviation per latent dimension over the
  training cells'; below 1 when the encoder maps unseen cells closer together (towards the
  prior's centre) than the cells it was trained on.

Signac-style LSI (fitted on the same training cells, held-out cells projected with its IDF and
loadings) is measured alongside as the reference: with far fewer cells than bins, a linear
projection has such a gap too (its later components fit the training cells' own noise, which
unseen cells do not share). The k-fold protocol of ``quality.py`` clusters held-out cells on
their own and does not see this gap. Not part of the test suite; the real sets need
../shared/data. Writes one JSON file.

    .venv/bin/python benchmarks/heldout_gap.py --out benchmarks/results/heldout_gap/default_s0.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))

import convnetvae as cv  # noqa: E402
from convnetvae.evaluate.baselines import LSIModel  # noqa: E402
from convnetvae.evaluate.neighbors import knn  # noqa: E402
from convnetvae.io_utils import write_json  # noqa: E402
from quality import ALL, load_dataset, shared_data  # noqa: E402

#: share of the cells held out from training
HELDOUT_FRACTION = 1 / 3


def heldout_split(n_obs: int, seed: int, fraction: float = HELDOUT_FRACTION) -> np.ndarray:
    """Boolean mask of the held-out cells: ``round(fraction * n_obs)`` cells, chosen by ``seed``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    n_held = int(round(fraction * n_obs))
    if n_held < 1 or n_held >= n_obs:
        raise ValueError(f"holding out {fraction:.2f} of {n_obs} cells leaves no cells on one side")
    held = np.zeros(n_obs, dtype=bool)
    held[np.random.default_rng(seed).choice(n_obs, size=n_held, replace=False)] = True
    return held


def gap_metrics(z_train: np.ndarray, z_heldout: np.ndarray, k: int = 15) -> dict[str, float]:
    """``heldout_mixing`` and ``spread_ratio`` (module docstring) of two embeddings of one model."""
    z_train, z_heldout = np.asarray(z_train, np.float64), np.asarray(z_heldout, np.float64)
    if z_train.ndim != 2 or z_heldout.ndim != 2 or z_train.shape[1] != z_heldout.shape[1]:
        raise ValueError(f"the embeddings must be cells x dimensions with the same dimensions, got "
                         f"{z_train.shape} and {z_heldout.shape}")
    z = np.vstack([z_train, z_heldout])
    is_train = np.r_[np.ones(len(z_train), bool), np.zeros(len(z_heldout), bool)]
    neighbours = knn(z, k=k, method="exact").indices[~is_train]
    expected = len(z_train) / (len(z) - 1)
    spread_train = z_train.std(axis=0).mean()
    return {"heldout_mixing": float(is_train[neighbours].mean() / expected),
            "spread_ratio": float(z_heldout.std(axis=0).mean() / spread_train)
            if spread_train > 0 else float("nan")}


def measure(adata: ad.AnnData, modalities: list[str], batch_key: str | None, seed: int,
            model_kwargs: dict | None = None, train_kwargs: dict | None = None
            ) -> dict[str, dict[str, float]]:
    """Train the ConvNet-VAE (defaults, plus ``model_kwargs`` / ``train_kwargs``) and LSI on the
    training cells of the split ``seed``; the gap of each, and the seconds it took."""
    held = heldout_split(adata.n_obs, seed)
    train, test = adata[~held].copy(), adata[held].copy()
    cv.ConvNetVAE.setup_anndata(train, modalities=modalities, batch_key=batch_key)
    t0 = time.perf_counter()
    model = cv.ConvNetVAE(train, seed=seed, **(model_kwargs or {}))
    model.train(progress=False, **(train_kwargs or {}))
    out = {"convnetvae": {**gap_metrics(model.get_latent_representation(),
                                        model.get_latent_representation(test)),
                          "seconds": time.perf_counter() - t0, "epochs": len(model.history_)}}
    t0 = time.perf_counter()
    lsi = LSIModel(modalities, seed=seed).fit(train)
    out["lsi"] = {**gap_metrics(lsi.transform(train), lsi.transform(test)),
                  "seconds": time.perf_counter() - t0}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(d for d in ALL if d != "simulator"))
    p.add_argument("--seeds", default="0", help="comma-separated split and model seeds")
    p.add_argument("--max-bins", type=int, default=25_000)
    p.add_argument("--sim-cells", type=int, default=1500)
    p.add_argument("--model-kwargs", default="{}",
                   help='JSON of ConvNetVAE arguments, e.g. \'{"loadings_start": "auto"}\'')
    p.add_argument("--train-kwargs", default="{}",
                   help='JSON of train() arguments, e.g. \'{"max_epochs": 5}\'')
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "heldout_gap"
                                          / "default_s0.json"))
    args = p.parse_args(argv)
    kwargs = {}
    for flag, text in (("--model-kwargs", args.model_kwargs), ("--train-kwargs", args.train_kwargs)):
        try:
            kwargs[flag] = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{flag} must be a JSON object, got {text!r}: {err}") from None
        if not isinstance(kwargs[flag], dict):
            raise SystemExit(f"{flag} must be a JSON object, got {text!r}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    root = shared_data()
    command = " ".join(["benchmarks/heldout_gap.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"date": dt.date.today().isoformat(), "command": command, "max_bins": args.max_bins,
              "heldout_fraction": HELDOUT_FRACTION, "model_kwargs": kwargs["--model-kwargs"],
              "train_kwargs": kwargs["--train-kwargs"], "datasets": {}}
    for name in [d for d in args.datasets.split(",") if d]:
        if name != "simulator" and root is None:
            print(f"{name}: ../shared/data not found, skipped", file=sys.stderr)
            continue
        a, _, batch_key = load_dataset(name, root or Path("."), args.max_bins, args.sim_cells)
        runs = {str(s): measure(a, list(a.uns["modalities"]), batch_key, s,
                                kwargs["--model-kwargs"], kwargs["--train-kwargs"]) for s in seeds}
        result["datasets"][name] = {"cells": a.n_obs, "bins": a.n_vars, "batch_key": batch_key,
                                    "seeds": runs}
        print(name, json.dumps(runs), file=sys.stderr, flush=True)
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
