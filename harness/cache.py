"""Where the harness keeps what it can rebuild: ``$HARNESS_CACHE_DIR``, else ``~/.cache/pairsel-harness``.

Testbeds keep built worlds and trained initial policies there (each in a
folder of its own); ``HARNESS_NO_CACHE=1`` switches every cache off. Nothing
in it is ever needed: a missing or damaged entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CACHE_DIR_ENV = "HARNESS_CACHE_DIR"
NO_CACHE_ENV = "HARNESS_NO_CACHE"


def cache_root() -> Path:
    """The harness's cache directory (not created here)."""
    root = os.environ.get(CACHE_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "pairsel-harness")
    return Path(root)


def cache_enabled() -> bool:
    """False when ``HARNESS_NO_CACHE`` is 1, true, yes or on."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """The sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(file_sha256(file).encode("ascii"))
    return digest.hexdigest()
