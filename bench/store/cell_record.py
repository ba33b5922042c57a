"""The JSON a cell leaves in the results folder: a finished result (status "ok") or a recorded failure (status
"failed": kind, stage, reason, iteration). check_record verifies its shape field by field when it is read, so a
damaged file is named and set aside instead of crashing a run or entering a table."""
from __future__ import annotations

import math
from typing import Any

STATUSES = ("ok", "failed")
FAILURE_KINDS = ("non_finite", "error")     # non_finite: the run's own outcome (kept); error: tried again


class InvalidRecord(ValueError):
    """A cell file that parses but does not have the shape of a cell record."""


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise InvalidRecord(problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_percent(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and 0.0 <= value <= 100.0


def _mapping(record: dict, key: str) -> dict:
    value = record.get(key)
    _require(isinstance(value, dict), f"'{key}' must be an object")
    return value


def _strings(record: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        _require(isinstance(record.get(key), str), f"'{where}{key}' must be a string")


def _identity(record: dict) -> None:
    config = _mapping(record, "config")
    _require(isinstance(config.get("protocol"), dict), "'config.protocol' must be an object")
    _require(isinstance(config.get("hyper"), dict), "'config.hyper' must be an object")
    _strings(config, ("learner", "regularizer"), "config.")
    _require(isinstance(record.get("seed"), int) and not isinstance(record["seed"], bool), "'seed' must be an integer")
    places = record.get("places")
    _require(isinstance(places, list), "'places' must be a list")
    for place in places:
        _require(isinstance(place, dict), "every place must be an object")
        _strings(place, ("table", "row", "column"), "places[].")


def _test(record: dict) -> None:
    test = _mapping(record, "test")
    accuracies = test.get("accuracies")
    _require(isinstance(accuracies, list) and len(accuracies) > 0 and all(map(_is_percent, accuracies)),
             "'test.accuracies' must be a non-empty list of percentages")
    _require(test.get("n_episodes") == len(accuracies), "'test.n_episodes' must count 'test.accuracies'")
    _require(_is_percent(test.get("mean")), "'test.mean' must be a percentage")
    _require(abs(test["mean"] - sum(accuracies) / len(accuracies)) < 1e-6, "'test.mean' is not the mean of "
             "'test.accuracies'")
    ci = test.get("ci95")
    _require(_is_number(ci) and math.isfinite(ci) and ci >= 0, "'test.ci95' must be a number >= 0")


def _robustness(record: dict) -> None:
    robustness = record.get("robustness")
    if robustness is None:
        return
    _require(isinstance(robustness, dict), "'robustness' must be an object or null")
    norms = robustness.get("norms")
    if norms is None:                  # written before attacks had norms: one curve (such a result is re-run)
        _curve(robustness, "robustness")
        return
    _require(isinstance(norms, dict), "'robustness.norms' must be an object")
    for norm, curve in norms.items():
        _require(isinstance(curve, dict), f"'robustness.norms.{norm}' must be an object")
        _curve(curve, f"robustness.norms.{norm}")


def _curve(curve: dict, where: str) -> None:
    epsilons = curve.get("epsilons")
    _require(isinstance(epsilons, list) and all(map(_is_number, epsilons)), f"'{where}.epsilons' must be numbers")
    for key in ("mean", "ci95"):
        values = curve.get(key)
        _require(isinstance(values, list) and len(values) == len(epsilons) and
                 all(_is_number(v) and math.isfinite(v) for v in values),
                 f"'{where}.{key}' must be one finite number per epsilon")


def _failure(record: dict) -> None:
    _require(record.get("kind") in FAILURE_KINDS, f"'kind' must be one of {', '.join(FAILURE_KINDS)}")
    _strings(record, ("reason",), "")
    _require(record.get("stage") is None or isinstance(record["stage"], str), "'stage' must be a string or null")
    iteration = record.get("iteration")
    _require(iteration is None or (isinstance(iteration, int) and not isinstance(iteration, bool)),
             "'iteration' must be an integer or null")


def check_record(record: Any, name: str) -> dict:
    """Return the record of cell `name` when it has the shape of a result or a failure; raise InvalidRecord
    naming the first problem otherwise. A record without 'status' (written before failures were recorded)
    is a result."""
    _require(isinstance(record, dict), "not a JSON object")
    _require(record.get("name") == name, f"its 'name' {record.get('name')!r} is not the file's")
    status = record.get("status", "ok")
    _require(status in STATUSES, f"'status' must be one of {', '.join(STATUSES)}")
    _identity(record)
    if status == "ok":
        _test(record)
        _robustness(record)
        _require(isinstance(record.get("training"), dict), "'training' must be an object")
    else:
        _failure(record)
    return record


def is_failure(record: dict) -> bool:
    """Whether a checked record is a recorded failure."""
    return record.get("status") == "failed"
