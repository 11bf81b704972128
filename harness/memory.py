"""A run's memory, estimated from its plan before anything is built, and checked against what the machine has.

An iteration holds its whole pool at once: ``prompts`` fresh prompts (from the
budget plan, :func:`harness.budget.plan_pool`), ``N`` responses each, their
tokens while they are sampled, their scores, and the selection arrays. The
testbed says what one prompt and one response of its world cost
(:meth:`harness.interfaces.Testbed.memory_needs`, optional) and what the world
holds beside the pool; the harness adds its own arrays:

* per response: the scores it keeps (log-probs under the policy and pi_ref,
  the implicit reward, its length, explicit scores): :data:`SCORE_BYTES`;
* per prompt: an ``N x N`` margin matrix and its mask (the margin selectors'
  pair table): ``9 * N**2`` bytes.

The estimate is of the largest iteration of the initial plan (an adaptive
allocator may re-plan later; it cannot exceed the budget). It is an estimate:
the interpreter, torch and the models' weights are not in it, and what a
testbed cannot know before loading its models (the hf testbed's model size)
is left out and said so. ``harness run --dry-run`` prints it;
:func:`check_memory` refuses a plan whose estimate exceeds the memory
available, which is ``MemAvailable`` of ``/proc/meminfo`` (the physical
memory where there is no such file) or, when set, ``HARNESS_MEMORY_LIMIT``
(``16GiB``, ``500MB``, a number of bytes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UsageError

#: Bytes of scores the harness keeps per response: eight float64 arrays of shape (M, N).
SCORE_BYTES = 8 * 8
#: The environment variable that caps the memory a plan may use.
LIMIT_VARIABLE = "HARNESS_MEMORY_LIMIT"

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class MemoryNeeds:
    """What a testbed's world costs: held for the whole run, and per pool prompt and response of an iteration.

    ``unknown`` names what the estimate leaves out (e.g. "model weights"), for the message.
    """

    world_bytes: int = 0
    bytes_per_prompt: int = 0
    bytes_per_response: int = 0
    unknown: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimate of one run: the world, the largest pool, and what is left out."""

    world_bytes: int
    pool_bytes: int
    pool_prompts: int
    unknown: str = ""

    @property
    def total_bytes(self) -> int:
        return self.world_bytes + self.pool_bytes

    def describe(self) -> str:
        prompts = f"{self.pool_prompts:,}" if self.pool_prompts < 10**15 else f"{self.pool_prompts:.1e}"
        text = (f"memory estimate {format_bytes(self.total_bytes)} (world {format_bytes(self.world_bytes)}, "
                f"largest pool {format_bytes(self.pool_bytes)} for {prompts} prompts)")
        return text + (f"; not counted: {self.unknown}" if self.unknown else "")


def estimate(needs: MemoryNeeds | None, pool_prompts: Sequence[int], n_responses: int) -> MemoryEstimate:
    """The estimate for pools of ``pool_prompts`` prompts (one per iteration) of ``n_responses`` responses each."""
    needs = needs or MemoryNeeds(unknown="the testbed's own arrays (it gives no estimate)")
    largest = max(pool_prompts, default=0)
    n = int(n_responses)
    per_prompt = needs.bytes_per_prompt + n * (needs.bytes_per_response + SCORE_BYTES) + 9 * n * n
    return MemoryEstimate(world_bytes=int(needs.world_bytes), pool_bytes=largest * per_prompt,
                          pool_prompts=largest, unknown=needs.unknown)


def available_bytes() -> tuple[int, str] | None:
    """The memory a run may use and where that figure comes from; None when it cannot be read."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if text:
        return parse_bytes(text, LIMIT_VARIABLE), LIMIT_VARIABLE
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "the machine's physical memory"
    except (OSError, ValueError, AttributeError):
        return None


def check_memory(found: MemoryEstimate) -> None:
    """UsageError (exit 2) when the estimate exceeds the memory available, naming both and the fixes."""
    available = available_bytes()
    if available is None or found.total_bytes <= available[0]:
        return
    limit, source = available
    if found.world_bytes > found.pool_bytes:
        fix = "lower the testbed options that size its world (`harness list testbeds` shows them)"
    else:
        fix = "lower --budget or --responses, raise --keep, or spread the labels over more --iterations"
    raise UsageError(
        f"this plan needs about {format_bytes(found.total_bytes)} of memory and {format_bytes(limit)} is available "
        f"({source}): {found.describe()}. To fit, {fix}; or set {LIMIT_VARIABLE} (e.g. {LIMIT_VARIABLE}=64GiB) "
        "if the estimate is wrong for your machine"
    )


def parse_bytes(text: str, what: str) -> int:
    """``"16GiB"`` -> 17179869184; UsageError naming ``what`` and the accepted forms otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"{what}={text!r} is not an amount of memory; write e.g. {what}=16GiB, 500MB or a "
                         "number of bytes")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``; beyond a thousand PiB, bytes in scientific notation."""
    if n >= 1000 * 1024**5:
        return f"{n:.1e} bytes"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
