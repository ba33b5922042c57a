"""A researcher's own experiments: a regularizer in a file of their own and a table of their own, run from the
command line as docs/regularizers.md and docs/your_table.md say; --only that matches nothing; the installed
command from another folder."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import regularizers
from bench.core.regularizer import REGISTRY
from bench.util.errors import UserError
from run_all import main
from tables import render_markdown
from tables.defs import add_table_file, load_table_def

from tests.meta_gradcheck import tiny_episodes, tiny_learner
from tests.execution.test_task_processes import _one_process_then_pool, _same
from tests.tables.test_tables import make_result

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["--preset", "smoke", "--device", "cpu", "--jobs", "1"]


def _block(doc: str, language: str, after: str) -> str:
    """The first ```language block of docs/<doc> after the heading `after`, unindented."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    block = re.search(rf"```{language}\n(.*?)```", text[text.index(after):], re.S).group(1)
    indent = min(len(line) - len(line.lstrip()) for line in block.splitlines() if line.strip())
    return "\n".join(line[indent:] for line in block.splitlines()) + "\n"


@pytest.fixture
def own_files(tmp_path: Path) -> Path:
    """channel_noise.py and my_table.yaml, as the docs give them, in a folder of the researcher's."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "channel_noise.py").write_text(_block("regularizers.md", "python", "## Add a regularizer"))
    (folder / "my_table.yaml").write_text(_block("your_table.md", "yaml", "## In three steps"))
    curves = load_table_def(folder / "my_table.yaml")
    (folder / "my_curves.yaml").write_text(json.dumps({**curves, "name": "my_curves", "kind": "curves",
                                                       "columns": ["omniglot_20w1s"]}))
    return folder


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """run_all.py started from the researcher's folder, as a separate process (its own regularizer registry)."""
    env = {k: v for k, v in os.environ.items() if k != regularizers.FILES_ENV}
    return subprocess.run([sys.executable, str(REPO / "run_all.py"), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


def _cells(results: Path, regularizer: str) -> list[dict]:
    records = [json.loads(p.read_text()) for p in (results / "cells").glob("*.json")]
    return [r for r in records if r["config"]["regularizer"] == regularizer]


def test_own_regularizer_and_table_run_render_pair_and_plot(own_files: Path) -> None:
    args = ["--table", "my_table.yaml,my_curves.yaml", "--regularizers", "channel_noise.py", *SMOKE,
            "--results", "results"]
    ran = _run(own_files, *args)
    assert ran.returncode == 0, ran.stderr
    results = own_files / "results"
    table = (results / "tables" / "channel_noise_vs_maml.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| MAML")]
    assert [r.split(" | ")[0] for r in rows] == ["| MAML", "| MAML + Meta-dropout", "| MAML + channel noise"]
    assert all(r.count(" ± ") == 2 and "–" not in r for r in rows)                 # every cell has its number
    assert "channel_noise_vs_maml" in (results / "tables" / "paired.md").read_text()
    assert (results / "tables" / "my_curves.png").stat().st_size > 0
    sha = hashlib.sha256((own_files / "channel_noise.py").read_bytes()).hexdigest()
    noisy = _cells(results, "channel_noise")
    assert len(noisy) == 2 and all(r["config"]["regularizer_file"]["sha256"] == sha for r in noisy)

    again = _run(own_files, *args)
    assert again.returncode == 0 and "ran in" not in again.stderr, again.stderr      # nothing computed twice
    (own_files / "channel_noise.py").write_text((own_files / "channel_noise.py").read_text() + "# edited\n")
    edited = _run(own_files, *args)
    assert edited.returncode == 0, edited.stderr
    assert "2 to run" in edited.stderr, edited.stderr                             # only the edited regularizer's
    assert len(_cells(results, "channel_noise")) == 4


def test_a_table_without_paper_numbers_shows_no_paper_column(own_files: Path) -> None:
    table_def = load_table_def(own_files / "my_table.yaml")
    results = [make_result(table_def["name"], row, "mini_5w1s", 0, mean) for row, mean in
               (("maml", 48.0), ("meta_dropout", 51.0), ("channel_noise", 50.0))]
    text = render_markdown(table_def, results)
    assert "paper (" not in text and "the paper's" not in text and "**51.00 ± 0.20**" in text
    table_def["rows"][1]["paper"] = "table2/meta_dropout"                         # the file gives paper numbers
    assert "*51.93 ± 0.67 (Δ −0.93)*" in render_markdown(table_def, results)


def test_only_that_selects_no_cell_names_the_closest_rows(tmp_path: Path, capsys) -> None:
    assert main(["--table", "2", *SMOKE, "--only", "meta_dropuot", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "selects no cell" in err and "closest row ids: meta_dropout" in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_only_matches_row_ids_as_documented(tmp_path: Path, capsys) -> None:
    assert main(["--table", "2", *SMOKE, "--only", "meta_dropout*", "--dry-run", "--results", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert set(re.findall(r"table2:(\S+)", listed)) == {"meta_dropout", "meta_dropout_additive"}


@pytest.mark.parametrize("name,row,message", [
    ("table2", "{id: maml, label: MAML, learner: maml, regularizer: none}", "is one of the suite's tables"),
    ("mine", "{id: b, label: '$\\beta=1$', learner: maml, regularizer: none}", "give label_md too")])
def test_a_table_file_is_checked_before_any_cell(tmp_path: Path, name: str, row: str, message: str) -> None:
    mine = tmp_path / "t.yaml"
    mine.write_text(f"name: {name}\ntitle: t\ncolumns: [mini_5w1s]\nrows:\n  - {row}\n")
    with pytest.raises(UserError, match=message):
        add_table_file(mine)


@pytest.fixture
def loaded_channel_noise(own_files: Path, monkeypatch: pytest.MonkeyPatch):
    """The docs' regularizer loaded in this process; the registry, the file list, the modules and the
    environment restored after."""
    registry, from_files, modules = dict(REGISTRY), dict(regularizers.FROM_FILES), set(sys.modules)
    monkeypatch.setenv(regularizers.FILES_ENV, "")         # recorded, so the file it exports is unset after
    names = regularizers.load_regularizer_file(own_files / "channel_noise.py")
    yield names
    for table in (REGISTRY, regularizers.FROM_FILES):
        table.clear()
    REGISTRY.update(registry)
    regularizers.FROM_FILES.update(from_files)
    for module in set(sys.modules) - modules:
        del sys.modules[module]


def test_a_regularizer_file_reaches_the_task_processes(loaded_channel_noise: list[str]) -> None:
    assert loaded_channel_noise == ["channel_noise"]
    learner = tiny_learner("channel_noise")
    learner.config = type(learner.config)(**{**learner.config.__dict__, "execution": "per_task"})
    alone, pooled = _one_process_then_pool(learner, tiny_episodes(batch=3), 2)
    assert _same(alone, pooled) and any(g.abs().max() > 0 for g in pooled[2])


def test_a_changed_regularizer_file_is_refused(loaded_channel_noise: list[str], own_files: Path) -> None:
    source = dict(regularizers.FROM_FILES["channel_noise"])
    regularizers.use_regularizer_file(source)                                     # the same text: fine
    with pytest.raises(UserError, match="changed since its cells were named"):
        regularizers.use_regularizer_file({**source, "sha256": "0" * 64})


def test_a_file_that_registers_nothing_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(UserError, match="registers no regularizer"):
        regularizers.load_regularizer_file(empty)
    with pytest.raises(UserError, match="not found"):
        regularizers.load_regularizer_file(tmp_path / "missing.py")


def test_the_installed_command_runs_table_1_from_another_folder(tmp_path: Path) -> None:
    command = shutil.which("meta-dropout-bench") or (Path(sys.executable).parent / "meta-dropout-bench")
    if not Path(command).exists():
        pytest.skip("the meta-dropout-bench command is not installed: pip install -e . installs it")
    ran = subprocess.run([str(command), "--table", "1", *SMOKE, "--only", "maml", "--results", "out"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    maml = next(line for line in (tmp_path / "out" / "tables" / "table1.md").read_text().splitlines()
                if line.startswith("| MAML |"))
    assert maml.split(" | ")[1].count(" ± ") == 1                                 # its first column ran
