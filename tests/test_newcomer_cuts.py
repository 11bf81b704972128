"""The small cuts a newcomer hit, each kept fixed: selectors that break reproducibility without a word, exit
codes, the database hint, `harness list`, the plugins table, narrow terminals, and what a run's time counts."""

from __future__ import annotations

import re
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RUN
from harness.interfaces import Pairs

ROOT = Path(__file__).resolve().parent.parent

SELECTORS = textwrap.dedent('''
    import random

    import numpy as np

    from harness import hookimpl
    from harness.interfaces import Pairs
    from plugins.selectors.random import RandomSelector


    class Fractional(RandomSelector):
        name = "fractional"
        description = "pairs at fractional indices"

        def select_instances(self, batch, rng):
            rows = np.arange(batch.n_prompts)
            return Pairs(prompt=rows, a=np.full(rows.size, 0.5), b=np.full(rows.size, 1.5))


    class GlobalNumpy(RandomSelector):
        name = "global_numpy"
        description = "draws from numpy's global state"

        def select_corpus(self, batch, pairs, n_keep, rng):
            np.random.permutation(3)
            return super().select_corpus(batch, pairs, n_keep, rng)


    class GlobalRandom(RandomSelector):
        name = "global_random"
        description = "draws from the random module"

        def select_instances(self, batch, rng):
            random.random()
            return super().select_instances(batch, rng)


    @hookimpl
    def register_selectors(register):
        for cls in (Fractional, GlobalNumpy, GlobalRandom):
            register(cls)
''')


@pytest.fixture
def selectors(tmp_path):
    path = tmp_path / "odd_selectors.py"
    path.write_text(SELECTORS)
    return str(path)


@pytest.mark.parametrize("name, said", [
    ("fractional", "Pairs.a must hold whole-number indices, got float64 values such as [0.5"),
    ("global_numpy", "corpus selector 'global_numpy' drew from the global numpy.random RNG"),
    ("global_random", "instance selector 'global_random' drew from the global random RNG"),
])
def test_a_selector_that_would_not_reproduce_fails_its_run_by_name(cli, tmp_path, selectors, name, said):
    db = tmp_path / "b.db"
    result = cli("run", *TINY_RUN, "--selector", name, "--plugin", selectors, "--db", db)
    assert result.exit_code == 1, result.output
    (status, error), = sqlite3.connect(db).execute("select status, error from runs").fetchall()
    assert status == "failed" and said in error


def test_pairs_take_whole_numbers_in_any_numeric_dtype_and_refuse_the_rest():
    assert Pairs(prompt=[0.0, 1.0], a=np.array([0, 1], np.int32), b=[1, 2]).prompt.dtype == np.int64
    for bad in ([0.5], [True], [np.nan], ["0"]):
        with pytest.raises(TypeError, match="whole-number indices"):
            Pairs(prompt=[0], a=bad, b=[1])
    assert len(Pairs(prompt=[], a=[], b=[])) == 0


def test_an_unknown_or_ambiguous_run_is_an_input_mistake(cli, tmp_path):
    db = tmp_path / "b.db"
    assert cli("run", *TINY_RUN, "--db", db).exit_code == 0
    for run_id in ("rnope", ""):
        result = cli("leaderboard", "show", run_id, "--db", db)
        assert result.exit_code == 2 and "no run" in result.output


def test_a_new_directory_for_the_database_is_said_and_the_hint_keeps_the_db(cli, tmp_path):
    db = tmp_path / "new" / "b.db"
    result = cli("run", *TINY_RUN, "--db", db)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"note: {db.parent} does not exist; it will be made for the database" in text
    assert f"compare with harness leaderboard --db {db}" in text


def test_wall_seconds_leaves_out_building_the_world(cli, tmp_path):
    db = tmp_path / "b.db"
    fresh = ["-o", "testbed.sft_samples=2345"]  # a world no other test built: this run builds it
    assert cli("run", *TINY_RUN, *fresh, "--db", db).exit_code == 0
    assert cli("run", *TINY_RUN, *fresh, "--db", db).exit_code == 0
    rows = sqlite3.connect(db).execute(
        "select wall_seconds, time_setup, time_sample + time_logprobs + time_train + time_evaluate "
        "from runs order by started_at").fetchall()
    (wall_first, setup_first, work_first), (wall_second, setup_second, _) = rows
    assert setup_first > setup_second  # built, then read from the cache
    assert wall_first < setup_first + work_first  # the build is not in the wall time
    assert wall_first >= work_first


def test_list_is_short_and_one_name_shows_every_option(cli):
    summary = cli("list", "selectors")
    assert summary.exit_code == 0
    assert "harness list selectors NAME" in " ".join(summary.output.split())
    assert "compute margins on" not in summary.output  # the option help is one command away
    detail = cli("selectors", "smallest")
    text = " ".join(detail.output.split())
    assert detail.exit_code == 0 and "normalize" in text and "implicit_reward_normalized" in text
    unknown = cli("list", "selectors", "nope")
    assert unknown.exit_code == 2 and "available selectors" in unknown.output


def test_the_plugins_table_says_studies(cli):
    result = cli("plugins", "--all")
    assert "studies:" in result.output and "studys" not in result.output


def test_the_verdicts_fit_the_terminal_with_every_claim_whole_beside_its_verdict(tmp_path):
    from rich.console import Console

    from harness.cli.study import _print_verdicts

    class Study:
        plan = type("Plan", (), {"name": "demo"})()
        variant = "quick"
        label = "demo-quick"

    row = {"claim": "smallest-beats-random-at-three-iterations", "metric": "final_win_rate",
           "contrast": "smallest − random", "regime": "outcome-chosen; training 1 epoch at lr 0.001, batch 64",
           "source": "Table 1 (p. 6)", "measured": "+0.100 ± 0.050",
           "ci": "[+0.05, +0.15]", "n": "10", "test": "t", "p": "0.0010", "p_sign_flip": "0.0020",
           "family": "F1 (2)", "p_adjusted": "0.0020", "verdict": "reproduced"}
    for width in (80, 200):
        console = Console(width=width, record=True)
        _print_verdicts(console, Study, [row, {**row, "claim": "smallest-beats-random-at-one-iteration"}],
                        {"finished": 20, "wanted": 20})
        text = console.export_text()
        lines = text.splitlines()
        assert all(len(line.rstrip()) <= width for line in lines)
        for claim in ("smallest-beats-random-at-three-iterations", "smallest-beats-random-at-one-iteration"):
            shown = next(line for line in lines if claim in line)  # every claim's whole name beside its verdict
            assert re.search(rf"\b{claim}\s.*\breproduced\b", shown)
        if width == 80:  # the columns that do not fit are named, with the way to see them
            assert "not shown at 80 columns" in text and "--wide" in text
        else:  # every column
            assert "adjusted p" in text and "sign-flip p" in text and "not shown" not in text
            assert "regime" in text


def test_the_hook_reference_matches_the_selector_interface():
    from harness.interfaces import SelectionBatch, Selector

    page = (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8")
    declared = {name for name in vars(Selector) if not name.startswith("_") and not callable(getattr(Selector, name))
                and name not in ("kind", "name", "description", "options")}
    documented = set(re.findall(r"^\| `(\w+)` \| `", page, flags=re.M))
    assert declared <= documented, f"undocumented selector attributes: {declared - documented}"
    assert "labels_per_prompt" not in page
    fields = {f for f in SelectionBatch.__dataclass_fields__} | {"n_prompts", "n_responses"}
    assert all(f"batch.{field}" in page for field in fields)
    (block,) = re.findall(r"```python\n(.+?)\n```", page, flags=re.S)
    exec(compile(block, "docs/plugins/hooks.md", "exec"), {})  # the example builds a batch and selects


def test_a_db_typed_before_the_subcommand_beats_the_environment(cli, tmp_path, monkeypatch):
    db = tmp_path / "b.db"
    assert cli("run", *TINY_RUN, "--db", db).exit_code == 0
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "elsewhere.db"))
    for args in (["leaderboard", "--db", db, "compare"], ["leaderboard", "compare", "--db", db],
                 ["leaderboard", "--db", db, "show", "r"]):
        result = cli(*args)
        assert "elsewhere.db" not in result.output and result.exit_code == 0, (args, result.output)
