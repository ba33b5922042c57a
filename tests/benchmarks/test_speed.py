"""bench.benchmarks.speed --tiny on CPU: the JSON report holds every protocol with the eager paths timed (the
CUDA-graph rows skipped with the reason), positive times and the ratio; the wall-clock budget skips the per-task loop.
No timing assertions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.store.protocol import protocol_names

REPO = Path(__file__).resolve().parents[2]


def run_speed(out: Path, *extra: str) -> dict:
    """Run `python -m bench.benchmarks.speed --device cpu --tiny` in a subprocess; return the JSON it wrote."""
    proc = subprocess.run([sys.executable, "-m", "bench.benchmarks.speed", "--device", "cpu", "--tiny", "--out", str(out),
                           *extra], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "graph ms" in proc.stdout and "per_task ms" in proc.stdout
    return json.loads(out.read_text())


def test_tiny_report_has_every_protocol_and_both_paths(tmp_path: Path) -> None:
    report = run_speed(tmp_path / "speed.json")
    assert report["device"] == "cpu" and report["torch"] and "cudnn.allow_tf32" in report["precision"]
    assert set(report["protocols"]) == set(protocol_names())
    for name, row in report["protocols"].items():
        for path in ("eager", "per_task"):
            assert row[path]["ms_median"] > 0, (name, path)
            assert row[path]["peak_bytes"] >= 0, (name, path)
        assert row["per_task"]["execution"] == "per_task" and row["eager"]["execution"] == "vectorized"
        for path in ("graph", "graph_no_autotune"):
            assert "GPU" in row[path]["skipped"], (name, path)
        assert row["ratio"] > 0, name
        assert row["meta_test"]["seconds"] > 0 and row["meta_test"]["extrapolated"], name
        assert set(row["verdict"].values()) == {"n/a"}, name


def test_budget_skips_reference_with_a_note(tmp_path: Path) -> None:
    report = run_speed(tmp_path / "speed.json", "--protocols", "mini_5w1s", "--budget-s", "0",
                       "--regularizer", "none")
    row = report["protocols"]["mini_5w1s"]
    assert row["eager"]["ms_median"] > 0 and "skipped" in row["per_task"] and row["ratio"] is None
    assert report["notes"] and report["regularizer"] == "none"
