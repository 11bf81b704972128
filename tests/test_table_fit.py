"""Tables that fit the terminal (harness.table_fit): which columns go first, names never cut, --wide shows all;
and the CLI's tables (leaderboard, compare, list, study verdicts) at 80, 120 and 200 columns."""

from __future__ import annotations

import json
import os
import re

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from harness.table_fit import Column, cut_words, decide, fit_table, print_fitted
from leaderboard.store import Leaderboard
from tests.test_leaderboard_browse import add_run
from tests.test_study import tiny_plan

WIDTHS = (80, 120, 200)


def render(columns, width, **options):
    console = Console(width=width, record=True, color_system=None, file=open(os.devnull, "w"))
    fitted = print_fitted(console, columns, **options)
    return fitted, console.export_text()


def lines_fit(text: str, width: int) -> bool:
    return all(len(line.rstrip()) <= width for line in text.splitlines())


def sample(rows: int = 3) -> list[Column]:
    names = [f"a-rather-long-selector-name-{k}" for k in range(rows)]
    return [
        Column("#", [str(k + 1) for k in range(rows)], required=True),
        Column("name", names, kind="key", required=True),
        Column("win rate", [f"0.{k}00 ± 0.010" for k in range(rows)], required=True),
        Column("gold", ["1.234"] * rows, priority=6),
        Column("KL", ["12.34"] * rows, priority=5),
        Column("wall", ["3m12s"] * rows, priority=1),
        Column("settings", ["beta=0.5 lr=0.003 epochs=4 batch_size=16"] * rows, kind="text", priority=2),
    ]


# -- the helper ----------------------------------------------------------------------------------------------


def test_everything_fits_at_its_natural_width_with_nothing_left_out():
    fitted, text = render(sample(), 200)
    assert fitted.dropped == [] and fitted.footnote is None and "not shown" not in text
    for header in ("name", "win rate", "gold", "KL", "wall", "settings"):
        assert header in text
    assert "beta=0.5 lr=0.003 epochs=4 batch_size=16" in text


@pytest.mark.parametrize("width, dropped", [
    (72, []),  # settings cut to its floor, nothing dropped
    (68, ["wall"]),
    (64, ["settings"]),  # wall (priority 1) went first, then settings; wall fits again beside the rest
    (60, ["wall", "settings"]),
    (52, ["KL", "wall", "settings"]),
    (48, ["gold", "KL", "wall", "settings"]),
])
def test_the_lowest_priority_columns_go_first_and_the_footnote_names_them(width, dropped):
    fitted, text = render(sample(), width)
    assert fitted.dropped == dropped  # named in table order
    assert all(c.header not in dropped for c in sample() if c.required)
    assert lines_fit(text, width)
    if not dropped:
        assert fitted.footnote is None and "not shown" not in text
        return
    footnote = " ".join(text.split()[text.split().index("shown") - 1:])
    assert footnote.startswith(f"not shown at {width} columns: {', '.join(dropped)}")
    assert "--wide shows every column" in footnote


def test_a_narrower_column_dropped_on_the_way_comes_back_when_it_fits():
    columns = [
        Column("name", ["x" * 40], kind="key", required=True),
        Column("small", ["12"], priority=1),
        Column("big", ["y" * 30], priority=2),
    ]
    shown, _, dropped, _, _ = decide(columns, 60)
    assert [c.header for c in shown] == ["name", "small"] and dropped == ["big"]


def test_names_fold_and_are_never_cut_so_rows_never_read_the_same():
    names = ["smallest-beats-random-at-three-iterations", "smallest-beats-random-at-one-iteration"]
    columns = [Column("claim", names, kind="key", required=True),
               Column("verdict", ["reproduced", "reversed"], kind="key", required=True)]
    fitted, text = render(columns, 30)
    assert fitted.widths[0] < len(names[0])  # folded, not dropped and not cut
    assert "…" not in text and lines_fit(text, 30)
    body = text.splitlines()[2:]  # under the header and its rule
    claim_column = "".join(line[:fitted.widths[0]].strip() for line in body)
    for name in names:
        assert name in claim_column
    assert len({name for name in names if name in claim_column}) == 2


def test_a_name_keeps_its_width_while_a_column_can_still_go():
    columns = [Column("claim", ["c" * 50, "d" * 50], kind="key", required=True),
               Column("extra", ["z" * 20] * 2, priority=1)]
    fitted = fit_table(columns, 60)
    assert fitted.dropped == ["extra"] and fitted.widths == [50]


def test_text_is_cut_at_a_word_boundary_before_anything_is_dropped():
    columns = sample()[:3] + [Column("settings", ["beta=0.5 lr=0.003 epochs=4 batch_size=16"] * 3, kind="text",
                                     priority=2, floor=16)]
    fitted, text = render(columns, 70)
    assert fitted.dropped == []
    assert "beta=0.5 lr=0.003…" in text and "batch_size" not in text
    assert cut_words("alpha beta gamma", 12).plain == "alpha beta…"
    assert cut_words("alphabetagamma", 8).plain == "alphabe…"  # no word boundary in reach: cut mid-word
    assert cut_words("short", 8).plain == "short"


def test_numbers_are_never_cut():
    fitted, text = render(sample(), 50)
    for k in range(3):
        assert f"0.{k}00 ± 0.010" in text


def test_shared_values_move_into_the_title_before_a_column_is_dropped():
    columns = sample() + [Column("testbed", ["synthetic"] * 3, kind="key", priority=3, hoist=True)]
    fitted, text = render(columns, 100, title="runs")
    assert fitted.hoisted == ["testbed synthetic"] and "runs · testbed synthetic" in text
    assert "testbed" not in fitted.dropped


def test_wide_shows_every_column_uncut():
    fitted, text = render(sample(), 40, wide=True)
    assert fitted.dropped == [] and fitted.footnote is None
    for header in ("name", "win rate", "gold", "KL", "wall", "settings"):
        assert header in text
    assert "beta=0.5 lr=0.003 epochs=4 batch_size=16" in text and "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) == fitted.natural_width > 40


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind"):
        Column("x", [], kind="wide")


# -- the CLI at 80, 120 and 200 columns -------------------------------------------------------------------------

LONG = "normalized_margin_variant_number_"  # names that read the same if cut


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "lb.db"
    ids = []
    with Leaderboard(path) as lb:
        for seed in range(3):
            for k, name in enumerate((f"{LONG}one", f"{LONG}two", "random")):
                ids.append(add_run(lb, name, seed=seed, win=0.5 + k / 10 + seed / 100))
    return path, ids


def leaderboard_cli(args, width):
    from harness.cli.leaderboard import leaderboard_app

    app = typer.Typer()

    @app.command()
    def run():  # a stand-in for the core CLI's other commands
        pass

    app.add_typer(leaderboard_app, name="leaderboard")
    result = CliRunner().invoke(app, ["leaderboard", *map(str, args)], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result


def harness_cli(args, width, **env):
    from harness.cli import build_app

    result = CliRunner().invoke(build_app(), [str(a) for a in args], env={"COLUMNS": str(width), **env})
    assert result.exit_code == 0, result.output
    return result


def footnote_says_wide(text: str, width: int) -> bool:
    joined = " ".join(text.split())
    return f"not shown at {width} columns" in joined and "--wide shows every column" in joined


@pytest.mark.parametrize("width", WIDTHS)
def test_leaderboard_runs_fit_with_every_run_id_and_selector_whole(board, width):
    path, ids = board
    text = leaderboard_cli(["--db", path, "--by", "run"], width).stderr
    assert lines_fit(text, width)
    for run_id in ids:
        (row,) = [line for line in text.splitlines() if run_id in line]
        assert re.search(rf"\b({LONG}one|{LONG}two|random)\b", row)
        assert re.search(r"0\.\d{3} ± 0\.010", row)
    if width == 80:
        assert footnote_says_wide(text, width) and "finished (UTC)" not in text
    if width == 200:
        assert "not shown" not in text and "finished (UTC)" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_leaderboard_strategies_and_compare_fit_with_names_whole(board, width):
    path, _ = board
    for args in ([], ["compare"]):
        text = leaderboard_cli(["--db", path, *args], width).stderr
        assert lines_fit(text, width), args
        rows = [line for line in text.splitlines() if re.search(r"\b[0-9a-f]{8}\b", line)]
        assert len(rows) == 3, (args, text)
        names = [re.search(rf"\b({LONG}one|{LONG}two|random)\b", row).group(1) for row in rows]
        assert sorted(names) == sorted([f"{LONG}one", f"{LONG}two", "random"])  # distinct and complete
        if args:
            assert sum(bool(re.search(r"\[-0\.\d{3}, -0\.\d{3}\]", row)) for row in rows) == 2  # both, whole


def test_wide_leaderboard_shows_every_column_at_80(board):
    path, _ = board
    narrow = leaderboard_cli(["--db", path, "--by", "run"], 80).stderr
    wide = leaderboard_cli(["--db", path, "--by", "run", "--wide"], 80).stderr
    assert "finished (UTC)" not in narrow and "finished (UTC)" in wide and "not shown" not in wide
    for header in ("testbed", "trainer", "iter", "labels", "gold", "KL", "wall"):
        assert header in wide
    wide_compare = leaderboard_cli(["--db", path, "compare", "--wide"], 80).stderr
    assert "pairs" in wide_compare and "excludes 0" in wide_compare and "not shown" not in wide_compare
    assert "excludes 0" in leaderboard_cli(["--db", path, "--wide", "compare"], 80).stderr  # given before, too
    assert json.loads(leaderboard_cli(["--db", path, "--json"], 80).stdout)  # JSON as before


@pytest.mark.parametrize("width", WIDTHS)
def test_list_selectors_is_one_line_per_selector(width):
    names = [e["name"] for e in json.loads(harness_cli(["list", "selectors", "--json"], width).stdout)]
    text = harness_cli(["list", "selectors"], width).stderr
    lines = text.splitlines()
    assert lines_fit(text, width)
    rows = [line for line in lines if line.split() and line.split()[0] in names]
    assert [row.split()[0] for row in rows] == names  # each name whole, one line each, in order
    start = lines.index(rows[0])
    assert lines[start:start + len(names)] == rows  # no continuation lines
    assert len(lines) <= len(names) + 6


def test_list_wide_shows_whole_descriptions():
    entries = json.loads(harness_cli(["list", "selectors", "--json"], 80).stdout)
    longest = max(entries, key=lambda e: len(e["description"]))
    narrow = harness_cli(["list", "selectors"], 80).stderr
    wide = harness_cli(["list", "selectors", "--wide"], 80).stderr
    description = " ".join(longest["description"].split())
    assert description not in narrow and description in wide
    assert description in " ".join(harness_cli(["list", "selectors", longest["name"]], 80).stderr.split())
    assert description in harness_cli(["selectors", "--wide"], 80).stderr  # the shortcut too


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    (folder / "tiny.toml").write_text(tiny_plan())
    Leaderboard(folder / "board.db").close()
    return folder


@pytest.mark.parametrize("width", WIDTHS)
def test_study_verdicts_fit_with_every_claim_whole_beside_its_verdict(plan, width):
    env = {"HARNESS_DB": str(plan / "board.db")}
    text = harness_cli(["study", "report", plan / "tiny.toml", "--report-dir", plan / f"r{width}"], width,
                       **env).stderr
    assert lines_fit(text, width)
    assert "study tiny (full) · 0/4 runs finished" in text
    for claim in ("smallest-vs-random", "ranking-accuracy"):
        (row,) = [line for line in text.splitlines() if line.startswith(claim + " ")]
        assert row.rstrip().endswith("too few pairs")
    assert footnote_says_wide(text, width) == (width < 200)
    if width == 80:
        wide = harness_cli(["study", "report", plan / "tiny.toml", "--report-dir", plan / "w", "--wide"], width,
                           **env).stderr
        assert "sign-flip p" in wide and "family" in wide and "not shown" not in wide
    dry = harness_cli(["study", "run", plan / "tiny.toml", "--dry-run"], width, **env).stderr
    assert lines_fit(dry, width)
    assert sum(bool(re.search(r"new\s+one: selector=(smallest|random) · seed [01]$", line.rstrip()))
               for line in dry.splitlines()) == 4


def test_show_wide_gives_every_meaning_whole(board):
    path, ids = board
    narrow = leaderboard_cli(["--db", path, "show", ids[0]], 80).stderr
    wide = leaderboard_cli(["--db", path, "show", ids[0], "--wide"], 80).stderr
    assert lines_fit(narrow, 80)
    assert "β·Δ median (≈0: DPO far from saturation)" in wide and "sel_beta_margin_q50" in wide
    for text in (narrow, wide):
        assert re.search(r"sel_label_noise\s+—\s+0\.19\s+0\.19", text)  # names and numbers whole
