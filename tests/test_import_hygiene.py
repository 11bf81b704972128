"""`harness --help`, `harness list` and the leaderboard commands start without importing heavy libraries.

The check means something only where those libraries are installed: in the main CI environment (every
extra; the hf extra's datasets brings pandas), which the last test makes sure of. With the core alone
(.ci/run-minimal) the same probes run and the last test skips, naming the hf extra.
"""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.extras import requires_extra

HEAVY = ("torch", "transformers", "trl", "datasets", "numpy", "scipy", "pandas")  # scipy: study code only

PROBE = """
import json, sys
from harness.cli import main
args, heavy_names = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["harness", *args]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("CODE=" + json.dumps(code), file=sys.stderr)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy_names))
print("HEAVY=" + json.dumps(loaded), file=sys.stderr)
"""

KINDS = ("selectors", "allocators", "scorers", "trainers", "testbeds", "judges")  # what `harness list` lists


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A leaderboard with finished runs of three selectors on two seeds, so that the commands show rows."""
    from leaderboard.store import Leaderboard

    path = tmp_path_factory.mktemp("hygiene") / "board.db"
    with Leaderboard(path) as lb:
        for seed in range(2):
            for n, selector in enumerate(("random", "smallest", "largest")):
                run_id = lb.start_run({
                    "config": {"seed": seed, "instance_selector": selector}, "config_hash": f"h{n}", "seed": seed,
                    "world_seed": seed, "testbed": "synthetic", "instance_selector": selector,
                    "corpus_selector": selector, "allocator": "constant", "trainer": "native",
                    "scorer_columns": "implicit_reward", "plugins": {}, "versions": {}, "git_commit": None,
                    "command": "test", "iterations": 1, "budget": 10, "keep": 0.5, "n_responses": 4,
                    "harness_version": "test",
                })
                lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5})
                lb.finish_run(run_id, {"final_win_rate": 0.5 + n / 10 + seed / 100, "final_win_rate_se": 0.01,
                                       "initial_win_rate": 0.5, "final_gold_reward": 1.0, "final_kl": 0.1})
    return path


@pytest.mark.parametrize(
    "args, allowed",
    [
        (["--help"], {"numpy"}),
        (["leaderboard", "--help"], {"numpy"}),
        (["leaderboard"], {"numpy"}),
        (["leaderboard", "--db", "{board}"], {"numpy"}),
        (["leaderboard", "--db", "{board}", "--by", "run"], {"numpy"}),
        (["leaderboard", "--db", "{board}", "--json"], {"numpy"}),
        (["run", "--help"], {"numpy"}),
        (["plugins", "--all"], {"numpy"}),
        (["list"], {"numpy"}),
        *[(["list", kind], {"numpy"}) for kind in KINDS],
        (["leaderboard", "compare", "--baseline", "random"], {"numpy"}),
        (["leaderboard", "compare", "--db", "{board}", "--baseline", "random"], {"numpy"}),
        (["study", "--help"], {"numpy"}),
    ],
)
def test_no_heavy_imports(args, allowed, tmp_path, board):
    shows_rows = "{board}" in args
    args = [str(board) if arg == "{board}" else arg for arg in args]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HARNESS_DB": str(tmp_path / "none.db"), "HARNESS_LOAD_PLUGINS": ""},
    )
    line = [l for l in result.stderr.splitlines() if l.startswith("HEAVY=")]
    assert line, result.stderr
    heavy = set(json.loads(line[-1][len("HEAVY="):]))
    assert not heavy - allowed, f"`harness {' '.join(args)}` imported {sorted(heavy - allowed)}"
    if shows_rows:  # the display path ran, rows and all
        assert "CODE=0" in result.stderr and "smallest" in result.stdout + result.stderr, result.stderr
    assert not (tmp_path / "none.db").exists(), "browsing must not create a database"


@requires_extra("hf")
def test_the_heavy_libraries_are_installed_where_the_check_runs():
    """Where every extra is installed (the main CI run), each library the probes look for is there, pandas
    included (the hf extra's datasets needs it): an import of any of them would be caught, not missed."""
    absent = [name for name in HEAVY if importlib.util.find_spec(name) is None]
    assert not absent, f"not installed, so test_no_heavy_imports cannot see them imported: {absent}"
