"""A new user's first hour (issue 12): honest smoke output, results independent of --jobs, one-line errors from
the API and for the data root, plain logs, quick answers, measured estimates, a lean test install."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from bench.util.errors import UserError
from bench.runner.estimate import REGULARIZER_COST, calibrate, gpu_estimates, reference_calibration
from bench.runner.preflight import note_unused_data_root
from bench.runner.cells import expand
from bench.store.results import ResultStore
from bench.util.notice import Notice
from run_all import main, parse_args
from tables import load_table_def, render_latex, render_markdown
from tables.figures.fig5_robustness import robustness_figure
from tables.run_protocols import SMOKE_NOTE, with_run_protocols

REPO = Path(__file__).resolve().parents[2]
SMOKE = ["--table", "1,fig5", "--preset", "smoke", "--device", "cpu", "--only", "omniglot_20w1s__*"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke cells of Omniglot 1-shot (Table 1 and Figure 5), run with --jobs 1."""
    root = tmp_path_factory.mktemp("jobs1")
    assert main(SMOKE + ["--jobs", "1", "--results", str(root)]) == 0
    return root


def _results(root: Path) -> dict[str, dict]:
    """What a cell computed (everything but timings and provenance), by cell name."""
    return {name: {k: record[k] for k in ("test", "robustness", "runtime")} | {"curve": record["training"]["curve"]}
            for name, record in ResultStore(root).all_results().items()}


# 1. Smoke output says what it is.

def test_smoke_tables_say_so_and_rank_nothing(smoke_run: Path) -> None:
    md = (smoke_run / "tables" / "table1.md").read_text()
    assert md.startswith(f"### table1: {SMOKE_NOTE}.")
    assert "| synthetic 5-way 1-shot 16x16 (for Omniglot 20-way 1-shot) |" in md
    assert "**" not in md and "paper (Δ)" not in md and "Reported by their papers" not in md and "Δ" not in md
    tex = (smoke_run / "tables" / "table1.tex").read_text()
    assert f"\\caption{{{SMOKE_NOTE}." in tex and r"\textbf" not in tex and r"$\Delta$" not in tex


def test_paper_tables_keep_the_paper_headers_and_numbers() -> None:
    table = with_run_protocols(load_table_def("table1"), expand(["table1"], "paper", 1, {}))
    results = [{"table": "table1", "row": "maml", "column": "omniglot_20w1s", "seed": 0, "status": "ok",
                "test": {"mean": 90.0, "ci95": 0.5}, "config": {"preset": "paper"}}]
    md = render_markdown(table, results)
    assert SMOKE_NOTE not in md and "| Omniglot 20-way 1-shot |" in md and "**90.00 ± 0.50**" in md
    assert "paper (Δ)" in md and SMOKE_NOTE not in render_latex(table, results)


def test_smoke_figure_is_marked_and_an_empty_panel_says_so() -> None:
    fig_def = with_run_protocols(load_table_def("fig5"), expand(["fig5"], "smoke", 1, {}))
    published = [p for p in fig_def["panels"] if not p.get("extra")]
    fig = robustness_figure(fig_def, [], published)
    assert SMOKE_NOTE in fig._suptitle.get_text() and "SMOKE" in [t.get_text() for t in fig.texts]
    panels = [" ".join(t.get_text() for t in ax.texts) for ax in fig.axes]
    assert len(panels) == len(published) and all("no finished cells" in text for text in panels)
    assert all("synthetic" in ax.get_title() for ax in fig.axes)      # the protocol actually run, not the paper's
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:                                                # and the title fits its panel, norm included
        assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width, ax.get_title()
    paper_def = with_run_protocols(load_table_def("fig5"), expand(["fig5"], "paper", 1, {}))
    paper = robustness_figure(paper_def, [], published)
    assert SMOKE_NOTE not in paper._suptitle.get_text() and "SMOKE" not in [t.get_text() for t in paper.texts]


def test_smoke_curves_and_claims_say_so_at_the_top_and_name_what_ran(tmp_path: Path, capsys) -> None:
    assert main(["--table", "curves", "--preset", "smoke", "--results", str(tmp_path)]) == 0
    curves = (tmp_path / "tables" / "curves.md").read_text().splitlines()
    assert SMOKE_NOTE in curves[0] and "**synthetic 5-way 1-shot 16x16 (for Omniglot 20-way 1-shot)**" in curves
    assert main(["--table", "1", "--preset", "smoke", "--claims", "md_improves_maml", "--only", "omniglot_20w1s__*",
                 "--results", str(tmp_path)]) == 0
    assert "Claims (tables/claims.md):\n  md_improves_maml: inconclusive" in capsys.readouterr().out
    claims = (tmp_path / "tables" / "claims.md").read_text().splitlines()
    head = next(line for line in claims if "MAML + meta-dropout is more accurate than MAML" in line)
    assert claims[2].startswith(f"**{SMOKE_NOTE}**") and "only Omniglot 20-way 1-shot, the columns run" in head
    assert head.endswith("| – |")                                        # no power from synthetic spreads


# 2. A cell's result does not depend on how many cells run beside it.

def test_jobs_1_and_jobs_2_give_byte_identical_results(smoke_run: Path, tmp_path: Path) -> None:
    assert main(SMOKE + ["--jobs", "2", "--results", str(tmp_path)]) == 0
    one, two = _results(smoke_run), _results(tmp_path)
    assert len(one) == len(expand(["table1", "fig5"], "smoke", 1, {}, "omniglot_20w1s__*")) and one.keys() == two.keys()
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    assert {r["runtime"]["threads"] for r in one.values()} == {1}


# 3. The Python API gives the command line's one-line device error.

def test_cuda_without_a_gpu_is_the_same_one_line_error(tmp_path: Path, monkeypatch, capsys) -> None:
    from bench.api import build_experiment
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError) as api_error:
        build_experiment("omniglot_20w1s", device="cuda")
    assert main(SMOKE + ["--device", "cuda", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {api_error.value}"
    assert "no GPU is visible; use --device cpu" in str(api_error.value)


# 4. The data root is checked before anything runs, and never created.

def _dry_run_error(capsys, data_root: Path, tmp_path: Path) -> str:
    assert main(["--table", "1", "--preset", "paper", "--dry-run", "--data-root", str(data_root),
                 "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_missing_data_root_is_named_and_not_created(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    err = _dry_run_error(capsys, missing, tmp_path)
    assert f"data root {missing} does not exist" in err and "--data-root" in err
    assert not missing.exists()


def test_a_root_one_level_too_deep_gets_a_hint(tmp_path: Path, capsys) -> None:
    omniglot = tmp_path / "data" / "omniglot"
    omniglot.mkdir(parents=True)
    (omniglot / "images_background.zip").write_bytes(b"")
    err = _dry_run_error(capsys, omniglot, tmp_path)
    assert f"did you mean its parent {omniglot.parent}?" in err
    assert sorted(p.name for p in omniglot.iterdir()) == ["images_background.zip"]     # nothing created


def test_missing_mini_imagenet_split_is_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "data" / "omniglot").mkdir(parents=True)
    (tmp_path / "data" / "mini_imagenet").mkdir()
    err = _dry_run_error(capsys, tmp_path / "data", tmp_path)
    assert "no miniImageNet train/test data under" in err


def test_a_data_root_no_cell_reads_is_pointed_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.runner.sweep.calibrate", lambda cells, device, threads: reference_calibration("cpu"))
    smoke = ["--table", "1", "--preset", "smoke", "--dry-run", "--results", str(tmp_path / "results")]
    nowhere = tmp_path / "nowhere"
    with pytest.warns(Notice, match=rf"^--data-root {re.escape(str(nowhere))} is not used: the selected cells run "
                                    r"on synthetic data \(preset smoke\)$"):
        assert main(smoke + ["--data-root", str(nowhere)]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", Notice)
        assert main(smoke) == 0                                  # $META_DROPOUT_DATA stands for every run: silent
        note_unused_data_root(expand(["table1"], "paper", 1, {}), str(nowhere))        # real data: read


# 6. Logs, --help, a quick answer.

def test_a_log_gets_plain_lines(tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "run_all.py")] + SMOKE + ["--only", "omniglot_20w1s__maml__*",
                                                                "--results", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("[")]
    n = len(expand(["table1", "fig5"], "smoke", 1, {}, "omniglot_20w1s__maml__*"))       # one line per cell
    assert n >= 4 and len(lines) == n
    assert lines[0].startswith(f"[1/{n}] omniglot_20w1s__maml__") and " ran in " in lines[0]


def test_help_shows_every_default() -> None:
    parser_help = subprocess.run([sys.executable, str(REPO / "run_all.py"), "--help"], cwd=REPO, env=ENV,
                                 capture_output=True, text=True, timeout=60).stdout
    entries = {e.split()[0]: " ".join(e.split()) for e in parser_help.split("options:", 1)[1].split("\n  --")[1:]}
    flags = [name.replace("_", "-") for name in vars(parse_args([]))]
    assert len(flags) > 10 and set(flags) == set(entries)
    for flag in flags:
        assert "default:" in entries[flag], flag


def test_help_lists_every_preset_file(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")                         # one line per flag: no name is wrapped
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    preset_help = next(line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("--preset"))
    presets = sorted(path.stem for path in (REPO / "configs" / "presets").glob("*.yaml"))
    assert "cpu_study" in presets and all(name in preset_help for name in presets), preset_help


def test_a_wrong_table_is_answered_before_torch_is_imported() -> None:
    code = "import sys, run_all; rc = run_all.main(['--table', '4']); print(rc, 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["2", "False"] and "unknown table 4" in done.stderr


# 5. Estimates: measured here, cached, per regularizer.

def test_calibration_is_measured_once_and_costs_differ_per_regularizer(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("META_DROPOUT_CACHE", str(tmp_path))
    cells = expand(["table1"], "smoke", 1, {}, only="omniglot_20w1s__maml__*")
    measured = []
    import bench.runner.estimate as estimate
    real = estimate._measure
    monkeypatch.setattr(estimate, "_measure", lambda *a: measured.append(a) or real(*a))
    first = calibrate(cells, "cpu", 1)
    assert len(measured) == 2 and first.source.startswith("measured")
    assert calibrate(cells, "cpu", 1) == first and len(measured) == 2           # cached
    none, dropout = sorted(cells, key=lambda c: c["regularizer"] != "none")
    assert first.cell_seconds(dropout) > first.cell_seconds(none) > 0
    assert REGULARIZER_COST["meta_dropout"] > REGULARIZER_COST["none"]
    assert calibrate(cells[:1], "cpu", 1) and len(measured) == 2      # each cell's measurement is kept on its own


def test_calibration_measures_cells_with_more_queries_at_meta_test(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("META_DROPOUT_CACHE", str(tmp_path))
    cells = expand(["table1"], "smoke", 1, {"test_queries": 9}, only="omniglot_20w1s__maml__*")
    assert calibrate(cells, "cpu", 1).source.startswith("measured")


def test_one_estimate_for_the_refusal_the_dry_run_and_the_gpu(tmp_path: Path, capsys, monkeypatch,
                                                               data_root: Path) -> None:
    monkeypatch.setattr("bench.runner.sweep.calibrate", lambda cells, device, threads: reference_calibration("cpu"))
    flags = ["--table", "1", "--preset", "paper", "--device", "cpu", "--data-root", str(data_root),
             "--results", str(tmp_path)]
    assert main(flags + ["--dry-run"]) == 0
    dry = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(flags) == 2
    refusal = capsys.readouterr().err.strip().splitlines()[-1]
    left = dry.split("left: ")[1]
    assert refusal.startswith("error: no GPU: the 16 cells") and f"would take {left}; use --preset smoke" in refusal
    assert "CPU worker" in left
    assert "NVIDIA H100" in left and "measurements/h100_" in left          # what renting a card would take


def test_gpu_estimates_name_the_card_for_measured_protocols_only() -> None:
    paper = expand(["table1"], "paper", 1, {})
    lines = gpu_estimates(paper)
    assert lines and all(" h (from the steps and meta-tests measured in measurements/" in line for line in lines)
    assert gpu_estimates(expand(["table1"], "smoke", 1, {})) == []
    assert gpu_estimates(expand(["table1"], "paper", 1, {"channels": 16})) == []


# 8. A lean test install.

def test_the_test_extra_does_not_pull_ray() -> None:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any("ray" in dep for dep in extras["test"]) and any("ray" in dep for dep in extras["ray"])
    installed = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', (REPO / ".ci" / "run").read_text())
    assert installed and {"test", "ray"} <= set(installed.group(1).split(","))   # CI still tests the Ray backend
