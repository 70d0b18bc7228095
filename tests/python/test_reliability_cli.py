"""Honest exit codes and checks before the work on the command line (issue 16, items 4, 6, 8
and the foreign tracebacks): Ctrl-C exits 130, outputs are checked before any work, an OSError is
one line with status 1, and every bad argument is one line with status 2."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import convnetvae as cv
import convnetvae.cli as cli
from convnetvae.cli import main

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
MODS = "ATAC,H3K27ac,H3K27me3"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny h5ad and a model trained on it."""
    d = tmp_path_factory.mktemp("cli")
    adata = cv.simulate(n_cells=60, n_bins=150, n_chromosomes=2, n_types=2, seed=2)
    adata.write_h5ad(d / "data.h5ad")
    cv.ConvNetVAE.setup_anndata(adata, modalities=MODS.split(","), batch_key="batch")
    m = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=3)
    m.train(max_epochs=1, progress=False, batch_size=16)
    m.save(d / "model")
    return d


def _train_args(files: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(files / "data.h5ad"), "--modalities", MODS, "--batch-key",
            "batch", "--architecture", "conv-k11s11", "--n-hidden", "8", "--n-latent", "3",
            "--batch-size", "16", "--quiet", "--out", str(out), *extra]


def _one_line_error(err: str, command: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"convnetvae {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------- outputs checked first
def _no_training(monkeypatch):
    import convnetvae.train as train_mod

    def boom(self):
        raise AssertionError("training started although the output cannot be written")

    monkeypatch.setattr(train_mod.Trainer, "fit", boom)


def test_train_out_is_a_file_fails_before_reading_data(files, tmp_path, capsys):
    f = tmp_path / "model.txt"
    f.write_text("")
    args = _train_args(files, f)
    args[args.index("--data") + 1] = str(tmp_path / "missing.h5ad")  # never read
    assert main(args) == 2
    assert "is a file" in _one_line_error(capsys.readouterr().err, "train")


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_train_out_unwritable_fails_before_training(files, tmp_path, capsys, monkeypatch, err):
    import tempfile

    _no_training(monkeypatch)

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    assert main(_train_args(files, tmp_path / "model", "--epochs", "1")) == 2
    assert os.strerror(err) in _one_line_error(capsys.readouterr().err, "train")
    assert not (tmp_path / "model").exists()


def test_train_under_ulimit_f_fails_before_training(files, tmp_path):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    r = subprocess.run([sys.executable, "-m", "convnetvae.cli",
                        *_train_args(files, tmp_path / "model", "--epochs", "50")],
                       env=ENV, preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    line = _one_line_error(r.stderr, "train")
    assert "File too large" in line or "ulimit -f" in line
    assert not (tmp_path / "model").exists()


def test_bin_and_embed_check_out_before_work(files, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("")
    bad = tmp_path / "afile" / "out"
    assert main(["bin", "--counts", f"ATAC={files / 'data.h5ad'}", "--out", f"{bad}.h5ad"]) == 2
    assert "is a file" in _one_line_error(capsys.readouterr().err, "bin")
    import convnetvae.api as api

    monkeypatch.setattr(api.ConvNetVAE, "load", lambda *a, **k: pytest.fail("work started"))
    assert main(["embed", "--data", str(files / "data.h5ad"), "--model", str(files / "model"),
                 "--out", f"{bad}.csv"]) == 2
    assert "is a file" in _one_line_error(capsys.readouterr().err, "embed")


# ---------------------------------------------------------------------- one line, status 1 or 2
def test_os_error_is_one_line_with_status_1(files, tmp_path, capsys, monkeypatch):
    import convnetvae.api as api

    def fail(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(files / "model"))

    monkeypatch.setattr(api.ConvNetVAE, "load", fail)
    assert main(["embed", "--data", str(files / "data.h5ad"), "--model", str(files / "model"),
                 "--out", str(tmp_path / "z.csv")]) == 1
    line = _one_line_error(capsys.readouterr().err, "embed")
    assert "Permission denied" in line and "model" in line


@pytest.mark.parametrize("data", ["missing", "text", "directory"])
def test_embed_data_missing_or_not_h5ad(files, tmp_path, capsys, data):
    path = tmp_path / "x.h5ad"
    if data == "text":
        path.write_text("cell,ATAC\nc1,3\n")
    elif data == "directory":
        path.mkdir()
    assert main(["embed", "--data", str(path), "--model", str(files / "model"), "--out",
                 str(tmp_path / "z.csv")]) == 2
    _one_line_error(capsys.readouterr().err, "embed")


def test_embed_output_formats(files, tmp_path, capsys, monkeypatch):
    base = ["embed", "--data", str(files / "data.h5ad"), "--model", str(files / "model"), "--out"]
    assert main([*base, str(tmp_path / "z.txt")]) == 2
    assert "unknown format '.txt'" in _one_line_error(capsys.readouterr().err, "embed")
    assert main([*base, str(tmp_path / "z")]) == 2
    capsys.readouterr()
    assert not list(tmp_path.iterdir())
    assert main([*base, str(tmp_path / "z.tsv")]) == 0
    tsv = pd.read_csv(tmp_path / "z.tsv", sep="\t", index_col=0)
    assert tsv.shape == (60, 3)
    monkeypatch.setattr(cli, "_parquet_engine", lambda: None)  # no engine installed
    assert main([*base, str(tmp_path / "z.parquet")]) == 2
    assert "pip install pyarrow" in _one_line_error(capsys.readouterr().err, "embed")
    assert not (tmp_path / "z.parquet").exists()


def test_embed_parquet_is_real_parquet(files, tmp_path):
    pytest.importorskip("pyarrow")
    assert main(["embed", "--data", str(files / "data.h5ad"), "--model", str(files / "model"),
                 "--out", str(tmp_path / "z.parquet")]) == 0
    raw = (tmp_path / "z.parquet").read_bytes()
    assert raw[:4] == b"PAR1" and raw[-4:] == b"PAR1"
    assert pd.read_parquet(tmp_path / "z.parquet").shape == (60, 3)


@pytest.mark.parametrize("size", ["0", "-10000"])
def test_bin_size_zero_or_negative_is_an_error(files, tmp_path, capsys, size):
    assert main(["bin", "--counts", f"ATAC={files / 'data.h5ad'}", "--bin-size", size, "--out",
                 str(tmp_path / "o.h5ad")]) == 2
    assert "--bin-size must be a positive" in _one_line_error(capsys.readouterr().err, "bin")


def test_ctrl_c_outside_training_exits_130(files, tmp_path, capsys, monkeypatch):
    import convnetvae.data.backed as backed

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(backed, "read_h5ad", interrupt)
    assert main(["embed", "--data", str(files / "data.h5ad"), "--model", str(files / "model"),
                 "--out", str(tmp_path / "z.csv")]) == 130
    assert "interrupted" in capsys.readouterr().err


# ---------------------------------------------------------------------- Ctrl-C while training
def _interrupt_training(files: Path, out: Path, ckpt: Path, *extra: str):
    """Start `convnetvae train`, SIGINT it once its first epoch is checkpointed."""
    proc = subprocess.Popen([sys.executable, "-m", "convnetvae.cli",
                             *_train_args(files, out, "--epochs", "100000", "--checkpoint-dir",
                                          str(ckpt), "--validation-size", "0", *extra)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (ckpt / "latest.json").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no epoch finished in 240 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


@pytest.mark.timeout(600)
def test_ctrl_c_during_train_exits_130_and_keeps_previous_model(files, tmp_path):
    import shutil

    out = tmp_path / "model"
    shutil.copytree(files / "model", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, stderr = _interrupt_training(files, out, tmp_path / "ckpt")
    assert code == 130, stderr[-2000:]
    assert "interrupted (Ctrl-C)" in stderr and "kept the previous model" in stderr
    assert "saved" not in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    # asked to: the partly trained model replaces it, marked as interrupted
    code, _, stderr = _interrupt_training(files, out, tmp_path / "ckpt2", "--save-interrupted")
    assert code == 130, stderr[-2000:]
    assert "saved the partly trained model" in stderr
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train_config"]["interrupted"] is True and cfg["history"]
    assert cv.ConvNetVAE.load(out).is_trained


# ---------------------------------------------------------------------- R's model.dir
def test_r_model_dir_is_checked_before_any_work(tmp_path, monkeypatch):
    import scipy.sparse as sp

    import convnetvae.api as api
    from convnetvae.errors import ConvNetVAEError
    from convnetvae.r import bridge

    (tmp_path / "file").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConvNetVAEError, match="is a file"):
        bridge.check_model_dir(tmp_path / "file")
    with pytest.raises(ConvNetVAEError, match="holds no ConvNetVAE model"):
        bridge.check_model_dir(tmp_path / "other")
    with pytest.raises(ConvNetVAEError, match="directory path"):
        bridge.check_model_dir("")
    assert bridge.check_model_dir(tmp_path / "new" / "model") == str(tmp_path / "new" / "model")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    # run_from_r checks it before rebinning or training, not after
    monkeypatch.setattr(api.ConvNetVAE, "train", lambda *a, **k: pytest.fail("trained"))
    names = [f"chr1-{i * 10000 + 1}-{(i + 1) * 10000}" for i in range(50)]
    mats = {"ATAC": sp.csr_matrix(np.ones((10, 50)))}
    with pytest.raises(ConvNetVAEError, match="is a file"):
        bridge.run_from_r(mats, {"ATAC": names}, [f"c{i}" for i in range(10)], None, None,
                          {"model_dir": str(tmp_path / "file"), "verbose": False})
