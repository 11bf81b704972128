"""Bad input exits 2 with a message that names the fix, and writes nothing."""

import json

import pytest

from tests.conftest import TINY_RUN


def assert_rejected(result, db_path, *fragments):
    assert result.exit_code == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not db_path.exists(), "a rejected run must not touch the leaderboard"


def test_unknown_selector_suggests_the_close_match(cli, db_path):
    result = cli("run", "--selector", "smalest")
    assert_rejected(result, db_path, "did you mean 'smallest'?", "available selectors:")


def test_unknown_allocator_lists_available(cli, db_path):
    result = cli("run", "--allocator", "decreasing")
    assert_rejected(result, db_path, "did you mean 'decrease'?", "constant")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--budget", "0"], "--budget must be a positive"),
        (["--keep", "1.5"], "--keep must be in (0, 1]"),
        (["--keep", "0"], "--keep must be in (0, 1]"),
        (["--responses", "1"], "--responses must be >= 2"),
        (["--iterations", "0"], "--iterations must be in [1, 10000]"),
        (["--iterations", "10001"], "--iterations must be in [1, 10000]"),
        (["--budget", str(2**63)], "--budget must be a positive number of gold labels, at most 2^63 - 1"),
        (["--budget", "2", "--iterations", "3"], "Raise --budget to at least 3"),
        (["-o", "bta=1"], "did you mean 'beta'"),
        (["-o", "trainer.bta=1"], "did you mean 'trainer.beta'"),
        (["-o", "trainer.beta=-1"], "must be in (0, inf)"),
        (["-o", "nobody.beta=1"], "unknown option prefix 'nobody'"),
        (["-o", "beta"], "is not KEY=VALUE"),
        (["--allocator", "custom", "-o", "weights=1,2"], "weights"),
        (["--reference", "moving"], "--reference must be one of fixed, previous"),
    ],
)
def test_bad_numbers_and_options(cli, db_path, args, fragment):
    assert_rejected(cli("run", *args), db_path, fragment)


def test_min_budget_suggestion_is_feasible(cli, db_path):
    result = cli("run", "--budget", "2", "--iterations", "3", "--allocator", "increase")
    assert_rejected(result, db_path, "Raise --budget to at least")
    suggested = int(result.output.split("at least")[1].split(",")[0].split()[0])
    ok = cli("run", "--budget", suggested, "--iterations", "3", "--allocator", "increase", "--dry-run")
    assert ok.exit_code == 0, ok.output
    too_few = cli("run", "--budget", suggested - 1, "--iterations", "3", "--allocator", "increase", "--dry-run")
    assert too_few.exit_code == 2


def test_dry_run_validates_and_writes_nothing(cli, db_path):
    result = cli("run", "--selector", "smallest", "--allocator", "decrease", "--dry-run", *TINY_RUN)
    assert result.exit_code == 0, result.output
    assert "it1 53 labels / 106 prompts" in result.output
    assert not db_path.exists()


def test_an_option_for_a_judge_the_run_does_not_use_says_why(cli, db_path):
    result = cli("run", "--selector", "random", "-o", "proxy.fidelity=0.5", "--dry-run")
    assert_rejected(result, db_path, "option 'proxy.fidelity' is for the proxy judge",
                    "read no proxy explicit scores")
    ok = cli("run", "--selector", "map", "-o", "proxy.fidelity=0.5", "--dry-run", "--json")
    assert ok.exit_code == 0, ok.output
    config = json.loads(ok.stdout)["config"]
    assert config["proxy_judge"]["settings"]["fidelity"] == 0.5
    assert config["gold_judge"] is None  # map with the proxy source records no gold judge
    plain = json.loads(cli("run", "--selector", "random", "--dry-run", "--json").stdout)["config"]
    assert plain["gold_judge"] is None and plain["proxy_judge"] is None
