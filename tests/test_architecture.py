"""The import rules between the project's layers, read from the source (no module is imported).

Layers: the **core** (``harness`` outside ``harness.cli`` and ``harness.experiments``),
the **experiment layer** (``harness.experiments``), the **CLI** (``harness.cli``),
the **store** (``leaderboard``), the **built-ins** (``plugins``) and the **built-in executors**
(``plugins.executors``: plugins *of the experiment layer*, since an executor runs a sweep's tasks and
implements ``harness.experiments.executors.Executor``).

* the core imports neither the experiment layer, nor the CLI, nor the store, nor the built-ins;
* the store imports neither the experiment layer, nor the built-ins, nor the CLI;
* the experiment layer does not import the CLI;
* a built-in imports neither the store, nor the CLI, nor the experiment layer, nor
  another built-in's modules (its own package and ``plugins._*`` shared modules are fine);
* a built-in executor may import the experiment layer, but neither the store (the experiment layer
  decides what a worker may open), nor the CLI, nor another built-in's modules; nothing but the
  plugin host's list of module names refers to it.

:data:`KNOWN` lists the imports that still break a rule, each with what removes it; the
test fails when a new one appears and when a listed one is gone (so the list stays true).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "leaderboard", "plugins")

KNOWN: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports: ``from a import b`` is ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules}


def graph(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports, for every module under ``root``'s packages."""
    files = {module_name(p, root): p for package in PACKAGES if (root / package).exists()
             for p in (root / package).rglob("*.py")}
    modules = set(files)
    return {name: imports_of(path, name, modules) - {name} for name, path in files.items()}


def layer(name: str) -> str:
    if name.startswith("harness.experiments"):
        return "experiments"
    if name.startswith("harness.cli"):
        return "cli"
    if name == "harness.__main__":
        return "cli"
    if name.startswith("harness"):
        return "core"
    if name.startswith("leaderboard"):
        return "store"
    if name.startswith("plugins.executors"):
        return "executor"
    return "builtin"


FORBIDDEN = {
    "core": {"experiments", "cli", "store", "builtin", "executor"},
    "store": {"experiments", "builtin", "cli", "executor"},
    "experiments": {"cli", "executor"},
    "cli": {"executor"},
    "builtin": {"store", "cli", "experiments", "executor"},
    "executor": {"store", "cli"},
}
PLUGIN_LAYERS = {"builtin", "executor"}


def _plugin_package(name: str) -> str:
    """``plugins.testbeds.hf.world`` -> ``plugins.testbeds.hf``; ``plugins.selectors.margin`` -> itself."""
    parts = name.split(".")
    return ".".join(parts[:3])


def violations(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    found = set()
    for source, targets in edges.items():
        for target in targets:
            if layer(target) in FORBIDDEN.get(layer(source), set()):
                found.add((source, target))
            elif layer(source) in PLUGIN_LAYERS and layer(target) in PLUGIN_LAYERS:
                shared = target.split(".")[1].startswith("_") or target.split(".")[-1].startswith("_")
                own = _plugin_package(source) == _plugin_package(target)
                if not (shared and target.count(".") <= 2) and not own and target != "plugins":
                    found.add((source, target))
    return found


def test_the_layers_keep_their_import_rules():
    found = violations(graph(ROOT))
    new = sorted(found - KNOWN)
    gone = sorted(KNOWN - found)
    assert not new, f"imports that break a layer rule (see the module docstring): {new}"
    assert not gone, f"listed as known but no longer there: remove them from KNOWN: {gone}"


def plant(root: Path, files: dict[str, str]) -> Path:
    """A tree of the three packages under ``root`` with ``files`` (path -> source) and their packages."""
    for path, source in {**{f"{p}/__init__.py": "" for p in PACKAGES}, **files}.items():
        target = root / path
        for folder in reversed(target.parents[: len(Path(path).parts) - 1]):
            folder.mkdir(exist_ok=True)
            (folder / "__init__.py").touch()
        target.write_text(source)
    return root


def test_a_planted_forbidden_import_is_caught(tmp_path):
    plant(tmp_path, {
        "harness/experiments/runner.py": "X = 1\n",
        "leaderboard/store.py": "X = 1\n",
        "harness/loop.py": "from harness.experiments.runner import X\n",
        "leaderboard/query.py": "def f():\n    from harness.experiments import runner\n",
        "harness/budget.py": "from .experiments import runner\nimport leaderboard.store\n",
    })
    found = violations(graph(tmp_path))
    assert found == {
        ("harness.loop", "harness.experiments.runner"),
        ("leaderboard.query", "harness.experiments.runner"),
        ("harness.budget", "harness.experiments.runner"),
        ("harness.budget", "leaderboard.store"),
    }


def test_a_built_in_executor_may_use_the_experiment_layer_and_nothing_else_may_use_it(tmp_path):
    plant(tmp_path, {
        "harness/experiments/executors.py": "X = 1\n",
        "leaderboard/store.py": "X = 1\n",
        "plugins/executors/cluster.py": "from harness.experiments.executors import X\nimport leaderboard.store\n",
        "plugins/selectors/greedy.py": "from harness.experiments.executors import X\n",
        "harness/experiments/sweep.py": "from plugins.executors import cluster\n",
    })
    assert violations(graph(tmp_path)) == {
        ("plugins.executors.cluster", "leaderboard.store"),
        ("plugins.selectors.greedy", "harness.experiments.executors"),
        ("harness.experiments.sweep", "plugins.executors.cluster"),
    }


# Private names imported from another module, each with what removes it.
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()


def private_imports(root: Path) -> set[tuple[str, str, str]]:
    """(importer, module, name) for every ``from module import _name`` across two project modules.

    A private module of a package (``plugins.selectors._pairs``) may be imported
    by name; a private function, class or constant belongs to its own module.
    """
    files = {module_name(p, root): p for package in PACKAGES if (root / package).exists()
             for p in (root / package).rglob("*.py")}
    found = set()
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base not in files or base == name:
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{base}.{alias.name}" not in files:
                    found.add((name, base, alias.name))
    return found


def test_no_module_imports_another_modules_private_names():
    found = private_imports(ROOT)
    new = sorted(found - KNOWN_PRIVATE)
    gone = sorted(KNOWN_PRIVATE - found)
    assert not new, f"private names imported from another module (make them public or move them): {new}"
    assert not gone, f"listed as known but no longer there: remove them from KNOWN_PRIVATE: {gone}"


def test_a_planted_private_import_is_caught(tmp_path):
    plant(tmp_path, {
        "harness/cli/sweep.py": "def _execute():\n    pass\n",
        "harness/cli/study.py": "def f():\n    from harness.cli.sweep import _execute\n",
        "plugins/_shared.py": "X = 1\n",
        "plugins/mine.py": "from plugins import _shared\nfrom . import _shared\n",
    })
    assert private_imports(tmp_path) == {("harness.cli.study", "harness.cli.sweep", "_execute")}


def test_no_module_is_importable_under_two_names():
    """Every module file of the three packages is reached from one import root only (no nested root on the path)."""
    import sys

    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    roots = [Path(entry).resolve() for entry in sys.path if entry and Path(entry).is_dir()]
    for path in files:
        reachable = set()
        for root in roots:
            try:
                relative = path.relative_to(root)
            except ValueError:
                continue
            folders = [root.joinpath(*relative.parts[:k]) for k in range(1, len(relative.parts))]
            if all((folder / "__init__.py").exists() for folder in folders):
                reachable.add(module_name(path, root))
        assert len(reachable) <= 1, f"{path} is importable as {sorted(reachable)}"


def test_the_loop_reads_in_twenty_lines_and_names_its_steps_in_order():
    """harness.loop.STEPS is the order of the steps and run_iterations runs them after begin, nothing else;
    harness.iteration documents the same order."""
    import inspect

    import harness.iteration as iteration
    from harness.loop import STEPS, run_iterations

    source = inspect.getsource(run_iterations)
    assert len(source.strip().splitlines()) <= 20
    called = [node.func.id for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]
    assert [name for name in called if name != "range"] == ["begin", "step"]
    steps = ["begin", *(step.__name__ for step in STEPS)]
    assert all(getattr(iteration, name) is step for name, step in zip(steps[1:], STEPS))
    assert steps == ["begin", "draw", "sample", "score", "select", "label", "observe", "train", "evaluate", "record"]
    documented = [name for name in steps[1:] if f":func:`{name}`" in iteration.__doc__]
    assert documented == steps[1:]
    positions = [iteration.__doc__.index(f":func:`{name}`") for name in steps]
    assert positions == sorted(positions)
