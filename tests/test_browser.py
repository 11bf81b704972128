"""The leaderboard in a real browser: headless Chromium opens `harness leaderboard serve` and the site that
`harness leaderboard publish` writes, on a leaderboard made by a real (tiny) sweep.

Chromium is Debian's package; without it every test here skips, naming it (tests/browser_support.py).
Set $HARNESS_BROWSER_SCREENSHOTS to a folder to keep a PNG of each main view (the docs' screenshots
were chosen from these).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from browser_support import dump_dom, require_chromium, screenshot
from conftest import TINY_TESTBED
from tests.extras import skip_unless_extra

skip_unless_extra("browse")  # serve needs datasette

SELECTORS = ("smallest", "random", "largest")


def _text(dom: str) -> str:
    """The page's visible text, roughly: tags dropped, whitespace folded."""
    without_scripts = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", without_scripts)).strip()


def _keep(path: Path, name: str) -> Path:
    folder = os.environ.get("HARNESS_BROWSER_SCREENSHOTS")
    return Path(folder) / f"{name}.png" if folder else path / f"{name}.png"


def _is_a_picture(png: Path) -> None:
    """The screenshot shows a page, not a blank: many distinct colours."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))
    colours = {tuple(row) for row in pixels.reshape(-1, pixels.shape[-1])[::97].round(2).tolist()}
    assert len(colours) > 20, f"{png} looks blank ({len(colours)} colours)"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A leaderboard as a user makes one: a sweep of three strategies on two seeds."""
    require_chromium()
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "lb.db"
    options = sum((["-o", option] for option in TINY_TESTBED), [])
    result = subprocess.run(
        [sys.executable, "-m", "harness", "sweep", "--selector", ",".join(SELECTORS), "--seeds", "0-1",
         "--iterations", "2", "--budget", "120", "-o", "trainer.epochs=2", *options, "--db", str(db)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return db


@pytest.fixture(scope="module")
def served(board):
    """`harness leaderboard serve` on a free port; yields its URL, stops it with Ctrl-C."""
    process = subprocess.Popen(
        [sys.executable, "-m", "harness", "leaderboard", "serve", "--db", str(board), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()  # printed once the socket accepts connections
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, f"serve printed {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield match.group(0)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _compare_rows(db: Path) -> dict[str, dict]:
    """What `harness leaderboard compare --json` says, by instance selector."""
    result = subprocess.run(
        [sys.executable, "-m", "harness", "leaderboard", "compare", "--baseline", "random", "--json", "--db", str(db)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    data = json.loads(result.stdout)
    rows = data["rows"] if isinstance(data, dict) else data
    return {row["instance_selector"]: row for row in rows}


def test_the_served_strategies_page_ranks_every_strategy(served, board, tmp_path):
    text = _text(dump_dom(served + "leaderboard/strategies"))
    assert "Strategies ranked by gain per 1,000 labels" in text
    with sqlite3.connect(board) as conn:
        gains = dict(conn.execute(
            "select instance_selector, avg(1000.0 * (final_win_rate - initial_win_rate) / labels_used) "
            "from runs where status = 'finished' group by instance_selector"))
    best_first = sorted(gains, key=gains.get, reverse=True)
    positions = [text.index(f" {name} {name} ") for name in best_first]  # instance and corpus selector cells
    assert positions == sorted(positions), f"not best first: {best_first} at {positions}"
    _is_a_picture(screenshot(served + "leaderboard/strategies", _keep(tmp_path, "serve-strategies")))


def test_the_served_comparison_shows_each_interval_against_random(served, board, tmp_path):
    text = _text(dump_dom(served + "leaderboard/compare?baseline=random"))
    assert "Paired comparison against a baseline" in text
    for name, row in _compare_rows(board).items():
        if name == "random":
            continue
        shown = [format(row[key], ".4g") for key in ("mean", "std", "ci_low", "ci_high")]
        assert all(f" {value} " in text for value in shown), (name, shown)
        whole = [repr(row[key]) for key in ("mean", "std", "ci_low", "ci_high")]
        assert not any(f" {value} " in text for value in whole if value not in shown), "floats are shown at 4 digits"
    _is_a_picture(screenshot(served + "leaderboard/compare?baseline=random", _keep(tmp_path, "serve-compare")))


def test_the_served_run_pages_and_charts(served, board, tmp_path):
    with sqlite3.connect(board) as conn:
        run_id, iterations = conn.execute("select id, iterations from runs order by id limit 1").fetchone()
        labels = conn.execute("select count(*) from labels where run_id = ?", (run_id,)).fetchone()[0]
    text = _text(dump_dom(served + f"leaderboard/run_iterations?run_id={run_id}"))
    assert f"returning {iterations + 1} rows" in text  # pi_0's row, then one per iteration
    text = _text(dump_dom(served + f"leaderboard/run_labels?run_id={run_id}"))
    assert f"returning {labels} row" in text
    dom = dump_dom(served + "-/pairsel/charts")
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', dom)
    assert len(images) >= 2, dom[:2000]
    _is_a_picture(screenshot(served + "-/pairsel/charts", _keep(tmp_path, "serve-charts"), height=1400))


def test_the_published_site_opens_from_disk(board, tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "harness", "leaderboard", "publish", "--out", str(site), "--db", str(board)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    from harness import __version__

    pages = {"index": site / "index.html", "strategies": site / "strategies.html",
             "compare": site / "compare.html", "charts": site / "charts.html"}
    hashes = set()
    for name, page in pages.items():
        text = _text(dump_dom(page.as_uri()))
        assert __version__ in text, name
        hashes.update(re.findall(r"sha256:[0-9a-f]{64}", text))
        _is_a_picture(screenshot(page.as_uri(), _keep(tmp_path, f"publish-{name}"), height=1000))
    assert len(hashes) == 1, f"every page should name the one content hash: {hashes}"
    for name, row in _compare_rows(board).items():
        if name != "random":
            assert name in _text(dump_dom(pages["compare"].as_uri()))
    # The charts page's images are files beside it, and Chromium loads them from disk.
    dom = dump_dom(pages["charts"].as_uri())
    for src in re.findall(r'<img[^>]+src="([^"]+)"', dom):
        assert not src.startswith(("http:", "https:", "/")), src
        assert (site / src).is_file(), src
