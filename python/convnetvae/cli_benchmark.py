"""``convnetvae benchmark``: cross-validated comparison of architectures and baselines on one dataset.

Example::

    convnetvae benchmark --data X.h5ad --labels-key celltype --batch-key sample \\
        --models conv-k51s51,conv-k11s3x2,fc-l1,lsi --folds 5 --epochs 100 --out DIR

writes ``DIR/results.csv``, ``DIR/sweep.csv``, ``DIR/summary.csv``, ``DIR/config.json``,
``DIR/figures/*.png`` and ``DIR/report.md``. The lead's ``cli.py`` registers this subcommand with
:func:`add_parser` and dispatches to :func:`run`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
import time
from collections.abc import Sequence

from . import settings
from .errors import ConvNetVAEError
from .evaluate.models import DEFAULT_MODELS, NON_NEURAL, SHUFFLE_SUFFIX
from .model.registry import preset_names, syntax_help
from .settings import ModelSettings, TrainSettings


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _fill(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", required=True, help="input .h5ad (one count layer per modality, var chrom/start/end)")
    p.add_argument("--labels-key", required=True, help="obs column with reference cell labels")
    p.add_argument("--batch-key", default=None, help="obs column with the batch/sample (optional)")
    p.add_argument("--modalities", type=_csv_list, default=None,
                   help="comma-separated count layers (default: adata.uns['modalities'] or all layers)")
    p.add_argument("--models", type=_csv_list, default=list(DEFAULT_MODELS),
                   help=f"comma-separated: an architecture ({syntax_help()}; listed: {', '.join(preset_names())}), "
                        f"or a baseline ({', '.join(NON_NEURAL)}); append {SHUFFLE_SUFFIX} for the bin-shuffle "
                        f"control (default: {','.join(DEFAULT_MODELS)})")
    p.add_argument("--shuffle-control", action="store_true",
                   help="also run every conv model on bin-shuffled data (adds '<model>+shuffle')")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (1 = no validation split)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs per fold (no early stopping)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resolutions", type=_float_list, default=None,
                   help="comma-separated Louvain resolutions (default 0.1,0.2,...,2.0)")
    p.add_argument("--k", type=int, default=20, help="neighbours of the clustering kNN graph (paper: 20)")
    p.add_argument("--n-starts", type=int, default=5, help="Louvain random starts per resolution (paper: 5)")
    p.add_argument("--leiden", action="store_true", help="also sweep Leiden (Louvain stays the headline)")
    p.add_argument("--n-importance", type=int, default=100,
                   help="importance samples for the marginal likelihood (paper: 100; 0 = skip)")
    p.add_argument("--no-scib", action="store_true", help="skip the scIB metrics")
    settings.add_arguments(p, ModelSettings, only=("likelihood", "n_latent", "n_hidden"))
    settings.add_arguments(p, TrainSettings, only=("batch_size", "lr", "device"))
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``benchmark`` on an ``argparse`` subparsers object and return its parser."""
    p = subparsers.add_parser(
        "benchmark", help="cross-validate architectures and baselines on a labelled dataset",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _fill(p)
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace):
    """Build a :class:`~convnetvae.evaluate.harness.BenchmarkConfig` from parsed arguments."""
    from .evaluate.clustering import DEFAULT_RESOLUTIONS
    from .evaluate.harness import BenchmarkConfig
    from .evaluate.models import bin_order_matters, parse_model_name

    models = list(dict.fromkeys(args.models))
    if args.shuffle_control:
        for m in list(models):
            base, shuffled = parse_model_name(m)
            if bin_order_matters(base) and not shuffled and base + SHUFFLE_SUFFIX not in models:
                models.append(base + SHUFFLE_SUFFIX)
    return BenchmarkConfig(
        models=models, labels_key=args.labels_key, batch_key=args.batch_key, modalities=args.modalities,
        folds=args.folds, epochs=args.epochs, seed=args.seed,
        resolutions=list(args.resolutions or DEFAULT_RESOLUTIONS), k=args.k, n_starts=args.n_starts,
        methods=["louvain", "leiden"] if args.leiden else ["louvain"], n_importance=args.n_importance,
        scib=not args.no_scib, n_latent=args.n_latent, n_hidden=args.n_hidden, batch_size=args.batch_size,
        lr=args.lr, likelihood=args.likelihood, device=args.device)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; returns the exit status (0 on success)."""
    from .evaluate.harness import load_inputs, run_benchmark
    from .evaluate.report import write_outputs

    cfg = config_from_args(args)
    adata = load_inputs(args.data)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started = _dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    result = run_benchmark(adata, cfg, log=log)
    command = getattr(args, "command_line", None) or "convnetvae benchmark " + " ".join(
        shlex.quote(a) for a in sys.argv[1:] if a != "benchmark")
    report = write_outputs(result, args.out, command=command, started=started,
                           elapsed_s=time.perf_counter() - t0)
    if not args.quiet:
        print(f"wrote {report}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m convnetvae.cli_benchmark ...``); errors become exit status 2."""
    parser = _fill(argparse.ArgumentParser(prog="convnetvae benchmark"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "convnetvae benchmark " + " ".join(shlex.quote(a) for a in argv)
    try:
        return run(args)
    except ConvNetVAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
