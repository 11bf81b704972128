"""`harness leaderboard publish`: the pages and downloads, relative links only, the stamp on every page,
the content hash, compare's numbers, and the atomic write (a failure leaves --out as it was)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from harness import __version__
from leaderboard import site
from leaderboard.content_hash import content_hash
from tests.leaderboard_site_support import make_board, make_newer_schema


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    path = tmp_path_factory.mktemp("publish") / "board.db"
    return path, make_board(path)


@pytest.fixture(scope="module")
def published(board, tmp_path_factory):
    """The site of the board, written once through the command line."""
    from typer.testing import CliRunner

    from harness.cli import build_app

    out = tmp_path_factory.mktemp("site") / "site"
    result = CliRunner().invoke(build_app(), ["leaderboard", "publish", "--db", str(board[0]), "--out", str(out),
                                              "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_the_site_has_every_view_table_run_page_and_plot(board, published):
    out, summary = published
    path, ids = board
    for name in ("index.html", "strategies.html", "compare.html", "charts.html", "tables/index.html",
                 "publish.json", "plots/win_rate_vs_labels.png", "plots/frontier.png"):
        assert (out / name).is_file(), name
    tables = [name for (name,) in sqlite3.connect(path).execute(
        "select name from sqlite_master where type in ('table', 'view') and name not like 'sqlite_%'")]
    assert {"runs", "iterations", "labels", "texts", "judgements"} <= set(tables)
    for table in tables:
        for suffix in ("html", "json", "csv"):
            assert (out / "tables" / f"{table}.{suffix}").is_file(), (table, suffix)
    runs = json.loads((out / "tables/runs.json").read_text())
    assert sorted(r["id"] for r in runs) == sorted(v for k, v in ids.items() if k != "labelled")
    for run_id in (r["id"] for r in runs):
        assert (out / "runs" / f"{run_id}-iterations.html").is_file()
        assert (out / "runs" / f"{run_id}-labels.html").is_file()
    labels = json.loads((out / "runs" / f"{ids['labelled']}-labels.json").read_text())
    assert [row["label"] for row in labels] == ["a", "b"]
    labels_page = (out / "runs" / f"{ids['labelled']}-labels.html").read_text()
    assert "Say &lt;hello&gt; &amp; wave" in labels_page and "<hello>" not in labels_page
    assert (out / "plots/frontier.png").read_bytes().startswith(b"\x89PNG")
    assert summary["files"] == len([p for p in out.rglob("*") if p.is_file()])


def test_every_page_shows_the_version_the_content_hash_and_the_time(board, published):
    out, summary = published
    expected_hash = content_hash(sqlite3.connect(board[0]))
    assert summary["content_hash"] == expected_hash
    pages = list(out.rglob("*.html"))
    assert len(pages) >= 10
    for page in pages:
        text = page.read_text()
        assert f"pairsel-harness {__version__}" in text, page
        assert expected_hash in text, page
        assert summary["written_at"] in text, page
    marker = json.loads((out / "publish.json").read_text())
    assert marker["content_hash"] == expected_hash and marker["harness_version"] == __version__


def test_links_are_relative_and_lead_to_files_of_the_site(published):
    out, _ = published
    checked = 0
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "<script" not in text and "http://" not in text and "https://" not in text, page
        for target in re.findall(r"(?:href|src)='([^']*)'", text):
            assert not target.startswith(("/", "file:")), (page, target)
            assert (page.parent / target).resolve().is_file(), (page, target)
            checked += 1
    assert checked > 50


def test_the_comparison_equals_the_compare_command(board, published, cli):
    out, _ = published
    result = cli("leaderboard", "compare", "--db", board[0], "--json")
    expected = json.loads(result.stdout)["rows"]
    rows = json.loads((out / "compare.json").read_text())
    assert len(rows) == len(expected) >= 3
    for got, want in zip(rows, expected):
        assert got["config_hash"] == want["config_hash"]
        assert (got["n"], got["mean_difference"], got["std"], got["ci_low"], got["ci_high"]) == (
            want["n"], want["mean"], want["std"], want["ci_low"], want["ci_high"])
    csv_header = (out / "compare.csv").read_text().splitlines()[0].split(",")
    assert {"mean_difference", "ci_low", "ci_high", "n"} <= set(csv_header)


def test_the_baseline_option_picks_the_comparison(board, tmp_path):
    written = site.publish(board[0], tmp_path / "s", baseline="largest")
    rows = json.loads((written.out / "compare.json").read_text())
    assert [r["instance_selector"] for r in rows if r["is_baseline"]] == ["largest"]
    assert "compare --baseline largest" in (written.out / "compare.html").read_text()


def _hash_of(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return content_hash(conn)
    finally:
        conn.close()


def _run(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def test_the_content_hash_ignores_the_files_layout_but_not_its_rows(tmp_path):
    path = tmp_path / "b.db"
    make_board(path)
    first = _hash_of(path)
    _run(path, "pragma wal_checkpoint(truncate)", "vacuum", "pragma journal_mode = delete")
    assert _hash_of(path) == first
    _run(path, "update runs set final_win_rate = final_win_rate + 1e-9 where rowid = 1")
    changed = _hash_of(path)
    assert changed != first and changed.startswith("sha256:") and len(changed) == 71


def test_a_failure_or_ctrl_c_leaves_the_previous_site(board, tmp_path, cli, monkeypatch):
    out = tmp_path / "site"
    assert cli("leaderboard", "publish", "--db", board[0], "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(self):
        (self.folder / "half.html").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(site._Site, "charts_page", interrupted)
    result = cli("leaderboard", "publish", "--db", board[0], "--out", out)
    assert result.exit_code == 130 and "nothing was published" in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no half-built sibling left

    def broken(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(site._Site, "charts_page", broken)
    result = cli("leaderboard", "publish", "--db", board[0], "--out", tmp_path / "new")
    assert result.exit_code == 1 and "left as it was" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_out_must_be_new_empty_or_an_earlier_publish(board, tmp_path, cli):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = cli("leaderboard", "publish", "--db", board[0], "--out", foreign)
    assert result.exit_code == 2 and "--force" in result.output
    assert (foreign / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert cli("leaderboard", "publish", "--db", board[0], "--out", tmp_path / "empty").exit_code == 0
    assert cli("leaderboard", "publish", "--db", board[0], "--out", tmp_path / "empty").exit_code == 0  # again
    assert cli("leaderboard", "publish", "--db", board[0], "--out", foreign, "--force").exit_code == 0
    assert not (foreign / "notes.txt").exists() and (foreign / "index.html").is_file()
    a_file = tmp_path / "file.html"
    a_file.write_text("x")
    assert cli("leaderboard", "publish", "--db", board[0], "--out", a_file).exit_code == 2
    result = cli("leaderboard", "publish", "--db", board[0], "--out", board[0].parent, "--force")
    assert result.exit_code == 2 and board[0].is_file()


@pytest.mark.parametrize("kind, says", [("missing", "no leaderboard database"), ("newer", "newer pairsel-harness")])
def test_a_database_publish_cannot_use_exits_2_writing_nothing(tmp_path, cli, kind, says):
    path = tmp_path / "x.db"
    if kind == "newer":
        make_newer_schema(path)
    result = cli("leaderboard", "publish", "--db", path, "--out", tmp_path / "site")
    assert result.exit_code == 2 and says in " ".join(result.output.split())
    assert not (tmp_path / "site").exists()


def test_html_escapes_what_the_runs_hold(tmp_path):
    from leaderboard.site_html import rows_table

    html = rows_table(["command"], [("harness run --selector '<script>alert(1)</script>'",)])
    assert "<script>" not in html and "&lt;script&gt;" in html
