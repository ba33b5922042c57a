"""A read-only file tree that is either a zip archive or a folder: list names, read bytes, fingerprint the source."""
from __future__ import annotations

import hashlib
import os
import zipfile
from functools import cached_property
from pathlib import Path

from bench.util.errors import UserError

_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError)


class FileTree:
    """Files under a zip or a folder, named by posix paths relative to its top; zips are read in place."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None

    @cached_property
    def names(self) -> list[str]:
        """All file names, sorted."""
        if self.path.is_dir():
            return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        return sorted(n for n in self._archive().namelist() if not n.endswith("/") and not n.startswith("__MACOSX/"))

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except _ZIP_ERRORS as err:
                raise UserError(f"{self.path} is not a readable zip archive ({err}): it is truncated or "
                                "foreign; delete it and download it again") from err
        return self._zip

    def read(self, name: str) -> bytes:
        """The bytes of one file."""
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        try:
            return self._archive().read(name)
        except (*_ZIP_ERRORS, KeyError) as err:
            raise UserError(f"cannot read {name} from {self.path} ({err}): the archive is damaged; "
                            "delete it and download it again") from err

    def fingerprint(self) -> str:
        """sha256 over names, sizes and modification times: any change to the source changes it."""
        digest = hashlib.sha256()
        files = [(n, self.path / n) for n in self.names] if self.path.is_dir() else [(self.path.name, self.path)]
        for name, path in files:
            st = os.stat(path)
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

