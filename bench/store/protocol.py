"""Protocols (dataset, ways, shots, learning rates, iterations...) from configs/protocols, with presets and
command-line overrides applied."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench.util.errors import UserError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass(frozen=True)
class Allowed:
    """What a protocol setting accepts: a type, and a lower bound (numbers are also finite) or a set of choices;
    a list's elements each accept `element` (with `length` of them, increasing, when given)."""

    kind: type
    low: float | None = None
    low_open: bool = False                  # True: (low, inf) instead of [low, inf)
    choices: tuple[str, ...] = ()
    optional: bool = False                  # None is accepted too
    element: Allowed | None = None
    length: int | None = None

    def describe(self) -> str:
        """E.g. 'an integer >= 1', 'a finite number > 0', 'one of shift, affine'."""
        if self.optional:
            return f"null or {replace(self, optional=False).describe()}"
        if self.element is not None:
            count = f"{self.length} increasing" if self.length else "a list of"
            return f"{count} values, each {self.element.describe()}"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        noun = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
                dict: "a mapping"}[self.kind]
        return noun if self.low is None else f"{noun} {'>' if self.low_open else '>='} {self.low:g}"

    def coerce(self, value: Any) -> Any:
        """The value as this setting's type (an integer or a string like '1e-4' where a float is expected);
        raises ValueError when it is of the wrong type or out of range."""
        if value is None and self.optional:
            return None
        if self.element is not None:
            return self._coerce_list(value)
        if self.kind is float and isinstance(value, str):
            value = float(value)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and {"on", "off"} <= set(self.choices):     # YAML 1.1 reads on/off as booleans
            value = "on" if value else "off"
        if not isinstance(value, self.kind) or (self.kind is not bool and isinstance(value, bool)):
            raise ValueError("wrong type")
        if self.choices and value not in self.choices:
            raise ValueError("not a choice")
        if self.low is not None and not (math.isfinite(value) and (value > self.low if self.low_open
                                                                   else value >= self.low)):
            raise ValueError("out of range")
        return value

    def _coerce_list(self, value: Any) -> list:
        """A list whose elements each pass `element` (and, with `length`, that many in increasing order)."""
        if not isinstance(value, (list, tuple)):
            raise ValueError("not a list")
        values = [self.element.coerce(v) for v in value]
        if self.length is not None and (len(values) != self.length or values != sorted(set(values))):
            raise ValueError("wrong length or order")
        return values


def _integer(low: int = 1) -> Allowed:
    """An integer setting of at least `low`."""
    return Allowed(int, low)


POSITIVE = Allowed(float, 0.0, low_open=True)
SPLITS = ("train", "val", "test")
# Every protocol setting and what it accepts; checked whenever a Protocol is made (files, presets, --set, API).
ALLOWED: dict[str, Allowed] = {
    "name": Allowed(str), "dataset": Allowed(str, choices=("omniglot", "mini_imagenet", "synthetic")),
    "ways": _integer(2), "shots": _integer(), "queries": _integer(), "in_channels": _integer(),
    "image_size": _integer(16),               # conv4's four 2x2 pools must leave at least 1x1
    "channels": _integer(), "inner_lr": POSITIVE, "inner_steps": _integer(), "meta_lr": POSITIVE,
    "meta_batch": _integer(), "iterations": _integer(), "mc_train": _integer(), "mc_test": _integer(),
    "test_split": Allowed(str, choices=SPLITS), "test_episodes": _integer(), "test_batch": _integer(),
    "checkpoint_every": _integer(), "train_split": Allowed(str, choices=SPLITS),
    "bn_mode": Allowed(str, choices=("shift", "affine")),
    "execution": Allowed(str, choices=("auto", "vectorized", "per_task", "reference")),
    "cuda_graph": Allowed(str, choices=("auto", "on", "off")),
    "test_sample_chunk": _integer(), "first_order": Allowed(bool), "data_options": Allowed(dict),
    "test_queries": Allowed(int, 1, optional=True), "eval_at": Allowed(list, element=_integer()),
    "metasgd_alpha_init": Allowed(str, choices=("constant", "uniform")),
    "metasgd_alpha_range": Allowed(list, element=POSITIVE, length=2),
    "drop_cross_split_duplicates": Allowed(bool),
}


def checked_setting(key: str, value: Any) -> Any:
    """The value of protocol setting `key` as its declared type; one UserError line naming the setting, the
    value and what is allowed otherwise."""
    allowed = ALLOWED[key]
    try:
        return allowed.coerce(value)
    except (ValueError, TypeError):
        raise UserError(f"protocol setting {key}={value!r} is not allowed: {key} must be {allowed.describe()}") \
            from None


@dataclass(frozen=True)
class Protocol:
    """Everything that defines a column of the tables: data, episode shape, backbone width, optimisation.
    Every field is checked against ALLOWED when the protocol is made."""

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

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, checked_setting(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for the result JSON."""
        return dataclasses.asdict(self)


FIELDS = {f.name for f in dataclasses.fields(Protocol)}
# How a cell runs, not what it computes (equal up to floating-point summation order): not part of a cell's identity.
RUNTIME_FIELDS = ("execution", "cuda_graph", "test_batch", "test_sample_chunk", "checkpoint_every")


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
    values.update(overrides or {})
    options = values.get("data_options", {})
    if values.get("dataset") == "synthetic" and isinstance(options, dict):   # after the overrides: their image size
        values["data_options"] = {**preset_cfg.get("synthetic", {}), **options,
                                  "image_shape": [values["in_channels"], values["image_size"], values["image_size"]]}
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise UserError(f"unknown protocol setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(FIELDS))}")
    missing = sorted(f.name for f in dataclasses.fields(Protocol)
                     if f.name not in values and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise UserError(f"protocol '{name}' lacks {', '.join(missing)}; add them to {path}")
    try:
        return Protocol(**values)
    except UserError as err:
        raise UserError(f"{name} (preset {preset}): {err}") from None


def identity(protocol: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape a cell's result: runtime settings dropped, settings at their default left out (so
    a new setting whose default keeps the old behaviour keeps every existing cell key; never change a default)."""
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(Protocol)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return {k: v for k, v in protocol.items()
            if k not in RUNTIME_FIELDS and not (k in defaults and v == defaults[k])}
