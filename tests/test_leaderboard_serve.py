"""`harness leaderboard serve`: datasette's metadata from the schema declarations, the views' numbers
(compare's equal the command's), read-only, no path or API key on any page, and the errors (exit 2).

The tests that start datasette need the browse extra and skip, naming it, without it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from leaderboard import columns, schema_doc
from leaderboard.content_hash import content_hash
from leaderboard.views import VIEWS
from tests.extras import requires_extra
from tests.leaderboard_site_support import make_board, make_foreign, make_newer_schema

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "sk-test-PAIRSEL-do-not-show-7f3a9c"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "board.db"
    return path, make_board(path)


def fetch(datasette, url: str):
    async def get():
        return await datasette.client.get(url)

    return asyncio.run(get())


def fetch_json(datasette, url: str):
    response = fetch(datasette, url)
    assert response.status_code == 200, (url, response.status_code, response.text[:500])
    return response.json()


# -- metadata from the one declaration -------------------------------------------------------


def test_metadata_describes_every_table_and_column_from_the_schema_declarations():
    from leaderboard.serve import datasette_metadata

    meta = datasette_metadata()["databases"]["leaderboard"]
    assert meta["tables"]["runs"]["columns"] == columns.descriptions()
    for table, described in schema_doc.DESCRIPTIONS.items():
        assert meta["tables"][table]["columns"] == described
        assert meta["tables"][table]["description"] == schema_doc._NOTES[table]
    fresh = schema_doc._fresh()
    tables = {name for (name,) in fresh.execute("select name from sqlite_master where type = 'table'")}
    assert tables <= set(meta["tables"]), "a table of the schema has no description"
    assert set(meta["queries"]) == {view.name for view in VIEWS}
    for view in VIEWS:
        assert meta["queries"][view.name]["sql"] == view.sql
        assert meta["queries"][view.name]["title"] == view.title


# -- the views --------------------------------------------------------------------------------


@requires_extra("browse")
def test_compare_view_equals_the_compare_command(board, cli):
    from leaderboard.serve import build_datasette

    path, _ = board
    datasette = build_datasette(path)
    for baseline in ("random", "largest"):
        result = cli("leaderboard", "compare", "--db", path, "--baseline", baseline, "--json")
        assert result.exit_code == 0, result.output
        expected = json.loads(result.stdout)["rows"]
        served = fetch_json(datasette, f"/leaderboard/compare.json?_shape=array&baseline={baseline}")
        assert len(served) == len(expected) >= 3
        for got, want in zip(served, expected):
            assert got["config_hash"] == want["config_hash"]
            assert bool(got["is_baseline"]) == want["is_baseline"]
            for column, key in (("n", "n"), ("mean_difference", "mean"), ("std", "std"), ("ci_low", "ci_low"),
                                ("ci_high", "ci_high"), ("group_mean", "group_mean"),
                                ("baseline_mean", "baseline_mean")):
                assert got[column] == want[key], (column, got, want)
        compared = [row for row in served if not row["is_baseline"]]
        assert all(row["ci_low"] < row["mean_difference"] < row["ci_high"] for row in compared)
    default = fetch_json(datasette, "/leaderboard/compare.json?_shape=array")
    assert default == fetch_json(datasette, "/leaderboard/compare.json?_shape=array&baseline=random")


@requires_extra("browse")
def test_an_unknown_baseline_says_so_in_the_note(board):
    from leaderboard.serve import build_datasette

    rows = fetch_json(build_datasette(board[0]), "/leaderboard/compare.json?_shape=array&baseline=nosuch")
    assert len(rows) == 1
    assert "nosuch" in rows[0]["note"] and "random" in rows[0]["note"]


@requires_extra("browse")
def test_strategies_are_ranked_by_gain_per_thousand_labels(board):
    from leaderboard.serve import build_datasette

    path, _ = board
    with sqlite3.connect(path) as conn:
        gains: dict[str, list[float]] = {}
        for selector, final, initial, labels in conn.execute(
                "select instance_selector, final_win_rate, initial_win_rate, labels_used from runs "
                "where status = 'finished'"):
            gains.setdefault(selector, []).append(1000 * (final - initial) / labels)
    expected = sorted(((sum(v) / len(v), k) for k, v in gains.items()), reverse=True)
    rows = fetch_json(build_datasette(path), "/leaderboard/strategies.json?_shape=array")
    assert [row["instance_selector"] for row in rows] == [name for _, name in expected]
    for row, (gain, _) in zip(rows, expected):
        assert row["gain_per_1k_labels"] == pytest.approx(gain, abs=1e-4)
        assert row["seeds"] == 5


@requires_extra("browse")
def test_a_runs_iterations_and_labels(board):
    from leaderboard.serve import build_datasette

    path, ids = board
    datasette = build_datasette(path)
    run_id = ids["labelled"]
    iterations = fetch_json(datasette, f"/leaderboard/run_iterations.json?_shape=array&run_id={run_id}")
    assert [row["iteration"] for row in iterations] == [0, 1, 2]
    assert {row["run_id"] for row in iterations} == {run_id}
    labels = fetch_json(datasette, f"/leaderboard/run_labels.json?_shape=array&run_id={run_id}")
    assert [(row["prompt"], row["response_a"], row["label"]) for row in labels] == [
        ("Say <hello> & wave", "hello!", "a"), ("Count to three", "1 2 3", "b")]
    other = fetch_json(datasette, f"/leaderboard/run_labels.json?_shape=array&run_id={ids['random/0']}")
    assert other == []


@requires_extra("browse")
def test_the_charts_are_png_images_drawn_on_the_server(board):
    from leaderboard.serve import build_datasette

    datasette = build_datasette(board[0])
    page = fetch(datasette, "/-/pairsel/charts")
    assert page.status_code == 200
    sources = re.findall(r"<img src='([^']+)'", page.text)
    assert "/-/pairsel/win_rate_vs_labels.png" in sources and "/-/pairsel/frontier.png" in sources
    assert "http" not in "".join(sources)
    for source in sources:
        image = fetch(datasette, source)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


# -- read-only, nothing leaks -----------------------------------------------------------------


@requires_extra("browse")
def test_nothing_can_be_written(board):
    from leaderboard.serve import build_datasette

    path, _ = board
    before = content_hash(sqlite3.connect(path))
    datasette = build_datasette(path)
    for sql in ("delete from runs", "update runs set final_win_rate = 1", "drop table runs"):
        response = fetch(datasette, "/leaderboard.json?" + urllib.parse.urlencode({"sql": sql}))
        assert response.status_code >= 400, sql
    response = fetch(datasette, "/leaderboard.db")
    assert response.status_code in (403, 404)
    assert content_hash(sqlite3.connect(path)) == before
    assert asyncio.run(datasette.permission_allowed(None, "insert-row", ("leaderboard", "runs"),
                                                    default=True)) is False


PAGES = (
    "/", "/.json", "/-/metadata", "/-/metadata.json", "/-/databases", "/-/databases.json", "/-/settings.json",
    "/-/settings", "/-/versions.json", "/-/versions", "/-/plugins.json", "/-/plugins.json?all=1", "/-/threads.json",
    "/-/threads", "/-/actor.json", "/-/config.json", "/-/messages", "/-/patterns", "/-/allow-debug",
    "/-/permissions", "/-/pairsel/charts", "/leaderboard", "/leaderboard.json", "/leaderboard/runs",
    "/leaderboard/runs.json", "/leaderboard/iterations", "/leaderboard/labels.json", "/leaderboard/strategies",
    "/leaderboard/compare", "/leaderboard/compare.json", "/leaderboard/run_labels?run_id=x", "/leaderboard.db",
    "/leaderboard/nosuchtable", "/leaderboard.json?sql=select+nosuchfunction()",
)


@requires_extra("browse")
def test_no_page_shows_the_database_path_or_an_api_key(board, monkeypatch):
    from datasette.app import Datasette

    from leaderboard.serve import build_datasette

    path, _ = board
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HARNESS_DB", str(path))
    secrets = (str(path.resolve()), str(path.resolve().parent), FAKE_KEY)
    # Plain datasette shows the path: the check below would catch it.
    plain = fetch(Datasette(files=[str(path)], immutables=[]), "/-/databases.json").text
    assert str(path.resolve()) in plain or str(path) in plain
    datasette = build_datasette(path)
    shown = 0
    for url in PAGES:
        response = fetch(datasette, url)
        body = response.text
        for secret in secrets:
            assert secret not in body, f"{url} shows {secret!r}"
        shown += response.status_code == 200
    assert shown >= 20
    listed = fetch_json(datasette, "/-/databases.json")
    assert [db["name"] for db in listed] == ["leaderboard"] and "path" not in listed[0]


# -- the command ------------------------------------------------------------------------------


def test_without_the_extra_serve_exits_2_naming_it(board, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasette", None)  # import datasette raises ImportError
    result = cli("leaderboard", "serve", "--db", board[0])
    assert result.exit_code == 2
    assert "pip install 'pairsel-harness[browse]'" in " ".join(result.output.split())


@requires_extra("browse")
@pytest.mark.parametrize("kind, says", [
    ("missing", "no leaderboard database"), ("foreign", "not a leaderboard"), ("newer", "newer pairsel-harness"),
    ("directory", "directory"),
])
def test_a_database_serve_cannot_use_exits_2(tmp_path, cli, kind, says):
    path = tmp_path / "x.db"
    if kind == "foreign":
        make_foreign(path)
    elif kind == "newer":
        make_newer_schema(path)
    elif kind == "directory":
        path.mkdir()
    def state():  # what the file holds (closing a connection may checkpoint the WAL: bytes move, rows do not)
        return content_hash(sqlite3.connect(path)) if path.is_file() else None

    before = state()
    result = cli("leaderboard", "serve", "--db", path, "--port", "0")
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split())
    assert state() == before
    assert kind != "missing" or not path.exists()


@requires_extra("browse")
def test_serve_prints_its_url_serves_on_localhost_and_stops_on_ctrl_c(board):
    path, _ = board
    env = dict(os.environ, OPENAI_API_KEY=FAKE_KEY)
    process = subprocess.Popen(
        [sys.executable, "-c", "from harness.cli import main; main()", "leaderboard", "serve", "--db", str(path),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        line = process.stdout.readline()
        match = re.search(r"Serving the leaderboard at (http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        url = match.group(1)
        with urllib.request.urlopen(url + "leaderboard/strategies.json?_shape=array", timeout=30) as response:
            rows = json.loads(response.read())
        assert {row["instance_selector"] for row in rows} == {"smallest", "random", "largest"}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@requires_extra("browse")
def test_serve_warns_when_listening_beyond_this_machine(board):
    process = subprocess.Popen(
        [sys.executable, "-c", "from harness.cli import main; main()", "leaderboard", "serve", "--db", str(board[0]),
         "--port", "0", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert "Serving the leaderboard at http://0.0.0.0:" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert "anyone who can reach this machine" in " ".join(process.stderr.read().split())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
