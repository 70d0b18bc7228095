"""How fast can any exact encoder embed? A compute bound for issue 15's requirement 3.

Requirement 3 asks for embedding throughput (encoder only, no gradient) at least 10x the dense
reference's cells per second. Any implementation that computes the same encoder exactly must do
its multiply-adds: the convolutions and the fully connected layer after them. This script counts
them per cell (torch's FlopCounterMode on the encoder in eval mode, paper-size geometry: 3
modalities x 25,000 bins, the mouse-like chromosome layout of ``scale.py``), measures this
machine's matrix-product throughput on the encoder's own largest FC (minibatches of 128, the
inference chunk; ``--threads`` as the architectures run of ``scale.py``), and divides: the
cells per second an implementation would reach if it did nothing but those products at that
rate (no reading, no densifying, no transform). ``bound_vs_dense`` compares that with the dense
reference's measured cells per second from ``benchmarks/results/scale_architectures.json``.

    .venv/bin/python benchmarks/embed_bound.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))


def encoder_macs_per_cell(module, n_modalities: int, n_bins: int) -> float:
    """Multiply-adds of one encoder pass per cell (eval mode, no gradient)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n = 4
    enc = module.encoder.eval()
    h = torch.zeros(n, n_modalities, n_bins)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc(h, None)
    return counter.get_total_flops() / 2.0 / n


def gemm_macs_per_second(module, repeats: int = 20) -> float:
    """Sustained multiply-adds per second of the encoder's largest linear layer, 128 rows."""
    import torch

    fc = max((m for m in module.encoder.modules() if isinstance(m, torch.nn.Linear)),
             key=lambda m: m.weight.numel())
    x = torch.randn(128, fc.in_features)
    with torch.no_grad():
        for _ in range(3):
            fc(x)
        t0 = time.perf_counter()
        for _ in range(repeats):
            fc(x)
        dt_ = (time.perf_counter() - t0) / repeats
    return 128 * fc.in_features * fc.out_features / dt_


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bins", type=int, default=25_000)
    p.add_argument("--reference", default=str(REPO / "benchmarks" / "results" / "scale_architectures.json"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "embed_bound.json"))
    args = p.parse_args(argv)

    import torch

    from convnetvae.io_utils import write_json
    from convnetvae.model.vae import VAE, ModuleConfig
    from scale import chrom_lengths

    torch.set_num_threads(args.threads)
    ref = json.loads(Path(args.reference).read_text())
    dense = {r["architecture"]: r["dense_embed_cells_per_second"] for r in ref["summary"]}
    ours = {r["architecture"]: r["ours_embed_cells_per_second"] for r in ref["summary"]}
    rows = []
    for arch in dense:
        cfg = ModuleConfig(n_modalities=3, n_batches=1, architecture=arch,
                           chrom_lengths=chrom_lengths(args.bins))
        module = VAE(cfg).eval()
        macs = encoder_macs_per_cell(module, 3, args.bins)
        rate = gemm_macs_per_second(module)
        bound = rate / macs
        rows.append({"architecture": arch, "encoder_macs_per_cell": macs,
                     "gemm_macs_per_second": rate, "bound_cells_per_second": bound,
                     "dense_embed_cells_per_second": dense[arch],
                     "ours_embed_cells_per_second": ours[arch],
                     "bound_vs_dense": bound / dense[arch]})
        print(f"{arch}: {macs / 1e6:.1f} M multiply-adds per cell, {rate / 1e9:.1f} G/s -> at most "
              f"{bound:,.0f} cells/s = {bound / dense[arch]:.1f}x the dense reference "
              f"({dense[arch]:,.0f} cells/s; ours measured {ours[arch]:,.0f})", flush=True)
    write_json(Path(args.out), {"benchmark": "embed_bound", "date": dt.datetime.now().isoformat(
        timespec="seconds"), "threads": args.threads, "cpus": os.cpu_count(), "bins": args.bins,
        "modalities": 3, "reference": os.path.relpath(args.reference, REPO), "rows": rows,
        "command": " ".join(["benchmarks/embed_bound.py", *(sys.argv[1:] if argv is None else argv)])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
