"""The cache of on-policy pi_0s: ``<harness cache>/pi0/<key>/`` (see :mod:`harness.cache`).

An on-policy seed round (:func:`plugins.testbeds.hf.seed.bootstrap_initial_policy`)
costs sampling, gold labels and a DPO round, and every strategy compared on
one seed needs the same pi_0; so the trained model is kept, keyed by the
sha256 of everything it depends on (:func:`cache_key`):

* the contents of the model directory (a Hub id's cached snapshot) and of the prompt files (not their paths);
* the annotator judge: its name, class and settings, with the contents of
  any file or directory a setting names;
* every testbed option that shapes sampling or the round (evaluation-only
  options, thread counts and output locations are left out; so are the
  LoRA options while at their defaults, so full fine-tuning keys are as they were);
* the world seed, the seed trainer's name and resolved options, and the
  versions of torch, transformers, trl, datasets and the harness (and peft, with LoRA).

An entry is a ``save_pretrained`` directory (with LoRA: the adapter, in PEFT's layout) plus ``manifest.json`` (the sha256
of every model file, and the round's diagnostics), written to a temporary
folder beside it and moved into place in one rename, manifest last. On load
every file is hashed again: an entry that is incomplete or does not match
its manifest is reported, deleted and rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.cache import cache_enabled, cache_root, content_sha256, file_sha256

FORMAT_VERSION = "hf-pi0-1"
MANIFEST = "manifest.json"

# Testbed options that cannot change pi_0: evaluation, exports, threads, where copies go.
_NOT_IN_KEY = frozenset({
    "eval_prompts", "reference_outputs", "output_column", "eval_limit", "eval_samples", "alpaca_dir",
    "alpaca_generator", "threads", "seed_save_dir", "seed_cache", "allow_download", "eval_split",
})
# Options naming files whose contents (not paths) go into the key.
_FILE_OPTIONS = ("model", "prompts", "seed_prompts")


def cache_dir() -> Path:
    return cache_root() / "pi0"


def _versions(lora: bool = False) -> dict[str, str]:
    """The libraries a pi_0 depends on; peft too when it is a LoRA adapter (full fine-tuning keys stay as they were)."""
    from importlib import metadata

    found = {}
    for name in ("torch", "transformers", "trl", "datasets", "pairsel-harness", *(("peft",) if lora else ())):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def _contents(value: Any, repo_type: str = "model") -> Any:
    """``{"path_sha256": ...}`` for a string naming a local file or directory, or a Hub id in the Hugging Face
    cache (its snapshot's files; a dataset's for ``repo_type="dataset"``); ``value`` itself otherwise."""
    if not isinstance(value, str) or not value:
        return value
    from plugins import _shipped as shipped

    path = Path(shipped.resolve(value)).expanduser()
    if path.exists():
        return {"path_sha256": content_sha256(path)}
    from plugins._hf import hub

    if hub.parse(value) is not None:
        try:
            return {"path_sha256": content_sha256(hub.resolve(value, "seed cache key", repo_type=repo_type).path)}
        except Exception:  # not cached: the value itself (loading it fails elsewhere, with the hf download hint)
            return value
    return value


def judge_identity(judge) -> dict[str, Any]:
    """A judge's name, class and settings, every setting naming a local file or directory (or a cached Hub id)
    replaced by its contents' hash."""
    settings = {}
    for key, value in sorted(dict(getattr(judge, "settings", {}) or {}).items()):
        if key == "allow_download":  # where the files came from does not change them
            continue
        settings[key] = _contents(value)
    return {"name": judge.name, "class": f"{type(judge).__module__}.{type(judge).__qualname__}", "settings": settings}


def cache_key(*, settings: Mapping[str, Any], judge, world_seed: int, trainer: str,
              trainer_settings: Mapping[str, Any]) -> str:
    """The hex sha256 naming the entry of this pi_0 (see the module docstring)."""
    from harness.options import recorded_settings
    from plugins.testbeds.hf import HFTestbed

    settings = recorded_settings(HFTestbed.options, settings)  # options at an omitted default do not change a key
    options = {}
    for key in sorted(settings):
        if key in _NOT_IN_KEY:
            continue
        value = settings[key]
        if key in _FILE_OPTIONS and value:
            value = _contents(str(value), "model" if key == "model" else "dataset")
        options[key] = value
    payload = {
        "format": FORMAT_VERSION,
        "options": options,
        "judge": judge_identity(judge),
        "world_seed": int(world_seed),
        "trainer": {"name": trainer, "settings": dict(sorted(trainer_settings.items()))},
        "versions": _versions(lora=int(settings.get("lora_rank") or 0) > 0),
    }
    blob = json.dumps(payload, sort_keys=True, default=repr).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def entry(key: str) -> Path:
    return cache_dir() / key[:32]


def lookup(key: str) -> tuple[Path | None, dict[str, Any] | None, str]:
    """``(directory, info, state)``: a verified entry (state ``hit``), or ``(None, None, "miss"/"corrupt")``.

    A corrupt entry (no manifest, a missing or changed file) is removed with a warning.
    """
    folder = entry(key)
    if not folder.exists():
        return None, None, "miss"
    problem = None
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("key") != key or manifest.get("format") != FORMAT_VERSION:
            problem = "its manifest is for another key or format"
        else:
            for name, digest in manifest["files"].items():
                file = folder / name
                if not file.is_file():
                    problem = f"{name} is missing"
                    break
                if file_sha256(file) != digest:
                    problem = f"{name} does not match its recorded sha256"
                    break
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"its manifest cannot be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        warnings.warn(f"the cached pi_0 in {folder} is damaged ({problem}); it is deleted and trained again",
                      RuntimeWarning, stacklevel=2)
        shutil.rmtree(folder, ignore_errors=True)
        return None, None, "corrupt"
    return folder, dict(manifest.get("info", {})), "hit"


def store(key: str, policy, info: Mapping[str, Any], *, base_model: str = "pi_ref") -> Path | None:
    """Save ``policy`` (an HFPolicy: the model, or with LoRA its adapter on ``base_model``) as the entry of ``key``
    (atomically); None, with a warning, when the cache is not writable."""
    folder = entry(key)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            policy.save_pretrained(staging, base_model=base_model)
            files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
            manifest = {"format": FORMAT_VERSION, "key": key, "files": files, "info": dict(info)}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str),
                                            encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        warnings.warn(f"pi_0 could not be cached in {folder} ({type(exc).__name__}: {exc}); the next run trains "
                      "it again", RuntimeWarning, stacklevel=2)
        return None
    return folder


__all__ = ["cache_dir", "cache_enabled", "cache_key", "entry", "judge_identity", "lookup", "store"]
