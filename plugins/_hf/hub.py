"""Models named by Hugging Face Hub id (``ORG/NAME[@revision]``), found in the local Hugging Face cache.

A model option of the hf testbed or of a judge takes a local directory or a
Hub id. A Hub id is resolved with :func:`huggingface_hub.snapshot_download`
in the standard cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``: the one ``hf download`` fills), with
``local_files_only=True``: nothing is downloaded unless the component's
``allow_download`` option is on. ``@revision`` pins a branch, tag or commit
(a commit may be abbreviated to 7+ hex digits when it is in the cache);
without one, the cache's ``main`` is used. The commit the cache holds for it
is returned and recorded by the caller (``model_revision``).

A Hub id that is neither cached nor allowed to download is a
:class:`~harness.errors.UsageError` that gives the ``hf download`` command.
Datasets named by Hub id (the hf testbed's prompt options) are resolved the
same way with ``repo_type="dataset"``: the ``datasets--ORG--NAME`` snapshot
that ``hf download ORG/NAME --repo-type dataset`` fills.
huggingface_hub is imported only when a Hub id is resolved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "on", "yes", "true"}

#: Files of a model repository the harness never reads: other frameworks' and runtimes' weights.
IGNORE_PATTERNS = ("*.onnx", "*.onnx_data", "onnx/*", "*.tflite", "*.msgpack", "*.h5", "*.ot", "*.gguf",
                   "openvino/*", "coreml/*", "*.mlmodel", "*.mlpackage/*", "runs/*")


@dataclass(frozen=True)
class ModelSource:
    """Where a model option led: the local ``path``, and for a Hub id the repository and the cached commit."""

    path: Path
    repo_id: str | None = None
    revision: str | None = None  # the commit sha of the cached snapshot; None for a local directory
    requested: str | None = None  # the revision asked for after ``@`` (branch, tag or commit), if any

    def provenance(self, prefix: str = "model") -> dict[str, str | None]:
        """``{prefix}_source`` (the Hub id, or the local path) and ``{prefix}_revision`` (the commit, or None)."""
        return {f"{prefix}_source": self.repo_id or str(self.path), f"{prefix}_revision": self.revision}


def parse(value: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision or None)`` when ``value`` reads as ``ORG/NAME[@revision]``, else None."""
    text = str(value).strip()
    if text.startswith((".", "/", "~")) or "\\" in text:
        return None
    name, at, revision = text.rpartition("@")
    if not at:
        name, revision = text, None
    if not HUB_ID.match(name) or (revision is not None and not revision.strip()):
        return None
    return name, revision


def cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub reads it on import)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else (
        Path.home() / ".cache")
    return base / "huggingface" / "hub"


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set: huggingface_hub then never reaches the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def repo_folder(repo_id: str, cache: Path | None = None, repo_type: str = "model") -> Path:
    """The cache folder of a repository: ``models--ORG--NAME``, or ``datasets--ORG--NAME`` for a dataset."""
    return (cache or cache_dir()) / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def _expand_short_commit(repo_id: str, revision: str, cache: Path, repo_type: str = "model") -> str:
    """A full cached commit for an abbreviated one (unique prefix of ``snapshots/``); else ``revision`` unchanged."""
    if not _HEX.match(revision) or _FULL_SHA.match(revision):
        return revision
    folder = repo_folder(repo_id, cache, repo_type)
    snapshots = folder / "snapshots"
    if not snapshots.is_dir() or (folder / "refs" / revision).exists():
        return revision
    found = [p.name for p in snapshots.iterdir() if p.name.startswith(revision)]
    return found[0] if len(found) == 1 else revision


def download_command(repo_id: str, revision: str | None, repo_type: str = "model") -> str:
    return (f"hf download {repo_id}" + (f" --repo-type {repo_type}" if repo_type != "model" else "")
            + (f" --revision {revision}" if revision else ""))


def resolve(value: str, label: str, *, allow_download: bool = False, download_hint: str = "",
            repo_type: str = "model") -> ModelSource:
    """The cached (or, with ``allow_download``, downloaded) snapshot of the Hub id ``value``; UsageError otherwise.

    ``download_hint`` names the option that allows downloading (e.g.
    ``-o testbed.allow_download=true``), for the error message. ``repo_type``
    is ``model`` or ``dataset`` (a dataset repository's snapshot holds its
    data files; every file of it is fetched).
    """
    what = "dataset" if repo_type == "dataset" else "model"
    parsed = parse(value)
    if parsed is None:
        local = "file or directory" if what == "dataset" else "directory"
        raise UsageError(f"{label}: {value!r} is neither a local {local} nor a Hugging Face Hub id ORG/NAME")
    repo_id, revision = parsed
    cache = cache_dir()
    wanted = _expand_short_commit(repo_id, revision, cache, repo_type) if revision else None
    at = f" at revision {revision!r}" if revision else ""
    command = download_command(repo_id, revision, repo_type)
    allow = f", or let the harness download it with {download_hint}" if download_hint else ""
    local = "local file or directory" if what == "dataset" else "local directory"
    not_cached = (f"{label}: {value!r} is no {local}, and the Hugging Face Hub {what} {repo_id!r}{at} is "
                  f"not in the local Hugging Face cache ({cache}); download it once with `{command}`{allow}")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise UsageError(f"{label}: naming a {what} by Hub id needs huggingface_hub: pip install "
                         "'pairsel-harness[hf]'") from None
    if allow_download and offline():
        raise UsageError(f"{label}: {value!r} may be downloaded (allow_download) but HF_HUB_OFFLINE is set, so "
                         f"huggingface_hub will not reach the Hub; unset HF_HUB_OFFLINE or run `{command}` first")
    missing = tuple(getattr(hub_errors, name) for name in ("LocalEntryNotFoundError", "IncompleteSnapshotError",
                                                            "CachedRepoTreeNotFoundError")
                    if hasattr(hub_errors, name))
    not_found = tuple(getattr(hub_errors, name) for name in ("RepositoryNotFoundError", "GatedRepoError",
                                                              "RevisionNotFoundError")
                      if hasattr(hub_errors, name))
    try:
        folder = snapshot_download(repo_id, repo_type=repo_type, revision=wanted, cache_dir=str(cache),
                                   local_files_only=not allow_download,
                                   ignore_patterns=list(IGNORE_PATTERNS) if what == "model" else None)
    except missing as exc:
        if allow_download:
            raise UsageError(f"{label}: cannot download {repo_id!r}{at}: {type(exc).__name__}: {exc}; or fetch "
                             f"it yourself with `{command}`") from None
        raise UsageError(not_cached) from None
    except not_found as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"{label}: the Hugging Face Hub has no {what} {repo_id!r}{at} that can be fetched "
                         f"({type(exc).__name__}{': ' + first if first else ''}); gated repositories need `hf auth login`"
                         ) from None
    except (OSError, ValueError) as exc:  # network failures, a malformed id the regex let through
        raise UsageError(f"{label}: cannot resolve {repo_id!r}{at}: {type(exc).__name__}: {exc}; fetch it "
                         f"with `{command}`") from None
    path = Path(folder)
    return ModelSource(path=path, repo_id=repo_id, revision=path.name if _FULL_SHA.match(path.name) else None,
                       requested=revision)
