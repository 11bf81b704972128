import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.budget import Ledger, plan_pool
from harness.errors import BudgetExceededError


def test_pairwise_selectors_draw_labels_over_keep_prompts():
    pool = plan_pool(1000, 0.5)
    assert (pool.prompts, pool.pairs, pool.labels) == (2000, 1000, 1000)


def test_pointwise_cost_per_prompt_is_charged_before_pairs():
    pool = plan_pool(1000, 0.5, labels_per_prompt=8)
    # 8 labels per prompt plus half a pair per prompt: 8.5 labels per prompt.
    assert pool.prompts == 117
    assert pool.labels <= 1000
    assert pool.prompt_labels == 117 * 8


@given(labels=st.integers(0, 10**6), keep=st.floats(0.01, 1.0), per_prompt=st.integers(0, 16))
def test_pool_never_exceeds_its_labels(labels, keep, per_prompt):
    pool = plan_pool(labels, keep, per_prompt)
    assert 0 <= pool.pairs <= pool.prompts
    assert pool.labels <= labels


def test_ledger_refuses_overspend_and_charges_nothing():
    ledger = Ledger(10)
    ledger.charge(1, 7)
    with pytest.raises(BudgetExceededError, match="only 3 of 10 remain"):
        ledger.charge(2, 4)
    assert ledger.spent == 7 and ledger.charged == {1: 7}
    ledger.charge(2, 3)
    assert ledger.remaining == 0
