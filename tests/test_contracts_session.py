"""An installed third-party plugin cannot change the test session's results (tests/conftest.py).

Each test plants a real installation: a ``.dist-info`` folder whose
``entry_points.txt`` names a module in the ``pairsel_harness`` group, and that
module, in a folder put on ``sys.path`` (in-process) or ``PYTHONPATH`` (a
subprocess), which is how ``pip install`` makes a plugin visible. The plugin
registers a selector and records that its hook ran.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from conftest import LOAD_PLUGINS
from harness.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, load_registry

MODULE = "pairsel_contract_thirdparty"

PLUGIN = '''
from harness import hookimpl
from harness.interfaces import Pairs, Selector

HOOK_CALLS = []


class ThirdParty(Selector):
    name = "thirdparty_selector"
    description = "an installed plugin the test session must not see"

    def select_instances(self, batch, rng):
        return Pairs.empty()

    def select_corpus(self, batch, pairs, n_keep, rng):
        return pairs.take(slice(0, n_keep))


@hookimpl
def register_selectors(register):
    HOOK_CALLS.append("register_selectors")
    register(ThirdParty)
'''


@pytest.fixture
def site(tmp_path):
    """A folder holding an installed distribution with one ``pairsel_harness`` entry point."""
    folder = tmp_path / "site"
    info = folder / "pairsel_contract_thirdparty-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pairsel-contract-thirdparty\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nthirdparty = {MODULE}\n")
    (folder / f"{MODULE}.py").write_text(PLUGIN)
    return folder


@pytest.fixture
def installed(site, monkeypatch):
    """``site`` on ``sys.path`` for this test, its module forgotten afterwards."""
    monkeypatch.syspath_prepend(str(site))
    assert "thirdparty" in [ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    yield site
    sys.modules.pop(MODULE, None)


def test_the_session_switches_entry_points_off_and_the_builtins_still_load():
    assert os.environ[LOAD_PLUGINS] == ""
    registry = load_registry()
    assert {name for name, info in registry.plugins.items() if info.source == "builtin"} == set(DEFAULT_PLUGINS)
    assert all(info.source == "builtin" for info in registry.plugins.values())


def test_an_installed_plugin_is_not_loaded_during_the_session(installed):
    registry = load_registry()
    assert "thirdparty_selector" not in registry.names("selector")
    assert "thirdparty" not in registry.plugins
    assert MODULE not in sys.modules, "the entry point was imported although entry points are off"


def test_a_test_switches_entry_points_back_on_for_itself(installed, monkeypatch):
    """What the test above would see without the session's switch: the plugin loads."""
    monkeypatch.delenv(LOAD_PLUGINS)
    registry = load_registry()
    item = registry.get("selector", "thirdparty_selector")
    assert (item.plugin.name, item.plugin.source, item.plugin.distribution) == (
        "thirdparty", "entrypoint", "pairsel-contract-thirdparty")
    assert sys.modules[MODULE].HOOK_CALLS == ["register_selectors"]


PROBE = """
import json
from harness.plugins import load_registry
registry = load_registry()
print(json.dumps({"plugins": sorted(registry.plugins), "selectors": registry.names("selector")}))
"""


def probe(site, env):
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": os.pathsep.join([str(site), env.get("PYTHONPATH", "")])})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_processes_the_tests_start_inherit_the_switch(site):
    """A worker started with the session's environment sees the test's registry; without the switch it would not."""
    inherited = probe(site, dict(os.environ))
    assert "thirdparty" not in inherited["plugins"] and "thirdparty_selector" not in inherited["selectors"]
    switched_on = probe(site, {k: v for k, v in os.environ.items() if k != LOAD_PLUGINS})
    assert "thirdparty" in switched_on["plugins"] and "thirdparty_selector" in switched_on["selectors"]
