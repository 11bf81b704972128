"""Every numeric option, out of its range, is refused with the range in the message (exit 2, nothing written)."""

from __future__ import annotations

import pytest

import reliability
from harness.errors import UsageError
from harness.plugins import load_registry

pytestmark = pytest.mark.bad_input

REGISTRY = load_registry([])

RUN_OPTIONS = [
    (["--iterations", "0"], "in [1, 10000]"),
    (["--iterations", "-3"], "in [1, 10000]"),
    (["--budget", "0"], "positive"),
    (["--budget", "-5"], "positive"),
    (["--keep", "0"], "(0, 1]"),
    (["--keep", "1.5"], "(0, 1]"),
    (["--keep", "nan"], "(0, 1]"),
    (["--responses", "1"], ">= 2"),
    (["--seed", "-1"], "--seed must be in [0, 9223372036854775807]"),
    (["--seed", str(2**63)], "--seed must be in [0, 9223372036854775807] (the leaderboard stores it as a 64-bit"),
    (["--world-seed", "-2"], "--world-seed must be in [0, 9223372036854775807]"),
    (["--threads", "0"], "greater than or equal to 1"),
    (["--budget", "abc"], "valid integer"),
]


@pytest.mark.parametrize("args, said", RUN_OPTIONS)
def test_run_numeric_options(cli, tmp_path, args, said):
    db = tmp_path / "x.db"
    result = cli("run", *args, "--dry-run", "--db", db)
    reliability.bad_input("command-line values")
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert not db.exists()


@pytest.mark.parametrize("args, said", [(["--jobs", "0"], "1"), (["--seeds", "-1"], "non-negative"),
                                        (["--seeds", "3-1"], "--seeds"), (["--budget", "0"], "positive")])
def test_sweep_numeric_options(cli, tmp_path, args, said):
    db = tmp_path / "x.db"
    result = cli("sweep", *args, "--dry-run", "--db", db)
    reliability.bad_input("command-line values")
    assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    assert not db.exists()


def _bounded_options():
    for kind in ("selector", "allocator", "trainer", "testbed", "judge"):
        for name in sorted(REGISTRY.names(kind)):
            cls = REGISTRY.get(kind, name).cls
            for option in cls.options:
                if option.type in (int, float) and (option.min is not None or option.max is not None):
                    yield kind, name, option


@pytest.mark.parametrize("kind, name, option", [pytest.param(*o, id=f"{o[0]}:{o[1]}.{o[2].name}")
                                                for o in _bounded_options()])
def test_every_bounded_component_option_names_its_range(kind, name, option):
    outside = []
    if option.min is not None:
        outside.append(option.min - 1 if option.min_inclusive else option.min)
    if option.max is not None:
        outside.append(option.max + 1 if option.max_inclusive else option.max)
    if option.type is float:
        outside.append(float("nan"))
    for value in outside:
        reliability.bad_input("component option values")
        with pytest.raises(UsageError) as caught:
            REGISTRY.create(kind, name, {option.name: str(value)})
        message = str(caught.value)
        assert option.name in message and ("[" in message or "(" in message), message
