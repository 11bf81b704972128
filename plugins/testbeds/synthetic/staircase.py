"""The staircase world (``-o testbed.world=staircase``): a label's value depends on the policy's state.

The bigram world's gold reward is a sum of per-token terms, so every policy's
samples carry much the same information about it and a policy that falls
behind catches up. This world keeps that world exactly (the same tables, SFT
model, streams and reward) and adds a compositional term, a staircase over
one three-token motif ``a b c`` of the world:

    gold = bigram gold + LOWER_BONUS * [response contains "a b"]
                       + UPPER_BONUS * [response contains "a b c"]

The motif is chosen so that pi_ref rarely says ``a b`` (the lower stair) and,
having said it, rarely goes on with ``c`` (the upper stair). A pair can only
teach the upper stair if one of its responses contains ``a b c`` and the other
does not; a policy that has not learnt the lower stair almost never samples
such a pair, however many of its pairs are labelled. So labels bought from a
weak policy cannot reveal the upper stair, and labels bought after the policy
has climbed the lower stair can: the value of a label depends on the state the
policy has reached (docs/usage/state-dependent-world.md).

The option ``state_dependence`` switches the mechanism off: with ``false``
the bonus terms are left out and everything else is built the same way (the
motif is still drawn from its own stream, so no other stream moves), which is
exactly the bigram world with the same options. The frozen parameters below
were chosen by the mechanism's own diagnostics (the docs page gives them with
their measured values), never by comparing budget schedules.

The motif of a world: the SFT data process (numpy, from the tables) is sampled
:data:`MOTIF_SAMPLES` times from the ``staircase`` stream of the world seed;
``a b`` is the pair of distinct content tokens whose share of responses
containing it is closest to :data:`LOWER_RATE`, and ``c`` (neither ``a`` nor
``b``) is the token whose bigram probability after ``b``, softmax(T[b]), is
closest to :data:`UPPER_FOLLOW`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from plugins.testbeds.synthetic.process import Tables, gold_rewards, sample_process
from plugins.testbeds.synthetic.world import SyntheticWorld, world_stream

#: The frozen parameters of the staircase world (docs/usage/state-dependent-world.md#frozen-parameters).
LOWER_RATE = 0.03
"""Target share of the SFT process's responses that contain the lower stair ``a b``."""
UPPER_FOLLOW = 0.05
"""Target bigram probability of ``c`` right after ``b`` in the SFT process (the upper stair's rarity)."""
LOWER_BONUS = 1.0
"""Gold added to a response that contains ``a b``."""
UPPER_BONUS = 2.0
"""Gold added on top to a response that contains ``a b c``."""
MOTIF_SAMPLES = 20000
"""SFT-process responses drawn to measure how often each bigram occurs."""

FROZEN = {
    "lower_rate": LOWER_RATE,
    "upper_follow": UPPER_FOLLOW,
    "lower_bonus": LOWER_BONUS,
    "upper_bonus": UPPER_BONUS,
    "motif_samples": MOTIF_SAMPLES,
}


def contains(tokens: np.ndarray, lengths: np.ndarray, motif: tuple[int, ...]) -> np.ndarray:
    """``(B,)`` bool: whether each response's content tokens (before its EOS) contain ``motif`` contiguously."""
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    b, width = tokens.shape
    k = len(motif)
    if b == 0 or width < k:
        return np.zeros(b, dtype=bool)
    content = np.where(np.arange(width)[None, :] < (lengths - 1)[:, None], tokens, -1)
    hit = np.ones((b, width - k + 1), dtype=bool)
    for offset, token in enumerate(motif):
        hit &= content[:, offset : width - k + 1 + offset] == int(token)
    return hit.any(axis=1)


_MOTIFS: dict[tuple, tuple[int, int, int]] = {}  # a build makes the world twice (partial, final): draw once


def choose_motif(tables: Tables, settings: Mapping[str, Any], seed: int) -> tuple[int, int, int]:
    """The world's motif ``(a, b, c)``, from the tables and the ``staircase`` stream only."""
    key = (
        int(seed),
        tuple(float(settings[k]) for k in ("prompt_length", "max_response_length", "eos_logit_base", "eos_logit_slope")),
        hashlib.sha256(tables.transition.tobytes() + tables.prompt_bias.tobytes()).hexdigest(),
    )
    if key not in _MOTIFS:
        if len(_MOTIFS) > 64:
            _MOTIFS.clear()
        _MOTIFS[key] = _draw_motif(tables, settings, seed)
    return _MOTIFS[key]


def _draw_motif(tables: Tables, settings: Mapping[str, Any], seed: int) -> tuple[int, int, int]:
    v = tables.transition.shape[1]
    rng = world_stream(seed, "staircase")
    prompts = rng.integers(0, v, size=(MOTIF_SAMPLES, int(settings["prompt_length"])), dtype=np.int64)
    tokens, lengths = sample_process(
        tables,
        prompts,
        rng,
        max_len=int(settings["max_response_length"]),
        eos_base=float(settings["eos_logit_base"]),
        eos_slope=float(settings["eos_logit_slope"]),
    )
    width = tokens.shape[1]
    content = np.where(np.arange(width)[None, :] < (lengths - 1)[:, None], tokens, -1)
    first, second = content[:, :-1], content[:, 1:]
    valid = (first >= 0) & (second >= 0)
    codes = np.where(valid, first * v + second, -1)
    rows = np.broadcast_to(np.arange(codes.shape[0])[:, None], codes.shape)
    keyed = np.unique(rows[valid] * (v * v) + codes[valid])  # each bigram counted once per response
    rates = np.bincount(keyed % (v * v), minlength=v * v) / max(MOTIF_SAMPLES, 1)
    rates = rates.reshape(v, v)
    distance = np.abs(rates - LOWER_RATE)
    distance[np.arange(v), np.arange(v)] = np.inf  # a != b
    a, b = (int(i) for i in np.unravel_index(np.argmin(distance), distance.shape))  # first of any tie
    row = tables.transition[b]
    follow = np.exp(row - row.max())
    follow /= follow.sum()
    distance = np.abs(follow - UPPER_FOLLOW)
    distance[[a, b]] = np.inf
    c = int(np.argmin(distance))
    return a, b, c


class StaircaseWorld(SyntheticWorld):
    """The bigram world plus a two-stair motif bonus (see the module docstring).

    Extra public attributes: ``motif`` ``(a, b, c)``, ``lower_bonus`` and
    ``upper_bonus`` (both 0.0 when ``state_dependence`` is off) and
    :meth:`stairs`, the stair (0, 1 or 2) each response has reached.
    """

    def __init__(self, *, settings: Mapping[str, Any], seed: int, tables: Tables, **rest):
        self.motif = choose_motif(tables, settings, seed)  # drawn either way, so no stream depends on the knob
        self.state_dependence = bool(settings.get("state_dependence", True))
        self.lower_bonus = LOWER_BONUS if self.state_dependence else 0.0
        self.upper_bonus = UPPER_BONUS if self.state_dependence else 0.0
        super().__init__(settings=settings, seed=seed, tables=tables, **rest)
        self.info.update(motif_a=self.motif[0], motif_b=self.motif[1], motif_c=self.motif[2])

    def __repr__(self) -> str:
        return f"<StaircaseWorld seed={self.seed} motif={self.motif} state_dependence={self.state_dependence}>"

    def stairs(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``(B,)`` int: 2 where a response contains ``a b c``, 1 where only ``a b``, else 0."""
        a, b, c = self.motif
        return contains(tokens, lengths, (a, b)).astype(np.int64) + contains(tokens, lengths, (a, b, c))

    def _gold(self, tables: Tables, prompts: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        base = gold_rewards(tables, prompts, tokens, lengths)
        if not self.state_dependence:
            return base  # exactly the bigram world's numbers, no arithmetic added
        a, b, c = self.motif
        lower = contains(tokens, lengths, (a, b))
        upper = contains(tokens, lengths, (a, b, c))
        return base + self.lower_bonus * lower + self.upper_bonus * upper
