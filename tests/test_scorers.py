"""The implicit-reward scorers."""

from __future__ import annotations

import numpy as np
import pluggy
import pytest

from harness import hookspecs
from harness.plugins import PluginInfo, build_registry
from plugins.scorers import implicit
from plugins.scorers.implicit import ImplicitReward, ImplicitRewardNormalized

LOGP = np.array([[-10.0, -4.0, -7.5], [-1.0, -20.0, -3.0]])
REF = np.array([[-12.0, -3.0, -7.5], [-2.5, -10.0, -9.0]])
LENGTHS = np.array([[4, 2, 3], [1, 10, 6]])


def test_implicit_reward_is_the_log_ratio():
    column = ImplicitReward().score(logp_policy=LOGP, logp_ref=REF, lengths=LENGTHS)
    np.testing.assert_array_equal(column, [[2.0, -1.0, 0.0], [1.5, -10.0, 6.0]])
    assert column.dtype == np.float64 and column.shape == (2, 3)


def test_normalized_divides_by_length_including_eos():
    column = ImplicitRewardNormalized().score(logp_policy=LOGP, logp_ref=REF, lengths=LENGTHS)
    np.testing.assert_allclose(column, [[0.5, -0.5, 0.0], [1.5, -1.0, 1.0]])
    assert column.dtype == np.float64


def test_int_and_float32_inputs_give_float64():
    column = ImplicitRewardNormalized().score(
        logp_policy=LOGP.astype(np.float32), logp_ref=REF.astype(np.float32), lengths=LENGTHS.astype(np.int32)
    )
    assert column.dtype == np.float64


def test_inputs_are_not_modified():
    logp, ref = LOGP.copy(), REF.copy()
    ImplicitRewardNormalized().score(logp_policy=logp, logp_ref=ref, lengths=LENGTHS)
    np.testing.assert_array_equal(logp, LOGP)
    np.testing.assert_array_equal(ref, REF)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ImplicitReward().score(logp_policy=LOGP, logp_ref=REF[:1], lengths=LENGTHS)
    with pytest.raises(ValueError, match="lengths"):
        ImplicitRewardNormalized().score(logp_policy=LOGP, logp_ref=REF, lengths=LENGTHS[:, :2])


def test_zero_length_is_an_error():
    with pytest.raises(ValueError, match="EOS"):
        ImplicitRewardNormalized().score(logp_policy=LOGP, logp_ref=REF, lengths=LENGTHS * 0)


def test_registered_under_their_column_names():
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(implicit, name=implicit.__name__)
    registry = build_registry(pm, {implicit.__name__: PluginInfo(implicit.__name__, "t", "builtin")})
    assert registry.names("scorer") == ["implicit_reward", "implicit_reward_normalized", "policy_logprob_mean"]
    assert registry.get("scorer", "implicit_reward").cls is ImplicitReward
