"""`harness run` end to end on a tiny synthetic world: the leaderboard row, provenance, reproducibility."""

import json

import pytest

from leaderboard.store import Leaderboard
from tests.conftest import TINY_RUN


def run_ok(cli, *args):
    result = cli("run", *TINY_RUN, *args)
    assert result.exit_code == 0, result.output
    return result


def only_run(db_path):
    runs = Leaderboard(db_path).runs(status=None)
    assert len(runs) == 1
    return runs[0]


def metrics(rows):
    """Iteration rows without wall-clock timings (which legitimately differ)."""
    return [{k: v for k, v in row.items() if not k.startswith("time_") and k not in ("run_id", "recorded_at")} for row in rows]


def test_run_lands_in_the_leaderboard_with_provenance(cli, db_path):
    result = run_ok(cli, "--selector", "smallest", "--allocator", "decrease", "--json")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    run = only_run(db_path)
    assert run["status"] == "finished"
    assert run["id"] == out["run_id"]
    assert run["instance_selector"] == run["corpus_selector"] == "smallest"
    assert run["allocator"] == "decrease" and run["testbed"] == "synthetic" and run["trainer"] == "native"
    assert run["labels_used"] == 80 and run["budget"] == 80
    assert 0.0 <= run["final_win_rate"] <= 1.0
    config = run["config"]
    assert config["trainer"]["settings"]["epochs"] == 2
    assert config["trainer"]["settings"]["beta"] == 1.0  # defaults are recorded too
    assert config["testbed"]["settings"]["sft_samples"] == 2000
    plugins = run["plugins"]
    assert plugins["instance_selector"]["plugin"] == "plugins.selectors.margin"
    assert plugins["scorer:implicit_reward"]["version"]
    versions = run["versions"]
    assert versions["torch"].startswith("2.") and "numpy" in versions and "python" in versions
    import torch

    assert versions["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # floats depend on it
    assert "git_commit" in run and run["command"]
    iterations = Leaderboard(db_path).iterations(run["id"])
    assert [row["iteration"] for row in iterations] == [0, 1, 2]
    # decrease over 2 iterations is 2:1 of 80 labels
    assert [row["labels"] for row in iterations[1:]] == [53, 27]
    assert sum(row["labels"] for row in iterations[1:]) == run["labels_used"]
    for row in iterations[1:]:
        assert 0.0 <= row["sel_ranking_accuracy"] <= 1.0
        assert 0.0 < row["sel_mean_dpo_weight"] < 1.0
        assert row["sel_beta_margin_q10"] <= row["sel_beta_margin_q50"] <= row["sel_beta_margin_q90"]
        assert row["time_sample"] > 0 and row["time_train"] > 0


def test_same_config_and_seed_give_identical_numbers(cli, db_path):
    run_ok(cli, "--selector", "smallest", "--seed", "3")
    run_ok(cli, "--selector", "smallest", "--seed", "3")
    run_ok(cli, "--selector", "smallest", "--seed", "4")
    board = Leaderboard(db_path)
    runs = sorted(board.runs(status=None), key=lambda r: r["started_at"])
    first, second, other = (metrics(board.iterations(r["id"])) for r in runs)
    assert first == second
    assert first != other
    assert runs[0]["config_hash"] == runs[1]["config_hash"] == runs[2]["config_hash"]


def test_strategies_share_world_and_pi0_on_a_seed(cli, db_path):
    run_ok(cli, "--selector", "smallest", "--seed", "5")
    run_ok(cli, "--selector", "random", "--seed", "5")
    board = Leaderboard(db_path)
    runs = board.runs(status=None)
    pi0 = [metrics(board.iterations(r["id"]))[0] for r in runs]
    assert pi0[0] == pi0[1]  # common random numbers: identical world, pi_0 and evaluation draw
    finals = [r["final_win_rate"] for r in runs]
    assert runs[0]["config_hash"] != runs[1]["config_hash"]
    assert len(finals) == 2




@pytest.mark.parametrize("error, status, code", [("RuntimeError('boom')", "failed", 1),
                                                 ("KeyboardInterrupt()", "interrupted", 130)])
def test_a_crashing_selector_marks_the_run_and_keeps_the_board_consistent(cli, db_path, tmp_path, error, status, code):
    plugin = tmp_path / "crashy.py"
    plugin.write_text(f"""
from harness import hookimpl
from harness.interfaces import Selector


class Crashy(Selector):
    name = "crashy"
    description = "raises at instance level"

    def select_instances(self, batch, rng):
        raise {error}

    def select_corpus(self, batch, pairs, n_keep, rng):
        return pairs


@hookimpl
def register_selectors(register):
    register(Crashy)
""")
    result = cli("run", *TINY_RUN, "--selector", "crashy", "--plugin", str(plugin))
    assert result.exit_code == code, result.output
    run = only_run(db_path)
    assert run["status"] == status
    assert run["final_win_rate"] is None
    if status == "failed":
        assert "boom" in run["error"] and "Traceback" in run["error"]
    # pi_0's row was complete when the crash came, so it stays; nothing later was written.
    assert [row["iteration"] for row in Leaderboard(db_path).iterations(run["id"])] == [0]
    assert Leaderboard(db_path).runs() == []  # finished runs only: none


def test_leaderboard_shows_labels_proxy_calls_and_gain_per_1k_labels(cli, db_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run_ok(cli, "--selector", "map", "--seed", "2")
    run = only_run(db_path)
    assert run["labels_used"] == 80
    assert run["proxy_calls"] == 2 * 80 * 8  # every response of both pools scored by the proxy, not charged
    expected = 1000 * (run["final_win_rate"] - run["initial_win_rate"]) / run["labels_used"]
    assert run["win_gain_per_1k_labels"] == pytest.approx(expected, abs=1e-6)
    table = cli("leaderboard", "--db", db_path)
    assert table.exit_code == 0
    assert "proxy calls" in table.output and "gain/1k labels" in table.output
    assert "1,280" in table.output
    ranked = cli("leaderboard", "--db", db_path, "--sort", "win_gain_per_1k_labels", "--json")
    assert ranked.exit_code == 0 and json.loads(ranked.stdout)[0]["win_gain_per_1k_labels_mean"] == pytest.approx(
        run["win_gain_per_1k_labels"])


def test_compare_pairs_an_explicit_score_strategy_with_its_random_baseline(cli, db_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    for seed in ("0", "1"):
        run_ok(cli, "--selector", "random", "--seed", seed)
        run_ok(cli, "--selector", "map", "-o", "proxy.fidelity=0.9", "--seed", seed)
    result = cli("leaderboard", "compare", "--db", db_path, "--baseline", "random", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    rows = {row["instance_selector"]: row for row in payload["rows"] if not row["is_baseline"]}
    assert rows["map"]["n"] == 2  # judges belong to the strategy; the rest of the config matches random's
