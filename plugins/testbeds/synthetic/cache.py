"""On-disk cache of built synthetic worlds (safetensors).

A world costs seconds to build and sweeps rebuild the same worlds, so the
costly tensors (pi_ref and pi_0 parameters, evaluation prompts, reference
outputs) are stored under::

    $HARNESS_CACHE_DIR/worlds/<sha256>.safetensors    (default ~/.cache/pairsel-harness)

keyed by the sha256 of the testbed name, every option value, the world seed,
:data:`FORMAT_VERSION` and the torch version (training results are bitwise
reproducible only within one torch build). Files are written to a temporary
file in the same folder and moved into place with ``os.replace``, so a crash
never leaves half a file. A file that cannot be read or does not hold what is
expected is reported with a warning and rebuilt, never trusted.
``HARNESS_NO_CACHE=1`` disables the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.cache import cache_enabled, cache_root

FORMAT_VERSION = "synthetic-world-1"


def cache_dir() -> Path:
    return cache_root() / "worlds"


def cache_key(name: str, settings: Mapping[str, Any], seed: int) -> str:
    import torch

    payload = {
        "testbed": name,
        "options": {k: settings[k] for k in sorted(settings)},
        "seed": int(seed),
        "format": FORMAT_VERSION,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=repr).encode("utf-8")).hexdigest()


def cache_path(name: str, settings: Mapping[str, Any], seed: int) -> Path:
    return cache_dir() / f"{cache_key(name, settings, seed)}.safetensors"


def load(path: Path, expected: Mapping[str, tuple[tuple[int, ...], Any]]):
    """The tensors and metadata stored at ``path``, or None (with a warning) if unusable.

    ``expected`` maps every tensor name to its (shape, dtype); anything else,
    a missing name, a wrong shape or dtype, a non-finite float or a different
    format version makes the file unusable. A missing file returns None silently.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
        problem = None
        if metadata.get("format") != FORMAT_VERSION:
            problem = f"format {metadata.get('format')!r}, expected {FORMAT_VERSION!r}"
        elif set(tensors) != set(expected):
            problem = f"tensors {sorted(set(tensors) ^ set(expected))} missing or unexpected"
        else:
            for key, (shape, dtype) in expected.items():
                tensor = tensors[key]
                if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                    problem = f"tensor {key!r} is {tuple(tensor.shape)} {tensor.dtype}, expected {tuple(shape)} {dtype}"
                    break
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    problem = f"tensor {key!r} holds non-finite values"
                    break
        if problem is None:
            return tensors, metadata
    except Exception as exc:  # corrupt or truncated file: rebuild
        problem = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"ignoring unusable world cache file {path} ({problem}); rebuilding it", RuntimeWarning, stacklevel=3)
    return None


def save(path: Path, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Write atomically (temp file + ``os.replace``); a failure only warns."""
    from safetensors.torch import save_file

    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
        os.close(fd)
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_name, metadata=dict(metadata))
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a cache is shared like any file
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        warnings.warn(f"could not write world cache file {path}: {exc}", RuntimeWarning, stacklevel=3)
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
