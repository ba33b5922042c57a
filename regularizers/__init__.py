"""The regularizers: one file per family, each class registered by @register (bench/core/regularizer.py). Every
module in this folder is imported here, so a new file is selectable by its class's name with no other edit."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from bench.core.regularizer import REGISTRY, Regularizer
from bench.util.errors import UserError

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_regularizer(name: str, hyper: dict[str, Any] | None = None) -> Regularizer:
    """Instantiate a registered regularizer; an unknown name raises UserError listing what exists."""
    if name not in REGISTRY:
        raise UserError(f"unknown regularizer '{name}'; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**(hyper or {}))


__all__ = ["REGISTRY", "build_regularizer"]
