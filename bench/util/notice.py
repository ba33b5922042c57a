"""One-line warnings for problems the suite repairs by itself (a corrupt cache, an invalid result file, an
unusable checkpoint): the run goes on, and the user is told once, in one line, what was wrong and what was done."""
from __future__ import annotations

import warnings


class RepairWarning(RuntimeWarning):
    """Something was wrong and has been set right (rebuilt, moved aside, restarted); the run goes on."""


def warn(message: str) -> None:
    """Emit a RepairWarning; it prints as a single 'warning: ...' line on stderr."""
    warnings.warn(message, RepairWarning, stacklevel=2)


_plain_format = warnings.formatwarning


def _format(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, RepairWarning):
        return f"warning: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


warnings.formatwarning = _format
