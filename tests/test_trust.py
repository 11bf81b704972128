"""Nothing the user did not ask for is run or unpickled: a scan of the project's own sources.

Model files are read as safetensors; any ``torch.load`` passes
``weights_only=True``; numpy never unpickles; ``trust_remote_code`` is never
switched on in code, only passed through from an option the user sets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.extras import skip_unless_extra

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("harness", "plugins", "leaderboard", "scripts", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py"))


def _calls(pattern: str):
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(pattern, text):
            # the whole call, up to its closing parenthesis on a later line
            depth, end = 0, match.start()
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            yield path.relative_to(ROOT), text[match.start(): end + 1]


def test_the_scan_sees_the_sources():
    assert len(SOURCES) > 50 and any(p.name == "loop.py" for p in SOURCES)


def test_every_torch_load_is_weights_only():
    for path, call in _calls(r"\btorch\.load\("):
        assert "weights_only=True" in call, f"{path}: {call}"


def test_numpy_never_unpickles_and_pickle_is_not_used():
    for path, call in _calls(r"\bnp\.load\("):
        assert "allow_pickle=True" not in call, f"{path}: {call}"
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import pickle|from pickle import|import dill|import cloudpickle)", text, re.M), path


def test_trust_remote_code_is_never_switched_on_in_code():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path


@pytest.mark.parametrize("method", ["from_pretrained"])
def test_model_loading_passes_trust_remote_code_only_from_an_option(method):
    for path, call in _calls(rf"\.{method}\("):
        if "trust_remote_code" in call:
            assert re.search(r"trust_remote_code\s*=\s*(bool\()?\w*(settings|trust|options)", call), f"{path}: {call}"


def test_trust_remote_code_is_an_explicit_option_defaulting_to_off():
    from harness.plugins import load_registry

    registry = load_registry([])
    for kind, name in (("testbed", "hf"), ("judge", "reward_model"), ("judge", "embedding")):
        options = {o.name: o for o in registry.get(kind, name).cls.options}
        assert options["trust_remote_code"].default is False, (kind, name)


def test_loading_passes_the_flag_through(monkeypatch, tmp_path):
    """What from_pretrained receives is exactly the user's setting: False unless they asked."""
    skip_unless_extra("hf")
    import transformers

    from plugins._hf import loading

    seen = []

    def fake(path, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    for flag in (False, True):
        with pytest.raises(Exception):
            loading.load_tokenizer(tmp_path, "test", trust_remote_code=flag)
    assert seen == [False, True]


def test_plugin_path_loads_only_the_named_file(tmp_path, monkeypatch):
    """--plugin a.py imports a.py and nothing else beside it; entry points can be switched off entirely."""
    from harness.plugins import load_registry

    marker = tmp_path / "imported.txt"
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text(f"open({str(marker)!r}, 'w').write('b ran')\n")
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry([str(tmp_path / "a.py")])
    assert not marker.exists()
    assert {p.source for p in registry.plugins.values()} == {"builtin", "local"}
