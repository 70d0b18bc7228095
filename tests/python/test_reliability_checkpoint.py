"""Checkpoints, resume, crashes and interrupts (issue 9, part 1).

The kill test runs the tiny worker (``_train_worker.py``) in subprocesses: one uninterrupted run,
one run SIGKILLed in the middle of epoch 4, then a resumed run; the resumed run must end with
bit-identical weights on CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import convnetvae as cv
import convnetvae.train as train_mod
from convnetvae.errors import ConvNetVAEError

WORKER = Path(__file__).with_name("_train_worker.py")


def _run_worker(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _tiny(seed: int = 0, n_cells: int = 80):
    adata = cv.simulate(n_cells=n_cells, n_bins=200, n_chromosomes=2, n_types=2, seed=seed)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return adata


def _model(adata, seed: int = 0) -> cv.ConvNetVAE:
    return cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4, seed=seed)


FAST = dict(batch_size=16, progress=False, validation_size=0.1, seed=3, n_threads=1)


# ---------------------------------------------------------------------- SIGKILL then resume
@pytest.mark.timeout(600)
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    ref_ckpt, ref_out = tmp_path / "ref_ckpt", tmp_path / "ref_out"
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    marker = tmp_path / "epoch3.done"

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    # the uninterrupted reference runs alongside the victim (separate directories)
    reference = subprocess.Popen(
        [sys.executable, str(WORKER), "--ckpt", str(ref_ckpt), "--out", str(ref_out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(
        [sys.executable, str(WORKER), "--ckpt", str(ckpt), "--out", str(out),
         "--marker", str(marker), "--slow-after", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if victim.poll() is not None:
                pytest.fail(f"worker ended before epoch 3: {victim.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("worker did not reach epoch 3 within 240 s")
            time.sleep(0.05)
        time.sleep(0.6)  # epoch 4 is running now (each forward pass sleeps 0.25 s)
        assert victim.poll() is None, "worker finished before it could be killed"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    latest = json.loads((ckpt / "latest.json").read_text())
    assert latest["epoch"] == 3, latest  # killed mid-epoch 4: epoch 3 is the last checkpoint

    try:
        _, ref_err = reference.communicate(timeout=240)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert reference.returncode == 0, ref_err[-3000:]
    resumed = _run_worker("--ckpt", str(ckpt), "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = _weights(ref_out), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"weight {k} differs after kill + resume"
    ha = json.loads((ref_out / "config.json").read_text())["history"]
    hb = json.loads((out / "config.json").read_text())["history"]
    assert [r["epoch"] for r in hb] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == rb["train_loss"]
        assert ra["validation_loss"] == rb["validation_loss"]


# ---------------------------------------------------------------------- in-process resume
def test_resume_in_process_matches_uninterrupted(tmp_path):
    adata = _tiny()
    full = _model(adata)
    full.train(max_epochs=4, early_stopping=False, **FAST)
    part = _model(adata)
    part.train(max_epochs=2, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 2
    resumed = _model(adata)
    resumed.train(max_epochs=4, early_stopping=False, checkpoint_dir=tmp_path, resume=True,
                  **FAST)
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    for k, v in full.module.state_dict().items():
        assert torch.equal(v, resumed.module.state_dict()[k]), k
    # only the newest checkpoint is kept
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-000004.json", "ckpt-000004.safetensors"]


def test_resume_without_checkpoint_starts_fresh_and_needs_dir(tmp_path):
    adata = _tiny()
    m = _model(adata)
    m.train(max_epochs=2, early_stopping=False, checkpoint_dir=tmp_path / "empty", resume=True,
            **FAST)
    assert len(m.history) == 2
    with pytest.raises(ConvNetVAEError, match="checkpoint_dir"):
        _model(adata).train(max_epochs=1, resume=True, **FAST)


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path):
    adata = _tiny()
    m = _model(adata)
    m.train(max_epochs=2, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    again = _model(adata)
    again.train(max_epochs=2, early_stopping=False, checkpoint_dir=tmp_path, resume=True, **FAST)
    assert list(again.history["epoch"]) == [1, 2]
    for k, v in m.module.state_dict().items():
        assert torch.equal(v, again.module.state_dict()[k]), k


# ---------------------------------------------------------------------- crash while writing
def test_crash_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch as st

    adata = _tiny()
    calls = {"n": 0}
    real_save = st.save_file

    def failing_save(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the checkpoint of epoch 3: write half a file, then "crash"
            real_save(tensors, filename, metadata=metadata)
            with open(filename, "r+b") as fh:
                fh.truncate(os.path.getsize(filename) // 2)
            raise OSError("simulated crash (disk full) while writing the checkpoint")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(st, "save_file", failing_save)
    m = _model(adata)
    with pytest.raises(OSError, match="simulated crash"):
        m.train(max_epochs=5, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    monkeypatch.setattr(st, "save_file", real_save)
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp file left behind"
    # the epoch-2 checkpoint is intact and resumable
    resumed = _model(adata)
    resumed.train(max_epochs=3, early_stopping=False, checkpoint_dir=tmp_path, resume=True,
                  **FAST)
    assert list(resumed.history["epoch"]) == [1, 2, 3]


def test_crash_while_writing_metadata_or_pointer_keeps_previous(tmp_path, monkeypatch):
    adata = _tiny()
    real = train_mod.write_json
    calls = {"n": 0}

    def failing_write_json(path, obj):
        calls["n"] += 1
        if Path(path).name == "latest.json" and calls["n"] > 4:  # epoch 3's pointer
            raise KeyboardInterrupt  # even a Ctrl-C in the middle of writing the pointer
        return real(path, obj)

    monkeypatch.setattr(train_mod, "write_json", failing_write_json)
    m = _model(adata)
    m.train(max_epochs=5, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    assert m.train_config["interrupted"]
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["epoch"] == 2
    monkeypatch.setattr(train_mod, "write_json", real)
    resumed = _model(adata)
    resumed.train(max_epochs=3, early_stopping=False, checkpoint_dir=tmp_path, resume=True,
                  **FAST)
    assert list(resumed.history["epoch"]) == [1, 2, 3]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_meta", "pointer_garbage",
                                    "newer_format"])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage):
    adata = _tiny()
    _model(adata).train(max_epochs=1, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    stem = json.loads((tmp_path / "latest.json").read_text())["stem"]
    w, meta = tmp_path / f"{stem}.safetensors", tmp_path / f"{stem}.json"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 3])
    elif damage == "garbage":
        w.write_bytes(os.urandom(4096))
    elif damage == "missing_meta":
        meta.unlink()
    elif damage == "pointer_garbage":
        (tmp_path / "latest.json").write_text("{not json")
    else:
        d = json.loads(meta.read_text())
        d["format"] = 99
        meta.write_text(json.dumps(d))
    with pytest.raises(ConvNetVAEError, match="checkpoint"):
        _model(adata).train(max_epochs=2, checkpoint_dir=tmp_path, resume=True, **FAST)


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    adata = _tiny()
    _model(adata).train(max_epochs=1, early_stopping=False, checkpoint_dir=tmp_path, **FAST)
    other = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=4)
    with pytest.raises(ConvNetVAEError, match=r"does not match this model .*differing: \S+"):
        other.train(max_epochs=2, checkpoint_dir=tmp_path, resume=True, **FAST)


# ---------------------------------------------------------------------- Ctrl-C
def test_keyboard_interrupt_in_callback_stops_cleanly(tmp_path):
    adata = _tiny()
    m = _model(adata)

    def cb(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    m.train(max_epochs=20, early_stopping=True, patience=50, callback=cb,
            checkpoint_dir=tmp_path, **FAST)
    assert list(m.history["epoch"]) == [1, 2]
    assert m.train_config["interrupted"] and m.is_trained
    best = m.trainer_.best_epoch
    assert best in (1, 2) and m.train_config["best_epoch"] == best
    z = m.get_latent_representation()
    assert z.shape == (adata.n_obs, 4) and np.isfinite(z).all()
    # the checkpoint of the last finished epoch is on disk and the model saves
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 2
    m.save(tmp_path / "saved")
    assert cv.ConvNetVAE.load(tmp_path / "saved", adata).history.shape[0] == 2


def test_keyboard_interrupt_mid_epoch_keeps_best_model(monkeypatch):
    adata = _tiny()
    m = _model(adata)
    real_forward = m.module.forward
    state = {"calls": 0, "armed": False}

    def forward(*a, **k):
        state["calls"] += 1
        if state["armed"] and m.module.training:
            raise KeyboardInterrupt  # Ctrl-C while a minibatch is being processed
        return real_forward(*a, **k)

    def cb(epoch, row):
        if epoch == 3:
            state["armed"] = True

    monkeypatch.setattr(m.module, "forward", forward)
    m.train(max_epochs=20, early_stopping=True, patience=50, callback=cb, **FAST)
    assert list(m.history["epoch"]) == [1, 2, 3]
    assert m.train_config["interrupted"]
    trainer = m.trainer_
    for k, v in trainer.best_state.items():  # early stopping on: the best weights are restored
        assert torch.equal(v, m.module.state_dict()[k])
    monkeypatch.undo()
    assert np.isfinite(m.get_latent_representation()).all()
