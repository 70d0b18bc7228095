"""Resume continues the same run, or says what differs; one trainer per checkpoint directory
(issue 16, items 1 and 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError

FAST = dict(batch_size=16, progress=False, validation_size=0.2, seed=3, n_threads=1,
            early_stopping=False)


def _data(n_cells: int = 80, seed: int = 0):
    adata = cv.simulate(n_cells=n_cells, n_bins=200, n_chromosomes=2, n_types=2, seed=seed)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return adata


def _model(adata) -> cv.ConvNetVAE:
    return cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4, seed=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-epoch run's checkpoint directory (copied per test) and its data."""
    d = tmp_path_factory.mktemp("ckpt")
    adata = _data()
    _model(adata).train(max_epochs=2, checkpoint_dir=d, **FAST)
    return d, adata


@pytest.fixture
def ckpt(checkpoint, tmp_path):
    import shutil

    d, adata = checkpoint
    shutil.copytree(d, tmp_path / "ckpt")
    return tmp_path / "ckpt", adata


@pytest.mark.parametrize("change,match", [
    ("fewer_cells", r"data cells: 80 in the checkpoint, 60 now"),
    ("other_counts", r"data counts_checksum"),
    ("seed", r"settings seed: 3 in the checkpoint, 4 now"),
    ("lr", r"settings lr: 0.001 in the checkpoint, 0.01 now"),
    ("validation_size", r"settings validation_size"),
])
def test_resume_of_another_run_is_an_error_naming_what_differs(ckpt, change, match):
    d, adata = ckpt
    kw = dict(FAST)
    data = adata
    if change == "fewer_cells":
        data = _data(n_cells=60)
    elif change == "other_counts":
        data = _data(seed=1)  # same cells and bins, other counts
    else:
        kw[change] = {"seed": 4, "lr": 1e-2, "validation_size": 0.3}[change]
    m = _model(data)
    before = {k: v.clone() for k, v in m.module.state_dict().items()}
    with pytest.raises(ConvNetVAEError, match=match):
        m.train(max_epochs=4, checkpoint_dir=d, resume=True, **kw)
    # nothing was changed: the model keeps its own weights
    assert all(torch.equal(v, m.module.state_dict()[k]) for k, v in before.items())


def test_other_cells_cannot_continue_even_when_changes_are_allowed(ckpt):
    d, _ = ckpt
    with pytest.raises(ConvNetVAEError, match="split is of 80 cells"):
        _model(_data(n_cells=60)).train(max_epochs=4, checkpoint_dir=d, resume=True,
                                        resume_allow_changes=True, **FAST)


def test_allowed_new_lr_is_applied_and_recorded(ckpt):
    d, adata = ckpt
    m = _model(adata)
    m.train(max_epochs=4, checkpoint_dir=d, resume=True, resume_allow_changes=True,
            **{**FAST, "lr": 1e-2})
    assert list(m.history["epoch"]) == [1, 2, 3, 4]
    assert list(m.history["lr"]) == [1e-3, 1e-3, 1e-2, 1e-2]  # the new lr is really used
    groups = m.trainer_.optimizer.param_groups
    assert groups[0]["lr"] == 1e-2 and groups[1]["lr"] == pytest.approx(1e-2 * 20)
    rec = m.train_config["resumed_with_changes"]
    assert rec["lr"]["checkpoint"] == 1e-3 and rec["lr"]["now"] == 1e-2 and rec["lr"]["applied"]
    assert m.train_config["lr"] == 1e-2


def test_allowed_new_weight_decay_spares_the_batch_offsets(ckpt):
    d, adata = ckpt
    m = _model(adata)
    m.train(max_epochs=3, checkpoint_dir=d, resume=True, resume_allow_changes=True,
            **{**FAST, "weight_decay": 0.1})
    assert [g["weight_decay"] for g in m.trainer_.optimizer.param_groups] == [0.1, 0.0]
    assert m.train_config["resumed_with_changes"]["weight_decay"]["applied"]


def test_saved_split_is_read_back(ckpt):
    d, adata = ckpt
    meta = json.loads((d / "ckpt-000002.json").read_text())
    m = _model(adata)
    # another seed would draw another split: with changes allowed the checkpoint's is kept
    m.train(max_epochs=3, checkpoint_dir=d, resume=True, resume_allow_changes=True,
            **{**FAST, "seed": 11})
    t = m.trainer_
    assert t.train_idx.tolist() == meta["train_indices"]
    assert t.val_idx.tolist() == meta["validation_indices"]
    assert t.train_loader.indices.tolist() == meta["train_indices"]
    assert not set(meta["validation_indices"]) & set(np.concatenate(t.train_loader.batches()))
    assert m.train_config["resumed_with_changes"]["seed"]["applied"] is False


def test_same_run_resumes_without_complaint(ckpt):
    d, adata = ckpt
    m = _model(adata)
    m.train(max_epochs=3, checkpoint_dir=d, resume=True, **FAST)
    assert list(m.history["epoch"]) == [1, 2, 3]
    assert m.train_config["resumed_with_changes"] == {}


# ---------------------------------------------------------------------- lock and temporaries
def test_second_trainer_on_the_same_checkpoint_dir_is_refused(tmp_path):
    from convnetvae.train import LOCK_FILE, checkpoint_lock

    adata = _data()
    with checkpoint_lock(tmp_path):  # another trainer holds the directory
        with pytest.raises(ConvNetVAEError, match=f"in use by another training run \\(pid {os.getpid()}"):
            _model(adata).train(max_epochs=1, checkpoint_dir=tmp_path, **FAST)
    _model(adata).train(max_epochs=1, checkpoint_dir=tmp_path, **FAST)  # free again
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.timeout(180)
def test_a_killed_trainer_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from convnetvae.train import checkpoint_lock\n"
            "with checkpoint_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        adata = _data()
        with pytest.raises(ConvNetVAEError, match=f"pid {holder.pid}"):
            _model(adata).train(max_epochs=1, checkpoint_dir=tmp_path, **FAST)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    _model(adata).train(max_epochs=1, checkpoint_dir=tmp_path, **FAST)


def test_temporary_files_of_killed_checkpoint_writes_are_removed(ckpt):
    d, adata = ckpt
    left = [".ckpt-000003.k2j4h1.safetensors", ".ckpt-000003.json.x8a.tmp",
            ".latest.json.q0w.tmp"]
    for name in left:
        (d / name).write_bytes(b"half a file")
    (d / "notes.txt").write_text("not ours")
    _model(adata).train(max_epochs=3, checkpoint_dir=d, resume=True, **FAST)
    assert not [n for n in left if (d / n).exists()]
    assert sorted(p.name for p in d.iterdir()) == ["ckpt-000003.json", "ckpt-000003.safetensors",
                                                   "latest.json", "notes.txt"]
