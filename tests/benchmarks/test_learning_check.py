"""bench.benchmarks.learning_check on the smoke preset (CPU, synthetic): both cells reach the same iteration count,
are tested on the same episodes, and the paired summary matches their per-episode accuracies. No accuracy assertions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.benchmarks.learning_check import main


def test_smoke_learning_check_pairs_the_two_cells(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["--device", "cpu", "--preset", "smoke", "--budget-s", "0", "--test-reserve-s", "0",
                 "--chunk", "3", "--episodes", "8", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["iterations"] == 3 and all(r["training"]["iterations"] == 3 for r in rows.values())
    a, b = (np.array(rows[r]["test"]["accuracies"]) for r in ("maml", "maml+meta_dropout"))
    assert len(a) == len(b) == 8
    assert report["paired"]["mean_difference"] == pytest.approx(float((b - a).mean()))
    assert report["paired"]["won"] + report["paired"]["tied"] + report["paired"]["lost"] == pytest.approx(1.0)
    assert "paired (meta-dropout - MAML)" in capsys.readouterr().out
