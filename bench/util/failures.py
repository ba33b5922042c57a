"""Outcomes that make a cell's numbers meaningless (a non-finite loss, parameter or logit; a diverged training run):
raised where they are seen, recorded by the runner as a failed cell with the kind, the reason (its evidence), the
stage and the iteration."""
from __future__ import annotations

from bench.util.errors import UserError


class NonFinite(UserError):
    """A NaN or infinite value where a number must be finite; stage is 'train' or 'test'."""

    kind = "non_finite"

    def __init__(self, message: str, stage: str, iteration: int | None = None):
        super().__init__(message)
        self.stage, self.iteration = stage, iteration


class Diverged(NonFinite):
    """Training that ran away: a meta-loss or parameter far beyond anything a learning run reaches."""

    kind = "diverged"
