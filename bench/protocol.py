"""Protocols (dataset, ways, shots, learning rates, iterations...) from configs/protocols, with presets and
command-line overrides applied."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.curves import check_eval_at
from bench.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Protocol:
    """Everything that defines a column of the tables: data, episode shape, backbone width, optimisation."""

    name: str
    dataset: str
    ways: int
    shots: int
    queries: int
    in_channels: int
    image_size: int
    channels: int
    inner_lr: float
    inner_steps: int
    meta_lr: float
    meta_batch: int
    iterations: int
    mc_train: int
    mc_test: int
    test_split: str
    test_episodes: int
    test_batch: int
    checkpoint_every: int
    train_split: str = "train"
    bn_mode: str = "shift"
    execution: str = "auto"          # auto | vectorized | per_task | reference: how a step runs (same function)
    cuda_graph: str = "auto"         # auto | on | off: replay the whole meta-train step as a CUDA graph (GPU)
    test_sample_chunk: int = 10      # meta-test forwards at most this many of the S samples at once (memory)
    first_order: bool = False        # first-order MAML: only behind this explicit flag (the paper uses second)
    test_queries: int | None = None  # query examples per class at meta-test (None: the same as `queries`)
    eval_at: list[int] = field(default_factory=list)   # also meta-test when training reaches these iterations
    data_options: dict[str, Any] = field(default_factory=dict)
    metasgd_alpha_init: str = "constant"     # Meta-SGD's initial alphas: constant (inner_lr) or uniform (range)
    metasgd_alpha_range: list[float] = field(default_factory=lambda: [0.005, 0.1])   # Li et al. (2017)
    drop_cross_split_duplicates: bool = False    # exclude later-split copies of cross-split duplicate images

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for the result JSON."""
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Protocol)}
# How a cell runs, not what it computes (equal up to floating-point summation order): not part of a cell's identity.
RUNTIME_FIELDS = ("execution", "cuda_graph", "test_batch", "test_sample_chunk", "checkpoint_every")
EXECUTIONS = ("auto", "vectorized", "per_task", "reference")
GRAPH_MODES = ("auto", "on", "off")
_TYPES = {"int": int, "float": (int, float), "bool": bool, "str": str, "dict[str, Any]": dict,
          "int | None": (int, type(None)), "list[int]": list, "list[float]": list}


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping; a syntax error or a non-mapping becomes one UserError line."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"bad YAML in {path}{where}: {getattr(err, 'problem', err)}; fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a YAML mapping (key: value lines)")
    return data


def _names(folder: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / folder).glob("*.yaml"))


def protocol_names() -> list[str]:
    """The protocols defined in configs/protocols."""
    return _names("protocols")


def preset_names() -> list[str]:
    """The presets defined in configs/presets."""
    return _names("presets")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """'key=value' strings (values parsed as YAML) into a dict; a malformed pair is a UserError."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"override {pair!r} must look like key=value, e.g. iterations=100")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _cell_overrides(preset_cfg: dict[str, Any], name: str, regularizer: str | None,
                    learner: str | None) -> dict[str, Any]:
    """A preset's `per_cell` settings whose `when` (protocol, regularizer and/or learner) matches this cell."""
    out: dict[str, Any] = {}
    cell = {"protocol": name, "regularizer": regularizer, "learner": learner}
    for rule in preset_cfg.get("per_cell", []):
        when = rule.get("when", {})
        unknown = sorted(set(when) - set(cell))
        if unknown:
            raise UserError(f"preset per_cell rule {when} has unknown key(s) {', '.join(unknown)}; "
                            f"use {', '.join(cell)}")
        if all(cell[key] == value for key, value in when.items()):
            out.update(rule.get("set", {}))
    return out


def load_protocol(name: str, preset: str = "paper", overrides: dict[str, Any] | None = None,
                  regularizer: str | None = None, learner: str | None = None) -> Protocol:
    """configs/protocols/<name>.yaml, then the preset's overrides (per dataset, for all, per cell matching the
    regularizer and learner), then the caller's; unknown keys are errors."""
    path = CONFIGS / "protocols" / f"{name}.yaml"
    if not path.exists():
        raise UserError(f"unknown protocol '{name}'; defined: {', '.join(protocol_names())}")
    preset_path = CONFIGS / "presets" / f"{preset}.yaml"
    if not preset_path.exists():
        raise UserError(f"unknown preset '{preset}'; defined: {', '.join(preset_names())}")
    values: dict[str, Any] = {"name": name, **read_yaml(path)}
    preset_cfg = read_yaml(preset_path)
    values.update(preset_cfg.get("per_dataset", {}).get(values.get("dataset"), {}))
    values.update(preset_cfg.get("overrides") or {})
    values.update(_cell_overrides(preset_cfg, name, regularizer, learner))
    if values.get("dataset") == "synthetic":
        values["data_options"] = {**preset_cfg.get("synthetic", {}),
                                  "image_shape": [values["in_channels"], values["image_size"], values["image_size"]]}
    values.update(overrides or {})
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise UserError(f"unknown protocol setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELDS))}")
    missing = sorted(f.name for f in dataclasses.fields(Protocol)
                     if f.name not in values and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise UserError(f"protocol '{name}' lacks {', '.join(missing)}; add them to {path}")
    for f in dataclasses.fields(Protocol):
        expected = _TYPES.get(f.type)
        value = values.get(f.name)
        if expected and f.name in values and (not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))):
            raise UserError(f"protocol setting {f.name}={value!r} must be of type {f.type}")
    for key, allowed in (("execution", EXECUTIONS), ("cuda_graph", GRAPH_MODES)):
        if key in values and values[key] not in allowed:
            raise UserError(f"protocol setting {key}={values[key]!r} must be one of {', '.join(allowed)}")
    check_eval_at(values.get("eval_at", []))
    return Protocol(**values)


def identity(protocol: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape a cell's result: runtime settings dropped, settings at their default left out (so
    a new setting whose default keeps the old behaviour keeps every existing cell key; never change a default)."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Protocol)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return {k: v for k, v in protocol.items()
            if k not in RUNTIME_FIELDS and not (k in defaults and v == defaults[k])}
