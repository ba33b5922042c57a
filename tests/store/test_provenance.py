"""A record's code version: a commit in main's history (checked), plus a hash of uncommitted changes that two runs
with the same changes share; a cell that trained nothing in its process has no time per iteration."""
import subprocess
from pathlib import Path

import pytest

from bench.store import provenance

REPO = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small git repository with main and a side branch, standing in for the suite's."""
    _git("init", "-q", "-b", "main", cwd=tmp_path)
    _git("config", "user.email", "t@t", cwd=tmp_path)
    _git("config", "user.name", "t", cwd=tmp_path)
    (tmp_path / "a.py").write_text("x = 1\n")
    _git("add", "a.py", cwd=tmp_path)
    _git("commit", "-q", "-m", "one", cwd=tmp_path)
    monkeypatch.setattr(provenance, "REPO", tmp_path)
    return tmp_path


def test_a_clean_commit_on_main(repository: Path):
    version = provenance.code_version()
    assert version == _git("rev-parse", "HEAD", cwd=repository) and provenance.on_main(version) is True


def test_uncommitted_changes_are_hashed(repository: Path):
    (repository / "a.py").write_text("x = 2\n")
    first = provenance.code_version()
    assert "+dirty." in first and provenance.code_version() == first
    (repository / "a.py").write_text("x = 3\n")
    assert provenance.code_version() != first
    assert provenance.on_main(first) is True                   # its commit is main's


def test_a_commit_off_main_is_flagged(repository: Path):
    _git("checkout", "-q", "-b", "side", cwd=repository)
    (repository / "a.py").write_text("x = 4\n")
    _git("commit", "-q", "-am", "side", cwd=repository)
    assert provenance.on_main(provenance.code_version()) is False
    assert provenance.on_main("0" * 40) is False


def test_the_suites_own_version_is_a_commit():
    version = provenance.code_version()
    assert version == "unknown" or len(version.split("+")[0]) == 40
