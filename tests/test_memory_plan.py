"""A plan's memory estimate: what it counts, how it scales, and the refusal of a plan that would not fit."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_RUN
from harness import memory
from harness.errors import UsageError
from harness.memory import MemoryNeeds, estimate, format_bytes, parse_bytes
from plugins.testbeds.synthetic import SyntheticTestbed


def test_the_pool_term_is_prompts_times_responses_plus_the_selection_arrays():
    needs = MemoryNeeds(world_bytes=1000, bytes_per_prompt=10, bytes_per_response=100)
    found = estimate(needs, [5, 40, 20], n_responses=4)
    assert found.pool_prompts == 40  # the largest iteration's pool
    assert found.pool_bytes == 40 * (10 + 4 * (100 + memory.SCORE_BYTES) + 9 * 4 * 4)
    assert found.total_bytes == found.pool_bytes + 1000


def test_a_testbed_without_an_estimate_is_said_to_be_left_out():
    found = estimate(None, [10], n_responses=2)
    assert found.world_bytes == 0 and "not counted" in found.describe()


@pytest.mark.parametrize("option", ["eval_prompts", "sft_samples", "hidden_dim", "vocab_size", "max_response_length"])
def test_the_synthetic_estimate_grows_with_the_options_that_size_the_world(option):
    defaults = {o.name: o.default for o in SyntheticTestbed.options}
    small = SyntheticTestbed({}).memory_needs()
    large = SyntheticTestbed({option: defaults[option] * 4}).memory_needs()
    parts = ("world_bytes", "bytes_per_prompt", "bytes_per_response")
    assert all(getattr(large, part) >= getattr(small, part) for part in parts)
    assert any(getattr(large, part) > getattr(small, part) for part in parts)


def test_dry_run_prints_the_estimate_and_json_carries_it(cli, tmp_path):
    result = cli("run", *TINY_RUN, "--dry-run", "--json", "--db", tmp_path / "b.db")
    assert result.exit_code == 0, result.output
    assert "memory estimate" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["memory_bytes"] > 0


def test_a_plan_over_the_limit_is_refused_before_anything_is_made(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1MiB")
    result = cli("run", *TINY_RUN, "--db", tmp_path / "b.db")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "1.0 MiB is available (HARNESS_MEMORY_LIMIT)" in text and "To fit, lower the testbed options" in text
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "64GiB")
    assert cli("run", *TINY_RUN, "--dry-run", "--db", tmp_path / "b.db").exit_code == 0


def test_a_pool_too_large_names_the_run_options_that_shrink_it(cli, tmp_path):
    result = cli("run", "--budget", "9000000000000", "--iterations", "1", "--dry-run", "--db", tmp_path / "b.db")
    assert result.exit_code == 2
    assert "lower --budget or --responses, raise --keep" in " ".join(result.output.split())


@pytest.mark.parametrize("text, expected", [("16GiB", 16 * 2**30), ("500MB", 500 * 10**6), ("1024", 1024),
                                            ("1.5 kib", 1536)])
def test_memory_amounts_parse(text, expected):
    assert parse_bytes(text, "X") == expected


@pytest.mark.parametrize("text", ["lots", "0", "-5GiB", "12 parsecs", ""])
def test_bad_memory_amounts_name_the_variable(text):
    with pytest.raises(UsageError, match="X=.* is not an amount of memory"):
        parse_bytes(text, "X")


def test_sizes_read_well():
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(100) == "100 B"
    assert format_bytes(3 * 2**50) == "3.0 PiB" and format_bytes(1e300) == "1.0e+300 bytes"


def test_a_sweep_refuses_more_parallel_runs_than_memory_holds(cli, tmp_path, monkeypatch):
    grid = ["sweep", "--selector", "random,smallest", "--seeds", "0-3", "--iterations", "1", "--budget", "2000",
            "--dry-run", "--db", tmp_path / "b.db"]
    one = cli("run", "--iterations", "1", "--budget", "2000", "--dry-run", "--json", "--db", tmp_path / "b.db")
    per_run = json.loads(one.stdout)["memory_bytes"]
    monkeypatch.setenv(memory.LIMIT_VARIABLE, str(int(per_run * 2.5)))
    refused = cli(*grid, "--jobs", "4")
    assert refused.exit_code == 2
    assert "4 runs at once need about" in refused.output and "run with --jobs 2" in refused.output
    assert cli(*grid, "--jobs", "2").exit_code == 0


def test_a_study_refuses_more_parallel_runs_than_memory_holds(cli, tmp_path, monkeypatch):
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[study]\nseeds = "0-1"\n\n[[grid]]\nname = "one"\nselector = ["random", "smallest"]\n'
        'iterations = 1\nbudget = 2000\n\n[[claim]]\nid = "c1"\nmetric = "final_win_rate"\n'
        'a = {grid = "one", selector = "smallest"}\nb = {grid = "one", selector = "random"}\ndirection = "a > b"\n'
    )
    one = cli("run", "--iterations", "1", "--budget", "2000", "--dry-run", "--json", "--db", tmp_path / "b.db")
    per_run = json.loads(one.stdout)["memory_bytes"]
    monkeypatch.setenv(memory.LIMIT_VARIABLE, str(int(per_run * 2.5)))
    refused = cli("study", "run", plan, "--jobs", "4", "--dry-run", "--db", tmp_path / "b.db")
    assert refused.exit_code == 2, refused.output
    assert "4 runs at once need about" in refused.output and "run with --jobs 2" in refused.output
    assert cli("study", "run", plan, "--jobs", "2", "--dry-run", "--db", tmp_path / "b.db").exit_code == 0
    assert not (tmp_path / "b.db").exists()
