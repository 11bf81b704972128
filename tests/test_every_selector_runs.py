"""Every built-in selector runs a whole (tiny) iteration on its defaults: `harness run --selector NAME` works for
each, from the plain margins to the strategies that read features, keep a memory or steer sampling."""

from __future__ import annotations

import pytest

from harness.config import plan_run
from harness.loop import run_experiment
from harness.plugins import load_registry
from harness.run_request import RunRequest
from tests.conftest import TINY_TESTBED

BUILTIN = sorted(name for name in load_registry().names("selector")
                 if load_registry().get("selector", name).plugin.name.startswith("plugins."))


def test_the_list_holds_the_field_strategies():
    assert {"sharp", "wsharp", "signedgap", "signedgap_proxy", "ae_dpo", "us_dpo", "ae_borda", "apo", "sea", "pilaf",
            "xpo"} <= set(BUILTIN)


@pytest.mark.parametrize("selector", BUILTIN)
def test_a_run_on_defaults_buys_its_labels_and_trains(selector):
    plan = plan_run(load_registry(), RunRequest.from_values(
        selector=selector, iterations=2, budget=96, options=("trainer.epochs=1", *TINY_TESTBED)))
    result = run_experiment(plan.config, plan.components)
    assert result.final["labels_used"] <= 96
    trained = [row for row in result.iterations[1:] if row.get("train_steps")]
    assert trained, f"{selector}: no iteration trained"
    assert all(row["labels"] > 0 for row in trained)
