"""SEA (Liu et al. 2024): Thompson sampling from an ensemble reward model learnt online from every label bought.

Liu, Chen, Wan, Du, Lee, Lin, "Sample-Efficient Alignment for LLMs",
arXiv:2411.01493; the authors' code: github.com/sail-sg/oat (its ``EnnEETS``
and ``EnnBAITS`` reward models, ``logits_variance``). An epistemic reward
model, an ensemble of E small heads on fixed features phi(x, y), is trained
on every preference labelled so far; each head is one draw from an
approximate posterior over reward functions. Per prompt, among its distinct
responses:

* ``-o mode=ee`` (explore and exploit, the default; ``EnnEETS``): draw a
  head, take its best response; draw another head, take its best response;
  if it is the first one, try further heads (up to ``max_try`` in all), then
  the heads' second-best responses;
* ``-o mode=bai`` (best-response identification; ``EnnBAITS``, the method of
  the authors' SEA example script): the first response as above; the second
  is the response whose preference logit against it, r_e(y) - r_e(y1),
  varies most across the heads (variance with ddof 1, as ``torch.var``).

Corpus level (ours: SEA labels every prompt's pair): ``-o corpus=uncertainty``
keeps the ``n_keep`` pairs whose preference logit varies most across the
heads (ties: the earliest pair); ``-o corpus=random`` keeps a uniform draw.

Memory (selector contract 2): after labelling, every non-tie pair joins the
selector's data as z = phi(chosen) - phi(rejected); each head e is refitted on
all of it, from its own anchor w0_e ~ N(0, prior_scale^2 I) (drawn at the
first labels from the iteration's ``observe`` stream):

    w_e = argmin_w  sum_i log(1 + exp(-w.z_i)) + (regularization / 2) ||w - w0_e||^2

by Newton's method (the objective is convex). Before any label the heads are
fresh prior draws from the selection's own Generator. The data, anchors and
heads are the selector's state, saved in every checkpoint and restored on
``--resume``.

Deviations from the authors' setting (docs/usage/field-strategies.md): linear
heads fitted exactly (full batch, Newton) instead of MLP heads trained by Adam
on minibatches of a replay buffer; the anchored L2 term stands for their
regularisation towards the initial weights; phi is a language model's final
hidden state (pi_ref's by default), scaled to unit length, instead of a
pretrained reward model's (PairRM's) features; one head per prompt is drawn,
where their code draws one per batch of prompts; and the corpus level above.
No label, gold score or proxy score is read before selection; each kept pair
costs one gold label.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from harness import hookimpl
from harness.interfaces import Feedback, Option, Pairs, SelectionBatch, Selector
from plugins.selectors._features import (
    FEATURES,
    NORMALIZE,
    check_width,
    feature_source_option,
    pair_differences,
    response_features,
    scaled,
)
from plugins.selectors._pairs import check_n_keep, keep_by_margin, keep_uniform, usable_responses

NEWTON_STEPS = 50
"""Most Newton steps per head refit; it stops earlier once a step moves the weights by less than 1e-10."""

_STATE_KEYS = frozenset({"pairs", "anchors", "heads"})


def _objective(z: np.ndarray, w: np.ndarray, anchor: np.ndarray, regularization: float) -> float:
    """sum_i log(1 + exp(-w.z_i)) + regularization/2 ||w - anchor||^2."""
    return float(np.logaddexp(0.0, -(z @ w)).sum() + 0.5 * regularization * np.sum((w - anchor) ** 2))


def fit_head(z: np.ndarray, anchor: np.ndarray, regularization: float) -> np.ndarray:
    """argmin_w sum_i log(1 + exp(-w.z_i)) + regularization/2 ||w - anchor||^2, by damped Newton steps.

    The objective is strictly convex; a full Newton step is halved until it
    lowers the objective (the logistic loss is not self-concordant, so a full
    step far from the optimum can overshoot).
    """
    w = anchor.copy()
    identity = np.eye(anchor.shape[0])
    value = _objective(z, w, anchor, regularization)
    for _ in range(NEWTON_STEPS):
        p = 0.5 * (1.0 + np.tanh(z @ w / -2.0))  # sigma(-w.z), stable for any margin
        gradient = -(z.T @ p) + regularization * (w - anchor)
        hessian = (z.T * (p * (1.0 - p))) @ z + regularization * identity
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            candidate = _objective(z, w - scale * step, anchor, regularization)
            if candidate <= value:
                break
            scale /= 2.0
        else:
            break  # no step lowers the objective any more: at the optimum to float precision
        w, value = w - scale * step, candidate
        if float(np.max(np.abs(scale * step), initial=0.0)) < 1e-10:
            break
    return w


class SampleEfficientAlignment(Selector):
    """SEA (Liu et al. 2024): Thompson sampling with an ensemble reward model learnt from every label so far."""

    name = "sea"
    description = (
        "SEA (Liu et al., arXiv:2411.01493; sail-sg/oat): Thompson sampling with an ensemble of reward heads on "
        "fixed features, refitted on every label bought so far (kept across iterations); -o mode=ee|bai"
    )
    options = (
        FEATURES,
        NORMALIZE,
        Option("mode", str, "ee", "ee: two heads each pick their best response; bai: the first head's best against "
               "the response the heads disagree on most", choices=("ee", "bai")),
        Option("heads", int, 20, "E, reward heads in the ensemble", min=2, max=1000),
        Option("max_try", int, 20, "ee: heads tried for a second response that differs from the first", min=2,
               max=1000),
        Option("prior_scale", float, 1.0, "sd of each head's anchor (and prior draw) per feature", min=0.0,
               min_inclusive=False),
        Option("regularization", float, 1.0, "weight of ||w - w0||^2 / 2 against the summed Bradley-Terry loss",
               min=0.0, min_inclusive=False),
        Option("corpus", str, "uncertainty", "corpus level (ours): uncertainty keeps the pairs the heads disagree "
               "on most, random a uniform draw", choices=("uncertainty", "random")),
    )
    stateful = True

    def __init__(self, settings: Mapping | None = None):
        super().__init__(settings)
        self._pairs: np.ndarray | None = None  # (n, d) phi(chosen) - phi(rejected) of every non-tie label
        self._anchors: np.ndarray | None = None  # (E, d)
        self._heads: np.ndarray | None = None  # (E, d), fitted

    feature_source = feature_source_option

    # -- the ensemble

    def heads(self, width: int, rng: np.random.Generator) -> np.ndarray:
        """``(E, d)`` the fitted heads; before any label, fresh draws from the prior (from ``rng``)."""
        if self._heads is None:
            return rng.normal(0.0, float(self.settings["prior_scale"]), size=(int(self.settings["heads"]), width))
        check_width(self._heads.shape[1], width, self.name)
        return self._heads

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs, rng: np.random.Generator | None = None) -> np.ndarray:
        """``(len(pairs),)`` the variance across heads (ddof 1) of each pair's preference logit w_e.z."""
        z = pair_differences(response_features(batch, self.settings["normalize"]), pairs)
        heads = self.heads(z.shape[1], rng if rng is not None else np.random.default_rng(0))
        return np.var(z @ heads.T, axis=1, ddof=1) if len(pairs) else np.zeros(0)

    # -- the rule

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        features = response_features(batch, self.settings["normalize"])
        m, n = batch.n_prompts, batch.n_responses
        if m == 0 or n < 2:
            return Pairs.empty()
        heads = self.heads(features.shape[-1], rng)
        rewards = np.einsum("mnd,ed->emn", features, heads)  # (E, M, N)
        usable = usable_responses(batch.distinct)
        prompts = np.flatnonzero(usable.sum(axis=1) >= 2)
        order = np.argsort(rng.random((m, heads.shape[0])), axis=1)  # each prompt's heads, in the order drawn
        masked = np.where(usable[None], rewards, -np.inf)
        rows = np.arange(m)
        first = masked[order[:, 0], rows].argmax(axis=1)
        if self.settings["mode"] == "bai":
            logits = rewards - rewards[:, rows, first][:, :, None]  # (E, M, N): r_e(y) - r_e(y1)
            spread = np.var(logits, axis=0, ddof=1)
            spread[rows, first] = -np.inf
            second = np.where(usable, spread, -np.inf).argmax(axis=1)
        else:
            second = self._second_best_response(masked, order, first)
        return Pairs(prompts, first[prompts], second[prompts])

    def _second_best_response(self, masked: np.ndarray, order: np.ndarray, first: np.ndarray) -> np.ndarray:
        """ee: the best response of the next drawn heads that differs from ``first``; then their second-best."""
        heads, m, _ = masked.shape
        rows = np.arange(m)
        tries = min(int(self.settings["max_try"]), heads)
        second = np.full(m, -1, dtype=np.int64)
        for t in range(1, tries):
            best = masked[order[:, t], rows].argmax(axis=1)
            take = (second < 0) & (best != first)
            second[take] = best[take]
        without_first = masked.copy()
        without_first[:, rows, first] = -np.inf
        for t in range(tries):  # the heads' second-best: the best once the first response is set aside
            runner_up = without_first[order[:, t], rows].argmax(axis=1)
            take = second < 0
            second[take] = runner_up[take]
        return second

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        n_keep = min(check_n_keep(n_keep), len(pairs))
        if self.settings["corpus"] == "random":  # drawn as the random selector's corpus level draws
            return pairs.take(keep_uniform(len(pairs), n_keep, rng))
        return pairs.take(keep_by_margin(self.pair_scores(batch, pairs, rng), n_keep, largest=True))

    # -- the memory

    def observe(self, feedback: Feedback, rng: np.random.Generator) -> None:
        """Add the iteration's non-tie labels as oriented feature differences and refit every head on all of them."""
        if feedback.features is None:
            return
        features = scaled(feedback.features, self.settings["normalize"])
        labelled = feedback.kept.take(np.flatnonzero(~np.asarray(feedback.tie, dtype=bool)))
        prefer_a = np.asarray(feedback.prefer_a, dtype=bool)[~np.asarray(feedback.tie, dtype=bool)]
        z = pair_differences(features, labelled)
        z = np.where(prefer_a[:, None], z, -z)  # phi(chosen) - phi(rejected)
        width = features.shape[-1]
        if self._anchors is None:
            self._anchors = rng.normal(0.0, float(self.settings["prior_scale"]), size=(int(self.settings["heads"]),
                                                                                       width))
            self._pairs = np.zeros((0, width))
        check_width(self._anchors.shape[1], width, self.name)
        self._pairs = np.concatenate([self._pairs, z])
        regularization = float(self.settings["regularization"])
        self._heads = np.stack([fit_head(self._pairs, anchor, regularization) for anchor in self._anchors])

    def state_dict(self) -> dict[str, np.ndarray]:
        if self._anchors is None:
            return {}
        return {"pairs": self._pairs.copy(), "anchors": self._anchors.copy(), "heads": self._heads.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if not state:
            self._pairs = self._anchors = self._heads = None
            return
        if set(state) != _STATE_KEYS:
            raise ValueError(f"selector 'sea' expects a state with {sorted(_STATE_KEYS)}; got {sorted(state)}")
        pairs, anchors, heads = (np.asarray(state[key], dtype=np.float64) for key in ("pairs", "anchors", "heads"))
        if anchors.ndim != 2 or heads.shape != anchors.shape or pairs.ndim != 2 or pairs.shape[1] != anchors.shape[1]:
            raise ValueError(f"selector 'sea': state arrays of shapes pairs {pairs.shape}, anchors {anchors.shape}, "
                             f"heads {heads.shape} do not fit together")
        self._pairs, self._anchors, self._heads = pairs.copy(), anchors.copy(), heads.copy()


@hookimpl
def register_selectors(register):
    register(SampleEfficientAlignment)
