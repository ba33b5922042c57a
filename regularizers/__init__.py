"""The regularizers: one file per family, each class registered by @register (bench/core/regularizer.py). Every
module in this folder is imported here, so a new file is selectable by its class's name with no other edit; a
researcher's own file elsewhere is loaded with load_regularizer_file (run_all.py --regularizers FILE)."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from bench.core.regularizer import REGISTRY, Regularizer
from bench.util.errors import UserError

FILES_ENV = "META_DROPOUT_REGULARIZERS"   # files loaded in this process, loaded again by the processes it starts
FROM_FILES: dict[str, dict[str, str]] = {}   # regularizer name -> {"path", "sha256"} of the file that defines it

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_regularizer(name: str, hyper: dict[str, Any] | None = None) -> Regularizer:
    """Instantiate a registered regularizer; an unknown name raises UserError listing what exists."""
    if name not in REGISTRY:
        raise UserError(f"unknown regularizer '{name}'; registered: {', '.join(sorted(REGISTRY))} (your own file: "
                        "--regularizers FILE.py)")
    return REGISTRY[name](**(hyper or {}))


def load_regularizer_file(path: str | os.PathLike) -> list[str]:
    """Run a researcher's regularizer file, so that its @register classes are selectable, and return their names.
    The same text is loaded once per process; processes started from this one load it too (FILES_ENV)."""
    file = Path(path).expanduser().resolve()
    if file.suffix != ".py" or not file.is_file():
        raise UserError(f"regularizer file {path} not found: give the path of a .py file whose Regularizer "
                        "subclasses carry @register (docs/regularizers.md)")
    text = file.read_bytes()
    sha256 = hashlib.sha256(text).hexdigest()
    module_name = f"{__name__}.file_{re.sub(r'[^0-9A-Za-z_]', '_', file.stem)}_{sha256[:12]}"
    if module_name not in sys.modules:
        before = set(REGISTRY)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(module_name, loader=None))
        module.__file__ = str(file)
        sys.modules[module_name] = module            # the task processes unpickle its classes by this name
        try:
            exec(compile(text, str(file), "exec"), module.__dict__)       # the text that was hashed
        except TypeError as err:                      # @register's refusals: a name taken, a missing flag
            del sys.modules[module_name]
            raise UserError(f"{file}: {err}") from None
        except BaseException:
            del sys.modules[module_name]
            raise
        added = sorted(set(REGISTRY) - before)
        if not added:
            raise UserError(f"{file} registers no regularizer: decorate a Regularizer subclass with @register")
        FROM_FILES.update({name: {"path": str(file), "sha256": sha256} for name in added})
        loaded = os.environ.get(FILES_ENV, "").split(os.pathsep)
        if str(file) not in loaded:
            os.environ[FILES_ENV] = os.pathsep.join(filter(None, [*loaded, str(file)]))
    return sorted(name for name, source in FROM_FILES.items() if source["sha256"] == sha256)


def use_regularizer_file(source: dict[str, str]) -> None:
    """Make sure the regularizer file a cell names is loaded here with the text its cell was named after."""
    load_regularizer_file(source["path"])
    if not any(loaded == source for loaded in FROM_FILES.values()):
        raise UserError(f"{source['path']} changed since its cells were named; run the command again to name them "
                        "after its new text")


for _path in filter(None, os.environ.get(FILES_ENV, "").split(os.pathsep)):
    load_regularizer_file(_path)


__all__ = ["FROM_FILES", "REGISTRY", "build_regularizer", "load_regularizer_file", "use_regularizer_file"]
