"""Checks that a selector's output honours the selector contract.

The loop runs these on every selection, so a buggy third-party selector fails
loudly with its name instead of training on garbage; the contract tests in
:mod:`harness.testing` use the same checks.
"""

from __future__ import annotations

import numpy as np

from harness.errors import SelectionError
from harness.interfaces import Pairs, SelectionBatch


def check_instance_pairs(pairs: Pairs, batch: SelectionBatch, selector: str = "selector") -> None:
    """At most one pair per prompt, indices in range, two different distinct responses."""
    if not isinstance(pairs, Pairs):
        raise SelectionError(f"{selector}: select_instances must return Pairs, got {type(pairs).__name__}")
    m, n = batch.n_prompts, batch.n_responses
    if len(pairs) == 0:
        return
    if pairs.prompt.min() < 0 or pairs.prompt.max() >= m:
        raise SelectionError(f"{selector}: a prompt index is outside [0, {m})")
    for side in (pairs.a, pairs.b):
        if side.min() < 0 or side.max() >= n:
            raise SelectionError(f"{selector}: a response index is outside [0, {n})")
    if np.any(pairs.a == pairs.b):
        raise SelectionError(f"{selector}: paired a response with itself")
    if np.unique(pairs.prompt).size != len(pairs):
        raise SelectionError(f"{selector}: returned more than one pair for a prompt at instance level")
    if not (batch.distinct[pairs.prompt, pairs.a].all() and batch.distinct[pairs.prompt, pairs.b].all()):
        raise SelectionError(
            f"{selector}: paired a duplicate response (batch.distinct is False for it); "
            "identical responses give DPO no gradient"
        )


def check_corpus_pairs(kept: Pairs, offered: Pairs, n_keep: int, selector: str = "selector") -> None:
    """Exactly ``min(n_keep, len(offered))`` pairs, each one of the offered pairs, no repeats."""
    if not isinstance(kept, Pairs):
        raise SelectionError(f"{selector}: select_corpus must return Pairs, got {type(kept).__name__}")
    expected = min(n_keep, len(offered))
    if len(kept) != expected:
        raise SelectionError(
            f"{selector}: select_corpus kept {len(kept)} pairs; expected min(n_keep={n_keep}, "
            f"offered={len(offered)}) = {expected}"
        )
    if expected == 0:
        return
    offered_keys = set(zip(offered.prompt.tolist(), offered.a.tolist(), offered.b.tolist()))
    kept_keys = list(zip(kept.prompt.tolist(), kept.a.tolist(), kept.b.tolist()))
    if len(set(kept_keys)) != len(kept_keys):
        raise SelectionError(f"{selector}: select_corpus returned a pair twice")
    if not offered_keys.issuperset(kept_keys):
        raise SelectionError(f"{selector}: select_corpus returned a pair it was not offered")
