"""Judgements a paying judge bought, and the cache protocol that keeps them.

A judge that pays per call (an LLM behind an HTTP API) asks each question
once: it looks its questions up in a :class:`JudgementCache` and stores every
answer there the moment it arrives. The judge sees only this protocol; the
experiment layer hands it the run's cache through
:meth:`harness.interfaces.Judge.use_cache` (the leaderboard database's
``judgements`` table, :class:`leaderboard.judgements.JudgementCache`), and a
judge given none keeps its answers in a :class:`MemoryJudgementCache`.

This module uses only the standard library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["VERDICTS", "Judgement", "JudgementCache", "JudgementKey", "MemoryJudgementCache", "digest"]

#: What ``verdict`` may hold: the preferred shown position, or ``invalid``.
VERDICTS = ("A", "B", "invalid")


class JudgementKey(NamedTuple):
    """What identifies one question: same key, same request, same (temperature 0) answer."""

    judge: str
    model: str
    prompt_hash: str
    pair_hash: str
    swapped: int


@dataclass(frozen=True)
class Judgement:
    """One answer: the preferred shown position (``A``/``B``/``invalid``), its text and its cost."""

    key: JudgementKey
    verdict: str
    answer: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}; got {self.verdict!r}")


def digest(*parts: str) -> str:
    """sha256 (64 hex digits) of ``parts``, each length-prefixed so that no two part lists collide."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


@runtime_checkable
class JudgementCache(Protocol):
    """Where a judge keeps the answers it paid for.

    ``get_many`` returns the stored answers of those keys that have one;
    ``put`` stores one answer at once and returns False if its key was
    already stored (the first answer stays).
    """

    def get_many(self, keys: Iterable[JudgementKey]) -> dict[JudgementKey, Judgement]: ...

    def put(self, judgement: Judgement) -> bool: ...


class MemoryJudgementCache:
    """A :class:`JudgementCache` in memory: answers kept for the cache's lifetime only."""

    def __init__(self) -> None:
        self._answers: dict[JudgementKey, Judgement] = {}

    def get_many(self, keys: Iterable[JudgementKey]) -> dict[JudgementKey, Judgement]:
        found = {}
        for key in keys:
            key = JudgementKey(*key)
            if key in self._answers:
                found[key] = self._answers[key]
        return found

    def put(self, judgement: Judgement) -> bool:
        key = JudgementKey(*judgement.key)
        return self._answers.setdefault(key, judgement) is judgement

    def __len__(self) -> int:
        return len(self._answers)
