"""Per-iteration checkpoints, so an interrupted run resumes with the numbers it would have had.

After every iteration the loop hands its state to :func:`save`: the policy
(written by the world, as safetensors) and a JSON file with the rows so far,
the ledger and the allocator's history. Random streams need no saving: each
(seed, iteration, stage) derives its own Generator (:mod:`harness.rng`).

Layout under a run directory::

    RUN_DIR/checkpoint-<i>/state.json
    RUN_DIR/checkpoint-<i>/policy.safetensors
    RUN_DIR/LATEST                        # "checkpoint-<i>", replaced atomically

A checkpoint directory is complete before ``LATEST`` points at it, so a crash
at any moment leaves the previous checkpoint usable; older ones are removed.
The policy file's sha256 is stored in the state and checked on load: a
truncated or altered checkpoint is an error naming the file, never a silently
different continuation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import CheckpointError
from harness.interfaces import IterationRecord

FORMAT = 1
POINTER = "LATEST"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(run_dir: Path, world: Any, state: Any) -> Path:
    """Write ``state`` (a :class:`harness.loop.LoopState`) as the run's latest checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{state.iteration}"
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
                {"iteration": r.iteration, "labels": r.labels, "metrics": dict(r.metrics)} for r in state.history
            ],
            "policy_sha256": _sha256(staging / "policy.safetensors"),
            "reference_sha256": (
                _sha256(staging / "reference.safetensors") if state.reference is not None else None
            ),
        }
        (staging / "state.json").write_text(json.dumps(document, allow_nan=True))
        final = run_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_at(run_dir, name)
    for old in run_dir.glob("checkpoint-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


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
    try:
        document = json.loads(state_file.read_text())
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {FORMAT}")
        expected_sha = document["policy_sha256"]
        iteration = int(document["iteration"])
        rows = list(document["rows"])
        charged = {int(k): int(v) for k, v in document["charged"].items()}
        proxy_calls = {int(k): int(v) for k, v in document.get("proxy_calls", {}).items()}
        history = [IterationRecord(h["iteration"], h["labels"], h["metrics"]) for h in document["history"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint state {state_file} is unusable: {type(exc).__name__}: {exc}") from None
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
    )
