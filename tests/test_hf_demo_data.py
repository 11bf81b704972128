"""The demo data shipped with the hf testbed: 64 training prompts with targets, 16 evaluation prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.extras import skip_unless_extra

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "plugins" / "testbeds" / "hf" / "data"


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_training_prompts_have_a_prompt_and_a_target():
    rows = _rows("prompts.jsonl")
    assert len(rows) == 64
    for row in rows:
        assert set(row) == {"prompt", "target"}
        assert all(isinstance(v, str) and v.strip() == v and v for v in row.values())
    assert len({r["prompt"] for r in rows}) == 64


def test_eval_prompts_have_a_reference_output_that_differs_from_the_target():
    rows = _rows("eval.jsonl")
    assert len(rows) == 16
    for row in rows:
        assert set(row) == {"prompt", "output", "target"}
        assert all(isinstance(v, str) and v.strip() == v and v for v in row.values())
        # the embedding judge measures closeness to `target`: an `output` equal to it would always win
        assert row["output"] != row["target"]
    assert len({r["prompt"] for r in rows}) == 16


def test_eval_and_training_prompts_do_not_overlap():
    train = {r["prompt"] for r in _rows("prompts.jsonl")}
    assert not train & {r["prompt"] for r in _rows("eval.jsonl")}


def test_the_files_read_with_the_testbed_loader():
    skip_unless_extra("hf")
    from plugins._hf import loading

    found = loading.load_columns(DATA / "eval.jsonl", ["prompt", "output"], "eval", optional=["target"])
    assert len(found["prompt"]) == len(found["output"]) == len(found["target"]) == 16
    found = loading.load_columns(DATA / "prompts.jsonl", ["prompt", "target"], "prompts")
    assert len(found["prompt"]) == 64


def test_the_data_files_are_in_the_wheel_package_data():
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    assert '"testbeds/hf/data/*.jsonl"' in section
