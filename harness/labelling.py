"""What the loop needs to know about where labels go: a protocol, a pending selection, a stop.

The loop buys labels; keeping them (the leaderboard's ``labels`` table) and
handing pairs to people (``--annotator external``) is the experiment layer's
job (:class:`harness.experiments.labels.LabelDesk`). The loop sees only
:class:`LabelDesk`, the protocol below, so the core never imports the store
or the experiment layer:

* ``record_pairs`` / ``record_scores`` keep every label the run paid for;
* ``request`` hands an iteration's kept pairs out and raises
  :class:`AwaitingLabels` (the run stops, not as a failure);
* ``pending`` returns the :class:`PendingSelection` saved when the run
  stopped, so a resumed run continues from it instead of sampling again;
* ``collect`` returns the imported labels of that selection.

A run without a leaderboard (:func:`harness.loop.run_experiment` called from
Python) gets a :class:`MemoryLabelDesk`: its labels are kept in memory, and
pairs cannot be handed to people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from harness.errors import UsageError
from harness.interfaces import Labels, Pairs, Responses


class AwaitingLabels(Exception):
    """The run stopped at an annotation step for an external annotator (not a failure)."""

    def __init__(self, iteration: int, requested: int, path: Path):
        super().__init__(f"iteration {iteration}: {requested} pairs await labels in {path}")
        self.iteration, self.requested, self.path = iteration, requested, path


@dataclass
class PendingSelection:
    """An iteration's pool and selection, kept while its pairs are out for labelling."""

    prompts: np.ndarray
    responses: Responses
    distinct: np.ndarray
    offered: int
    kept: Pairs
    logp_policy: np.ndarray | None
    logp_ref: np.ndarray | None
    proxy_calls: int = 0  # proxy-judge calls made for this pool (counted again when the run resumes from it)


class LabelDesk(Protocol):
    """Where a run's labels go (see the module docstring); the experiment layer implements it."""

    def record_pairs(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                     pairs: Pairs, labels: Labels, source: str) -> None:
        """Keep one labelled pair per row, with the text it was given for."""

    def record_scores(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                      scores: np.ndarray, source: str) -> None:
        """Keep one pointwise gold score per response scored."""

    def pending(self, iteration: int) -> PendingSelection | None:
        """The selection saved when ``iteration``'s pairs went out for labelling, if any."""

    def collect(self, iteration: int, world: Any, selection: PendingSelection) -> Labels | None:
        """The imported labels of ``selection``'s pairs, or None if they were never requested."""

    def request(self, iteration: int, world: Any, selection: PendingSelection, rng: np.random.Generator) -> None:
        """Hand the kept pairs out and raise :class:`AwaitingLabels`."""


@dataclass
class RecordedLabels:
    """One batch of labels a :class:`MemoryLabelDesk` kept: pairs with their labels, or pointwise scores."""

    iteration: int
    source: str
    pairs: Pairs | None = None
    labels: Labels | None = None
    scores: np.ndarray | None = None


class MemoryLabelDesk:
    """The :class:`LabelDesk` of a run without a leaderboard: labels kept in memory, no external annotation."""

    def __init__(self) -> None:
        self.records: list[RecordedLabels] = []

    def record_pairs(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                     pairs: Pairs, labels: Labels, source: str) -> None:
        self.records.append(RecordedLabels(iteration, source, pairs=pairs, labels=labels))

    def record_scores(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                      scores: np.ndarray, source: str) -> None:
        self.records.append(RecordedLabels(iteration, source, scores=np.asarray(scores)))

    def pending(self, iteration: int) -> PendingSelection | None:
        return None

    def collect(self, iteration: int, world: Any, selection: PendingSelection) -> Labels | None:
        return None

    def request(self, iteration: int, world: Any, selection: PendingSelection, rng: np.random.Generator) -> None:
        raise UsageError("--annotator external needs a leaderboard and a run directory: use harness run")
