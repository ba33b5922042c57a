"""One-line messages on stderr, through the warnings machinery (so tests can catch them): a RepairWarning for a
problem the suite repaired by itself (a corrupt cache, an invalid result file, an unusable checkpoint), a Notice for
something the user should know that changes nothing (duplicate images in a dataset, a flag no cell uses)."""
from __future__ import annotations

import warnings


class RepairWarning(RuntimeWarning):
    """Something was wrong and has been set right (rebuilt, moved aside, restarted); the run goes on."""


class Notice(UserWarning):
    """Something worth knowing about the data or the command line; nothing was wrong and nothing changes."""


def warn(message: str) -> None:
    """Emit a RepairWarning; it prints as a single 'warning: ...' line on stderr."""
    warnings.warn(message, RepairWarning, stacklevel=2)


def note(message: str) -> None:
    """Emit a Notice; it prints as a single 'notice: ...' line on stderr."""
    warnings.warn(message, Notice, stacklevel=2)


_plain_format = warnings.formatwarning


def _format(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, RepairWarning):
        return f"warning: {message}\n"
    if issubclass(category, Notice):
        return f"notice: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


warnings.formatwarning = _format
