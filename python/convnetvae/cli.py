"""Command line: ``convnetvae demo | bin | train | embed | benchmark``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from . import settings
from .errors import ConvNetVAEError
from .jobs import add_train_arguments, check_train_output, job_from_args, run_train_job
from .settings import EmbedSettings, ModelSettings

# subcommands that live in their own modules: name -> module with add_parser(sub) and run(args)
_EXTERNAL = {"bin": "convnetvae.cli_bin", "benchmark": "convnetvae.cli_benchmark"}
#: exit status after Ctrl-C (128 + SIGINT, as shells report it): never 0, so pipelines stop
EXIT_INTERRUPTED = 130


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
    check_train_output(job)  # before reading the data or training
    if args.nproc > 1:
        from .distributed import launch

        launch(job, args.nproc)
        print(f"saved model trained by {args.nproc} processes to {job.out}")
        return 0
    model = run_train_job(job)
    if model.train_config.get("interrupted"):
        n = model.train_config.get("epochs_trained", 0)
        from .model_format import is_model_dir

        what = (f"saved the partly trained model to {job.out}" if model.saved_to_ else
                f"kept the previous model at {job.out} (--save-interrupted replaces it)"
                if is_model_dir(job.out) else "saved nothing (no epoch finished)")
        print(f"convnetvae train: interrupted (Ctrl-C) after {n} epoch(s); {what}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"saved {model!r} to {job.out}")
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed cells with a saved model")
    p.add_argument("--data", required=True, help="h5ad with the model's bins and modalities")
    p.add_argument("--model", required=True, help="folder written by `convnetvae train`")
    p.add_argument("--out", required=True,
                   help=".csv / .tsv (embedding), .parquet (needs pyarrow or fastparquet) or "
                        ".h5ad (data + obsm['X_convnetvae'])")
    settings.add_arguments(p, EmbedSettings)
    p.set_defaults(func=_run_embed)


EMBED_FORMATS = (".csv", ".tsv", ".parquet", ".h5ad")


def _check_embed_out(out: Path) -> None:
    """The output's format is known (and writable) before anything is computed."""
    from .io_utils import check_writable

    if out.suffix.lower() not in EMBED_FORMATS:
        raise ConvNetVAEError(f"--out {str(out)!r}: unknown format {out.suffix or '(none)'!r}; "
                              f"use one of {', '.join(EMBED_FORMATS)}")
    if out.suffix.lower() == ".parquet" and not _parquet_engine():
        raise ConvNetVAEError("--out .parquet needs pyarrow or fastparquet, neither is installed "
                              "(pip install pyarrow); or write .csv / .h5ad")
    check_writable(out, "--out")


def _parquet_engine() -> str | None:
    import importlib.util

    return next((e for e in ("pyarrow", "fastparquet") if importlib.util.find_spec(e)), None)


def _run_embed(args: argparse.Namespace) -> int:
    import pandas as pd

    from .api import ConvNetVAE
    from .data.backed import read_h5ad
    from .io_utils import atomic_path

    out = Path(args.out)
    _check_embed_out(out)
    adata = read_h5ad(args.data)
    model = ConvNetVAE.load(args.model, adata, device=args.device)
    z = model.get_latent_representation(batch_size=args.batch_size)
    kind = out.suffix.lower()
    if kind == ".h5ad":
        adata.obsm["X_convnetvae"] = z
        with atomic_path(out) as tmp:
            adata.write_h5ad(tmp)
    else:
        df = pd.DataFrame(z, index=adata.obs_names,
                          columns=[f"convnetvae_{i + 1}" for i in range(z.shape[1])])
        with atomic_path(out) as tmp:
            if kind == ".parquet":
                df.to_parquet(tmp, engine=_parquet_engine())
            else:
                df.to_csv(tmp, sep="\t" if kind == ".tsv" else ",")
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
    except OSError as err:  # a full disk, a read-only file system, a file that vanished...
        print(f"convnetvae {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"convnetvae {args.command}: interrupted (Ctrl-C); nothing more was written",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _os_error(err: OSError) -> str:
    """One line for an operating-system error: what failed and on which file."""
    where = " and ".join(repr(str(f)) for f in (err.filename, err.filename2) if f)
    what = err.strerror or str(err) or type(err).__name__
    return f"{what}{f': {where}' if where else ''}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
