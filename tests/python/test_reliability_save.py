"""Atomic model files (issue 16, item 2 and the failed-save part of item 9).

``save()`` writes every file into a sibling temporary directory that then replaces the model
directory in one step. The worker ``_save_worker.py`` saves model B over model A and SIGKILLs
itself after each file step in turn; after every kill the directory must load as the complete
A or the complete B (weights bit-identical to that model's), and the next successful save must
leave no temporary directory behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnetvae as cv
from convnetvae.errors import ConvNetVAEError

WORKER = Path(__file__).with_name("_save_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module")
def models():
    sys.path.insert(0, str(WORKER.parent))
    from _save_worker import models as make

    return make()


def _which(d: Path, a: cv.ConvNetVAE, b: cv.ConvNetVAE) -> str:
    """"A" or "B" if ``d`` loads as exactly that model; fails the test otherwise."""
    m = cv.ConvNetVAE.load(d)
    ref, name = (a, "A") if m.module.config.architecture == a.module.config.architecture else (b, "B")
    got, want = m.module.state_dict(), ref.module.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in got), f"{d}: weights of another model"
    return name


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.parent.iterdir() if p.name.startswith(f".{d.name}."))


def _run_worker(prefix: Path, flag: str, n: int) -> list[str]:
    r = subprocess.run([sys.executable, str(WORKER), str(prefix), flag, str(n)], env=ENV,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()[1::2]


@pytest.mark.timeout(300)
def test_sigkill_after_every_step_of_save_leaves_old_or_new_model(models, tmp_path):
    a, b = models
    dirs = [tmp_path / f"model{k}" for k in range(1, 6)]
    for d in dirs:
        a.save(d)
    status = _run_worker(tmp_path / "model", "--steps", len(dirs))
    assert status[0] == "killed"
    seen = [_which(d, a, b) for d in dirs]
    assert "A" in seen and "B" in seen  # killed both before and after the swap
    for d in dirs:
        a.save(d, overwrite=True)  # the next successful save cleans what the kill left
        assert _which(d, a, b) == "A"
        assert _leftovers(d) == []


@pytest.mark.timeout(300)
def test_sigkill_at_random_times_while_saving_in_a_loop(models, tmp_path):
    a, b = models
    dirs = [tmp_path / f"model{k}" for k in range(1, 5)]
    for d in dirs:
        a.save(d)
    assert _run_worker(tmp_path / "model", "--rounds", len(dirs)) == ["killed"] * len(dirs)
    for d in dirs:
        _which(d, a, b)
        a.save(d, overwrite=True)
        assert _leftovers(d) == []


def _raise(err: int):
    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))
    return fail


@pytest.mark.parametrize("where", ["weights", "config"])
def test_full_disk_during_save_keeps_old_model_and_no_temp_files(models, tmp_path, monkeypatch,
                                                                 where):
    import safetensors.torch

    import convnetvae.model_format as mf

    a, b = models
    d = tmp_path / "model"
    a.save(d)
    if where == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", _raise(errno.ENOSPC))
    else:
        monkeypatch.setattr(mf, "write_json", _raise(errno.ENOSPC))
    with pytest.raises(ConvNetVAEError, match="No space left on device.*nothing was changed"):
        b.save(d, overwrite=True)
    monkeypatch.undo()
    assert _which(d, a, b) == "A"
    assert _leftovers(d) == []
    # a first save that fails leaves no directory at all (not an empty one or weights alone)
    monkeypatch.setattr(mf, "write_json", _raise(errno.ENOSPC))
    with pytest.raises(ConvNetVAEError, match="No space left"):
        b.save(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_read_only_destination_is_a_clear_error(models, tmp_path, monkeypatch):
    import tempfile

    a, _ = models
    monkeypatch.setattr(tempfile, "mkstemp", _raise(errno.EROFS))
    monkeypatch.setattr(tempfile, "mkdtemp", _raise(errno.EROFS))
    with pytest.raises(ConvNetVAEError, match="Read-only file system"):
        a.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_to_replace_a_file_or_a_foreign_directory(models, tmp_path):
    a, _ = models
    f = tmp_path / "file"
    f.write_text("keep me")
    with pytest.raises(ConvNetVAEError, match="is a file"):
        a.save(f, overwrite=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me too")
    with pytest.raises(ConvNetVAEError, match="holds no ConvNetVAE model"):
        a.save(other, overwrite=True)
    assert f.read_text() == "keep me" and (other / "thesis.tex").read_text() == "keep me too"
    empty = tmp_path / "empty"
    empty.mkdir()
    a.save(empty)
    assert cv.ConvNetVAE.load(empty).module.config.architecture == "conv-k11s11"
