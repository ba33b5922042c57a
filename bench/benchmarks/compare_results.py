"""Compare the cell records of two results folders field by field, ignoring what legitimately differs between runs
(code version, environment, timings): `python -m bench.benchmarks.compare_results OLD NEW` prints every cell whose
numbers differ (per-episode accuracies, training curves, learning curves, robustness) and exits 1 if any does. A
refactor that changes no number leaves the smoke preset's cells identical."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

IGNORED = frozenset({"code_version", "environment", "runtime", "timings", "seconds", "train_seconds_this_run",
                     "test_seconds", "curve_test_seconds_this_run", "ms_per_iteration"})


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Paths at which two JSON values differ, IGNORED keys left out."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key in IGNORED:
                continue
            if key not in old or key not in new:
                out.append(f"{path}.{key}: only in {'new' if key in new else 'old'}")
            else:
                out += differences(old[key], new[key], f"{path}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} vs {len(new)} entries"]
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} vs {new!r}"]


def compare(old_dir: Path, new_dir: Path) -> dict[str, list[str]]:
    """{cell file: differences} over the cells of both folders (a cell present in one only is a difference)."""
    old = {p.name: p for p in (old_dir / "cells").glob("*.json")}
    new = {p.name: p for p in (new_dir / "cells").glob("*.json")}
    out: dict[str, list[str]] = {}
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            out[name] = [f"only in {'new' if name in new else 'old'}"]
            continue
        found = differences(json.loads(old[name].read_text()), json.loads(new[name].read_text()))
        if found:
            out[name] = found
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the differing cells (first few differences each); 0 when every cell is the same, else 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="a results folder (holding cells/)")
    parser.add_argument("new", type=Path, help="another results folder")
    args = parser.parse_args(argv)
    found = compare(args.old, args.new)
    cells = len(list((args.new / "cells").glob("*.json")))
    for name, diffs in found.items():
        print(f"{name}: {len(diffs)} differences, e.g. " + "; ".join(diffs[:3]))
    print(f"{cells - len(found)} of {cells} cells identical (ignoring {', '.join(sorted(IGNORED))})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
