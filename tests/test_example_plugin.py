"""The plugin tutorial of the docs (docs/plugins/index.md), for real: pip-install tests/example_plugin and use it.

The package is installed with ``pip install --target`` into a temporary
folder (the test environment is left untouched), so the harness discovers it
the way users' plugins are discovered: through its ``pairsel_harness`` entry point.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_RUN

EXAMPLE = Path(__file__).parent / "example_plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert list(target.glob("pairsel_lengthgap-0.1.0.dist-info"))
    return target


def harness(site, *args, db):
    env = dict(os.environ, PYTHONPATH=str(site), HARNESS_DB=str(db))
    env.pop("HARNESS_LOAD_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)


def test_plugins_lists_the_installed_package(installed_plugin, tmp_path):
    result = harness(installed_plugin, "plugins", "--json", db=tmp_path / "b.db")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == ["lengthgap"]
    assert rows[0]["version"] == "0.1.0"
    assert rows[0]["distribution"] == "pairsel-lengthgap"
    assert rows[0]["registered"] == {"selector": ["lengthgap"]}


def test_run_with_the_plugin_selector(installed_plugin, tmp_path):
    db = tmp_path / "b.db"
    result = harness(installed_plugin, "run", "--selector", "lengthgap", *TINY_RUN, "--json", db=db)
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["labels_used"] == 80
    from leaderboard.store import Leaderboard

    run = Leaderboard(db).get_run(final["run_id"])
    assert run["status"] == "finished"
    assert run["plugins"]["instance_selector"] == {"name": "lengthgap", "plugin": "lengthgap", "version": "0.1.0"}


def test_entry_point_plugins_can_be_disabled(installed_plugin, tmp_path):
    env_db = tmp_path / "b.db"
    env = dict(os.environ, PYTHONPATH=str(installed_plugin), HARNESS_DB=str(env_db), HARNESS_LOAD_PLUGINS="")
    result = subprocess.run([sys.executable, "-m", "harness", "plugins", "--json"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0 and json.loads(result.stdout) == []
