"""The whole smoke preset, every table and figure, once through a local Ray instance (as a cluster would)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_all_tables_and_figures_through_ray(tmp_path):
    pytest.importorskip("ray", reason="the Ray backend is an extra: pip install -e '.[ray]'")
    cmd = [sys.executable, str(REPO / "run_all.py"), "--table", "all", "--preset", "smoke", "--backend", "ray",
           "--results", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = tmp_path / "tables"
    for name in ("table1", "table2", "table3"):
        md = (tables / f"{name}.md").read_text()
        assert "–†" not in md, f"{name} has missing cells"          # every run cell has a result
        assert (tables / f"{name}.tex").stat().st_size > 0
    for name in ("fig4", "fig5", "fig5_extra", "fig6", "fig7"):
        for ext in ("png", "pdf"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    assert (tables / "tables.tex").exists()
    claims = (tables / "claims.md").read_text()                     # --table all renders the claims too
    verdicts = re.findall(r"\*\*(reproduced|contradicted|inconclusive|one seed|not run)[^*]*\*\*", claims)
    assert "rank nothing" in claims and len(verdicts) == 11 and set(verdicts) == {"inconclusive"}
    assert "REDUCED PROTOCOL" in claims and claims.count("qualitative, not tested") == 2
    assert (tables / "claims.tex").stat().st_size > 0 and "| unpaired |" not in (tables / "paired.md").read_text()
    assert len(list((tmp_path / "cells").glob("*.json"))) == 86          # the figures' cells are the tables'
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 86      # final checkpoints kept
