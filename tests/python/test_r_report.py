"""What the R bridge tells R (``convnetvae.r.report``): R names in texts, live messages with a
fallback, recorded warnings, the run-time estimate; the model directory checked before training;
query mapping through ``project_from_r(adapt=)``."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from convnetvae.errors import ConvNetVAEError
from convnetvae.model.registry import fitting_architecture
from convnetvae.r import bridge
from convnetvae.r.report import Reporter, duration, r_names
from test_r_bridge import FAST, signac_names


def test_r_names_rewrites_python_arguments():
    assert r_names("use validation_size=0") == "use validation.size = 0"
    assert r_names("Try lr=1e-4 or grad_clip=10.") == "Try learning.rate = 1e-4 or grad.clip = 10."
    assert r_names("early_stopping=False, n_bins=None") == "early.stopping = FALSE, n.bins = NULL"
    assert r_names("pass bin_size=20000") == "pass bin.size = 20000"
    assert r_names("batch_key 'x'; model_dir 'm'") == "group.by.vars 'x'; model.dir 'm'"
    assert r_names("architecture='conv-k5s5'") == 'architecture = "conv-k5s5"'
    # longer names that merely start like a setting are left alone
    assert r_names("n_bins_requested, my_lr") == "n_bins_requested, my_lr"


def test_duration_reads_naturally():
    assert [duration(s) for s in (0.2, 45, 200, 4000)] == ["1 s", "45 s", "3 min 20 s", "1 h 6 min"]


def test_fitting_architecture_suggests_one_that_fits():
    assert "'conv-k11s11'" in fitting_architecture(20)
    assert "'conv-k31s31'" in fitting_architecture(40)
    assert "'conv-k5s5'" in fitting_architecture(5)
    assert "'fc-l1'" in fitting_architecture(1)


def test_reporter_messages_live_then_pending_and_warnings_recorded():
    shown: list[str] = []
    rep = Reporter(shown.append)
    rep.message("a validation_size")
    assert shown == ["ConvNetVAE: a validation.size"]

    def refuses(text):  # what an exiting tryCatch(message = ) handler looks like from Python
        raise RuntimeError("unwound")

    rep = Reporter(refuses)
    rep.message("first")
    rep.message("second")
    assert rep.result()["messages"] == ["ConvNetVAE: first", "ConvNetVAE: second"]
    quiet = Reporter(shown.append, verbose=False)
    quiet.message("not shown")
    assert quiet.result()["messages"] == [] and len(shown) == 1

    rep = Reporter(None)
    with rep.capture():
        warnings.warn("pass bin_size=5", stacklevel=1)
        warnings.warn("pass bin_size=5", stacklevel=1)  # once
    assert rep.result()["warnings"] == ["pass bin.size = 5"]
    with pytest.raises(ConvNetVAEError, match=r"use validation\.size = 0"), rep.capture():
        raise ConvNetVAEError("use validation_size=0")


def test_check_model_dir(tmp_path):
    assert bridge.check_model_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # nothing created
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConvNetVAEError, match="is a file, not a directory"):
        bridge.check_model_dir(f)
    with pytest.raises(ConvNetVAEError, match="cannot be created"):
        bridge.check_model_dir(f / "model")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep")
    with pytest.raises(ConvNetVAEError, match="holds no ConvNetVAE model"):
        bridge.check_model_dir(full)
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConvNetVAEError, match="not writable"):
            bridge.check_model_dir(ro / "model")


def _inputs(n: int = 120, seed: int = 0, batch: str | None = None):
    rng = np.random.default_rng(seed)
    names = signac_names("chr1", 150) + signac_names("chr2", 100)
    prof = rng.gamma(1.0, 1.0, size=(2, len(names)))
    group = np.repeat([0, 1], n // 2)
    mats = {m: sp.csr_matrix(rng.poisson(prof[group] * (k + 1)).astype(np.float64))
            for k, m in enumerate(["ATAC", "H3K27ac"])}
    cells = [f"c{seed}_{i}" for i in range(n)]
    labels = [batch or ("s1" if i % 2 else "s2") for i in range(n)]
    return mats, {m: names for m in mats}, cells, {"sample": labels}


def test_run_and_adapt_through_the_bridge(tmp_path):
    mats, feats, cells, obs = _inputs()
    shown: list[str] = []
    res = bridge.run_from_r(mats, feats, cells, obs=obs, batch_key="sample",
                            config={**FAST, "verbose": True, "model_dir": str(tmp_path / "m"),
                                    "group_by_vars": ["sample"]}, emit=shown.append)
    text = "\n".join(shown)
    assert "training conv-k11s11" in text and "estimated training time" in text
    assert "epoch 2/2" in text
    assert res["warnings"] == [] and res["messages"] == []
    # a new sample: the clear error names the column and adapt
    qm, qf, qc, qo = _inputs(n=60, seed=1, batch="s3")
    with pytest.raises(ConvNetVAEError, match=r"\['s3'\] in the group.by.vars column 'sample'.*"
                                              r"adapt = TRUE"):
        bridge.project_from_r(qm, qf, qc, obs=qo, batch_key="sample",
                              model_dir=str(tmp_path / "m"), config={"verbose": False})
    shown.clear()
    out = bridge.project_from_r(qm, qf, qc, obs=qo, batch_key="sample",
                                model_dir=str(tmp_path / "m"), emit=shown.append,
                                config={"verbose": True, "adapt": True,
                                        "extra": {"max_epochs": 2, "batch_size": 32}})
    assert out["config"]["query"]["query_batches"] == ["s3"]
    assert len(out["history"]["epoch"]) == 2
    assert any("adapting the model to the new batches ['s3']" in s for s in shown)
    z = np.frombuffer(bytes(out["embedding"]["data"]), dtype="<f8")
    assert z.size == 60 * 4 and np.isfinite(z).all()


def _timing_trainer(auto: bool, time_guard: bool, limit: float, elapsed: float):
    """What TimingStrategy reads of a trainer: 20 epochs of 10 steps, 200 validation cells."""
    from types import SimpleNamespace

    plan = SimpleNamespace(steps_per_epoch=10, epochs=20, auto=auto)
    cfg = SimpleNamespace(batch_size=64, time_guard=time_guard)
    return SimpleNamespace(
        plan=plan, config=cfg, val_idx=np.arange(200), start_epoch=0, early_stopping=False,
        guard_limit=lambda: limit if (auto and time_guard) else None,
        elapsed=lambda: elapsed)


def test_the_time_estimate_says_when_the_time_guard_will_shorten_the_run():
    from convnetvae.r.report import TimingStrategy

    said: list[str] = []
    # 0.1 s per step: 10 steps + a third of 200/256 x 256/64 validation steps = 1.10 s per
    # epoch, 22.1 s for 20 epochs
    TimingStrategy(said.append)._report(_timing_trainer(True, True, 60.0, 2.0), 0.1, 0)
    assert "estimated training time 22 s for 20 epochs" in said[-1]
    assert "time guard" not in said[-1]  # 2 + 22.1 s fits the 60 s
    TimingStrategy(said.append)._report(_timing_trainer(True, True, 20.0, 2.0), 0.1, 0)
    assert ("That is more than the run's time budget of 20 s: if the epochs stay this slow, "
            "the time guard shortens the training to the epochs that fit "
            "(time_guard=False trains all 20).") in said[-1]
    assert "time.guard = FALSE trains all 20" in r_names(said[-1])
    for auto, guard in ((False, True), (True, False)):  # a given length / the guard off
        TimingStrategy(said.append)._report(_timing_trainer(auto, guard, 20.0, 2.0), 0.1, 0)
        assert "time guard" not in said[-1]
