"""benchmarks/default_cost.py measures in the OpenMP regime of a user's session (docs/benchmarks.md,
"The cost model refitted, and why it stays as it was")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_default_cost_imports_convnetvae_before_torch_and_writes_its_fit(tmp_path):
    out = tmp_path / "cost.json"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "default_cost.py"), "--cells", "48",
         "--bins", "300", "--modalities", "1", "--epochs", "1", "--batches", "16,32",
         "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    # torch loaded after convnetvae set the passive wait policy: the threads wait as a user's do
    assert result["torch_loaded_before_convnetvae"] is False
    assert result["omp_wait_policy"] == "PASSIVE"
    rows = result["measurements"]
    assert [r["batch_size"] for r in rows] == [16, 32]
    assert all(r["seconds_per_epoch"] > 0 and r["flops_per_cell"] > 0 for r in rows)
    assert set(result["fit"]) >= {"a_seconds_per_flop", "d_seconds_per_step_and_parameter"}
