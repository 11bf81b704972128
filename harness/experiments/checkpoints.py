"""Per-iteration checkpoints, so an interrupted run resumes with the numbers it would have had.

After every iteration the loop hands its state to :func:`save`: the policy
(written by the world, as safetensors) and a JSON file with the rows so far,
the ledger and the allocator's history. Random streams need no saving: each
(seed, iteration, stage) derives its own Generator (:mod:`harness.rng`).

Layout under a run directory::

    RUN_DIR/checkpoint-<i>/state.json
    RUN_DIR/checkpoint-<i>/policy.safetensors
    RUN_DIR/LATEST                        # "checkpoint-<i>", replaced atomically

    RUN_DIR/OWNER.json                    # the run this directory belongs to, and its token

A checkpoint directory is complete before ``LATEST`` points at it, so a crash
at any moment leaves the previous checkpoint usable. What happens to the older
ones is the run's ``--keep-checkpoints``: ``last`` (the default) removes them,
``all`` keeps one per iteration (:data:`RETENTIONS`), so that ``harness export
model RUN_ID --iteration K`` can write any iteration's policy.
The policy file's sha256 is stored in the state and checked on load: a
truncated or altered checkpoint is an error naming the file, never a silently
different continuation.

Format 2 also stores, per iteration, the ids of the labels the run had bought
when the checkpoint was written, so that a resume can check that its database
still holds them (a database restored from a backup may not); format 1
checkpoints, which lack them, still load.

Format 3 adds the memory of a stateful selector (selector contract 2), one
``selector-<level>.npz`` per level that keeps one (``instance``, ``corpus``),
with its sha256 in the state; the arrays come back bit for bit. Formats 1
and 2 predate stateful selectors and load with none.
"""

from __future__ import annotations

import hashlib
import json
import os
import numpy as np
import shutil
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from harness.errors import CheckpointError
from harness.interfaces import IterationRecord

FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
POINTER = "LATEST"
OWNER = "OWNER.json"
#: What a run keeps of its checkpoints (``--keep-checkpoints``): the latest only, or every iteration's.
RETENTIONS = ("last", "all")
T = TypeVar("T")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(run_dir: Path, world: Any, state: Any, labels: dict[int, list[str]] | None = None, *,
         keep: str = "last") -> Path:
    """Write ``state`` (a :class:`harness.loop.LoopState`) as the run's latest checkpoint, with the ids of
    the labels bought so far per iteration (``labels``; None when the database could not be read).

    ``keep`` (:data:`RETENTIONS`): ``"last"`` removes every older checkpoint once this one is the latest,
    ``"all"`` leaves them."""
    if keep not in RETENTIONS:
        raise ValueError(f"keep must be one of {RETENTIONS}; got {keep!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    name = checkpoint_dir(run_dir, state.iteration).name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=run_dir))
    try:
        world.save_policy(state.policy, staging / "policy.safetensors")
        if state.reference is not None:  # --reference previous: the policy's own DPO reference
            world.save_policy(state.reference, staging / "reference.safetensors")
        document = {
            "format": FORMAT,
            "iteration": state.iteration,
            "rows": state.rows,
            "charged": {str(k): v for k, v in state.charged.items()},
            "proxy_calls": {str(k): v for k, v in state.proxy_calls.items()},
            "history": [
                {"iteration": r.iteration, "labels": r.labels, "metrics": dict(r.metrics),
                 "observed": dict(r.observed)} for r in state.history
            ],
            "labels": None if labels is None else {str(k): sorted(v) for k, v in labels.items()},
            "policy_sha256": _sha256(staging / "policy.safetensors"),
            "reference_sha256": (
                _sha256(staging / "reference.safetensors") if state.reference is not None else None
            ),
        }
        document["selector_states"] = {}
        for level, arrays in sorted((getattr(state, "selector_states", None) or {}).items()):
            path = staging / selector_state_file(level)
            with open(path, "wb") as handle:  # prefixed: a key such as `file` or `allow_pickle` is np.savez's own
                np.savez(handle, **{STATE_PREFIX + key: value for key, value in arrays.items()})
            document["selector_states"][level] = _sha256(path)
        (staging / "state.json").write_text(json.dumps(document, allow_nan=True))
        final = run_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_at(run_dir, name)
    if keep == "last":
        for old in run_dir.glob("checkpoint-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
    return final


#: What every array name in a selector-state file starts with (the selector's own key follows).
STATE_PREFIX = "state."


def selector_state_file(level: str) -> str:
    """The file name of a stateful selector's memory at ``level`` in a checkpoint directory."""
    return f"selector-{level}.npz"


def _load_selector_state(path: Path, sha: str) -> dict[str, np.ndarray]:
    """A saved selector memory, once its sha256 is the recorded one; CheckpointError otherwise."""
    if not path.exists() or _sha256(path) != sha:
        raise CheckpointError(f"selector state {path} is missing or does not match its recorded sha256; it was "
                              "truncated or altered, so resuming from it would not reproduce the run")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if not all(key.startswith(STATE_PREFIX) for key in arrays.files):
                raise ValueError(f"array names {arrays.files} do not all start with {STATE_PREFIX!r}")
            return {key[len(STATE_PREFIX):]: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"selector state {path} is unusable: {type(exc).__name__}: {exc}") from None


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    """Where iteration ``iteration``'s checkpoint is (or would be) under ``run_dir``."""
    return run_dir / f"checkpoint-{int(iteration)}"


def kept_iterations(run_dir: Path) -> list[int]:
    """The iterations whose complete checkpoint directory is under ``run_dir`` (those with a state.json), sorted."""
    found = []
    for directory in run_dir.glob("checkpoint-*"):
        number = directory.name.rsplit("-", 1)[1]
        if number.isdigit() and (directory / "state.json").is_file():
            found.append(int(number))
    return sorted(found)


def verified_policy(directory: Path) -> tuple[Path, dict[str, Any]]:
    """The policy file of the checkpoint ``directory`` and its state document, once the file's sha256 is the one
    the state recorded; CheckpointError naming the file otherwise (missing, truncated or altered)."""
    state_file, policy_file = directory / "state.json", directory / "policy.safetensors"
    document, expected = _read_state(state_file, lambda document: str(document["policy_sha256"]))
    if not policy_file.exists():
        raise CheckpointError(f"policy checkpoint {policy_file} is missing")
    actual = _sha256(policy_file)
    if actual != expected:
        raise CheckpointError(f"policy checkpoint {policy_file} does not match its recorded sha256 (recorded "
                              f"{expected[:12]}..., file {actual[:12]}...): it was truncated or altered after the "
                              "run wrote it")
    return policy_file, document


def _point_at(run_dir: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".LATEST.", dir=run_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(name + "\n")
    os.replace(tmp, run_dir / POINTER)


def latest(run_dir: Path) -> Path | None:
    """The directory of the run's latest complete checkpoint, or None if it has none."""
    pointer = run_dir / POINTER
    if not pointer.exists():
        return None
    directory = run_dir / pointer.read_text().strip()
    if not directory.is_dir():
        raise CheckpointError(f"{pointer} names {directory.name}, which does not exist")
    return directory


def load(run_dir: Path, world: Any):
    """The :class:`harness.loop.LoopState` of the latest checkpoint under ``run_dir``."""
    from harness.loop import LoopState

    directory = latest(run_dir)
    if directory is None:
        raise CheckpointError(f"no checkpoint under {run_dir}: the run stopped before its first one")
    state_file, policy_file = directory / "state.json", directory / "policy.safetensors"
    document, parsed = _read_state(state_file, lambda document: (
        document["policy_sha256"],
        int(document["iteration"]),
        list(document["rows"]),
        {int(k): int(v) for k, v in document["charged"].items()},
        {int(k): int(v) for k, v in document.get("proxy_calls", {}).items()},
        [IterationRecord(h["iteration"], h["labels"], h["metrics"], h.get("observed", {})) for h in document["history"]],
    ))
    expected_sha, iteration, rows, charged, proxy_calls, history = parsed
    reference_file = directory / "reference.safetensors"
    checks = [(policy_file, expected_sha)]
    if document.get("reference_sha256"):
        checks.append((reference_file, document["reference_sha256"]))
    for path, sha in checks:
        if not path.exists() or _sha256(path) != sha:
            raise CheckpointError(
                f"policy checkpoint {path} is missing or does not match its recorded sha256; "
                "it was truncated or altered, so resuming from it would not reproduce the run"
            )
    if len(rows) != iteration + 1 or [row.get("iteration") for row in rows] != list(range(iteration + 1)):
        raise CheckpointError(f"checkpoint state {state_file} has rows that do not match iteration {iteration}")
    return LoopState(
        iteration=iteration,
        policy=world.load_policy(policy_file),
        rows=rows,
        charged=charged,
        history=history,
        proxy_calls=proxy_calls,
        reference=world.load_policy(reference_file) if document.get("reference_sha256") else None,
        selector_states={str(level): _load_selector_state(directory / selector_state_file(str(level)), str(sha))
                         for level, sha in dict(document.get("selector_states") or {}).items()},
    )


def saved_state(run_dir: Path) -> dict[str, Any]:
    """The latest checkpoint's state document (no policy is loaded): ``format``, ``iteration``,
    ``charged``, ``labels`` (format 2; None otherwise), ...; CheckpointError if unreadable."""
    directory = latest(run_dir)
    if directory is None:
        raise CheckpointError(f"no checkpoint under {run_dir}: the run stopped before its first one")
    def typed(document: dict[str, Any]) -> dict[str, Any]:
        labels = document.get("labels")
        return {**document, "iteration": int(document["iteration"]),
                "charged": {int(k): int(v) for k, v in document["charged"].items()},
                "labels": None if labels is None else {int(k): list(v) for k, v in labels.items()}}

    return _read_state(directory / "state.json", typed)[1]


def _read_state(state_file: Path, parse: Callable[[dict[str, Any]], T]) -> tuple[dict[str, Any], T]:
    """A checkpoint's state document (a readable format) and ``parse`` of it; CheckpointError naming the file
    when it cannot be read, is of an unknown format, or lacks what ``parse`` reads."""
    try:
        document = json.loads(state_file.read_text())
        if document.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {document.get('format')!r}, expected one of {READABLE_FORMATS}")
        return document, parse(document)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint state {state_file} is unusable: {type(exc).__name__}: {exc}") from None


def write_owner(run_dir: Path, run_id: str, token: str) -> None:
    """Mark ``run_dir`` as the directory of ``run_id`` (its run row holds the same ``token``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".OWNER.", dir=run_dir)
    with os.fdopen(fd, "w") as handle:
        json.dump({"run_id": run_id, "token": token}, handle)
    os.replace(tmp, run_dir / OWNER)


def read_owner(run_dir: Path) -> dict[str, str] | None:
    """The ``{"run_id", "token"}`` a run directory was marked with, or None (none, or unreadable)."""
    try:
        data = json.loads((run_dir / OWNER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
