"""benchmarks/fresh_timing.py times default training in fresh processes, as users run it (issue 14,
point 2; docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_fresh_timing_runs_each_dataset_in_a_new_process_and_writes_shares(tmp_path):
    out = tmp_path / "timing.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fresh_timing.py"), "--datasets", "simulator",
         "--rounds", "1", "--threads", "1", "--sim-cells", "64", "--max-bins", "300",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = result["runs"]
    assert [r["round"] for r in rows] == [1]
    for r in rows:
        # a fresh process: torch's compiler front end was not loaded before train()
        assert r["torch_dynamo_loaded_before"] is False
        assert r["threads"] == 1 and r["cells"] == 64 and r["modalities"] == 3
        assert r["epochs"] >= 1 and 0 < r["epochs_s"] <= r["train_s"]
        assert r["overhead_s"] == pytest.approx(r["train_s"] - r["epochs_s"])
        # the budget: 3 minutes per 1,000 cells for three modalities, all cells counted
        assert r["budget_s"] == pytest.approx(0.18 * 64)
        assert r["budget_share"] == pytest.approx(r["train_s"] / r["budget_s"])
        assert r["predicted_epochs_s"] == pytest.approx(r["epochs"] * r["predicted_epoch_s"])
    summary = result["summary"]
    assert summary["datasets"]["simulator"]["runs"] == 1
    assert summary["largest_budget_share"] == max(r["budget_share"] for r in rows)


def test_fresh_timing_on_a_busier_machine_without_the_guard_and_scored(tmp_path):
    out = tmp_path / "timing.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fresh_timing.py"), "--datasets", "simulator",
         "--rounds", "1", "--threads", "1", "--sim-cells", "64", "--max-bins", "300",
         "--busy", "1", "--no-time-guard", "--score", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    (r,) = json.loads(out.read_text())["runs"]
    assert r["busy"] == 1 and r["time_guard"] is False and r["shortened"] is False
    assert r["planned_epochs"] == r["epochs"]
    assert isinstance(r["ari"], float) and -1.0 <= r["ari"] <= 1.0


def test_busy_processes_keep_cores_busy_until_killed():
    from fresh_timing import busy_processes

    hogs = busy_processes(2)
    try:
        assert len(hogs) == 2 and all(h.poll() is None for h in hogs)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert all(h.returncode is not None for h in hogs)


def test_fresh_timing_names_the_dataset_that_failed(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fresh_timing.py"), "--datasets", "nosuchset",
         "--rounds", "1", "--out", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode != 0
    assert "nosuchset" in run.stderr
    assert not (tmp_path / "t.json").exists()


def test_fresh_timing_says_when_the_data_folder_is_missing(tmp_path):
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "fresh_timing.py"), "--datasets", "zeller2023",
         "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "t.json")],
        capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode != 0
    assert "--data" in run.stderr and "absent" in run.stderr
    assert not (tmp_path / "t.json").exists()


def test_summary_reports_the_ranges_and_the_median_overhead():
    from fresh_timing import summarise

    rows = [{"dataset": "a", "epochs": 10, "architecture": "x", "train_s": t, "budget_s": 10.0,
             "budget_share": t / 10.0, "median_epoch_s": 0.5, "predicted_epoch_s": 0.4,
             "overhead_s": o} for t, o in ((6.0, 2.0), (8.0, 3.0))]
    rows.append(dict(rows[0], dataset="b", overhead_s=1.0, median_epoch_s=0.4))
    s = summarise(rows)
    assert s["datasets"]["a"]["train_s"] == [6.0, 8.0]
    assert s["datasets"]["a"]["budget_share"] == [0.6, 0.8]
    assert s["datasets"]["a"]["epoch_measured_over_estimated"] == pytest.approx(1.25)
    assert s["median_overhead_s"] == 2.0 and s["largest_budget_share"] == 0.8


def test_fit_recovers_the_coefficients_and_the_setup_of_synthetic_runs(tmp_path):
    from fresh_timing import fit_epochs

    a, b, c, d = 3e-11, 2e-8, 0.012, 4e-9
    rows = []
    for n, bins, flops, steps, params, over in ((180, 25_000, 1.5e7, 6, 1.4e6, 2.0),
                                                (480, 25_000, 1.5e7, 15, 1.4e6, 2.2),
                                                (540, 4_681, 5.4e6, 17, 7.1e5, 2.9),
                                                (1800, 5_000, 5.8e6, 29, 7.8e5, 2.1),
                                                (278, 3_113, 1.2e7, 9, 1.7e6, 2.3)):
        rows.append({"n_train": n, "flops_per_cell": flops, "bins": bins, "modalities": 1,
                     "steps_per_epoch": steps, "parameters": params, "overhead_s": over,
                     "median_epoch_s": n * (a * flops + b * bins) + steps * (c + d * params)})
    # a run another job overlapped is left out
    rows.append(dict(rows[0], median_epoch_s=5.0, overhead_s=9.0, disturbed=True))
    f = fit_epochs(rows)
    assert f["median_relative_error"] < 1e-6
    assert f["c_seconds_per_step"] == pytest.approx(c, rel=1e-3)
    assert f["setup_seconds"] == 2.2
    # --fit refits the runs of a saved output
    saved = tmp_path / "runs.json"
    saved.write_text(json.dumps({"runs": rows}))
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fresh_timing.py"), "--fit",
                          str(saved)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["c_seconds_per_step"] == pytest.approx(c, rel=1e-3)
