"""The plugin manager: built-ins, --plugin files, entry points, collisions, bad hooks."""

import textwrap

import pytest

from harness import hookspecs
from harness.errors import PluginError, UnknownNameError
from harness.plugins import DEFAULT_PLUGINS, build_plugin_manager, build_registry, load_registry

SELECTOR_PLUGIN = """
from harness import hookimpl
from harness.interfaces import Pairs, Selector


class {cls}(Selector):
    name = {name!r}
    description = "test selector"

    def select_instances(self, batch, rng):
        return Pairs.empty()

    def select_corpus(self, batch, pairs, n_keep, rng):
        return pairs.take(slice(0, n_keep))


@hookimpl
def register_selectors(register):
    register({cls})
"""


def write_plugin(tmp_path, filename, source):
    path = tmp_path / filename
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_builtins_register_every_kind():
    registry = load_registry()
    assert {"random", "smallest", "largest", "normalized"} <= set(registry.names("selector"))
    assert {"constant", "increase", "decrease", "custom"} <= set(registry.names("allocator"))
    assert {"implicit_reward", "implicit_reward_normalized"} <= set(registry.names("scorer"))
    assert "native" in registry.names("trainer")
    assert "synthetic" in registry.names("testbed")
    assert {"synthetic_gold", "synthetic_proxy"} <= set(registry.names("judge"))
    assert set(registry.plugins) >= set(DEFAULT_PLUGINS)
    assert all(registry.plugins[name].source == "builtin" for name in DEFAULT_PLUGINS)


def test_every_hookspec_has_a_docstring_with_its_arguments():
    for name in ("register_scorers", "register_selectors", "register_allocators",
                 "register_trainers", "register_testbeds", "register_judges", "register_commands"):
        hook = getattr(hookspecs, name)
        doc = hook.__doc__ or ""
        assert len(doc.strip()) > 60, name
        for argument in hook.__code__.co_varnames[: hook.__code__.co_argcount]:
            assert f":param {argument}:" in doc, (name, argument)


def test_local_plugin_file_registers_a_selector(tmp_path):
    path = write_plugin(tmp_path, "mine.py", SELECTOR_PLUGIN.format(cls="Mine", name="mine"))
    registry = load_registry([path])
    assert registry.get("selector", "mine").plugin.name == "mine"
    assert registry.get("selector", "mine").plugin.source == "local"
    assert registry.registered_by("mine") == {"selector": ["mine"]}


def test_name_collision_names_both_plugins(tmp_path):
    path = write_plugin(tmp_path, "impostor.py", SELECTOR_PLUGIN.format(cls="Impostor", name="smallest"))
    with pytest.raises(PluginError) as info:
        load_registry([path])
    message = str(info.value)
    assert "'smallest'" in message and "plugins.selectors.margin" in message and "'impostor'" in message


def test_misspelt_hook_fails_loudly(tmp_path):
    path = write_plugin(tmp_path, "typo.py", """
        from harness import hookimpl

        @hookimpl
        def register_selector(register):
            pass
    """)
    with pytest.raises(PluginError, match="register_selector.*does not exist|does not exist"):
        build_plugin_manager([path], load_entry_points=False)


def test_plugin_that_fails_to_import_is_named(tmp_path):
    path = write_plugin(tmp_path, "broken.py", "import no_such_module_here\n")
    with pytest.raises(PluginError, match="broken.py.*failed to import.*no_such_module_here"):
        load_registry([path])


def test_invalid_registration_is_reported_with_the_plugin(tmp_path):
    path = write_plugin(tmp_path, "bad.py", """
        from harness import hookimpl

        class NotASelector:
            name = "nope"

        @hookimpl
        def register_selectors(register):
            register(NotASelector)
    """)
    with pytest.raises(PluginError, match="plugin 'bad' registered an invalid selector"):
        load_registry([path])


def test_unknown_name_suggests_close_matches():
    registry = load_registry()
    with pytest.raises(UnknownNameError) as info:
        registry.get("selector", "smalest")
    assert "did you mean 'smallest'?" in str(info.value)
    assert "available selectors:" in str(info.value)


def test_entry_points_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    pm, infos = build_plugin_manager()
    assert all(info.source == "builtin" for info in infos.values())
    registry = build_registry(pm, infos)
    assert "lengthgap" not in registry.names("selector")
