"""Random streams for common random numbers.

Every (seed, iteration, stage) gets its own Generator, derived from a
``numpy.random.SeedSequence`` keyed by those three numbers, so two runs with the
same seed draw the same prompts and samples in iteration 1 whatever their
strategies did, and no stage's draws shift another's.
"""

from __future__ import annotations

import random
import sys
import zlib
from typing import Any

import numpy as np

def stage_key(stage: str) -> int:
    """A stable integer for a stage name (crc32, so new stages never renumber old ones)."""
    return zlib.crc32(stage.encode("utf-8"))


def stream(seed: int, iteration: int, stage: str) -> np.random.Generator:
    """The Generator of ``stage`` in ``iteration`` of a run with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration), stage_key(stage)]))


def torch_seed(rng: np.random.Generator) -> int:
    """A seed for a ``torch.Generator`` drawn from ``rng``."""
    return int(rng.integers(0, 2**62))


def keyed_seed(base: int, key: int) -> int:
    """A torch seed for ``key`` (e.g. a prompt's row) under ``base``: the same whichever other keys are drawn,
    in whatever order, so work split by key between processes draws what one process would."""
    return int(np.random.SeedSequence([int(base), int(key)]).generate_state(1, np.uint64)[0] >> np.uint64(2))


def global_rng_state() -> tuple[Any, Any, Any]:
    """The global ``numpy.random``, ``random`` and torch CPU RNG states (torch's None when it is not imported)."""
    torch = sys.modules.get("torch")
    return (np.random.get_state(), random.getstate(),
            None if torch is None else torch.get_rng_state().clone())


def global_rngs_used(before: tuple[Any, Any, Any]) -> list[str]:
    """The global RNGs whose state moved since ``before`` (:func:`global_rng_state`), by name."""
    np_before, py_before, torch_before = before
    np_after, py_after, torch_after = global_rng_state()
    used = []
    if not (np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
            and tuple(np_before[2:]) == tuple(np_after[2:])):
        used.append("numpy.random")
    if py_before != py_after:
        used.append("random")
    if torch_before is not None and not sys.modules["torch"].equal(torch_before, torch_after):
        used.append("torch")
    return used
