"""The shared ending of the benchmark scripts: run, print the table, say where the JSON went."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from bench.util.errors import UserError


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write the JSON report through a temporary file renamed into place (a crash never leaves half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)


def report_main(args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
                render: Callable[[dict], str]) -> int:
    """Check the device, run(args) (which writes args.out), print render(report); 2 with one line on bad input."""
    try:
        if getattr(args, "device", "cpu") == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda but no CUDA device is visible; use --device cpu")
        report = run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(report))
    print(f"wrote {args.out}")
    return 0
