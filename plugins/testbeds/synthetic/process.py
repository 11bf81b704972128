"""The synthetic world's ground truth, in plain numpy: token ids, random tables,
the SFT data process and the gold reward.

Nothing here imports torch; the policy (a learned GRU) lives in
:mod:`plugins.testbeds.synthetic.policy`.

Token ids, for a vocabulary of V content tokens (V = 32 by default):

* ``0 .. V-1`` content tokens (prompts use only these);
* ``V`` EOS (the last scored token of every response);
* ``V + 1`` BOS and ``V + 2`` SEP (model input only: ``BOS x_1..x_P SEP y_1 ...``);
* ``V + 3`` PAD (fills a response row after its EOS; never scored).

A response has 1 .. ``max_len`` content tokens followed by EOS, so its token
row is ``max_len + 1`` wide and its length (EOS included) is 2 .. ``max_len + 1``.
At response position t (the number of content tokens already emitted):

* t = 0: EOS is banned (probability 0; the other tokens are renormalised);
* 1 <= t < max_len: the EOS logit is ``eos_base + eos_slope * t``;
* t = max_len: EOS is forced (probability 1, log-probability 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Vocab:
    """Token ids of a world with ``size`` content tokens."""

    size: int

    @property
    def eos(self) -> int:
        return self.size

    @property
    def bos(self) -> int:
        return self.size + 1

    @property
    def sep(self) -> int:
        return self.size + 2

    @property
    def pad(self) -> int:
        return self.size + 3

    @property
    def n_inputs(self) -> int:
        """Rows of the policy's input embedding (content, EOS, BOS, SEP, PAD)."""
        return self.size + 4

    @property
    def n_outputs(self) -> int:
        """Classes of the next-token distribution (content tokens and EOS)."""
        return self.size + 1


def eos_shaping(max_len: int, eos_base: float, eos_slope: float) -> np.ndarray:
    """``(max_len + 1,)`` additive EOS logit per response position.

    ``-inf`` at position 0 (EOS banned); position ``max_len`` is forced and
    handled by the callers, its entry is the plain formula.
    """
    shaping = eos_base + eos_slope * np.arange(max_len + 1, dtype=np.float64)
    shaping[0] = -np.inf
    return shaping


@dataclass(frozen=True)
class Tables:
    """The random tables of one world (all float64).

    ``transition`` T ``(V + 1, V)``: bigram logits of the SFT process; row V is
    the start row (the previous token of the first response token).
    ``prompt_bias`` Pb ``(V, V)``: each prompt token adds ``Pb[x_j] / sqrt(P)``
    to the content logits. ``gold_bigram`` B ``(V + 1, V)``, ``gold_prompt`` U
    ``(V, V)`` and ``gold_token`` u ``(V,)`` define the gold reward.
    """

    transition: np.ndarray
    prompt_bias: np.ndarray
    gold_bigram: np.ndarray
    gold_prompt: np.ndarray
    gold_token: np.ndarray


def make_tables(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    transition_scale: float,
    prompt_bias_scale: float,
    gold_alignment: float,
    gold_prompt_scale: float,
    gold_token_scale: float,
) -> Tables:
    """Draw a world's tables (docs/internals/synthetic-testbed.md#the-world): T ~ N(0, s_T^2), Pb ~ N(0, s_P^2),
    B = a standardize(T) + sqrt(1 - a^2) noise, U ~ N(0, s_U^2), u ~ N(0, s_u^2)."""
    v = vocab_size
    transition = rng.normal(0.0, 1.0, size=(v + 1, v)) * transition_scale
    prompt_bias = rng.normal(0.0, 1.0, size=(v, v)) * prompt_bias_scale
    noise = rng.normal(0.0, 1.0, size=(v + 1, v))
    std = transition.std()
    standardized = (transition - transition.mean()) / std if std > 0 else np.zeros_like(transition)
    gold_bigram = gold_alignment * standardized + math.sqrt(max(0.0, 1.0 - gold_alignment**2)) * noise
    gold_prompt = rng.normal(0.0, 1.0, size=(v, v)) * gold_prompt_scale
    gold_token = rng.normal(0.0, 1.0, size=v) * gold_token_scale
    return Tables(transition, prompt_bias, gold_bigram, gold_prompt, gold_token)


def sample_process(
    tables: Tables,
    prompts: np.ndarray,
    rng: np.random.Generator,
    *,
    max_len: int,
    eos_base: float,
    eos_slope: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One response per prompt from the SFT data process (the bigram chain).

    Content logits at every step are ``T[prev] + sum_j Pb[x_j] / sqrt(P)``; the
    EOS logit follows :func:`eos_shaping`. Returns ``tokens`` ``(B, max_len + 1)``
    (padded with PAD after EOS) and ``lengths`` ``(B,)`` (EOS included).
    """
    prompts = np.asarray(prompts, dtype=np.int64)
    b, p = prompts.shape
    v = tables.transition.shape[1]
    vocab = Vocab(v)
    bias = tables.prompt_bias[prompts].sum(axis=1) / math.sqrt(p)  # (B, V)
    shaping = eos_shaping(max_len, eos_base, eos_slope)
    tokens = np.full((b, max_len + 1), vocab.pad, dtype=np.int64)
    lengths = np.zeros(b, dtype=np.int64)
    prev = np.full(b, v, dtype=np.int64)  # the start row
    alive = np.ones(b, dtype=bool)
    logits = np.empty((b, v + 1))
    for t in range(max_len):
        logits[:, :v] = tables.transition[prev] + bias
        logits[:, v] = shaping[t]
        # Gumbel-max: argmax(logits + Gumbel noise) is a draw from softmax(logits).
        y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        tokens[alive, t] = y[alive]
        ended = alive & (y == vocab.eos)
        lengths[ended] = t + 1
        alive &= ~ended
        prev = np.where(y == vocab.eos, 0, y)  # rows that ended are never read again
    tokens[alive, max_len] = vocab.eos  # forced EOS
    lengths[alive] = max_len + 1
    return tokens, lengths


def gold_rewards(tables: Tables, prompts: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Gold reward of each response: the mean over its content tokens of
    ``B[prev, y_t] + u[y_t] + sum_j U[x_j, y_t] / sqrt(P)``.

    ``prompts`` ``(B, P)``, ``tokens`` ``(B, L)``, ``lengths`` ``(B,)`` (EOS
    included, so a response has ``lengths - 1`` content tokens); float64 ``(B,)``.
    """
    prompts = np.asarray(prompts, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    b, p = prompts.shape
    if b == 0:
        return np.zeros(0)
    v = tables.gold_token.shape[0]
    n_content = lengths - 1
    width = tokens.shape[1]
    mask = np.arange(width)[None, :] < n_content[:, None]
    y = np.where(mask, tokens, 0)
    prev = np.concatenate([np.full((b, 1), v, dtype=np.int64), y[:, :-1]], axis=1)
    prompt_term = tables.gold_prompt[prompts].sum(axis=1) / math.sqrt(p)  # (B, V)
    per_token = (
        tables.gold_bigram[prev, y]
        + tables.gold_token[y]
        + np.take_along_axis(prompt_term, y, axis=1)
    )
    return np.where(mask, per_token, 0.0).sum(axis=1) / np.maximum(n_content, 1)
