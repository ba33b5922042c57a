"""Fetch an official archive over HTTP into place, atomically, accepting it only when its MD5 matches."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.request import urlopen

from bench.util.errors import UserError


def md5sum(path: Path) -> str:
    """The MD5 hex digest of a file."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str) -> Path:
    """Download url to dest (via dest.part, then os.replace) and check its MD5; failures are UserErrors."""
    part = dest.with_name(dest.name + ".part")
    created = not dest.parent.exists()
    try:
        dest.parent.mkdir(exist_ok=True)          # only the dataset's own folder: never a missing data root
        with urlopen(url, timeout=60) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        part.unlink(missing_ok=True)
        if created and not any(dest.parent.iterdir()):
            dest.parent.rmdir()                   # leave no empty folder behind a failed download
        raise UserError(f"{dest} is missing and downloading it from {url} failed ({err}); download it by hand "
                        f"into {dest.parent}") from err
    actual = md5sum(part)
    if actual != md5:
        part.unlink()
        raise UserError(f"the download of {url} has MD5 {actual}, expected {md5}: it is damaged or not the "
                        "official file; try again or download it by hand")
    os.replace(part, dest)
    return dest
