"""The JSON a cell leaves in the results folder, as a schema (pydantic): a finished result (status "ok") with its
protocol, test, robustness and learning-curve points, or a recorded failure (status "failed": kind, stage, reason,
iteration). check_record validates a record field by field when it is read, so a damaged file is named (with the
path of its first problem) and set aside instead of crashing a run or entering a table; check_point does the same
for a learning-curve point file."""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)

from bench.store.protocol import Protocol
from bench.util.errors import UserError

FAILURE_KINDS = ("non_finite", "diverged", "error")   # non_finite, diverged: the run's own outcome (kept); error: tried
#                                                       again on the next run


class InvalidRecord(ValueError):
    """A cell file that parses but does not have the shape of a cell record."""


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


Number = Annotated[float, AfterValidator(_finite)]
Percent = Annotated[float, Field(ge=0.0, le=100.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Place(_Model):
    """Where a cell's result is shown: a table, a row, a column."""

    table: StrictStr
    row: StrictStr
    column: StrictStr


class RegularizerFile(_Model):
    """A regularizer loaded from a researcher's own file (--regularizers): where, and the SHA-256 of its text."""

    path: StrictStr
    sha256: StrictStr


class Config(_Model):
    """What the cell ran: its protocol (every setting checked as load_protocol checks it), learner, regularizer."""

    protocol: dict[str, Any]
    learner: StrictStr
    regularizer: StrictStr
    hyper: dict[str, Any]
    regularizer_file: RegularizerFile | None = None

    @field_validator("protocol")
    @classmethod
    def _valid_protocol(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            Protocol(**value)
        except (TypeError, UserError) as err:
            raise ValueError(str(err).splitlines()[0]) from None
        return value


class Scores(_Model):
    """Per-episode accuracies (percent) with their count and mean."""

    accuracies: list[Percent] = Field(min_length=1)
    n_episodes: StrictInt
    mean: Percent

    @model_validator(mode="after")
    def _consistent(self) -> Scores:
        if self.n_episodes != len(self.accuracies):
            raise ValueError("'n_episodes' must count 'accuracies'")
        if abs(self.mean - sum(self.accuracies) / len(self.accuracies)) > 1e-6:
            raise ValueError("'mean' is not the mean of 'accuracies'")
        return self


class Test(Scores):
    """The final meta-test."""

    ci95: Annotated[float, Field(ge=0.0), AfterValidator(_finite)]


class CurvePoint(Scores):
    """A learning-curve point: the meta-test at an iteration."""

    iteration: Annotated[StrictInt, Field(ge=1)]


class Curve(_Model):
    """The accuracy under one attack norm at each size."""

    epsilons: list[Number]
    mean: list[Number]
    ci95: list[Number]

    @model_validator(mode="after")
    def _one_per_epsilon(self) -> Curve:
        if not len(self.mean) == len(self.ci95) == len(self.epsilons):
            raise ValueError("'mean' and 'ci95' must have one number per epsilon")
        return self


class Robustness(_Model):
    """Accuracies under attack: per norm (or, in results written before norms, one curve)."""

    norms: dict[str, Curve] | None = None


class _Record(_Model):
    name: StrictStr
    config: Config
    seed: Annotated[StrictInt, Field(ge=0)]
    places: list[Place]


class Result(_Record):
    """A finished cell."""

    status: Literal["ok"] = "ok"
    test: Test
    robustness: Robustness | Curve | None = None
    training: dict[str, Any]
    test_curve: list[CurvePoint] | None = None

    @model_validator(mode="after")
    def _counts(self) -> Result:
        expected = self.config.protocol["test_episodes"]
        for where, scores in [("test", self.test), *((f"test_curve[{i}]", p)
                                                     for i, p in enumerate(self.test_curve or []))]:
            if scores.n_episodes != expected:
                raise ValueError(f"'{where}' has {scores.n_episodes} episodes, the protocol {expected}")
        return self


class Failure(_Record):
    """A cell that failed, with why."""

    status: Literal["failed"]
    kind: Literal[FAILURE_KINDS]
    reason: StrictStr
    stage: StrictStr | None = None
    iteration: StrictInt | None = None


def _first_problem(err: ValidationError) -> str:
    """The first error as 'where: what' (where as a dotted path, list indices in brackets)."""
    first = err.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    return f"'{where}': {message}" if where else message


def check_record(record: Any, name: str) -> dict:
    """Return the record of cell `name` when it has the shape of a result or a failure; raise InvalidRecord
    naming the first problem otherwise. A record without 'status' (written before failures were recorded)
    is a result."""
    if not isinstance(record, dict):
        raise InvalidRecord("not a JSON object")
    if record.get("name") != name:
        raise InvalidRecord(f"its 'name' {record.get('name')!r} is not the file's")
    status = record.get("status", "ok")
    if status not in ("ok", "failed"):
        raise InvalidRecord("'status' must be one of ok, failed")
    try:
        (Result if status == "ok" else Failure).model_validate(record)
    except ValidationError as err:
        raise InvalidRecord(_first_problem(err)) from None
    return record


def check_point(point: Any, iteration: int, episodes: int) -> dict:
    """Return a learning-curve point file's content when it is the meta-test at `iteration` over `episodes`
    episodes; raise InvalidRecord naming the first problem otherwise."""
    try:
        checked = CurvePoint.model_validate(point)
    except ValidationError as err:
        raise InvalidRecord(_first_problem(err)) from None
    if checked.iteration != iteration or checked.n_episodes != episodes:
        raise InvalidRecord(f"it is the point at iteration {checked.iteration} over {checked.n_episodes} episodes, "
                            f"not at {iteration} over {episodes}")
    return point


def is_failure(record: dict) -> bool:
    """Whether a checked record is a recorded failure."""
    return record.get("status") == "failed"
