"""APO (Das et al. 2024): the pair whose feature difference the labels so far have explored least.

Das, Chakraborty, Mukherjee, Bhatt et al., "Active Preference Optimization
for Sample Efficient RLHF", arXiv:2402.10500 (no official code found). The
reward is modelled as linear in a feature map phi(x, y); with the design
matrix V of every pair labelled so far, a pair's exploration bonus is

    ||z||_{V^-1} = sqrt(z^T V^-1 z),   z = phi(x, a) - phi(x, a'),

and APO labels the pair with the largest bonus, then V <- V + z z^T
(V starts at lambda kappa I). The harness applies the rule at both levels:

* instance level: per prompt, the candidate pair of two distinct responses
  with the largest bonus under the V remembered so far (ties: the first pair
  in row-major order);
* corpus level: greedily, the offered pair with the largest bonus, then V
  updated with it (a rank-one Sherman-Morrison update of V^-1), until
  ``n_keep`` pairs are kept (ties: the earliest pair);
* memory (selector contract 2): after the kept pairs are labelled, V grows
  by z z^T of every one of them (ties included: the bonus is about which
  differences were asked, not what the answer was). V is the selector's
  state, saved in every checkpoint and restored on ``--resume``.

The bonus is a square root of a quadratic form; the ranking uses the form
itself, which orders identically. No label, gold score or proxy score is read
before selection; each kept pair costs one gold label. Deviations from the
paper (docs/usage/field-strategies.md): phi is a language model's final hidden
state (pi_ref's by default), scaled to unit length; lambda kappa is one
option, ``regularization`` (default 1.0), where the paper sets kappa from
the link function's smallest slope; the paper's argmax runs over every
(prompt, pair) at once, here the instance level first fixes each prompt's
pair under the V of the previous iterations.
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
from plugins.selectors._pairs import candidate_mask, check_n_keep, pair_index, usable_responses

_REGULARIZATION = Option("regularization", float, 1.0,
                         "lambda kappa: V starts at this times the identity (larger: the labels count for less)",
                         min=0.0, min_inclusive=False)


class ActivePreferenceOptimization(Selector):
    """APO (Das et al. 2024): the largest ||phi(x, a) - phi(x, a')||_{V^-1}, V the design of every label so far."""

    name = "apo"
    description = (
        "APO (Das et al., arXiv:2402.10500): label the pair with the largest sqrt(z^T V^-1 z), z the feature "
        "difference, V = lambda kappa I + sum of z z^T over every pair labelled so far (kept across iterations)"
    )
    options = (FEATURES, NORMALIZE, _REGULARIZATION)
    stateful = True

    def __init__(self, settings: Mapping | None = None):
        super().__init__(settings)
        self._design: np.ndarray | None = None  # V; None until the first labels are observed

    feature_source = feature_source_option

    # -- the rule

    def inverse_design(self, width: int) -> np.ndarray:
        """V^-1 for features of ``width``: (lambda kappa I)^-1 before any label."""
        if self._design is None:
            return np.eye(width) / float(self.settings["regularization"])
        check_width(self._design.shape[0], width, self.name)
        return np.linalg.inv(self._design)

    def pair_scores(self, batch: SelectionBatch, pairs: Pairs) -> np.ndarray:
        """``(len(pairs),)`` z^T V^-1 z of each pair under the remembered V (the squared bonus)."""
        z = pair_differences(response_features(batch, self.settings["normalize"]), pairs)
        return np.einsum("kd,de,ke->k", z, self.inverse_design(z.shape[1]), z)

    def select_instances(self, batch: SelectionBatch, rng: np.random.Generator) -> Pairs:
        features = response_features(batch, self.settings["normalize"])
        m, n = batch.n_prompts, batch.n_responses
        if m == 0 or n < 2:
            return Pairs.empty()
        a, b = pair_index(n)
        z = features[:, a] - features[:, b]  # (M, P, d)
        bonus = np.einsum("mpd,de,mpe->mp", z, self.inverse_design(features.shape[-1]), z)
        candidates = candidate_mask(usable_responses(batch.distinct))
        best = np.where(candidates, bonus, -np.inf).argmax(axis=1)
        prompts = np.flatnonzero(candidates.any(axis=1))
        return Pairs(prompts, a[best[prompts]], b[best[prompts]])

    def select_corpus(self, batch: SelectionBatch, pairs: Pairs, n_keep: int, rng: np.random.Generator) -> Pairs:
        n_keep = min(check_n_keep(n_keep), len(pairs))
        if n_keep == 0:
            return Pairs.empty()
        z = pair_differences(response_features(batch, self.settings["normalize"]), pairs)
        inverse_z = z @ self.inverse_design(z.shape[1])  # rows: V^-1 z_k (V^-1 is symmetric)
        bonus = np.einsum("kd,kd->k", z, inverse_z)
        chosen = np.zeros(len(pairs), dtype=bool)
        for _ in range(n_keep):
            j = int(np.where(chosen, -np.inf, bonus).argmax())
            chosen[j] = True
            w = inverse_z[j].copy()  # V^-1 z_j
            overlap = z @ w  # z_k^T V^-1 z_j
            denominator = 1.0 + bonus[j]
            # Sherman-Morrison: (V + z_j z_j^T)^-1 = V^-1 - w w^T / (1 + z_j^T V^-1 z_j)
            bonus -= overlap**2 / denominator
            inverse_z -= np.outer(overlap, w) / denominator
        return pairs.take(np.flatnonzero(chosen))

    # -- the memory

    def observe(self, feedback: Feedback, rng: np.random.Generator) -> None:
        """V <- V + sum of z z^T over the pairs labelled this iteration, ties included."""
        if feedback.features is None or len(feedback.kept) == 0:
            return
        z = pair_differences(scaled(feedback.features, self.settings["normalize"]), feedback.kept)
        if self._design is None:
            self._design = np.eye(z.shape[1]) * float(self.settings["regularization"])
        check_width(self._design.shape[0], z.shape[1], self.name)
        self._design = self._design + z.T @ z

    def state_dict(self) -> dict[str, np.ndarray]:
        return {} if self._design is None else {"design": self._design.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        if not state:
            self._design = None
            return
        design = np.asarray(state["design"], dtype=np.float64) if set(state) == {"design"} else np.empty(0)
        if design.ndim != 2 or design.shape[0] != design.shape[1]:
            raise ValueError(f"selector 'apo' expects a state with one square `design` matrix; got "
                             f"{ {key: np.shape(value) for key, value in state.items()} }")
        self._design = design.copy()


@hookimpl
def register_selectors(register):
    register(ActivePreferenceOptimization)
