"""Bad input, generated: every built-in selector and allocator on any scores and any budget.

The rule (issue: hardening): a component either returns a valid result (the
loop's own contract checks pass) or raises one of the harness's typed errors
with a message. Any other exception, a hang or an invalid result is a bug.
Hypothesis draws the pools: NaN, +-inf, huge and tied scores, N = 2, one
prompt, an empty pool, heavy duplication; and budgets from 0 to 10^12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reliability
from harness.errors import HarnessError
from harness.interfaces import IterationRecord, SelectionBatch
from harness.plugins import load_registry
from harness.testing import check_corpus_pairs, check_instance_pairs, make_pool

pytestmark = pytest.mark.bad_input

REGISTRY = load_registry([])
SELECTORS = sorted(REGISTRY.names("selector"))
ALLOCATORS = sorted(REGISTRY.names("allocator"))
SPECIAL = [0.0, 1.0, -1.0, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf]


def scores_for(shape):
    """Score arrays with ties, NaN, infinities and extremes mixed into ordinary values."""
    elements = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True, width=64))
    return st.one_of(
        hnp.arrays(np.float64, shape, elements=elements),
        st.sampled_from(SPECIAL).map(lambda v: np.full(shape, v)),  # all equal
    )


@st.composite
def pools(draw, selector):
    m = draw(st.sampled_from([0, 1, 2, 5]))
    n = draw(st.integers(2, 6))
    pool = make_pool(draw(st.integers(0, 2**16)), n_prompts=m, n_responses=n, requires=selector.requires,
                     needs_tokens=selector.needs_tokens,
                     duplication=draw(st.sampled_from(["mixed", "heavy", "none"])))
    columns = {column: draw(scores_for((m, n))) for column in selector.requires}
    batch = SelectionBatch(lengths=pool.batch.lengths, distinct=pool.batch.distinct, scores=columns,
                           beta=draw(st.sampled_from([0.1, 1.0, 1e-12, 1e12])), tokens=pool.batch.tokens)
    return pool.__class__(batch=batch, tokens=pool.tokens, response_id=pool.response_id)


@pytest.mark.parametrize("name", SELECTORS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_selectors_on_any_scores_are_valid_or_raise_our_error(name, data):
    selector = REGISTRY.create("selector", name)
    pool = data.draw(pools(selector))
    seed = data.draw(st.integers(0, 2**32 - 1))
    reliability.bad_input("selector pools")
    try:
        offered = selector.select_instances(pool.batch, np.random.default_rng(seed))
        check_instance_pairs(pool, offered)
        n_keep = data.draw(st.integers(0, len(offered) + 2))
        kept = selector.select_corpus(pool.batch, offered, n_keep, np.random.default_rng(seed + 1))
        check_corpus_pairs(offered, kept, n_keep)
    except HarnessError as exc:
        assert str(exc), f"{name} raised {type(exc).__name__} without a message"


@pytest.mark.parametrize("name", ALLOCATORS)
@settings(max_examples=150, deadline=None)
@given(total=st.integers(0, 10**12), iterations=st.integers(1, 50),
       history=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5))
def test_allocators_on_any_budget_are_valid_or_raise_our_error(name, total, iterations, history):
    records = tuple(IterationRecord(iteration=i + 1, labels=0, metrics={"win_rate": w}) for i, w in enumerate(history))
    reliability.bad_input("allocator budgets")
    try:
        allocator = REGISTRY.create("allocator", name)
        plan = allocator.allocate(total_labels=total, iterations=iterations, history=records)
    except HarnessError as exc:
        assert str(exc)
        return
    plan = [int(p) for p in plan]
    assert len(plan) == iterations and all(p >= 0 for p in plan) and sum(plan) <= total, (name, plan)
