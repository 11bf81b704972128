"""Every hook in harness.hookspecs is exercised by a test plugin (datasette's "every hook has a test").

The rule (:func:`test_every_hook_is_implemented_by_a_test_plugin`): a hook counts
as tested when some test module (``tests/**/test_*.py``) holds a *test plugin*
implementing it, that is ``@hookimpl`` (bare, called with options, or as an
attribute such as ``harness.hookimpl``; other decorators may sit between) directly
followed by ``def <hook name>(``. The rule reads the source text, not the syntax
tree, so a hook implemented in a function, in a class body or in plugin source a
test writes to a file (a string or an f-string handed to ``--plugin``) counts
alike. The built-ins do not count: every test loads them, whereas a test plugin
means a test controls a plugin of its own and checks what the host did with it.
The hooks are the ones the host's plugin manager knows (``harness.hookspecs``
added to a pluggy manager), so a new hookspec is covered by the rule at once.

The ``test_hook_*`` tests below exercise the hooks that no other test module
implemented when the rule was written.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pluggy
import pytest

from harness import hookspecs

TESTS = Path(__file__).resolve().parent

HOOKIMPL = re.compile(
    r"@(?:\w+\.)*hookimpl\b(?:\([^)]*\))?[ \t]*\r?\n"  # the marker, maybe called with options
    r"(?:[ \t]*@[^\n]*\n)*"  # other decorators
    r"[ \t]*def[ \t]+(\w+)[ \t]*\("  # the implementation
)


def host_hooks() -> list[str]:
    """The names of every hook the host's plugin manager knows."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    return sorted(name for name in vars(manager.hook) if not name.startswith("_"))


def implemented_by_tests(root: Path) -> dict[str, list[str]]:
    """hook name -> the test modules under ``root`` that hold a test plugin implementing it."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("test_*.py")):
        if "build" in path.relative_to(root).parts:  # copies made by building the example plugin
            continue
        for name in set(HOOKIMPL.findall(path.read_text(encoding="utf-8"))):
            found.setdefault(name, []).append(str(path.relative_to(root)))
    return found


HOOKS = host_hooks()


def test_the_host_has_hooks_to_check():
    assert {"register_scorers", "register_selectors", "register_studies", "register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(hook):
    found = implemented_by_tests(TESTS)
    assert hook in found, (
        f"no test plugin implements the hook {hook!r}: write a test whose plugin has "
        f"`@hookimpl def {hook}(...)` and checks what the host does with it (see this module's docstring)"
    )


def test_the_rule_sees_code_strings_and_fstrings_and_misses_the_rest(tmp_path):
    """Planted modules (written with HOOKIMPL for the marker, so that this file implements nothing itself)."""

    def plant(name: str, source: str) -> None:
        (tmp_path / name).write_text(textwrap.dedent(source).replace("HOOKIMPL", "hookimpl"))

    plant("test_code.py", """
        from harness import hookimpl
        import harness

        class Plugin:
            @HOOKIMPL(tryfirst=True)
            @staticmethod
            def register_scorers(register):
                pass

        @harness.HOOKIMPL
        def register_judges(register):
            pass

        def register_trainers(register):  # not marked: not a plugin
            pass
    """)
    plant("test_written.py", '''
        SOURCE = """
        @HOOKIMPL
        def register_testbeds(register):
            pass
        """
        name = "x"
        OTHER = f"""
        @HOOKIMPL
        def register_allocators(register):
            register({name})
        """
    ''')
    plant("helper.py", "@HOOKIMPL\ndef register_commands(app):\n    pass\n")  # not a test module
    found = implemented_by_tests(tmp_path)
    assert sorted(found) == ["register_allocators", "register_judges", "register_scorers", "register_testbeds"]
    assert found["register_scorers"] == ["test_code.py"]


# ------------------------------------------------------------------ the hooks no other module tested


def write_plugin(tmp_path, source: str) -> str:
    path = tmp_path / "contract_hooks_plugin.py"
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_hook_register_scorers(tmp_path):
    from harness.plugins import load_registry

    path = write_plugin(tmp_path, """
        from harness import hookimpl
        from harness.interfaces import Scorer

        class ResponseLength(Scorer):
            name = "response_length"
            description = "the number of response tokens, EOS included"

            def score(self, *, logp_policy, logp_ref, lengths):
                return lengths.astype(float)

        @hookimpl
        def register_scorers(register):
            register(ResponseLength)
    """)
    registry = load_registry([path])
    item = registry.get("scorer", "response_length")
    assert (item.plugin.name, item.plugin.source) == ("contract_hooks_plugin", "local")
    lengths = np.array([[1, 4]])
    column = item.create().score(logp_policy=np.zeros((1, 2)), logp_ref=np.zeros((1, 2)), lengths=lengths)
    assert column.tolist() == [[1.0, 4.0]]


def test_hook_register_allocators(tmp_path):
    from harness.plugins import load_registry

    path = write_plugin(tmp_path, """
        from harness import hookimpl
        from harness.interfaces import Allocator

        class FrontLoaded(Allocator):
            name = "front_loaded"
            description = "everything in the first iteration"

            def allocate(self, *, total_labels, iterations, history):
                return [total_labels] + [0] * (iterations - 1)

        @hookimpl
        def register_allocators(register):
            register(FrontLoaded)
    """)
    registry = load_registry([path])
    assert registry.registered_by("contract_hooks_plugin") == {"allocator": ["front_loaded"]}
    assert registry.create("allocator", "front_loaded").allocate(total_labels=9, iterations=3, history=()) == [9, 0, 0]


def test_hook_register_testbeds(tmp_path):
    from harness.loop import build_world
    from harness.plugins import load_registry
    from harness.progress import NullReporter

    path = write_plugin(tmp_path, """
        from harness import hookimpl
        from harness.interfaces import Testbed

        class Echo(Testbed):
            name = "echo"
            description = "a world that is only its seed and the trainer it was handed"

            def build_world(self, *, seed, reporter, trainers=None):
                return {"seed": seed, "trainer": trainers("native", {"lr": 0.25})}

        @hookimpl
        def register_testbeds(register):
            register(Echo)
    """)
    registry = load_registry([path])
    components = SimpleNamespace(testbed=registry.create("testbed", "echo"), annotator=None,
                                 trainers=registry.trainers())
    world = build_world(components, 7, NullReporter())
    assert world["seed"] == 7 and world["trainer"].settings["lr"] == 0.25


def test_hook_register_commands(monkeypatch):
    """``register_commands`` reaches the CLI through an entry point (the CLI takes no --plugin for commands).

    The session keeps entry points off (tests/conftest.py); this test switches
    them on for itself and hands the host one entry point only.
    """
    from typer.testing import CliRunner

    from harness import hookimpl
    from harness.cli import build_app
    from harness.plugins import ENTRY_POINT_GROUP

    module = types.ModuleType("contract_hooks_commands")

    @hookimpl
    def register_commands(app):
        @app.command("contract-hello")
        def hello(name: str = "world") -> None:
            """Say hello (a command added by a test plugin)."""
            print(f"hello {name}")

    module.register_commands = register_commands
    monkeypatch.setitem(sys.modules, module.__name__, module)
    point = importlib.metadata.EntryPoint(name="contract_commands", value=module.__name__, group=ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def entry_points(**selection):
        if selection.get("group") == ENTRY_POINT_GROUP:
            return importlib.metadata.EntryPoints([point])
        return real(**selection)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS")
    result = CliRunner().invoke(build_app(), ["contract-hello", "--name", "contracts"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello contracts"
