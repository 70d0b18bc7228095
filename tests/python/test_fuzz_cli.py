"""Property-based (hypothesis) test of the command line (issue 16).

For any argument list, ``convnetvae`` exits 0, 1 or 2 and never shows a traceback: a bad
argument or input is one line ``convnetvae <command>: error: ...`` (or argparse's usage message),
and a run that exits 0 wrote its output. Arguments mix every flag of ``train``, ``embed`` and
``bin`` with good and bad values: real tiny inputs, missing files, directories, empty, text and
binary files, numbers out of range, NaN, empty and unicode strings. Training is kept to one
epoch on 60 cells (the last ``--epochs 1`` wins), so the test runs in about half a minute.
"""

from __future__ import annotations

import contextlib
import io
import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import convnetvae as cv
from convnetvae.cli import main

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MODS = "ATAC,H3K27ac,H3K27me3"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and bad inputs: a tiny h5ad, a model, fragments, chrom sizes, and junk."""
    from helpers_fragments import CHROM_SIZES, random_fragments

    d = tmp_path_factory.mktemp("fuzzcli")
    adata = cv.simulate(n_cells=60, n_bins=150, n_chromosomes=2, n_types=2, seed=4)
    adata.write_h5ad(d / "data.h5ad")
    cv.ConvNetVAE.setup_anndata(adata, modalities=MODS.split(","), batch_key="batch")
    cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=3).save(d / "model")
    random_fragments(2000, n_cells=20).to_csv(d / "frag.tsv", sep="\t", header=False,
                                              index=False)
    (d / "genome.sizes").write_text("".join(f"{c}\t{n}\n" for c, n in CHROM_SIZES.items()))
    (d / "empty.txt").write_text("")
    (d / "text.txt").write_text("hello\tworld\n")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (d / "adir").mkdir()
    (d / "adir" / "x").write_text("x")
    return d


def _paths(d: Path) -> list[str]:
    return [str(d / n) for n in ("data.h5ad", "model", "frag.tsv", "genome.sizes", "empty.txt",
                                 "text.txt", "binary.bin", "adir", "missing.h5ad", "adir/x")]


NUMBERS = ["0", "-1", "1", "2", "3", "0.5", "2.5", "1e309", "nan", "-inf", "1000000000000"]
WORDS = ["", "abc", "conv-k11s11", "fc-l1", "conv-k0s0", "poisson", "nb", "cpu", "cuda", "all",
         "ATAC", "batch", "é\u200b", "--", "=", "ATAC=", "=x", "a,b"]
FLAGS = {
    "train": ["--data", "--modalities", "--batch-key", "--labels-key", "--architecture",
              "--likelihood", "--n-latent", "--n-hidden", "--dropout", "--seed", "--epochs",
              "--batch-size", "--lr", "--validation-size", "--patience", "--min-delta",
              "--kl-warmup-epochs", "--grad-clip", "--weight-decay", "--device",
              "--checkpoint-dir", "--checkpoint-every", "--n-threads", "--shuffle-block-size",
              "--out", "--early-stopping", "--no-early-stopping", "--resume", "--backed",
              "--save-interrupted", "--quiet", "--mixed-precision", "--bogus"],
    "embed": ["--data", "--model", "--out", "--batch-size", "--device", "--bogus"],
    "bin": ["--fragments", "--counts", "--out", "--bin-size", "--chrom-sizes", "--blacklist",
            "--n-bins", "--barcodes", "--barcode-map", "--min-counts", "--samples",
            "--drop-incomplete", "--keep-contigs", "--skip-unknown-chroms", "--skip-malformed",
            "--reads-to-fragments", "--chunk-size", "--no-progress", "--bogus"],
}
_counter = itertools.count()


@st.composite
def argv(draw, d: Path):
    """A command with a mix of sensible and random flags and values."""
    command = draw(st.sampled_from(["train", "embed", "bin", "train", "embed", "bin", "nope"]))
    paths = _paths(d)
    fresh = str(d / "out" / f"o{next(_counter)}")
    outs = [fresh + ext for ext in ("", ".h5ad", ".csv", ".tsv", ".parquet", ".txt")] + paths
    values = st.one_of(st.sampled_from(paths), st.sampled_from(NUMBERS), st.sampled_from(WORDS),
                       st.sampled_from(outs), st.text(max_size=6),
                       st.sampled_from(["ATAC=" + p for p in paths]))
    def pick(good: list[str]) -> str:  # mostly a good value, sometimes anything
        return draw(st.sampled_from(good * 6 + paths + outs))

    base = {"train": ["--data", pick([paths[0]]), "--modalities",
                      draw(st.sampled_from([MODS] * 6 + ["ATAC", "", "X,Y"])),
                      "--batch-key", pick(["batch"]), "--out", pick([fresh])],
            "embed": ["--data", pick([paths[0]]), "--model", pick([paths[1]]),
                      "--out", pick([fresh + ".csv", fresh + ".tsv", fresh + ".h5ad"])],
            "bin": [draw(st.sampled_from(["--fragments", "--counts"])),
                    "ATAC=" + pick([paths[2]]), "--chrom-sizes", pick([paths[3]]),
                    "--out", pick([fresh + ".h5ad"]), "--no-progress", "--min-counts", "1"],
            "nope": []}[command]
    extra = []
    for flag in draw(st.lists(st.sampled_from(FLAGS.get(command, ["--x"])), max_size=4)):
        extra.append(flag)
        if draw(st.booleans()):
            extra.append(draw(values))
    base = draw(st.permutations(base)) if draw(st.integers(0, 9)) == 0 else base
    tail = {"train": ["--epochs", "1", "--nproc", "1", "--architecture", "conv-k11s11",
                      "--n-hidden", "4", "--n-latent", "2", "--quiet"]}.get(command, [])
    return [command, *base, *extra, *tail]


@pytest.mark.timeout(900)
def test_cli_exits_0_1_or_2_with_one_line_errors(inputs):
    seen: Counter = Counter()

    d = inputs
    ok = [["train", "--data", str(d / "data.h5ad"), "--modalities", MODS, "--out",
           str(d / "out" / "ok_model"), "--epochs", "1", "--n-hidden", "4", "--n-latent", "2",
           "--architecture", "conv-k11s11", "--quiet"],
          ["embed", "--data", str(d / "data.h5ad"), "--model", str(d / "model"), "--out",
           str(d / "out" / "ok.csv")],
          ["bin", "--fragments", f"ATAC={d / 'frag.tsv'}", "--chrom-sizes", str(d / "genome.sizes"),
           "--min-counts", "1", "--no-progress", "--out", str(d / "out" / "ok.h5ad")]]

    @FUZZ
    @given(args=argv(inputs))
    @example(args=ok[0])
    @example(args=ok[1])
    @example(args=ok[2])
    def check(args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
        text = err.getvalue()
        assert code in (0, 1, 2), (args, code, text[-2000:])
        assert "Traceback" not in text, (args, text[-3000:])
        event(f"exit {code}")
        seen[(args[0], code)] += 1
        if code != 0:
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
            assert "error:" in last, (args, text[-2000:])
            if "usage:" not in text:  # not argparse's own message: our one line
                assert last.startswith(f"convnetvae {args[0]}: error: "), (args, text[-2000:])
                assert len(last) < 2000
        elif args[0] in ("train", "embed", "bin"):
            dest = args[len(args) - 1 - args[::-1].index("--out") + 1]
            assert Path(dest).exists(), (args, out.getvalue())

    check()
    print(dict(seen))
    # the examples reach real work, not only argument errors
    assert all(seen[(c, 0)] > 0 for c in ("train", "embed", "bin")), seen
