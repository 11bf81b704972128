"""The fixed budget schedules and the largest-remainder split."""

from __future__ import annotations

import math

import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import hookspecs
from harness.errors import UsageError
from harness.interfaces import IterationRecord
from harness.plugins import PluginInfo, build_registry
from harness.testing import AllocatorContract
from plugins.allocators import schedules
from plugins.allocators.schedules import Constant, Custom, Decrease, Increase, split_by_weights


# ------------------------------------------------------------------ contracts


class TestConstantContract(AllocatorContract):
    allocator_class = Constant


class TestIncreaseContract(AllocatorContract):
    allocator_class = Increase


class TestDecreaseContract(AllocatorContract):
    allocator_class = Decrease


class TestCustomContract(AllocatorContract):
    allocator_class = Custom
    settings = {"weights": "1,1,2"}
    iterations = (3,)


class _Overspends(Constant):
    name = "overspends"

    def allocate(self, *, total_labels, iterations, history):
        return [total_labels] * iterations


def test_the_contract_catches_an_overspending_allocator():
    class Broken(AllocatorContract):
        allocator_class = _Overspends
        iterations = (2,)

    with pytest.raises(AssertionError, match="exceed"):
        Broken().test_plan_shape_and_sum()


# ------------------------------------------------------------------ schedules


def plan(allocator, total, iterations, history=()):
    return allocator.allocate(total_labels=total, iterations=iterations, history=history)


def test_paper_schedules_for_three_iterations():
    assert plan(Increase(), 3000, 3) == [500, 1000, 1500]
    assert plan(Decrease(), 3000, 3) == [1500, 1000, 500]
    assert plan(Constant(), 3000, 3) == [1000, 1000, 1000]
    assert plan(Increase(), 30_000, 3) == [5000, 10_000, 15_000]


def test_linear_in_general():
    assert plan(Increase(), 1000, 4) == [100, 200, 300, 400]
    assert plan(Decrease(), 1000, 4) == [400, 300, 200, 100]
    assert plan(Constant(), 10, 1) == [10]


def test_fixed_schedules_ignore_history():
    history = (IterationRecord(1, 123, {"win_rate": 0.9}),)
    for allocator in (Constant(), Increase(), Decrease(), Custom({"weights": (2, 1, 1)})):
        assert plan(allocator, 3001, 3, history) == plan(allocator, 3001, 3)


def test_custom_weights():
    assert plan(Custom({"weights": "1,1,2"}), 3000, 3) == [750, 750, 1500]
    assert plan(Custom({"weights": "1:1:2"}), 4, 3) == [1, 1, 2]
    assert plan(Custom({"weights": (0.5, 0.25, 0.25)}), 100, 3) == [50, 25, 25]


def test_custom_without_weights_says_how_to_set_them():
    with pytest.raises(UsageError, match=r"custom needs -o weights=\.\.\."):
        Custom()


def test_custom_with_the_wrong_number_of_weights():
    allocator = Custom({"weights": "1,2"})
    with pytest.raises(UsageError, match=r"2 entries but the run has 3 iterations.*-o weights=1,1,1"):
        plan(allocator, 300, 3)


@pytest.mark.parametrize("weights", ["1,0,2", "1,-1,2", "1,nan,2", "1,inf,2", "a,b", ""])
def test_custom_rejects_bad_weights(weights):
    with pytest.raises(UsageError):
        Custom({"weights": weights})


def test_zero_iterations_is_a_usage_error():
    with pytest.raises(UsageError):
        plan(Constant(), 10, 0)


def test_registered_like_third_party_plugins():
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(schedules, name=schedules.__name__)
    registry = build_registry(pm, {schedules.__name__: PluginInfo(schedules.__name__, "t", "builtin")})
    assert registry.names("allocator") == ["constant", "custom", "decrease", "increase"]
    for name in registry.names("allocator"):
        assert registry.get("allocator", name).cls.description


# ------------------------------------------------------------------ split_by_weights


def test_largest_remainder_examples():
    assert split_by_weights(10, [1, 1, 1]) == [4, 3, 3]  # ties go to the earlier iteration
    assert split_by_weights(2, [1, 1, 1]) == [1, 1, 0]
    assert split_by_weights(7, [1, 2, 3]) == [1, 2, 4]  # 1.17, 2.33, 3.5
    assert split_by_weights(5, [3, 2, 1]) == [2, 2, 1]  # 2.5, 1.67, 0.83: remainders .83, .67 win
    assert split_by_weights(0, [1, 2]) == [0, 0]
    assert split_by_weights(1, [1e-300, 1e300]) == [0, 1]


def test_split_returns_python_ints():
    assert all(type(x) is int for x in split_by_weights(1001, [0.1, 0.7, 0.2]))


@pytest.mark.parametrize(
    "total, weights",
    [(-1, [1]), (1.5, [1]), (10, []), (10, [1, 0]), (10, [1, -2]), (10, [math.nan]), (10, [math.inf])],
)
def test_split_rejects_bad_input(total, weights):
    with pytest.raises(ValueError):
        split_by_weights(total, weights)


@settings(max_examples=500, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(
        st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=12,
    ),
)
def test_split_property(total, weights):
    shares = split_by_weights(total, weights)
    assert len(shares) == len(weights)
    assert sum(shares) == total
    assert all(isinstance(s, int) and s >= 0 for s in shares)
    # Largest remainder: every share is its exact proportional share rounded down or up.
    weight_sum = math.fsum(weights)
    for share, w in zip(shares, weights):
        exact = total * w / weight_sum
        assert exact - 1 - 1e-6 * max(1.0, exact) <= share <= exact + 1 + 1e-6 * max(1.0, exact)


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 10**9), k=st.integers(1, 30))
def test_schedules_property(total, k):
    for allocator in (Constant(), Increase(), Decrease()):
        shares = plan(allocator, total, k)
        assert len(shares) == k and sum(shares) == total and min(shares) >= 0
    increasing = plan(Increase(), total, k)
    assert increasing == sorted(increasing)
    assert plan(Decrease(), total, k) == sorted(plan(Decrease(), total, k), reverse=True)
