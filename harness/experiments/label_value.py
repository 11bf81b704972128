"""What each bought label was worth: a first-order estimate for every trained pair, checked by leaving pairs out.

A run of any strategy is run with one step inserted after training
(:data:`harness.loop.STEPS`), so every number below belongs to the pairs the
strategy actually chose, labelled by the run's annotator, at the state the
run reached. It needs a world that knows its exact gold reward
(``gold_rewards``: the synthetic testbed); the run itself is the ordinary run,
bit for bit (the step reads and never changes the run's state or streams; only
the row's ``time_select`` grows by the milliseconds of rebuilding the training data).

**The objective.** J(pi) is the expected gold reward of pi's *sampled*
responses on the world's evaluation prompts (not the greedy win rate, whose
response is a step function of the parameters).

**The estimate, for every trained pair** k (chosen c, rejected l):

    value_k = beta * sigmoid(-beta * Delta_k) * (s(c) - s(l)),   s(y) = <grad log pi(y | x), G>,

where Delta_k is the pair's DPO margin at pi_{i-1} (log-ratio to the training
reference, signed by the label it was trained with, noise included) and G the
gradient of J at pi_{i-1}, estimated from :data:`EVAL_SAMPLES` samples of
pi_{i-1} per evaluation prompt with the prompt's mean gold as baseline
(:mod:`harness.influence`). It is the first-order change of J from one small
gradient step on that pair alone, per unit step: the same criterion the
``gold_gradient`` reference ranks by, here with the label as trained and
with G from held-out prompts. It ignores Adam, the other pairs and every step
after the first.

**The check: leave one minibatch out.** Up to :data:`PROBE_PAIRS` of the
iteration's trained pairs (drawn from the stream ``label-value``) are split
into minibatches of ``minibatch`` pairs. For each minibatch the trainer is run
again from pi_{i-1} with the run's own training stream, on the same data with
the minibatch's pairs made empty (chosen = rejected, so their loss is constant
and their gradient 0 up to float rounding, while every other pair keeps its place in every
shuffled batch and its weight in every batch mean): the retrained policy differs
from pi_i only by what those pairs taught. Its measured value is
J(pi_i) - J(pi_-g), by importance weighting one fixed sample of pi_i
(:data:`EVAL_SAMPLES` per evaluation prompt, baseline the prompt's mean gold):

    J(pi_i) - J(pi_-g) = E_{y ~ pi_i} [(1 - pi_-g(y) / pi_i(y)) (R(y) - b(x))],

exact in expectation and precise because the two policies are close. The
report gives Spearman's rank correlation between the minibatches' summed
estimates and their measured values. The trainer is rerun on the full data
once per iteration: if that does not give pi_i's parameters exactly
(a trainer that is not deterministic for a seed), the leave-out values are
marked ``reproduced = False`` and left out of the correlation.

**Features** of every trained pair, for :func:`regress`: |implicit margin|
(|log-ratio of chosen minus rejected| to the training reference), the explicit
margin (chosen minus rejected of a fresh copy of the probe's explicit judge or
the run's proxy judge; free, never charged, read after selection), beta * Delta, the DPO weight
sigmoid(-beta * Delta), label noise (1 where the label contradicts the exact
gold), length (the mean of the two responses') and the pair's selected KL
(the mean of its two log-ratios: its share of the selected-data KL).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness import rng as streams
from harness.errors import UsageError
from harness.influence import directional_logprobs, sequence_logprobs, weighted_logprob_gradient
from harness.interfaces import PreferenceData, Responses
from harness.iteration import Iteration, RunContext, observe, training_data, train

PROBE_PAIRS = 50
"""At most this many trained pairs per iteration are left out (in minibatches) to check the estimate."""

MINIBATCH = 5
"""Pairs left out together: 10 retrainings per iteration at :data:`PROBE_PAIRS` = 50.

Single pairs (1) also work: on seed 901 of the defaults with ``smallest`` (a
pilot, not a reported figure), leaving out 50 single pairs per iteration gave
rank correlations 0.24, 0.57 and 0.40 (iterations 1-3) at 150 retrainings, 21
minutes with another job on the 2-core machine; 5 pairs per minibatch cut the
retrainings five-fold."""

EVAL_SAMPLES = 16
"""Samples per evaluation prompt, for G (of pi_{i-1}) and for each measured value (of pi_i)."""

FEATURES = ("abs_margin", "explicit_margin", "beta_margin", "dpo_weight", "label_noise", "length", "selected_kl")
"""The pair features :func:`regress` explains the estimated label value with, in the report's order."""


@dataclass
class IterationValues:
    """One iteration's label values: every trained pair's estimate and features, and the leave-out check."""

    iteration: int
    estimate: np.ndarray  # (K,) first-order value of each trained pair
    features: dict[str, np.ndarray]  # name -> (K,)
    probe_groups: list[list[int]] = field(default_factory=list)  # indices into the K pairs, one list per minibatch
    probe_estimate: list[float] = field(default_factory=list)  # summed estimate of each minibatch
    probe_measured: list[float] = field(default_factory=list)  # J(pi_i) - J(pi_-g) of each minibatch
    reproduced: bool = True  # the trainer rerun on the full data gave pi_i exactly

    @property
    def rank_correlation(self) -> float | None:
        """Spearman's rho of the minibatches' estimates and measured values (None: fewer than 3, or not reproduced)."""
        if not self.reproduced:
            return None
        return spearman(self.probe_estimate, self.probe_measured)

    def as_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration, "pairs": int(len(self.estimate)),
            "mean_estimate": float(np.mean(self.estimate)) if len(self.estimate) else None,
            "probes": len(self.probe_groups), "reproduced": self.reproduced,
            "rank_correlation": self.rank_correlation,
            "probe_estimate": list(self.probe_estimate), "probe_measured": list(self.probe_measured),
        }


class LabelValueProbe:
    """The inserted step: :meth:`steps` is the run's :data:`~harness.loop.STEPS` with the measurement after ``train``.

    ``minibatch`` pairs are left out together; at most :data:`PROBE_PAIRS`
    (``probe_pairs``) pairs per iteration are left out in all. The explicit
    margin is scored by ``explicit_judge`` (default: the run's proxy judge;
    NaN, and left out of :func:`regress`, when there is neither).
    """

    def __init__(self, *, minibatch: int = MINIBATCH, probe_pairs: int = PROBE_PAIRS, eval_samples: int = EVAL_SAMPLES,
                 explicit_judge=None):
        if minibatch < 1:
            raise UsageError(f"minibatch must be at least 1 pair; got {minibatch}")
        if not 0 <= probe_pairs <= PROBE_PAIRS:
            raise UsageError(f"probe_pairs must be between 0 and {PROBE_PAIRS}; got {probe_pairs}")
        self.minibatch, self.probe_pairs, self.eval_samples = int(minibatch), int(probe_pairs), int(eval_samples)
        self.explicit_judge = explicit_judge
        self.iterations: list[IterationValues] = []
        self._before: Any = None

    def steps(self) -> tuple:
        from harness.loop import STEPS

        at = STEPS.index(train)
        assert STEPS[at - 1] is observe  # after the labels are bought and a stateful selector has seen them
        return (*STEPS[:at], self.remember, train, self.measure, *STEPS[at + 1 :])

    def remember(self, run: RunContext, it: Iteration) -> None:
        """Before training: keep pi_{i-1} (the run replaces it with pi_i)."""
        self._before = run.policy

    def measure(self, run: RunContext, it: Iteration) -> None:
        """After training: every trained pair's estimate and features, then the leave-out check."""
        world, before, after = run.world, self._before, run.policy
        if not callable(getattr(world, "gold_rewards", None)):
            raise UsageError("label values need a world that knows its exact gold reward (the synthetic testbed)")
        data = training_data(run, it)  # the data train() used: every input was fixed before training
        beta = float(run.components.trainer.beta)
        seed, number = run.config.seed, it.number
        judge = self.explicit_judge if self.explicit_judge is not None else run.components.proxy_judge
        estimate, features = _estimates(world, before, data, beta, judge,
                                        streams.stream(seed, number, "label-value/eval-before"), self.eval_samples)
        features["label_noise"] = _label_noise(world, data)
        values = IterationValues(iteration=number, estimate=estimate, features=features)
        self.iterations.append(values)
        k = len(data)
        probes = min(self.probe_pairs, k)
        if probes == 0:
            return
        chosen = streams.stream(seed, number, "label-value").choice(k, size=probes, replace=False)
        groups = [sorted(int(i) for i in chosen[s : s + self.minibatch]) for s in range(0, probes, self.minibatch)]
        trainer = run.components.trainer

        def retrain(train_data: PreferenceData):
            return trainer.train(policy=before, data=train_data, rng=streams.stream(seed, number, "train")).policy

        values.reproduced = _same_parameters(retrain(data), after)
        sample = _EvalSample.draw(world, after, self.eval_samples, streams.stream(seed, number, "label-value/eval-after"))
        for group in groups:
            values.probe_groups.append(group)
            values.probe_estimate.append(float(estimate[group].sum()))
            values.probe_measured.append(sample.value_lost(retrain(emptied(data, group))))


# ------------------------------------------------------------------ the estimate and the features


def _flat_eval_sample(world, policy, samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``samples`` responses of ``policy`` per evaluation prompt, one row each: prompts, tokens, lengths, and
    ``centred``, each response's gold minus its prompt's mean gold."""
    prompts = np.asarray(world.eval_prompts)
    responses = world.sample(policy, prompts, samples, rng)
    gold = np.asarray(world.gold_rewards(prompts, responses), dtype=np.float64)
    m, n = gold.shape
    return {"prompts": np.repeat(prompts, n, axis=0), "tokens": responses.tokens.reshape(m * n, -1),
            "lengths": responses.lengths.reshape(-1),
            "centred": (gold - gold.mean(axis=1, keepdims=True)).reshape(-1)}


def _estimates(world, policy, data: PreferenceData, beta: float, proxy_judge, rng: np.random.Generator,
               eval_samples: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each pair's first-order value at ``policy`` (pi_{i-1}) and its features except label noise."""
    flat = _flat_eval_sample(world, policy, eval_samples, rng)
    weights = flat.pop("centred") / flat["lengths"].size
    G = weighted_logprob_gradient(policy, flat["prompts"], flat["tokens"], flat["lengths"], weights)
    s_chosen = directional_logprobs(policy, G, data.prompts, data.chosen, data.chosen_lengths)
    s_rejected = directional_logprobs(policy, G, data.prompts, data.rejected, data.rejected_lengths)
    ratio_chosen = sequence_logprobs(policy, data.prompts, data.chosen, data.chosen_lengths) - data.ref_chosen_logps
    ratio_rejected = (sequence_logprobs(policy, data.prompts, data.rejected, data.rejected_lengths)
                      - data.ref_rejected_logps)
    delta = ratio_chosen - ratio_rejected
    weight = 0.5 * (1.0 - np.tanh(0.5 * beta * delta))  # sigmoid(-beta * delta)
    features = {
        "abs_margin": np.abs(delta),
        "explicit_margin": _explicit_margin(world, data, proxy_judge),
        "beta_margin": beta * delta,
        "dpo_weight": weight,
        "length": 0.5 * (np.asarray(data.chosen_lengths) + np.asarray(data.rejected_lengths)),
        "selected_kl": 0.5 * (ratio_chosen + ratio_rejected),
    }
    return beta * weight * (s_chosen - s_rejected), features


def _pair_responses(data: PreferenceData) -> Responses:
    """The pairs as a pool of two responses per prompt: (chosen, rejected)."""
    width = max(data.chosen.shape[1], data.rejected.shape[1])

    def padded(tokens: np.ndarray) -> np.ndarray:
        return np.pad(np.asarray(tokens), ((0, 0), (0, width - tokens.shape[1])))

    return Responses(tokens=np.stack([padded(data.chosen), padded(data.rejected)], axis=1),
                     lengths=np.stack([data.chosen_lengths, data.rejected_lengths], axis=1))


def _explicit_margin(world, data: PreferenceData, proxy_judge) -> np.ndarray:
    """Chosen minus rejected of a fresh copy of the run's proxy judge (NaN without one)."""
    if proxy_judge is None or len(data) == 0:
        return np.full(len(data), np.nan)
    judge = type(proxy_judge)(dict(proxy_judge.settings))  # its own counters: the run's usage is untouched
    scores = np.asarray(judge.score(world=world, prompts=data.prompts, responses=_pair_responses(data),
                                    rng=np.random.default_rng(0)), dtype=np.float64)
    return scores[:, 0] - scores[:, 1]


def _label_noise(world, data: PreferenceData) -> np.ndarray:
    """1.0 where the trained label contradicts the exact gold order (0 on a gold tie)."""
    gold = np.asarray(world.gold_rewards(data.prompts, _pair_responses(data)), dtype=np.float64)
    return (gold[:, 0] < gold[:, 1]).astype(np.float64)


# ------------------------------------------------------------------ leaving pairs out


def emptied(data: PreferenceData, rows: Sequence[int]) -> PreferenceData:
    """``data`` with the pairs ``rows`` made empty: both sides the same response, so their gradient is 0.

    Zero up to float rounding: the two copies sit in different rows of one
    batched forward, which can round differently (about 1e-8 of a real pair's
    gradient on the synthetic GRU, where the other pairs of the batch dominate).
    The shorter of the two responses is copied over the other (it fits either
    array's width), with its reference log-prob; every pair keeps its index,
    so a trainer's shuffled batches and batch means are those of ``data``.
    """
    chosen, rejected = np.array(data.chosen), np.array(data.rejected)
    chosen_lengths, rejected_lengths = np.array(data.chosen_lengths), np.array(data.rejected_lengths)
    ref_chosen, ref_rejected = np.array(data.ref_chosen_logps), np.array(data.ref_rejected_logps)
    def copy(source: np.ndarray, target: np.ndarray, row: int) -> None:
        """``source``'s row over ``target``'s, its padding continued where ``target`` is wider."""
        width = min(source.shape[1], target.shape[1])
        target[row, :width] = source[row, :width]
        target[row, width:] = source[row, -1]

    for row in rows:
        if chosen_lengths[row] <= rejected.shape[1]:
            copy(chosen, rejected, row)
            rejected_lengths[row], ref_rejected[row] = chosen_lengths[row], ref_chosen[row]
        else:
            copy(rejected, chosen, row)
            chosen_lengths[row], ref_chosen[row] = rejected_lengths[row], ref_rejected[row]
    return replace(data, chosen=chosen, rejected=rejected, chosen_lengths=chosen_lengths,
                   rejected_lengths=rejected_lengths, ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)


@dataclass
class _EvalSample:
    """One fixed sample of pi_i on the evaluation prompts, for importance-weighted differences of J."""

    prompts: np.ndarray  # (B, P)
    tokens: np.ndarray  # (B, L)
    lengths: np.ndarray  # (B,)
    centred: np.ndarray  # (B,) gold minus the prompt's mean gold
    logp: np.ndarray  # (B,) log pi_i

    @classmethod
    def draw(cls, world, policy, samples: int, rng: np.random.Generator) -> _EvalSample:
        flat = _flat_eval_sample(world, policy, samples, rng)
        return cls(**flat, logp=sequence_logprobs(policy, flat["prompts"], flat["tokens"], flat["lengths"]))

    def value_lost(self, other) -> float:
        """J(pi_i) - J(other), importance-weighted on this sample."""
        ratio = np.exp(sequence_logprobs(other, self.prompts, self.tokens, self.lengths) - self.logp)
        return float(np.mean((1.0 - ratio) * self.centred))


def _same_parameters(first, second) -> bool:
    import torch

    a, b = list(first.parameters()), list(second.parameters())
    return len(a) == len(b) and all(torch.equal(x.detach(), y.detach()) for x, y in zip(a, b))


# ------------------------------------------------------------------ statistics


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 pairs or a constant side."""
    x, y = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def regress(estimate: np.ndarray, features: Mapping[str, np.ndarray], *, names: Sequence[str] = FEATURES,
            confidence: float = 0.95) -> dict[str, Any]:
    """OLS of the standardised label value on the standardised features, with HC3 (heteroscedasticity-robust) errors.

    Rows with a non-finite value are dropped; a feature that is not finite on
    every row (no explicit judge) or constant over the rows (no label noise at
    tau = 0) is left out and named in ``dropped``. Returns ``{"n", "r2", "coefficients": [{"feature",
    "coef", "se", "ci_low", "ci_high"}], "dropped"}``; a coefficient is the
    change of the value, in its standard deviations, per standard deviation of
    the feature with the others held fixed.
    """
    from leaderboard.stats import t_ppf

    y = np.asarray(estimate, dtype=np.float64)
    columns = {name: np.asarray(features[name], dtype=np.float64) for name in names}
    keep = np.isfinite(y)
    y = y[keep]
    used, dropped = [], []
    for name in names:
        values = columns[name][keep]
        usable = len(values) and np.isfinite(values).all() and values.std() > 0
        (used if usable else dropped).append(name)
    n, p = len(y), len(used) + 1
    if n <= p or y.std() == 0:
        return {"n": int(n), "r2": None, "coefficients": [], "dropped": list(names)}
    X = np.column_stack([np.ones(n)] + [(columns[c][keep] - columns[c][keep].mean()) / columns[c][keep].std()
                                        for c in used])
    z = (y - y.mean()) / y.std()
    XtX_inv = np.linalg.pinv(X.T @ X)
    coef = XtX_inv @ X.T @ z
    resid = z - X @ coef
    leverage = np.einsum("ij,jk,ik->i", X, XtX_inv, X)
    scaled = resid / np.clip(1.0 - leverage, 1e-12, None)
    cov = XtX_inv @ (X.T * scaled**2) @ X @ XtX_inv
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    t = t_ppf(0.5 + confidence / 2.0, n - p)
    r2 = 1.0 - float(resid @ resid) / float(z @ z)
    rows = [{"feature": name, "coef": float(coef[j]), "se": float(se[j]),
             "ci_low": float(coef[j] - t * se[j]), "ci_high": float(coef[j] + t * se[j])}
            for j, name in enumerate(used, start=1)]
    return {"n": int(n), "r2": r2, "coefficients": rows, "dropped": dropped}


__all__ = ["EVAL_SAMPLES", "FEATURES", "MINIBATCH", "PROBE_PAIRS", "IterationValues", "LabelValueProbe", "emptied",
           "regress", "spearman"]
