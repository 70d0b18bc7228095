"""Benchmark: bin one fragment file with convnetvae and with SnapATAC2, compare speed, memory, counts.

Each tool runs in its own fresh subprocess (so peak memory is that tool's alone), on the same
gzipped, position-sorted fragment file (as Cell Ranger writes them), into 10 kb bins on the same
chromosomes. SnapATAC2 uses ``import_fragments`` + ``add_tile_matrix(counting_strategy="fragment")``,
which counts a fragment in every bin it overlaps: the same rule as ``read_fragments``.

SnapATAC2 is not a dependency of convnetvae: install it only for this benchmark, ideally in its own
venv (``python -m venv /tmp/snapvenv && /tmp/snapvenv/bin/pip install snapatac2``) and pass
``--snap-python /tmp/snapvenv/bin/python``.

Usage::

    .venv/bin/python benchmarks/bin_fragments.py --n-fragments 5000000 \\
        --snap-python /tmp/snapvenv/bin/python --repeats 2

Writes ``benchmarks/results/bin_fragments.json``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

CHROM_SIZES = ROOT.parent / "shared" / "data" / "genome" / "chrom_sizes" / "mm10.main.chrom.sizes"

OURS = textwrap.dedent("""
    import resource, sys, time
    import numpy as np, scipy.sparse as sp
    t0 = time.perf_counter()
    from convnetvae.data.fragments import read_fragments
    import pandas as pd
    sizes = pd.read_csv(sys.argv[2], sep="\\t", header=None, index_col=0)[1].to_dict()
    t1 = time.perf_counter()
    c1 = time.process_time(); k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    a = read_fragments({"ATAC": sys.argv[1]}, bin_size=int(sys.argv[4]), chrom_sizes=sizes,
                       min_counts=1, main_chromosomes_only=False)
    t2 = time.perf_counter()
    k2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c1 + (k2.ru_utime + k2.ru_stime) - (k1.ru_utime + k1.ru_stime)
    X = a.layers["ATAC"].tocsr()
    sp.save_npz(sys.argv[3] + ".npz", X)
    np.save(sys.argv[3] + ".obs.npy", np.asarray(a.obs_names, dtype=str))
    np.save(sys.argv[3] + ".var.npy", np.asarray(a.var_names, dtype=str))
    ru_s = resource.getrusage(resource.RUSAGE_SELF); ru_c = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("RESULT", t2 - t1, ru_s.ru_maxrss, ru_c.ru_maxrss, int(a.obs["n_fragments_ATAC"].sum()),
          t1 - t0, cpu)
""")

SNAP = textwrap.dedent("""
    import resource, sys, time, tempfile
    import numpy as np, scipy.sparse as sp
    t0 = time.perf_counter()
    import snapatac2 as snap
    import pandas as pd
    sizes = pd.read_csv(sys.argv[2], sep="\\t", header=None, index_col=0)[1].to_dict()
    t1 = time.perf_counter()
    c1 = time.process_time(); k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    a = snap.pp.import_fragments(sys.argv[1], chrom_sizes=sizes, sorted_by_barcode=sys.argv[5] == "1",
                                 min_num_fragments=0, chrM=["chrM"], n_jobs=2,
                                 tempdir=tempfile.gettempdir())
    snap.pp.add_tile_matrix(a, bin_size=int(sys.argv[4]), counting_strategy="fragment",
                            exclude_chroms=None, n_jobs=2)
    t2 = time.perf_counter()
    k2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c1 + (k2.ru_utime + k2.ru_stime) - (k1.ru_utime + k1.ru_stime)
    X = sp.csr_matrix(a.X)
    sp.save_npz(sys.argv[3] + ".npz", X)
    np.save(sys.argv[3] + ".obs.npy", np.asarray(a.obs_names, dtype=str))
    np.save(sys.argv[3] + ".var.npy", np.asarray(a.var_names, dtype=str))
    ru_s = resource.getrusage(resource.RUSAGE_SELF); ru_c = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("RESULT", t2 - t1, ru_s.ru_maxrss, ru_c.ru_maxrss, int(a.obs["n_fragment"].sum()), t1 - t0, cpu)
""")


def make_fragment_file(path: Path, n: int, n_cells: int = 5000, seed: int = 1,
                       n_background: int = 0) -> None:
    """Write ``n`` random fragments (position-sorted, gzip) over mm10 main chromosomes.

    ``n_background`` extra barcodes (empty droplets, as in a raw 10x file) share 20 % of the
    fragments; the ``n_cells`` cells share the rest with log-normal depths.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    sizes = pd.read_csv(CHROM_SIZES, sep="\t", header=None, index_col=0)[1]
    n_bc = n_cells + n_background
    codes = rng.integers(0, 4, size=(n_bc, 16))
    bcs = np.array(["".join("ACGT"[c] for c in row) + "-1" for row in codes])
    cell_w = rng.lognormal(0, 0.6, n_cells)
    cell_w /= cell_w.sum()
    if n_background:
        bg_w = rng.lognormal(0, 1.0, n_background)
        cell_w = np.concatenate([0.8 * cell_w, 0.2 * bg_w / bg_w.sum()])
    plain = path.with_suffix("")
    with open(plain, "w") as fh:
        for c, k in zip(sizes.index, rng.multinomial(n, sizes.to_numpy() / sizes.sum())):
            start = np.sort(rng.integers(0, sizes[c] - 1000, k))
            length = rng.integers(30, 700, k)
            pd.DataFrame({"c": c, "s": start, "e": start + length,
                          "b": bcs[rng.choice(n_bc, k, p=cell_w)],
                          "n": rng.integers(1, 5, k)}).to_csv(fh, sep="\t", header=False, index=False)
    subprocess.run(["gzip", "-f", str(plain)], check=True)


def run_tool(python: str, code: str, frag: Path, out_prefix: Path, bin_size: int,
             barcode_sorted: bool = False) -> dict:
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run([python, "-c", code, str(frag), str(CHROM_SIZES), str(out_prefix),
                           str(bin_size), "1" if barcode_sorted else "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "python")})
    wall_total = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
    return {
        "seconds": float(line[1]),
        "seconds_with_imports": wall_total,
        "import_seconds": float(line[5]),
        "cpu_seconds": float(line[6]),
        "peak_rss_mb": int(line[2]) / 1024,
        # children: the gzip decompressor; Linux counts the pre-exec fork image, so this
        # over-states it (gzip -dc itself uses a few MB)
        "peak_rss_children_mb": int(line[3]) / 1024,
        "n_fragments": int(line[4]),
        "load_average_before": load_before,
    }


def compare(prefix_a: Path, prefix_b: Path) -> dict:
    import numpy as np
    import scipy.sparse as sp

    Xa, Xb = sp.load_npz(f"{prefix_a}.npz").tocsr(), sp.load_npz(f"{prefix_b}.npz").tocsr()
    oa, ob = np.load(f"{prefix_a}.obs.npy"), np.load(f"{prefix_b}.obs.npy")
    va, vb = np.load(f"{prefix_a}.var.npy"), np.load(f"{prefix_b}.var.npy")
    cells = np.intersect1d(oa, ob)
    bins = np.intersect1d(va, vb)
    ia = {c: i for i, c in enumerate(oa)}
    ib = {c: i for i, c in enumerate(ob)}
    ja = {c: i for i, c in enumerate(va)}
    jb = {c: i for i, c in enumerate(vb)}
    A = Xa[[ia[c] for c in cells]][:, [ja[b] for b in bins]]
    B = Xb[[ib[c] for c in cells]][:, [jb[b] for b in bins]]
    diff = abs(A - B)
    return {"shared_cells": int(len(cells)), "cells_only_convnetvae": int(len(oa) - len(cells)),
            "cells_only_snapatac2": int(len(ob) - len(cells)), "shared_bins": int(len(bins)),
            "total_convnetvae": int(A.sum()), "total_snapatac2": int(B.sum()),
            "n_differing_entries": int(diff.nnz), "identical": bool(diff.nnz == 0)}


def profile_ours(frag: Path, bin_size: int) -> list[dict]:
    """Where time goes in read_fragments: the top functions by own time (cProfile)."""
    import cProfile
    import pstats

    import pandas as pd

    from convnetvae.data.fragments import read_fragments

    sizes = pd.read_csv(CHROM_SIZES, sep="\t", header=None, index_col=0)[1].to_dict()
    pr = cProfile.Profile()
    pr.enable()
    read_fragments({"ATAC": frag}, bin_size=bin_size, chrom_sizes=sizes, min_counts=1,
                   main_chromosomes_only=False)
    pr.disable()
    st = pstats.Stats(pr)
    total = sum(v[2] for v in st.stats.values())
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:12]
    return [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "own_seconds": round(v[2], 3),
             "share": round(v[2] / total, 3)} for k, v in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fragments", type=Path, help="existing fragment file (mm10); else generated")
    ap.add_argument("--n-fragments", type=int, default=5_000_000)
    ap.add_argument("--n-background-barcodes", type=int, default=0,
                    help="extra non-cell barcodes sharing 20%% of the fragments (raw 10x files)")
    ap.add_argument("--bin-size", type=int, default=10_000)
    ap.add_argument("--snap-python", default=os.environ.get("SNAPATAC2_PYTHON", sys.executable),
                    help="a python that can import snapatac2")
    ap.add_argument("--repeats", type=int, default=2, help="runs per tool (best is reported)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "convnetvae_bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bin_fragments.json")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--barcode-sorted", action="store_true",
                    help="sort the file by barcode first and tell SnapATAC2 so (its fast path; "
                    "Cell Ranger files are position-sorted, the default case)")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    bg = f"_bg{args.n_background_barcodes}" if args.n_background_barcodes else ""
    frag = args.fragments or args.workdir / f"fragments_{args.n_fragments}{bg}.tsv.gz"
    if not frag.exists():
        print(f"generating {frag} ...", flush=True)
        make_fragment_file(frag, args.n_fragments, n_background=args.n_background_barcodes)
    if args.barcode_sorted:
        by_bc = frag.with_name(frag.name.replace(".tsv.gz", ".by_barcode.tsv.gz"))
        if not by_bc.exists():
            print(f"sorting by barcode -> {by_bc} ...", flush=True)
            subprocess.run(f"gzip -dc {frag} | LC_ALL=C sort -t $'\\t' -k4,4 -S 1G | gzip -1 > {by_bc}",
                           shell=True, check=True, executable="/bin/bash")
        frag = by_bc
    snap_ok = subprocess.run([args.snap_python, "-c", "import snapatac2"],
                             capture_output=True).returncode == 0
    runs: dict[str, list[dict]] = {"convnetvae": [], "snapatac2": []}
    for r in range(args.repeats):
        order = ["convnetvae", "snapatac2"] if r % 2 == 0 else ["snapatac2", "convnetvae"]
        for tool in order:
            if tool == "snapatac2" and not snap_ok:
                continue
            py, code = (sys.executable, OURS) if tool == "convnetvae" else (args.snap_python, SNAP)
            res = run_tool(py, code, frag, args.workdir / tool, args.bin_size, args.barcode_sorted)
            print(tool, json.dumps(res), flush=True)
            runs[tool].append(res)
    best = {t: min(v, key=lambda d: d["seconds"]) for t, v in runs.items() if v}
    result = {
        "fragment_file": str(frag),
        "file_order": "barcode" if args.barcode_sorted else "position (as Cell Ranger writes it)",
        "file_bytes": frag.stat().st_size,
        "n_background_barcodes": args.n_background_barcodes,
        "bin_size": args.bin_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "note": "shared 2-core machine; other jobs were running (see load_average_before)"},
        "runs": runs,
        "best": {t: {**b, "fragments_per_second": b["n_fragments"] / b["seconds"]}
                 for t, b in best.items()},
    }
    if "snapatac2" in best:
        import importlib.metadata as md

        ours, theirs = best["convnetvae"], best["snapatac2"]
        result["speed_ratio_convnetvae_over_snapatac2"] = theirs["seconds"] / ours["seconds"]
        result["cpu_ratio_snapatac2_over_convnetvae"] = (
            min(r["cpu_seconds"] for r in runs["snapatac2"])
            / min(r["cpu_seconds"] for r in runs["convnetvae"]))
        result["peak_memory_ratio_convnetvae_over_snapatac2"] = (
            ours["peak_rss_mb"] / theirs["peak_rss_mb"])
        result["counts"] = compare(args.workdir / "convnetvae", args.workdir / "snapatac2")
        v = subprocess.run([args.snap_python, "-c",
                            "import importlib.metadata as m; print(m.version('snapatac2'))"],
                           capture_output=True, text=True).stdout.strip()
        result["snapatac2_version"] = v
        result["convnetvae_version"] = md.version("convnetvae")
    else:
        result["snapatac2"] = f"not importable with {args.snap_python}; install it to compare"
    if not args.no_profile:
        result["profile_convnetvae"] = profile_ours(frag, args.bin_size)
    from convnetvae.io_utils import write_json

    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in result if k not in ("runs", "profile_convnetvae")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
