"""Shared fixtures: small simulated datasets and the location of ../shared/data."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

# before torch loads OpenMP: spinning waits starve threads on shared cores (docs/performance.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (benchmarks import each other: their folder goes on the
    path)."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

torch.set_num_threads(min(2, os.cpu_count() or 1))

_LD_LIBRARY_PATH = os.environ.get("LD_LIBRARY_PATH")


def _reset_ld_library_path() -> None:
    if _LD_LIBRARY_PATH is None:
        os.environ.pop("LD_LIBRARY_PATH", None)
    else:
        os.environ["LD_LIBRARY_PATH"] = _LD_LIBRARY_PATH


@pytest.fixture(autouse=True)
def _restore_ld_library_path():
    """rpy2 sets LD_LIBRARY_PATH (to R's and the system's libraries) when it starts R; a Python
    subprocess started afterwards would then load the wrong libpython. Restore it after each test."""
    yield
    _reset_ld_library_path()


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when it is absent (a user's fresh clone)."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


@pytest.fixture
def small_adata():
    """300 cells x 3 modalities x 600 bins over 3 chromosomes, two batches, set up."""
    import convnetvae as cv

    adata = cv.simulate(n_cells=300, n_bins=600, n_types=4, n_chromosomes=3, seed=3)
    cv.ConvNetVAE.setup_anndata(adata, modalities=["ATAC", "H3K27ac", "H3K27me3"],
                                batch_key="batch", labels_key="cell_type")
    return adata


@pytest.fixture
def tmp_out(tmp_path):
    return tmp_path


def fast_train_kwargs(**kw):
    base = dict(max_epochs=3, progress=False, validation_size=0.1, batch_size=64)
    base.update(kw)
    return base


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_finish(session):
    """Collecting test_r_bridge starts R through rpy2 (to decide skips): undo its LD_LIBRARY_PATH."""
    _reset_ld_library_path()
