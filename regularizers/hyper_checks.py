"""Hyper-parameter checks the base class lacks; each raises one UserError line with the allowed range."""
from __future__ import annotations

from bench.errors import UserError
from bench.hooks import Regularizer


def require_in_range(reg: Regularizer, key: str, low: float, high: float = float("inf"),
                     low_inclusive: bool = True) -> None:
    """Raise UserError unless hyper-parameter `key` is a number in [low, high) (or (low, high))."""
    value = reg.hyper[key]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not (low <= value if low_inclusive else low < value) or not value < high:
        bracket = "[" if low_inclusive else "("
        raise UserError(f"regularizer '{reg.name}': {key} must be a number in {bracket}{low}, {high}), "
                        f"got {value!r}")
