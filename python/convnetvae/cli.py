"""Command line: ``convnetvae demo | bin | train | embed | benchmark``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import settings
from .errors import ConvNetVAEError
from .jobs import add_train_arguments, job_from_args, run_train_job
from .settings import EmbedSettings, ModelSettings

# subcommands that live in their own modules: name -> module with add_parser(sub) and run(args)
_EXTERNAL = {"bin": "convnetvae.cli_bin", "benchmark": "convnetvae.cli_benchmark"}


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate tri-modal data, train, embed, cluster, plot")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--n-cells", type=int, default=3000)
    p.add_argument("--n-bins", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=30)
    settings.add_arguments(p, ModelSettings, only=("architecture", "seed"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, n_cells=args.n_cells, n_bins=args.n_bins, epochs=args.epochs,
                       architecture=args.architecture, seed=args.seed, progress=not args.quiet)
    print(f"demo: {summary['n_cells']} cells x {summary['n_modalities']} modalities x "
          f"{summary['n_bins']} bins, {summary['architecture']}, "
          f"{summary['epochs_trained']} epochs in {summary['train_seconds']:.0f} s; "
          f"best ARI {summary['best_ari']:.3f} at resolution {summary['best_resolution']}; "
          f"outputs in {args.out}/")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on an h5ad file and save it")
    add_train_arguments(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    job = job_from_args(args)
    if args.nproc > 1:
        from .distributed import launch

        launch(job, args.nproc)
        print(f"saved model trained by {args.nproc} processes to {job.out}")
        return 0
    model = run_train_job(job)
    print(f"saved {model!r} to {job.out}")
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed cells with a saved model")
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True, help="folder written by `convnetvae train`")
    p.add_argument("--out", required=True, help=".csv (embedding) or .h5ad (data + obsm)")
    settings.add_arguments(p, EmbedSettings)
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    import anndata as ad
    import pandas as pd

    from .api import ConvNetVAE
    from .io_utils import atomic_path

    adata = ad.read_h5ad(args.data)
    model = ConvNetVAE.load(args.model, adata, device=args.device)
    z = model.get_latent_representation(batch_size=args.batch_size)
    out = Path(args.out)
    if out.suffix == ".h5ad":
        adata.obsm["X_convnetvae"] = z
        with atomic_path(out) as tmp:
            adata.write_h5ad(tmp)
    else:
        df = pd.DataFrame(z, index=adata.obs_names,
                          columns=[f"convnetvae_{i + 1}" for i in range(z.shape[1])])
        with atomic_path(out) as tmp:
            df.to_csv(tmp)
    print(f"embedded {adata.n_obs} cells -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="convnetvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_train(sub)
    _add_embed(sub)
    for modname in _EXTERNAL.values():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name != modname:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 with a clear message for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag (argparse printed why): the exit code
        return int(exc.code or 0)
    try:
        func = getattr(args, "func", None)
        if func is None:
            mod = importlib.import_module(_EXTERNAL[args.command])
            return int(mod.run(args) or 0)
        return int(func(args) or 0)
    except ConvNetVAEError as err:
        print(f"convnetvae {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
