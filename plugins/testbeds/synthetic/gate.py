"""The mechanism gate of a state-dependent world: is a label worth more when the policy's own state chose it?

Budget schedules can only differ if a label's value depends on the state of the
policy whose samples it labels. The gate measures exactly that, and nothing
about schedules (docs/usage/state-dependent-world.md#the-mechanism-gate gives
the pre-registered protocol and the results):

1. **States.** From pi_0 (the world's initial policy), pi_1 is DPO on
   :data:`STATE_LABELS` labelled random pairs of pi_0's samples, and pi_2 is
   DPO on as many of pi_1's: the states a default run (random pairs, constant
   schedule, 1,000 labels per iteration) passes through. pi_1 is the *early*
   state, pi_2 the *late* one.
2. **Probes.** From each state pi_k, two batches of :data:`PROBE_LABELS`
   labelled pairs on fresh prompts: one of pi_k's own samples (``own``), one of
   pi_0's samples (``pi0``). Each batch trains a copy of pi_k with the same
   trainer seed (DPO against pi_ref, the run's recipe). A batch's value is the
   gold it adds: the mean gold reward of the trained policy's samples on the
   world's evaluation prompts minus pi_k's, both sampled with one seed.
3. **Per seed.** D_k = value(own) − value(pi0) at state k; the *effect* is
   (D_1 + D_2) / 2 and the *interaction* is D_2 − D_1.
4. **Verdict** (:mod:`harness.experiments.mechanism_gate`, the same rule for
   any world). The gate passes when, over the seeds, the paired-t 95 %
   interval of the effect lies above 0 *and* that of the interaction excludes
   0.

A pair only counts if its two responses differ (two identical responses teach
DPO nothing); each batch takes the first :data:`PROBE_LABELS` such prompts of
its own draw, so both batches have the same number of labels. Every random
draw comes from a stream keyed by the world seed and the draw's name, so one
seed's figures are a pure function of (testbed options, trainer options, seed).

Everything here uses only the world interface (``draw_prompts``, ``sample``,
``logprobs``, ``annotate``, ``gold_rewards``) and a trainer, so the same gate
runs on the bigram world, where it must fail, and on the staircase world with
its knob on or off. torch is imported by the world and the trainer only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.interfaces import Pairs, PreferenceData
from harness.rng import stage_key

#: The frozen protocol (written and committed before the gate ran on any seed).
STATE_LABELS = 1000
"""Labels that take pi_0 to pi_1 and pi_1 to pi_2 (a default run's constant schedule: 3,000 over 3)."""
PROBE_LABELS = 500
"""Labels of each probe batch: the size of the shifts between the built-in schedules (1,500/1,000/500)."""
EVAL_SAMPLES = 8
"""Samples per evaluation prompt when a policy's mean gold reward is measured."""

PROTOCOL = {
    "state_labels": STATE_LABELS,
    "probe_labels": PROBE_LABELS,
    "eval_samples": EVAL_SAMPLES,
    "states": "pi_1 (early), pi_2 (late); random pairs of two samples; DPO against pi_ref",
    "value": "mean gold of the trained policy's samples on the evaluation prompts minus the state's",
}


def gate_stream(seed: int, name: str) -> np.random.Generator:
    """The Generator of one of the gate's draws for world seed ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stage_key("gate/" + name)]))


@dataclass
class StateProbe:
    """The two probe batches at one state."""

    state: str  # "early" (pi_1) or "late" (pi_2)
    gold_state: float  # mean gold of pi_k's samples
    value_own: float  # gold added by the batch of pi_k's own samples
    value_pi0: float  # gold added by the batch of pi_0's samples
    labels: int  # labels in each batch
    stairs_own: dict[str, float] = field(default_factory=dict)  # staircase world: stair shares in the batches
    stairs_pi0: dict[str, float] = field(default_factory=dict)

    @property
    def difference(self) -> float:
        return self.value_own - self.value_pi0


@dataclass
class SeedResult:
    """One world seed's figures."""

    seed: int
    world: str
    gold_pi0: float
    early: StateProbe
    late: StateProbe

    @property
    def effect(self) -> float:
        return (self.early.difference + self.late.difference) / 2.0

    @property
    def interaction(self) -> float:
        return self.late.difference - self.early.difference

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "effect": self.effect, "interaction": self.interaction,
                "difference_early": self.early.difference, "difference_late": self.late.difference}


MAX_PROMPT_DRAWS = 20
"""A batch draws at most this many times its first draw of prompts before the gate gives up on a seed."""


def _distinct_pairs(world, policy, prompts: np.ndarray, want: int, rng: np.random.Generator,
                    more: np.random.Generator):
    """Two samples per prompt from ``policy``; the first ``want`` prompts whose two samples differ.

    When fewer than ``want`` of ``prompts`` give two different samples (a policy
    that has nearly collapsed), further prompts as many as the first draw are
    drawn from ``more`` and sampled from ``rng``, up to :data:`MAX_PROMPT_DRAWS`
    draws in all. A seed that never needs them gets exactly the figures it got
    before this rule existed (amendment to attempt 2, docs/usage/state-dependent-world.md).
    """
    kept_prompts, kept_tokens, kept_lengths, found = [], [], [], 0
    block, draws = prompts, 0
    while found < want:
        if draws == MAX_PROMPT_DRAWS:
            raise RuntimeError(f"only {found} of {draws * prompts.shape[0]} prompts gave two different samples; "
                               f"the gate needs {want}")
        if draws:
            block = world.draw_prompts(prompts.shape[0], more)
        responses = world.sample(policy, block, 2, rng)
        rows = np.flatnonzero(responses.distinct_mask()[:, 1])[: want - found]
        kept_prompts.append(block[rows])
        kept_tokens.append(responses.tokens[rows])
        kept_lengths.append(responses.lengths[rows])
        found += rows.size
        draws += 1
    if draws == 1:
        return kept_prompts[0], type(responses)(tokens=kept_tokens[0], lengths=kept_lengths[0])
    width = max(t.shape[2] for t in kept_tokens)
    pad = getattr(world, "pad_id", 0)
    tokens = [np.pad(t, ((0, 0), (0, 0), (0, width - t.shape[2])), constant_values=pad) for t in kept_tokens]
    return (np.concatenate(kept_prompts), type(responses)(tokens=np.concatenate(tokens),
                                                          lengths=np.concatenate(kept_lengths)))


def _labelled_data(world, prompts: np.ndarray, responses, rng: np.random.Generator) -> PreferenceData:
    """Annotator labels of each prompt's pair (0, 1), as DPO data against pi_ref."""
    index = np.arange(prompts.shape[0])
    pairs = Pairs(index, np.zeros_like(index), np.ones_like(index))
    labels = world.annotate(prompts, responses, pairs, rng)
    ref = world.logprobs(world.reference_policy, prompts, responses)
    return PreferenceData.from_labels(prompts=prompts, responses=responses, pairs=pairs,
                                      prefer_a=labels.prefer_a, ref_logps=ref)


def _stair_shares(world, responses) -> dict[str, float]:
    """Staircase world only: shares of responses on each stair and of pairs that differ on each."""
    if not hasattr(world, "stairs"):
        return {}
    m, n, width = responses.tokens.shape
    stairs = world.stairs(responses.tokens.reshape(m * n, width), responses.lengths.reshape(m * n)).reshape(m, n)
    return {
        "lower": float((stairs >= 1).mean()),
        "upper": float((stairs >= 2).mean()),
        "pairs_differ_lower": float(((stairs[:, 0] >= 1) != (stairs[:, 1] >= 1)).mean()),
        "pairs_differ_upper": float(((stairs[:, 0] >= 2) != (stairs[:, 1] >= 2)).mean()),
    }


def mean_gold(world, policy, seed: int, name: str) -> float:
    """Mean gold reward of :data:`EVAL_SAMPLES` samples per evaluation prompt (common random numbers by ``name``)."""
    prompts = world.eval_prompts
    responses = world.sample(policy, prompts, EVAL_SAMPLES, gate_stream(seed, "eval/" + name))
    return float(world.gold_rewards(prompts, responses).mean())


def _train(trainer, world, policy, prompts, responses, seed: int, name: str):
    data = _labelled_data(world, prompts, responses, gate_stream(seed, "annotate/" + name))
    return trainer.train(policy=policy, data=data, rng=gate_stream(seed, "train/" + name)).policy


def _probe(world, trainer, state_policy, seed: int, state: str) -> StateProbe:
    extra = 2 * PROBE_LABELS  # prompts drawn; the first PROBE_LABELS with two different samples are kept
    prompts = world.draw_prompts(extra, gate_stream(seed, f"probe-prompts/{state}"))
    batches = {}
    for source, policy in (("own", state_policy), ("pi0", world.initial_policy)):
        rows, responses = _distinct_pairs(world, policy, prompts, PROBE_LABELS,
                                          gate_stream(seed, f"probe-sample/{state}/{source}"),
                                          gate_stream(seed, f"probe-prompts/{state}/{source}/more"))
        batches[source] = (rows, responses)
    gold_state = mean_gold(world, state_policy, seed, state)
    values = {}
    for source, (rows, responses) in batches.items():
        # The same annotate and train streams for both sources: only the samples differ.
        trained = _train(trainer, world, state_policy, rows, responses, seed, f"probe/{state}")
        values[source] = mean_gold(world, trained, seed, state) - gold_state
    return StateProbe(state=state, gold_state=gold_state, value_own=values["own"], value_pi0=values["pi0"],
                      labels=PROBE_LABELS, stairs_own=_stair_shares(world, batches["own"][1]),
                      stairs_pi0=_stair_shares(world, batches["pi0"][1]))


def run_seed(testbed, trainer, seed: int, *, reporter=None) -> SeedResult:
    """The gate's figures for one world seed (the world is built, or loaded from the world cache)."""
    from harness.progress import NullReporter

    world = testbed.build_world(seed=seed, reporter=reporter or NullReporter())
    policy = world.initial_policy
    states = {}
    for number, state in ((1, "early"), (2, "late")):
        prompts = world.draw_prompts(2 * STATE_LABELS, gate_stream(seed, f"state-prompts/{number}"))
        rows, responses = _distinct_pairs(world, policy, prompts, STATE_LABELS, gate_stream(seed, f"state-sample/{number}"),
                                          gate_stream(seed, f"state-prompts/{number}/more"))
        policy = _train(trainer, world, policy, rows, responses, seed, f"state/{number}")
        states[state] = policy
    name = str(testbed.settings.get("world", "bigram"))
    if name == "staircase" and not testbed.settings.get("state_dependence", True):
        name = "staircase-off"
    return SeedResult(seed=int(seed), world=name, gold_pi0=mean_gold(world, world.initial_policy, seed, "pi0"),
                      early=_probe(world, trainer, states["early"], seed, "early"),
                      late=_probe(world, trainer, states["late"], seed, "late"))
