"""The plugin manager and the component registry.

Plugins come from three places, all registered the same way:

1. the built-ins, listed in :data:`DEFAULT_PLUGINS` and registered with
   ``pm.register(module, name)`` exactly like third-party plugins;
2. installed packages exposing an entry point in the ``pairsel_harness``
   group (set ``HARNESS_LOAD_PLUGINS`` to a comma-separated list of entry-point
   names to load only those, or to the empty string to load none);
3. ``--plugin PATH_OR_MODULE`` on the command line, for one command.

The ``register_*`` hooks are then called once per plugin, so every registered
component knows which plugin provided it and two plugins claiming one name is an
error that names both.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from harness import __version__, hookspecs
from harness.errors import PluginError, UnknownNameError
from harness.interfaces import COMPONENT_KINDS, Component, Trainer, TrainerFactory, check_component_class

ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.scorers.implicit",
    "plugins.scorers.stochastic",
    "plugins.selectors.random",
    "plugins.selectors.margin",
    "plugins.selectors.explicit",
    "plugins.selectors.uncertainty",
    "plugins.selectors.sharp",
    "plugins.selectors.signed_gap",
    "plugins.selectors.active_exploration",
    "plugins.selectors.apo",
    "plugins.selectors.sea",
    "plugins.selectors.steered",
    "plugins.selectors.gold_gradient",
    "plugins.allocators.schedules",
    "plugins.allocators.adaptive",
    "plugins.trainers.native",
    "plugins.trainers.trl",
    "plugins.testbeds.synthetic",
    "plugins.testbeds.hf",
    "plugins.judges.synthetic",
    "plugins.judges.external",
    "plugins.judges.openai",
    "plugins.judges.reward_model",
    "plugins.judges.function",
    "plugins.judges.embedding",
    "plugins.judges.verifier",
    "plugins.judges.pairrm",
    "plugins.studies.builtin",
    "plugins.executors.local",
    "plugins.executors.ray",
    "plugins.executors.batch",
)

#: The register hooks that register something other than a component class (a plan file, an executor).
OTHER_REGISTER_HOOKS = ("register_studies", "register_executors")
#: What the sweep calls on an executor class and its instances (harness.experiments.executors.Executor).
EXECUTOR_METHODS = ("check_available", "check_placement", "submit", "as_completed", "cancel", "close")

REGISTER_HOOKS: dict[str, str] = {
    "scorer": "register_scorers",
    "selector": "register_selectors",
    "allocator": "register_allocators",
    "trainer": "register_trainers",
    "testbed": "register_testbeds",
    "judge": "register_judges",
}


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from."""

    name: str
    version: str
    source: str  # "builtin", "entrypoint" or "local"
    distribution: str | None = None


@dataclass(frozen=True)
class Registered:
    """One component class and the plugin that registered it."""

    kind: str
    cls: type[Component]
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return self.cls.name

    def create(self, settings: Mapping[str, Any] | None = None) -> Component:
        """An instance with validated settings (UsageError on a bad option)."""
        return self.cls(settings)


@dataclass
class Registry:
    """Every registered component, by kind and name."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    components: dict[str, dict[str, Registered]] = field(
        default_factory=lambda: {kind: {} for kind in COMPONENT_KINDS}
    )
    hooks: dict[str, list[str]] = field(default_factory=dict)
    #: Study plan files by name: ``{name: (path, plugin)}`` (the ``register_studies`` hook).
    studies: dict[str, tuple[Path, PluginInfo]] = field(default_factory=dict)
    #: Executor classes by name: ``{name: (class, plugin)}`` (the ``register_executors`` hook).
    executors: dict[str, tuple[type, PluginInfo]] = field(default_factory=dict)

    def add_executor(self, cls: Any, plugin: PluginInfo) -> None:
        """Register the executor class ``cls``: a class with a string ``name`` and the methods of
        ``harness.experiments.executors.Executor`` (usually a subclass of it). Checked by its interface, so the
        core never imports the experiment layer."""
        missing = [method for method in EXECUTOR_METHODS if not callable(getattr(cls, method, None))]
        if not isinstance(cls, type) or not isinstance(getattr(cls, "name", None), str) or missing:
            lacks = f" (it lacks {', '.join(missing)})" if isinstance(cls, type) and missing else ""
            raise PluginError(f"plugin {plugin.name!r} registered an invalid executor {cls!r}{lacks}: register(cls) "
                              "takes a subclass of harness.experiments.executors.Executor with a string `name`")
        existing = self.executors.get(cls.name)
        if existing is not None and existing[0] is not cls:
            raise PluginError(
                f"executor name {cls.name!r} is registered by two plugins: {existing[1].name!r} and "
                f"{plugin.name!r}. Uninstall one, or rename the executor in the plugin you control."
            )
        self.executors[cls.name] = (cls, plugin)

    def add_study(self, path: Any, plugin: PluginInfo) -> None:
        """Register the study plan file ``path`` (named after its file, without ``.toml``)."""
        if not isinstance(path, (str, os.PathLike)) or not str(path).endswith(".toml"):
            raise PluginError(
                f"plugin {plugin.name!r} registered an invalid study {path!r}: register(path) takes "
                "the path of a .toml plan file"
            )
        path = Path(path)
        if not path.is_file():
            raise PluginError(f"plugin {plugin.name!r} registered study file {str(path)!r}, which does not exist")
        name = path.stem
        existing = self.studies.get(name)
        if existing is not None and existing[0].resolve() != path.resolve():
            raise PluginError(
                f"study name {name!r} is registered by two plugins: {existing[1].name!r} and "
                f"{plugin.name!r}. Uninstall one, or rename the plan file in the plugin you control."
            )
        self.studies[name] = (path, plugin)

    def add(self, kind: str, cls: Any, plugin: PluginInfo) -> None:
        try:
            check_component_class(kind, cls)
        except TypeError as exc:
            raise PluginError(f"plugin {plugin.name!r} registered an invalid {kind}: {exc}") from None
        existing = self.components[kind].get(cls.name)
        if existing is not None and existing.cls is not cls:
            raise PluginError(
                f"{kind} name {cls.name!r} is registered by two plugins: "
                f"{existing.plugin.name!r} and {plugin.name!r}. Uninstall one, or rename the "
                f"{kind} in the plugin you control."
            )
        self.components[kind][cls.name] = Registered(kind, cls, plugin)

    def names(self, kind: str) -> list[str]:
        return sorted(self.components[kind])

    def get(self, kind: str, name: str) -> Registered:
        """The component ``name`` of ``kind``; UnknownNameError lists close matches."""
        try:
            return self.components[kind][name]
        except KeyError:
            raise UnknownNameError(kind, name, self.components[kind]) from None

    def create(self, kind: str, name: str, settings: Mapping[str, Any] | None = None) -> Component:
        return self.get(kind, name).create(settings)

    def trainers(self) -> TrainerFactory:
        """A :data:`~harness.interfaces.TrainerFactory` over this registry's trainers (for testbeds)."""
        def make(name: str, settings: Mapping[str, Any] | None = None) -> Trainer:
            return self.get("trainer", name).create(settings)

        return make

    def registered_by(self, plugin_name: str) -> dict[str, list[str]]:
        """``{kind: [names]}`` of what one plugin registered."""
        found: dict[str, list[str]] = {}
        for kind, items in self.components.items():
            names = sorted(n for n, r in items.items() if r.plugin.name == plugin_name)
            if names:
                found[kind] = names
        studies = sorted(name for name, (_, info) in self.studies.items() if info.name == plugin_name)
        if studies:
            found["study"] = studies
        executors = sorted(name for name, (_, info) in self.executors.items() if info.name == plugin_name)
        if executors:
            found["executor"] = executors
        return found


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _load_module_from_path(path: Path) -> ModuleType:
    module_name = f"harness_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_local_plugin(spec: str) -> tuple[ModuleType, str]:
    """Import ``spec``: a ``.py`` file path or an importable module name."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.exists():
            if not path.is_file():
                raise PluginError(f"--plugin {spec!r}: no such file")
            return _load_module_from_path(path.resolve()), path.stem
        return importlib.import_module(spec), spec
    except PluginError:
        raise
    except Exception as exc:  # report any import failure by the plugin's name
        raise PluginError(f"--plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from exc


def _selected_entry_points() -> list[importlib.metadata.EntryPoint]:
    points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    wanted = os.environ.get("HARNESS_LOAD_PLUGINS")
    if wanted is None:
        return points
    names = {n.strip() for n in wanted.split(",") if n.strip()}
    return [ep for ep in points if ep.name in names]


def build_plugin_manager(
    local_plugins: Sequence[str] = (), *, load_entry_points: bool = True
) -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """A plugin manager with built-ins, entry-point plugins and ``local_plugins`` registered."""
    pm = _new_manager()
    infos: dict[str, PluginInfo] = {}

    def add(plugin: object, info: PluginInfo) -> None:
        if pm.has_plugin(info.name):
            raise PluginError(
                f"two plugins are named {info.name!r} ({infos[info.name].source} and {info.source})"
            )
        pm.register(plugin, name=info.name)
        infos[info.name] = info

    for module_name in DEFAULT_PLUGINS:
        add(importlib.import_module(module_name), PluginInfo(module_name, __version__, "builtin"))

    if load_entry_points:
        for ep in _selected_entry_points():
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else "unknown"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (from {dist or 'an unknown distribution'}) failed to import: "
                    f"{type(exc).__name__}: {exc}\nUninstall it, fix it, or set HARNESS_LOAD_PLUGINS "
                    "to the plugins you want loaded."
                ) from exc
            add(plugin, PluginInfo(ep.name, version, "entrypoint", dist))

    for spec in local_plugins:
        module, name = load_local_plugin(spec)
        add(module, PluginInfo(name, str(getattr(module, "__version__", "local")), "local"))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {pm.get_name(exc.plugin)!r} implements a hook that does not exist ({exc}). "
            f"Known hooks: {', '.join(sorted([*REGISTER_HOOKS.values(), *OTHER_REGISTER_HOOKS]) + ['register_commands'])}"
        ) from None
    return pm, infos


def build_registry(pm: pluggy.PluginManager, infos: Mapping[str, PluginInfo]) -> Registry:
    """Call every ``register_*`` hook once per plugin and collect the components."""
    registry = Registry(plugins=dict(infos))
    for plugin_name, plugin in pm.list_name_plugin():
        registry.hooks[plugin_name] = sorted(
            caller.name for caller in (pm.get_hookcallers(plugin) or [])
        )
    for kind, hook_name in REGISTER_HOOKS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            info = infos[impl.plugin_name]

            def register(cls: Any, _kind: str = kind, _info: PluginInfo = info) -> None:
                registry.add(_kind, cls, _info)

            kwargs = {"register": register}
            impl.function(**{name: kwargs[name] for name in impl.argnames})
    for impl in pm.hook.register_studies.get_hookimpls():
        info = infos[impl.plugin_name]

        def register_study(path: Any, _info: PluginInfo = info) -> None:
            registry.add_study(path, _info)

        kwargs = {"register": register_study}
        impl.function(**{name: kwargs[name] for name in impl.argnames})
    for impl in pm.hook.register_executors.get_hookimpls():
        info = infos[impl.plugin_name]

        def register_executor(cls: Any, _info: PluginInfo = info) -> None:
            registry.add_executor(cls, _info)

        kwargs = {"register": register_executor}
        impl.function(**{name: kwargs[name] for name in impl.argnames})
    return registry


def default_trainers() -> TrainerFactory:
    """The trainers of the default registry (built-ins and installed plugins), for a testbed called without
    a ``trainers`` factory (e.g. ``build_world`` called directly)."""
    return load_registry().trainers()


def load_registry(local_plugins: Iterable[str] = ()) -> Registry:
    """The registry for one command: built-ins, installed plugins and ``--plugin`` ones."""
    pm, infos = build_plugin_manager(tuple(local_plugins))
    return build_registry(pm, infos)
