"""Random streams for common random numbers.

Every (seed, iteration, stage) gets its own Generator, derived from a
``numpy.random.SeedSequence`` keyed by those three numbers, so two runs with the
same seed draw the same prompts and samples in iteration 1 whatever their
strategies did, and no stage's draws shift another's.
"""

from __future__ import annotations

import zlib

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
