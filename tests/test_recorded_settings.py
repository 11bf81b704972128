"""Options added after runs were recorded (``Option.omit_at_default``) stay out of a run's config at their
default, so the runs recorded before them keep their config hash, and a study or sweep resumed across the
change still finds its finished cells."""

from __future__ import annotations

from harness.config import build_config, instantiate
from harness.options import Option, recorded_settings
from harness.plugins import load_registry

SPECS = (
    Option("old", int, 1, "recorded always"),
    Option("new", str, "a", "added later", choices=("a", "b"), omit_at_default=True),
)

# The strategy hash of the default run before the synthetic testbed had its `world` and `state_dependence`
# options: `build_config(load_registry()).strategy_hash()` at commit ec6764f.
HASH_BEFORE_WORLD_OPTIONS = "19011121a0478b12"


def test_an_omitted_option_is_left_out_only_at_its_default():
    assert recorded_settings(SPECS, {"old": 1, "new": "a"}) == {"old": 1}
    assert recorded_settings(SPECS, {"old": 1, "new": "b"}) == {"old": 1, "new": "b"}
    assert recorded_settings(SPECS, {"old": 2}) == {"old": 2}  # a default is not invented either


def test_the_synthetic_world_options_are_recorded_only_when_chosen():
    registry = load_registry()
    default = build_config(registry)
    settings = default.testbed.settings
    assert "world" not in settings and "state_dependence" not in settings
    assert "tau" in settings  # older options are still recorded at their default
    assert default.strategy_hash() == HASH_BEFORE_WORLD_OPTIONS
    chosen = build_config(registry, options=["testbed.world=staircase", "testbed.state_dependence=false"])
    assert chosen.testbed.settings["world"] == "staircase" and chosen.testbed.settings["state_dependence"] is False
    assert chosen.strategy_hash() != default.strategy_hash()
    # Rebuilding the testbed from the recorded settings restores the defaults.
    testbed = instantiate(registry, default).testbed
    assert testbed.settings["world"] == "bigram" and testbed.settings["state_dependence"] is True
