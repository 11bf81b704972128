"""Prompt and reference files people get wrong: each gives a clear error naming the problem (and its line)."""

from __future__ import annotations

import json

import pytest

import reliability
from harness.errors import UsageError
from hf_tiny import tiny_world
from tests.extras import requires_extra

pytestmark = [pytest.mark.bad_input, requires_extra("hf")]

GOOD = json.dumps({"prompt": "Name a colour."}) + "\n"
CASES = {
    "empty.jsonl": (b"", "is empty"),
    "blank.jsonl": (b"\n  \n", "is empty"),
    "malformed.jsonl": ((GOOD + '{"prompt": "oops"\n' + GOOD).encode(), "line 2, is not valid JSON"),
    "array_line.jsonl": ((GOOD + '["a list"]\n').encode(), "line 2, is a JSON list"),
    "latin1.jsonl": (GOOD.encode() + '{"prompt": "caf\u00e9"}\n'.encode("latin-1"), "line 2, is not UTF-8"),
    "no_column.jsonl": ((json.dumps({"question": "Why?"}) + "\n").encode(), "no column 'prompt'"),
    "null_prompt.jsonl": ((GOOD + json.dumps({"prompt": None}) + "\n" + json.dumps({"prompt": " "}) + "\n").encode(),
                          "blank 'prompt' in row(s) 2, 3"),
    "bad.json": (b'[{"prompt": "a"},\n {"prompt": }]', "line 2, is not valid JSON"),
    "latin1.csv": ("prompt\nfine\ncaf\u00e9\n".encode("latin-1"), "line 3, is not UTF-8"),
    "wrong_header.csv": (b"question\nWhy?\n", "no column 'prompt'"),
    "prompts.txt": (b"Name a colour.\n", "unsupported extension"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_prompt_files_are_named_with_the_problem(tmp_path, name):
    content, said = CASES[name]
    path = tmp_path / name
    path.write_bytes(content)
    reliability.bad_input("prompt and reference files")
    with pytest.raises(UsageError) as caught:
        tiny_world(prompts=str(path))
    message = str(caught.value)
    assert said in message and "testbed option `prompts`" in message, message


def test_duplicated_prompts_are_kept_once(tmp_path):
    path = tmp_path / "twice.jsonl"
    rows = ["Name a colour.", "Count to three.", "Name a colour.", "Say hello.", "Count to three."]
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    reliability.bad_input("prompt and reference files")
    world = tiny_world(prompts=str(path))
    assert world.info["train_prompts"] + world.info["prompts_dropped"] == 3
    assert world.info["duplicate_prompts_dropped"] == 2


def test_a_reference_file_with_two_outputs_for_one_prompt_is_refused(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text(json.dumps({"prompt": "Say hi.", "output": "hi"}) + "\n"
                    + json.dumps({"prompt": "Say hi.", "output": "hello"}) + "\n")
    reliability.bad_input("prompt and reference files")
    with pytest.raises(UsageError, match="two different reference outputs"):
        tiny_world(eval_prompts=None, reference_outputs=str(path))
