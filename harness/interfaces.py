"""The contracts between the loop and its plugins.

Everything a strategy sees or returns is defined here. Data between steps is
columnar: one numpy array per column, shaped ``(M, N)`` for M prompts with N
responses each, never lists of dicts. Third-party plugins may check
:data:`API_VERSION` and refuse to run against an incompatible host.

Kinds of component, each registered through its own hook (see
:mod:`harness.hookspecs`):

* :class:`Scorer` computes one score column from the log-probs of a batch.
* :class:`Selector` picks one pair per prompt (instance level) and a share of
  those pairs across the pool (corpus level).
* :class:`Allocator` spreads the label budget over the iterations.
* :class:`Trainer` turns pi_{i-1} and annotated pairs into pi_i.
* :class:`Testbed` builds a :class:`World`: models, prompts, annotator, evaluation.

Every component class carries ``name``, a one-line ``description`` and a tuple
of :class:`~harness.options.Option`; it is constructed with a mapping of option
values, validated by the host before the component sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from harness.errors import SelectionError, UsageError
from harness.memory import MemoryNeeds
from harness.options import Option, resolve_options
from harness.regimes import Regime

if TYPE_CHECKING:  # torch is imported only where a model runs
    import torch

API_VERSION = 1
"""Bumped whenever a signature or a data class in this module changes incompatibly."""

ALLOCATOR_CONTRACT = 2
"""The version of the allocator contract.

1. ``Allocator.allocate(total_labels=, iterations=, history=)`` with records
   of ``iteration``, ``labels`` and the evaluator's ``metrics``.
2. Records carry ``observed``, what a user sees without the evaluator
   (:data:`OBSERVED_FIELDS`), and their ``metrics`` arrive empty: the
   evaluator's figures are exact gold in the synthetic world. An allocator may
   declare ``holdout``, a share of each iteration's pairs kept out of training
   to measure the policy's agreement with labels it was not trained on.
"""

SCORER_CONTRACT = 2
"""The version of the scorer contract; it grows compatibly, so :data:`API_VERSION` stays.

1. ``Scorer.score(logp_policy=, logp_ref=, lengths=)``: one column from the
   summed log-probs of pi_{i-1} and of the reference.
2. Stochastic scoring: a scorer with ``stochastic = True`` is also passed
   ``logp_samples``, ``(K, M, N)`` float64 summed log-probs of pi_{i-1} from K
   stochastic forward passes (MC dropout, or the world's declared surrogate),
   which the loop asks of :meth:`World.stochastic_logprobs` only when such a
   scorer is in the run. A selector sets K through ``stochastic_passes``.
   Scorers and selectors written to contract 1 declare neither, are called
   exactly as before, and no stochastic pass is run for them.
"""

SELECTOR_CONTRACT = 3
"""The version of the selector contract; it grows compatibly, so :data:`API_VERSION` stays.

1. ``select_instances(batch, rng)`` and ``select_corpus(batch, pairs, n_keep,
   rng)``, pure functions of their arguments.
2. Features and memory. A selector that names a ``feature_source``
   (:data:`FEATURE_SOURCES`) is handed ``batch.features``, ``(M, N, d)``
   float64, the representation of every response by that policy
   (:meth:`World.features`). A selector with ``stateful = True`` keeps a
   memory across iterations: the loop calls ``observe(feedback, rng)`` once
   per iteration, after the kept pairs are labelled, and saves
   ``state_dict()`` (numpy arrays by name) in every checkpoint, restoring it
   with ``load_state_dict`` on ``--resume``. Selection stays a pure function
   of the batch, the Generator and that state. A selector written to
   contract 1 declares neither and is called exactly as before.
3. Steerable sampling. A selector with ``steers_sampling = True`` says, through
   ``sampling_sources(n_prompts, n_responses, rng)``, which source each of a
   prompt's N responses is drawn from (:data:`SAMPLING_SOURCES`: pi_{i-1},
   pi_ref, or the logit interpolations pi+ and pi-); the loop draws them with
   :meth:`World.steered_sample`, and ``Responses.sources``,
   ``SelectionBatch.sources`` and ``PreferenceData.chosen_sources`` /
   ``rejected_sources`` carry the codes on. A run whose selectors do not
   steer samples exactly as before.
"""

SAMPLING_SOURCES = ("policy", "reference", "plus", "minus")
"""Where a response may be drawn from (selector contract 3), by code (the index in this tuple):

* ``policy``: pi_{i-1}, the run's current policy (every response of a run whose selectors do not steer);
* ``reference``: pi_ref, the world's reference policy (also under ``--reference previous``, where the DPO
  reference moves but pi_ref does not);
* ``plus``: pi+, next-token logits (1 + beta) h_pi - beta h_ref;
* ``minus``: pi-, next-token logits (1 - beta) h_pi + beta h_ref;

h the two models' next-token logits and beta the trainer's DPO beta (PILAF's interpolation).
"""

FEATURE_SOURCES = ("reference", "policy")
"""Whose representation of the responses a selector reads as features: pi_ref's (the same map in every
iteration) or pi_{i-1}'s (the policy that sampled the pool, a different map each iteration)."""

DEFAULT_STOCHASTIC_PASSES = 5
"""K when a stochastic scorer is in the run and neither selector names one (Mehta et al. 2023's K)."""


class Component:
    """Base of every pluggable component: a name, a description and options."""

    kind: ClassVar[str] = "component"
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def __init__(self, settings: Mapping[str, Any] | None = None):
        self.settings: dict[str, Any] = resolve_options(
            self.options, settings, owner=f"{self.kind} {self.name!r}"
        )

    def __repr__(self) -> str:
        changed = {
            o.name: self.settings[o.name] for o in self.options if self.settings[o.name] != o.default
        }
        return f"<{self.kind} {self.name} {changed}>"

    def sources(self) -> dict[str, str | None]:
        """What the options named outside the harness resolved to, for the run's provenance.

        Optional. A component that loads something by a name that can move
        (a Hugging Face Hub id, whose ``main`` gets new commits) returns what
        the name means now, e.g. ``{"model_source": "ORG/NAME",
        "model_revision": "<commit>"}``; the run records it beside the
        component's plugin and version. Nothing may be downloaded or built
        here. The default: nothing to record.
        """
        return {}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Responses:
    """N sampled responses for each of M prompts.

    ``tokens`` is ``(M, N, L)`` int64, padded after the response's end with
    ``pad_id``; the EOS token is part of the response. ``lengths`` is ``(M, N)``
    int64: the number of scored tokens of each response, EOS included.
    ``sources`` (selector contract 3) is ``(M, N)`` int8, the code in
    :data:`SAMPLING_SOURCES` each response was drawn from; None when every
    response is a plain sample of pi_{i-1}.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    sources: np.ndarray | None = None

    @property
    def n_prompts(self) -> int:
        return int(self.tokens.shape[0])

    @classmethod
    def concatenate(cls, parts: Sequence[Responses], pad_id: int) -> Responses:
        """The responses of ``parts`` (prompts split in row order) as one: widths padded to the widest with
        ``pad_id``; ``sources`` kept when every part has them."""
        width = max(int(part.tokens.shape[2]) for part in parts)
        tokens = np.concatenate([np.pad(part.tokens, ((0, 0), (0, 0), (0, width - part.tokens.shape[2])),
                                        constant_values=pad_id) for part in parts], axis=0)
        lengths = np.concatenate([part.lengths for part in parts], axis=0)
        sources = (np.concatenate([part.sources for part in parts], axis=0)
                   if all(part.sources is not None for part in parts) else None)
        return cls(tokens=tokens, lengths=lengths, sources=sources)

    @property
    def n_responses(self) -> int:
        return int(self.tokens.shape[1])

    def distinct_mask(self) -> np.ndarray:
        """``(M, N)`` bool: False where a response repeats an earlier one of its prompt.

        Identical responses give DPO no gradient, so selectors never pair them.
        """
        m, n, length = self.tokens.shape
        # Compare token rows (and lengths) pairwise within each prompt: O(M N^2 L),
        # vectorised; N is small (8 in the paper).
        same = (self.tokens[:, :, None, :] == self.tokens[:, None, :, :]).all(axis=-1)
        same &= self.lengths[:, :, None] == self.lengths[:, None, :]
        earlier = np.tril(np.ones((n, n), dtype=bool), k=-1)  # [j, k] with k < j
        return ~(same & earlier[None]).any(axis=2)


@dataclass(frozen=True)
class Pairs:
    """Pairs of responses: ``(prompt[k], a[k], b[k])`` indexes responses ``[prompt, a]`` and ``[prompt, b]``.

    All three are int64 arrays of the same length; ``a`` and ``b`` index the N
    responses of the prompt (0 <= a, b < N, a != b).
    """

    prompt: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __post_init__(self) -> None:
        for name in ("prompt", "a", "b"):
            given = np.asarray(getattr(self, name))
            # a fractional index would be truncated without a word (1.7 -> 1), a bool one read as 0 or 1
            if given.size and (given.dtype.kind not in "iuf" or (given.dtype.kind == "f" and not (
                    np.isfinite(given).all() and np.array_equal(given, np.round(given))))):
                raise TypeError(f"Pairs.{name} must hold whole-number indices, got {given.dtype} values such as "
                                f"{given.reshape(-1)[:3].tolist()}; build them as integers (np.argsort, "
                                "np.arange, rng.integers)")
            object.__setattr__(self, name, given.astype(np.int64, copy=False).reshape(-1))

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    def take(self, index: np.ndarray) -> Pairs:
        """The pairs at positions ``index`` (an int array or a bool mask)."""
        return Pairs(self.prompt[index], self.a[index], self.b[index])

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))


@dataclass(frozen=True)
class ExactGold:
    """The world's exact gold reward of one pool: what a selector that declares ``needs_exact_gold`` is handed.

    No deployable strategy has this (no annotation budget buys the exact gold
    reward of every sampled response), so a selector that reads it is a
    *reference point*, not a strategy (:func:`harness.reference_point.is_deployable`
    is False for it, and every listing marks it). It costs no label: the loop
    reads it from :meth:`World.gold_rewards` and never charges the ledger; the
    pairs such a selector keeps are still labelled by the run's annotator at one
    label each, like any other selector's, so comparisons stay at equal labels.

    * ``rewards``: ``(M, N)`` float64, the exact gold reward of every response
      of the pool (no annotator noise);
    * ``prompts``: ``(M, P)`` int64, the pool's prompts;
    * ``policy``: pi_{i-1}, the :class:`Policy` the pool was sampled from, for
      first-order criteria (gradients of log pi). Read it only: never train or
      modify it (work on ``policy.clone()``), and leave its parameters' ``.grad``
      as they were.

    The loop builds it only when a run's selector declares ``needs_exact_gold``
    and puts it only on that selector's batch (:func:`batch_for`); the other
    level's selector, the allocator's history and the recorded rows never see it.
    """

    rewards: np.ndarray
    prompts: np.ndarray
    policy: Any


@dataclass(frozen=True)
class SelectionBatch:
    """What a selector sees of one iteration's pool.

    ``scores`` holds exactly the ``(M, N)`` float64 columns the selector (and
    the other level's selector) declared in ``requires``; ``tokens`` is set only
    for a selector with ``needs_tokens = True``. ``beta`` is the trainer's DPO
    beta, for selectors that reason in units of the DPO loss. ``exact_gold``
    (:class:`ExactGold`) is set only on the batch of a selector with
    ``needs_exact_gold = True``; read it with :meth:`gold`. ``features``
    (selector contract 2) is ``(M, N, d)`` float64, set only on the batch of a
    selector that names a ``feature_source``: that policy's representation of
    every response (:meth:`World.features`). ``sources`` (selector contract 3)
    is the pool's ``(M, N)`` int8 :data:`SAMPLING_SOURCES` codes when a
    selector steered the sampling, else None.
    """

    lengths: np.ndarray
    distinct: np.ndarray
    scores: Mapping[str, np.ndarray]
    beta: float = 1.0
    tokens: np.ndarray | None = None
    exact_gold: ExactGold | None = None
    features: np.ndarray | None = None
    sources: np.ndarray | None = None

    @property
    def n_prompts(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def n_responses(self) -> int:
        return int(self.lengths.shape[1])

    def score(self, column: str) -> np.ndarray:
        """The score column ``column``; a clear error if the selector did not declare it."""
        try:
            return self.scores[column]
        except KeyError:
            raise KeyError(
                f"score column {column!r} was not computed; add it to the selector's `requires` "
                f"(computed: {sorted(self.scores)})"
            ) from None

    def gold(self) -> ExactGold:
        """The pool's exact gold (:class:`ExactGold`); SelectionError when this batch carries none.

        Only a selector that declares ``needs_exact_gold = True`` is handed it;
        any other selector that asks gets the error, and so does a declaring
        selector called on a batch built without it.
        """
        if self.exact_gold is None:
            raise SelectionError(
                "this selection batch carries no exact gold: only a selector that declares "
                "`needs_exact_gold = True` is handed it (a reference point, not a deployable strategy), "
                "and only on a testbed whose worlds give it (World.gold_rewards)"
            )
        return self.exact_gold

    def without_gold(self) -> SelectionBatch:
        """This batch with no exact gold on it (itself when it carries none)."""
        return self if self.exact_gold is None else replace(self, exact_gold=None)

    def feature_array(self) -> np.ndarray:
        """``(M, N, d)`` features of every response; SelectionError when this batch carries none."""
        if self.features is None:
            raise SelectionError(
                "this selection batch carries no features: only a selector that names a `feature_source` "
                f"(one of {FEATURE_SOURCES}) is handed them, on a testbed whose worlds give them (World.features)"
            )
        return self.features


@dataclass(frozen=True)
class Feedback:
    """What a stateful selector (selector contract 2) learns from one iteration, handed to ``observe``.

    ``kept`` are the pairs the annotator labelled this iteration (every one
    that was charged, the allocator's held-out pairs included), indexing the
    pool; ``prefer_a`` and ``tie`` are their labels (a tie's ``prefer_a``
    means nothing). ``features`` is the selector's own ``(M, N, d)`` feature
    array of the pool (None when it names no ``feature_source``) and
    ``iteration`` the iteration's number.
    """

    iteration: int
    kept: Pairs
    prefer_a: np.ndarray
    tie: np.ndarray
    features: np.ndarray | None = None


@dataclass(frozen=True)
class PreferenceData:
    """Annotated pairs, ready for DPO: chosen and rejected responses of each prompt.

    ``prompts`` is ``(K, P)`` int64; ``chosen``/``rejected`` are ``(K, L)``
    int64 padded responses with ``(K,)`` lengths (EOS included). The reference
    log-probs were computed once at scoring time (sum over response tokens, EOS
    included), so a trainer never needs a second reference pass.
    ``chosen_sources``/``rejected_sources`` (``(K,)`` int8, selector contract
    3) say where each response was sampled from (:data:`SAMPLING_SOURCES`),
    when a selector steered the sampling; None otherwise.
    """

    prompts: np.ndarray
    chosen: np.ndarray
    chosen_lengths: np.ndarray
    rejected: np.ndarray
    rejected_lengths: np.ndarray
    ref_chosen_logps: np.ndarray
    ref_rejected_logps: np.ndarray
    chosen_sources: np.ndarray | None = None
    rejected_sources: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.prompts.shape[0])

    def take(self, index: np.ndarray | slice) -> PreferenceData:
        """The pairs at ``index`` (positions, a bool mask or a slice), every column alike; unset columns stay unset."""
        return PreferenceData(**{name: None if value is None else np.asarray(value)[index]
                                 for name, value in vars(self).items()})

    @classmethod
    def from_labels(
        cls,
        *,
        prompts: np.ndarray,
        responses: Responses,
        pairs: Pairs,
        prefer_a: np.ndarray,
        ref_logps: np.ndarray,
    ) -> PreferenceData:
        """Chosen and rejected response of every labelled pair.

        ``prompts`` ``(M, P)`` and ``responses`` are the whole pool, ``pairs``
        index into it, ``prefer_a[k]`` says whether ``a`` won pair ``k`` and
        ``ref_logps`` ``(M, N)`` holds the reference log-probs of (at least)
        the paired responses.
        """
        chosen, rejected = winners_and_losers(pairs, prefer_a)
        p = pairs.prompt
        sources = responses.sources
        return cls(
            prompts=prompts[p],
            chosen=responses.tokens[p, chosen],
            chosen_lengths=responses.lengths[p, chosen],
            rejected=responses.tokens[p, rejected],
            rejected_lengths=responses.lengths[p, rejected],
            ref_chosen_logps=ref_logps[p, chosen],
            ref_rejected_logps=ref_logps[p, rejected],
            chosen_sources=None if sources is None else sources[p, chosen],
            rejected_sources=None if sources is None else sources[p, rejected],
        )


def winners_and_losers(pairs: Pairs, prefer_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Response indices of the labelled winner and loser of each pair."""
    prefer_a = np.asarray(prefer_a, dtype=bool)
    return np.where(prefer_a, pairs.a, pairs.b), np.where(prefer_a, pairs.b, pairs.a)


@dataclass(frozen=True)
class Labels:
    """The annotator's verdict on each pair: ``prefer_a[k]`` is True when ``a`` won.

    ``tie`` (optional) is True where the annotator saw no difference; a tie
    is paid for like any label but is dropped from DPO (``prefer_a`` is
    ignored there). ``gold_agrees`` (optional) says, for each label, whether
    it agrees with the world's exact gold ordering; a testbed with a known
    gold reward sets it so the loop can report the share of label noise.
    """

    prefer_a: np.ndarray
    gold_agrees: np.ndarray | None = None
    tie: np.ndarray | None = None

    def tie_mask(self) -> np.ndarray:
        """``tie`` as a bool array (all False when the annotator never ties)."""
        if self.tie is None:
            return np.zeros(len(self.prefer_a), dtype=bool)
        return np.asarray(self.tie, dtype=bool)


@dataclass(frozen=True)
class IterationRecord:
    """What an allocator may read about a finished iteration (allocator contract 2).

    ``observed`` holds what a user running the loop sees without asking the
    evaluator (:data:`OBSERVED_FIELDS`). ``metrics`` holds the evaluator's
    figures; the loop keeps them in the run's own history (checkpoints), but
    the history handed to :meth:`Allocator.allocate` carries them empty: in
    the synthetic world they are exact gold, and a budget decided on them
    would spend information no user has bought.
    """

    iteration: int
    labels: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    observed: Mapping[str, float] = field(default_factory=dict)

    def for_allocator(self) -> IterationRecord:
        """This record as an allocator receives it: ``observed`` and the count, no evaluator metrics."""
        return IterationRecord(self.iteration, self.labels, {}, dict(self.observed))


OBSERVED_FIELDS: dict[str, str] = {
    "labels": "gold labels charged in the iteration",
    "ties": "labels that came back as ties (paid for, not trained on)",
    "sel_pairs": "pairs trained on",
    "train_steps": "optimiser steps of the trainer",
    "loss_first": "the trainer's loss at its first step (on labels pi_{i-1} has not been trained on)",
    "loss_last": "the trainer's loss at its last step",
    "sel_ranking_accuracy": "share of the pairs trained on whose label pi_{i-1}'s implicit reward already agreed with",
    "holdout_pairs": "bought pairs kept out of training to measure agreement (allocator holdout)",
    "holdout_agreement_before": "share of the held-out pairs whose label pi_{i-1}'s implicit reward agrees with",
    "holdout_agreement_after": "the same share for pi_i, trained without them",
}
"""The row fields an allocator is handed as ``IterationRecord.observed``, and what each is.

Every one is something a user of the loop has without the evaluator: label
counts, the trainer's losses and the policy's agreement with labels it bought.
The label noise of the selected pairs (``sel_label_noise``) is absent: it
compares the annotator with the world's exact gold.
"""


@dataclass(frozen=True)
class TrainResult:
    """A trained policy and what the training did."""

    policy: Any
    steps: int
    epochs: float
    loss_first: float
    loss_last: float
    log: Mapping[str, float] = field(default_factory=dict)
    """A summary of the trainer's per-step log, recorded on the iteration row as ``train_<key>``.

    Optional (trainers written before it existed return none). The built-in
    trainers report ``lr_first`` and ``lr_max`` (the learning rate of the
    first optimiser step and the largest one: an iteration whose first step
    ran at learning rate 0 lost it), and the trl trainer adds TRL's
    per-step figures (reward margins and accuracies, gradient norms) as
    ``<name>_first``/``<name>_last``.
    """


# --------------------------------------------------------------------- protocols


@runtime_checkable
class Policy(Protocol):
    """A language model the loop can sample from, score and train.

    Policies are owned by their testbed; the loop treats them as opaque and a
    trainer uses only this protocol.
    """

    def clone(self) -> Policy:
        """An independent copy (parameters copied, not shared)."""

    def parameters(self):
        """The torch parameters a trainer optimises."""

    def sequence_logprobs(
        self, prompts: torch.Tensor, responses: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """Sum of log pi(y_t | x, y_<t) over each response's tokens, EOS included.

        ``prompts`` ``(B, P)``, ``responses`` ``(B, L)``, ``lengths`` ``(B,)``;
        returns ``(B,)``, differentiable when grad is enabled. Tokens whose
        probability sampling fixed (a forced EOS) contribute 0 and banned tokens
        are renormalised away, exactly as in sampling.
        """


class Reporter(Protocol):
    """Progress sink the loop and testbeds report to (rich in the CLI, silent in tests)."""

    def stage(self, description: str, total: int | None = None):
        """Context manager for one stage; yields ``advance(n=1)``."""


class World(Protocol):
    """One testbed instance: fixed models, prompt source, annotator and evaluator.

    A world is a pure function of its testbed options and its world seed.
    """

    reference_policy: Policy
    initial_policy: Policy

    def draw_prompts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` fresh training prompts, ``(n, P)`` int64."""

    def sample(
        self, policy: Policy, prompts: np.ndarray, n_responses: int, rng: np.random.Generator
    ) -> Responses:
        """``n_responses`` samples per prompt from ``policy``."""

    def logprobs(self, policy: Policy, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N)`` float64 sum of response-token log-probs under ``policy`` (no grad)."""

    def annotate(
        self, prompts: np.ndarray, responses: Responses, pairs: Pairs, rng: np.random.Generator
    ) -> Labels:
        """The gold annotator's preference on each pair. Each call costs one label per pair."""

    def evaluate(self, policy: Policy, rng: np.random.Generator) -> dict[str, float]:
        """Metrics of ``policy``: at least ``win_rate``, ``win_rate_se``, ``gold_reward``, ``kl``."""

    def save_policy(self, policy: Policy, path: Path) -> None:
        """Write ``policy`` to ``path`` (one file) so ``load_policy`` restores it exactly."""

    def load_policy(self, path: Path) -> Policy:
        """The policy saved at ``path``; raise harness.errors.CheckpointError if unusable.

        Used by ``harness run --resume``; a world without these two methods
        runs normally but cannot be resumed.
        """

    def texts(self, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[list[str]]]:
        """Human-readable text of ``prompts`` and of every response: ``(M,)`` and ``(M, N)`` lists.

        What an external annotator or an LLM judge reads, and what the labels
        table and ``harness export preferences`` store.
        """

    def stochastic_logprobs(
        self, policy: Policy, prompts: np.ndarray, responses: Responses, passes: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``(passes, M, N)`` float64 summed response log-probs under ``policy`` from stochastic passes (no grad).

        Optional (scorer contract 2): what a stochastic scorer reads. Each
        pass is one forward of ``policy`` with fresh noise drawn from ``rng``
        (MC dropout where the model has dropout; a world whose model has none
        documents the surrogate it uses). Deterministic for equal Generator
        seeds; leaves ``policy``, its mode and every global RNG as they were,
        so :meth:`logprobs` gives the same numbers before and after. Called
        only when a run's scorer asks for it; a world without it cannot run
        such a scorer (UsageError naming the selector).
        """

    def gold_rewards(self, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N)`` float64 exact gold reward of every response (no annotator noise, no label charged).

        Optional: a world with a known gold reward (the synthetic testbed's)
        has it. The loop reads it for label-noise diagnostics and, only for a
        selector that declares ``needs_exact_gold``, as that selector's
        :class:`ExactGold`; its testbed then declares ``exact_gold = True``.
        """

    shards_sampling: bool
    """Optional: True when :meth:`sample` draws each prompt's responses from a stream of its own (derived from
    ``rng`` and the prompt, not from which other prompts share the call), so every response of a prompt is
    the same whichever share of the prompts one call gets. Under a multi-process launch the loop then splits
    the sampling between the processes (:mod:`harness.ranks`); else the main process samples alone. The
    world's padding value is ``pad_id`` (0 when it has none)."""

    def steered_sample(self, policy: Policy, reference: Policy, prompts: np.ndarray, sources: np.ndarray,
                       beta: float, rng: np.random.Generator) -> Responses:
        """Responses ``[m, n]`` each drawn from ``sources[m, n]`` (selector contract 3), with ``sources`` set.

        Optional: what a selector that steers sampling needs. ``sources`` is
        ``(M, N)`` int8 codes into :data:`SAMPLING_SOURCES`; ``policy`` is
        pi_{i-1}, ``reference`` pi_ref, and ``beta`` weighs the
        interpolations pi+ and pi-. Sampling settings as in :meth:`sample`;
        deterministic for equal Generator seeds; the policies left as they
        were.
        """

    def features(self, policy: Policy, prompts: np.ndarray, responses: Responses) -> np.ndarray:
        """``(M, N, d)`` float64: ``policy``'s representation of every response (no grad).

        Optional (selector contract 2): what a selector with a
        ``feature_source`` reads. The policy's final hidden state after the
        response's last token (EOS included), d its width. Deterministic,
        independent of which other prompts share the call, equal for identical
        responses; leaves the policy as it was.
        """

    def evaluation_pairs(self, policy: Policy, rng: np.random.Generator) -> tuple[np.ndarray, Responses]:
        """Evaluation prompts and ``(E, 2)`` responses: the policy's greedy output, then the reference output.

        Optional: what an evaluator judge (``--evaluator``) compares to report
        a win rate against the reference outputs.
        """

    def close(self) -> None:
        """Release what the world holds outside this process: an inference engine, a server's adapters.

        Optional: the loop calls it once when the run ends, finished or not.
        Models in this process need nothing (they go with the world).
        """

    seed_round: Mapping[str, Any]
    """Optional: how pi_0 was made when the world trained it (keys ``seed_*``), e.g. ``seed_labels``,
    the labels of its seed ledger. Recorded on pi_0's iteration row; never charged to the run's budget."""


# ------------------------------------------------------------------- components


class Scorer(Component):
    """Computes one ``(M, N)`` score column; ``name`` is the column's name.

    A *stochastic* scorer (``stochastic = True``, scorer contract 2, see
    :data:`SCORER_CONTRACT`) also reads K stochastic passes of the policy:
    ``score`` is then called with the keyword ``logp_samples``, ``(K, M, N)``
    float64, as well. Scorers that leave ``stochastic`` False are called with
    the three keywords of contract 1 only.
    """

    kind = "scorer"
    stochastic: ClassVar[bool] = False

    def score(
        self, *, logp_policy: np.ndarray, logp_ref: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """The column for every response, from the policy's and the reference's summed log-probs.

        A stochastic scorer's ``score`` takes ``logp_samples`` (keyword) too.
        """
        raise NotImplementedError


EXPLICIT_REWARD = "explicit_reward"
"""The score column filled by a judge's explicit (reward-model) score, not by a scorer."""

EXPLICIT_SOURCES = ("proxy", "gold")


class Selector(Component):
    """Chooses which pairs to annotate, at two levels.

    ``select_instances`` returns at most one pair per prompt (never two
    identical responses); ``select_corpus`` keeps ``n_keep`` of those pairs
    (all of them when fewer are offered). Both are pure functions of their
    arguments and the Generator (and, for a stateful selector, of the state
    its last :meth:`observe` left): no global RNG.

    ``requires`` names the score columns the selector reads (see ``harness
    list scorers``); the loop computes exactly the columns some selector
    requires. The column ``explicit_reward`` is special: a judge fills it with
    an explicit reward for every response, from the source the selector names
    in ``explicit_source``:

    * ``"proxy"``: the run's proxy judge (a cheap reward model). Its calls are
      counted and reported, never charged to the label budget; kept pairs are
      then labelled by the gold annotator at one label each.
    * ``"gold"``: the run's gold judge, pointwise. Every response scored costs
      one gold label (N per prompt, before selection), and kept pairs are
      labelled by those scores (chosen = higher), at no further cost.

    The allocator's pool size follows from these costs (``harness.budget``).

    ``stochastic_passes`` (scorer contract 2) is the number K of stochastic
    log-prob passes the selector wants behind the stochastic columns it
    requires (0: no preference; the run then uses the largest K either
    selector names, or :data:`DEFAULT_STOCHASTIC_PASSES`). A selector with
    an option for it exposes it as a property. Stochastic passes are model
    compute, timed with the log-probs: they never cost a label.

    ``needs_exact_gold`` (default False) asks for the world's exact gold
    reward of the pool, with the policy the pool was sampled from, as
    ``batch.gold()`` (:class:`ExactGold`). It is information no deployable
    strategy has, so a selector that declares it is a *reference point*: it
    is marked "not a deployable strategy" wherever strategies are listed
    (:mod:`harness.reference_point`), and the run records ``deployable:
    false``. It costs no label (the ledger never sees it); the pairs the
    selector keeps are labelled by the annotator at one label each, as any
    other selector's. Only a declaring selector's batch carries it: the loop
    refuses (SelectionError) to hand it to any other, and a testbed must
    declare ``exact_gold = True`` for such a selector to run on it
    (UsageError at validation, ``harness run --dry-run`` included).

    ``feature_source`` (selector contract 2; default None) asks for
    ``batch.features``, ``(M, N, d)``: ``"reference"`` for pi_ref's
    representation of every response (the same feature map in every
    iteration), ``"policy"`` for pi_{i-1}'s. Features are model compute,
    timed with the log-probs: they never cost a label. A testbed whose worlds
    have no :meth:`World.features` cannot run such a selector (UsageError).

    ``stateful = True`` (selector contract 2) gives the selector a memory
    across iterations. Once per iteration, after the kept pairs are labelled,
    the loop calls :meth:`observe` with a :class:`Feedback` and a Generator of
    the iteration's own ``observe`` stream; that is the only call that may
    change the state. :meth:`state_dict` returns the state as numpy arrays
    by name; the loop saves it in every checkpoint and hands it back to
    :meth:`load_state_dict` on ``--resume``, so a resumed run continues with
    the numbers of an uninterrupted one. The two selection methods stay pure
    functions of their arguments and the state. Each level has its own
    instance, so a selector used at both levels observes the same feedback
    twice, once in each instance.

    ``steers_sampling = True`` (selector contract 3) lets the selector decide
    where each response is sampled from: :meth:`sampling_sources` returns
    ``(M, N)`` int8 codes into :data:`SAMPLING_SOURCES`, drawn from the
    Generator of the iteration's ``sources`` stream, and the loop samples each
    response from its source (:meth:`World.steered_sample`); ``batch.sources``
    carries the codes. ``samples_from`` names every source its plans may
    use, so that a trainer that reads, say, pi_ref's responses is refused
    before a run whose selector never samples them. Only one selector of a run may steer (the instance
    level's, or the corpus level's when the instance level's does not); two
    different steering selectors are a UsageError. The extra decoding is
    compute, never labels.
    """

    kind = "selector"
    requires: tuple[str, ...] = ()
    needs_tokens: bool = False
    explicit_source: str | None = None
    stochastic_passes: int = 0
    needs_exact_gold: bool = False
    feature_source: str | None = None
    stateful: bool = False
    steers_sampling: bool = False
    samples_from: tuple[str, ...] = ("policy",)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        raise NotImplementedError

    def select_corpus(
        self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator
    ) -> Pairs:
        raise NotImplementedError

    def sampling_sources(self, n_prompts: int, n_responses: int, rng: np.random.Generator) -> np.ndarray:
        """``(M, N)`` int8 :data:`SAMPLING_SOURCES` codes (a selector that steers sampling; default: all pi_{i-1})."""
        return np.zeros((n_prompts, n_responses), dtype=np.int8)

    def observe(self, feedback: Feedback, rng: np.random.Generator) -> None:
        """Learn from an iteration's labelled pairs (a stateful selector; the default remembers nothing)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """The selector's memory as numpy arrays by name (empty for a selector without one)."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the memory :meth:`state_dict` returned; a stateless selector accepts only an empty one."""
        if state:
            raise ValueError(f"selector {self.name!r} keeps no state, but was handed {sorted(state)}")


class Allocator(Component):
    """Spreads a total label budget over the iterations.

    ``allocate`` is called before every iteration with the history of the
    iterations already run, and returns labels for *every* iteration (entries
    for past iterations are ignored); fixed schedules ignore the history,
    adaptive ones may re-plan. The sum never exceeds ``total_labels``.

    Allocator contract 2 (:data:`ALLOCATOR_CONTRACT`): each record of the
    history carries ``observed`` (:data:`OBSERVED_FIELDS`) and no evaluator
    metrics, and an allocator may set ``holdout``.
    """

    kind = "allocator"

    holdout: float = 0.0
    """Share of each iteration's labelled pairs (ties dropped) kept out of training, but the last iteration's.

    The loop measures the agreement of pi_{i-1} and of pi_i with those held-out
    labels (``holdout_agreement_before``/``_after`` in ``observed``). They are
    charged like every label and never trained on: the price of the
    measurement. 0 (the default): every pair is trained on.
    """

    def allocate(
        self, *, total_labels: int, iterations: int, history: Sequence[IterationRecord]
    ) -> list[int]:
        raise NotImplementedError


class Trainer(Component):
    """Trains pi_i from pi_{i-1} on annotated pairs against a fixed reference.

    ``train`` must not modify ``policy``: it trains a clone and returns it.
    ``beta`` is read by the loop for diagnostics (beta times the margin).
    ``needs_sampling_sources`` (selector contract 3; a property when an option
    decides it) names the :data:`SAMPLING_SOURCES` whose responses ``train``
    reads through ``data.chosen_sources`` / ``rejected_sources``: a run whose
    steering selector never samples from one of them (``samples_from``), or
    that has none, is refused before it starts (UsageError).
    """

    kind = "trainer"
    needs_sampling_sources: tuple[str, ...] = ()

    @property
    def beta(self) -> float:
        return float(self.settings.get("beta", 1.0))

    def train(
        self, *, policy: Policy, data: PreferenceData, rng: np.random.Generator
    ) -> TrainResult:
        raise NotImplementedError


class Judge(Component):
    """Scores responses with an explicit reward: a gold annotator or a cheap proxy reward model.

    ``score`` returns one float per response. Judges know the worlds they can
    score (e.g. the synthetic gold needs the synthetic world's gold reward) and
    raise UsageError for others. Whether a call costs gold labels is decided by
    the role the judge plays in a run (``--gold-judge`` or ``--proxy-judge``),
    not by the judge.
    """

    kind = "judge"
    exact: ClassVar[bool] = False
    """True when the score *is* the gold reward: deterministic, free and model-free (a programmatic verifier,
    :mod:`plugins.judges.verifier`). A testbed without a gold reward of its own may then take the judge as
    one (the hf testbed's ``gold_reward`` and label-noise diagnostics, when it is the run's gold judge)."""

    def score(
        self, *, world: World, prompts: np.ndarray, responses: Responses, rng: np.random.Generator
    ) -> np.ndarray:
        """``(M, N)`` float64 explicit reward of every response."""
        raise NotImplementedError

    def compare(
        self, *, world: World, prompts: np.ndarray, responses: Responses, pairs: Pairs, rng: np.random.Generator
    ) -> Labels:
        """The judge's preference on each pair (as annotator or evaluator): one label per pair.

        The default scores both responses of each pair with :meth:`score`;
        the higher score wins and equal scores are a tie. Pairwise judges
        (an LLM asked "which is better?") override this.
        """
        scores = np.asarray(self.score(world=world, prompts=prompts, responses=responses, rng=rng), dtype=np.float64)
        a = scores[pairs.prompt, pairs.a]
        b = scores[pairs.prompt, pairs.b]
        return Labels(prefer_a=a > b, tie=a == b)

    def use_cache(self, cache: Any) -> None:
        """Receive the run's judgement cache (a :class:`harness.judgements.JudgementCache`).

        Called once before the run; judges that pay per call keep every answer
        there so a re-run or resumed run never pays twice. Default: unused.
        """

    def usage(self) -> dict[str, int]:
        """Counters of what the judge has spent so far (e.g. ``prompt_tokens``); reported per iteration."""
        return {}


class Testbed(Component):
    """Builds a :class:`World` from a world seed.

    ``default_judges`` names the judges a run uses when the user names none:
    ``{"gold": ..., "proxy": ...}``.
    """

    kind = "testbed"
    __test__ = False
    default_judges: ClassVar[dict[str, str]] = {}  # not a pytest test class, though its name starts with "Test"
    exact_gold: ClassVar[bool] = False
    """True when every world it builds has :meth:`World.gold_rewards`, the exact gold reward (the synthetic
    testbed): only then may a run use a selector that declares ``needs_exact_gold``."""
    gives_features: ClassVar[bool] = False
    """True when every world it builds has :meth:`World.features` (selector contract 2): only then may a run
    use a selector that names a ``feature_source``."""
    sampling_sources: tuple[str, ...] = ("policy",)
    """The :data:`SAMPLING_SOURCES` its worlds can draw from with these settings (selector contract 3; a
    property when an option decides it); a steering selector whose ``samples_from`` needs another is refused
    before the run."""

    def build_world(self, *, seed: int, reporter: Reporter) -> World:
        """The world of ``seed``.

        The contract has grown by optional keywords, each passed only to a
        ``build_world`` that declares it, so a testbed written against an
        earlier contract is called exactly as before:

        - ``annotator`` (contract 2): the run's annotator judge (None when the
          testbed annotates itself), for world building that needs labels
          (the hf testbed's on-policy seed round for pi_0);
        - ``trainers`` (contract 3): a :data:`TrainerFactory` over the run's
          registry, for world building that trains (pi_0 of the synthetic
          testbed, the hf seed round): ``trainers("native", {"lr": 1e-3})``.
          A testbed obtains trainers this way, never by importing a
          trainer plugin. Called directly, without it, a testbed may use
          :func:`harness.plugins.default_trainers`;
        - ``gold`` (contract 4): the run's gold judge when it is exact
          (:attr:`Judge.exact`, a programmatic verifier), else None. A world
          without a gold reward of its own may take it as
          :meth:`World.gold_rewards` (the hf testbed does).
        """
        raise NotImplementedError

    @classmethod
    def regimes(cls) -> Mapping[str, Regime]:
        """The testbed's named regimes (``harness run --regime NAME``), by name; none by default.

        A regime is a set of ``-o`` options with a record of how its values
        were chosen (:mod:`harness.regimes`).
        """
        return {}

    def memory_needs(self) -> MemoryNeeds | None:
        """What this testbed's world holds and what each pool prompt and response costs, in bytes.

        Optional: the plan's memory check (:mod:`harness.memory`) adds the
        harness's own arrays, and refuses a plan that would not fit before
        anything is built. Computed from the options alone, without building
        anything. None (the default) leaves the testbed's part out of the
        estimate.
        """
        return None


TrainerFactory = Callable[[str, Mapping[str, Any]], Trainer]
"""``trainers(name, settings)``: a trainer component from the run's registry, its settings validated."""

#: The version of the testbed contract: the optional keywords :meth:`Testbed.build_world` may declare.
TESTBED_CONTRACT = 4

COMPONENT_KINDS: dict[str, type[Component]] = {
    "scorer": Scorer,
    "selector": Selector,
    "allocator": Allocator,
    "trainer": Trainer,
    "testbed": Testbed,
    "judge": Judge,
}


def pair_texts(world: World, prompts: np.ndarray, responses: Responses, pairs: Pairs) -> tuple[list[str], list[str], list[str]]:
    """Prompt, response ``a`` and response ``b`` text of every pair, from ``world.texts``.

    Raise UsageError when the world cannot render text (a text judge or an
    external annotator needs it).
    """
    if not hasattr(world, "texts"):
        raise UsageError(f"{type(world).__name__} cannot render text (no texts() method): "
                         "text judges and external annotators need a testbed that can")
    prompt_texts, response_texts = world.texts(prompts, responses)
    rows = [int(i) for i in pairs.prompt]
    return (
        [prompt_texts[i] for i in rows],
        [response_texts[i][int(j)] for i, j in zip(rows, pairs.a)],
        [response_texts[i][int(j)] for i, j in zip(rows, pairs.b)],
    )


def stochastic_passes(selectors: Sequence[Selector], scorers: Iterable[Scorer]) -> int:
    """K, the stochastic passes a run with these selectors and scorers needs; 0 when no scorer is stochastic.

    The largest ``stochastic_passes`` either selector names, else
    :data:`DEFAULT_STOCHASTIC_PASSES`. A ``stochastic_passes`` attribute is
    read with ``getattr``, so a selector class written before contract 2
    counts as naming none.
    """
    if not any(getattr(scorer, "stochastic", False) for scorer in scorers):
        return 0
    named = [int(getattr(selector, "stochastic_passes", 0) or 0) for selector in selectors]
    passes = max(named, default=0) or DEFAULT_STOCHASTIC_PASSES
    if passes < 2:
        raise UsageError(f"stochastic scoring needs at least 2 passes to estimate a spread; got {passes}")
    return passes


def batch_for(selector: Selector, batch: SelectionBatch,
              features: Mapping[str, np.ndarray] | None = None) -> SelectionBatch:
    """``batch`` as ``selector`` may see it: with its exact gold only when the selector declares
    ``needs_exact_gold``, and with features only when it names a ``feature_source``: those of its source in
    ``features`` (by source) when given, else the batch's own."""
    seen = batch if getattr(selector, "needs_exact_gold", False) else batch.without_gold()
    source = getattr(selector, "feature_source", None)
    if source is None:
        wanted = None
    else:
        wanted = seen.features if features is None else features.get(source)
    return seen if wanted is seen.features else replace(seen, features=wanted)


def check_gold_hand_over(selector: Selector, batch: SelectionBatch, what: str) -> None:
    """SelectionError when ``batch`` carries exact gold and ``selector`` did not declare ``needs_exact_gold``.

    The loop calls it right before handing a batch to a selector: exact gold
    reaches only the selectors that declared they read it (reference points),
    never a strategy that would then be compared as if it were deployable.
    """
    if batch.exact_gold is not None and not getattr(selector, "needs_exact_gold", False):
        raise SelectionError(
            f"{what} {getattr(selector, 'name', type(selector).__name__)!r} would be handed the world's exact "
            "gold reward, but it does not declare `needs_exact_gold = True`; refused (only a reference point "
            "that declares it may read exact gold)"
        )


def check_component_class(kind: str, cls: Any) -> None:
    """Validate a class handed to a `register_*` hook; raise TypeError saying what is wrong."""
    base = COMPONENT_KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"a registered {kind} must be a subclass of harness.interfaces.{base.__name__}")
    if not cls.name or not isinstance(cls.name, str) or not cls.name.replace("_", "").replace("-", "").isalnum():
        raise TypeError(f"{cls.__qualname__}.name must be a non-empty identifier, got {cls.name!r}")
    if not cls.description:
        raise TypeError(f"{kind} {cls.name!r} has no description")
    if kind == "selector" and not isinstance(getattr(cls, "needs_exact_gold", False), (bool, property)):
        raise TypeError(f"selector {cls.name!r}: needs_exact_gold must be True or False, "
                        f"got {cls.needs_exact_gold!r}")
    if kind == "selector" and getattr(cls, "feature_source", None) not in (None, *FEATURE_SOURCES) \
            and not isinstance(cls.feature_source, property):
        raise TypeError(f"selector {cls.name!r}: feature_source must be None or one of {FEATURE_SOURCES}, "
                        f"got {cls.feature_source!r}")
    for option in cls.options:
        if not isinstance(option, Option):
            raise TypeError(f"{kind} {cls.name!r}: options must be harness.options.Option instances")
        option.coerce(option.default, owner=f"{kind} {cls.name!r}")


__all__ = [
    "ALLOCATOR_CONTRACT",
    "API_VERSION",
    "Allocator",
    "DEFAULT_STOCHASTIC_PASSES",
    "SAMPLING_SOURCES",
    "SCORER_CONTRACT",
    "SELECTOR_CONTRACT",
    "Component",
    "EXPLICIT_REWARD",
    "ExactGold",
    "FEATURE_SOURCES",
    "Feedback",
    "IterationRecord",
    "Judge",
    "Labels",
    "OBSERVED_FIELDS",
    "Option",
    "Pairs",
    "Policy",
    "PreferenceData",
    "Reporter",
    "Responses",
    "Scorer",
    "SelectionBatch",
    "Selector",
    "Testbed",
    "TrainResult",
    "Trainer",
    "UsageError",
    "World",
    "batch_for",
    "check_gold_hand_over",
    "pair_texts",
    "stochastic_passes",
]
