"""Reading label files people hand back, and writing pairs for Label Studio.

Three formats are read, each into :class:`leaderboard.labels.ImportedLabel`
items (pair id, label as the annotator saw the pair, annotator, line):

``jsonl``
    One JSON object per line: ``pair_id``, ``label`` (``a`` / ``b`` / ``tie``),
    optionally ``annotator``. Blank lines are skipped.
``csv``
    A header row with the same columns.
``labelstudio``
    Label Studio's JSON export of a project whose tasks came from
    :func:`labelstudio_tasks`: a Pairwise tag gives ``{"selected": "left"}``
    (our ``a``) or ``"right"`` (our ``b``); a Choices tag answering ``tie``
    gives a tie. The newest annotation of a task that was not cancelled counts;
    its ``completed_by`` is the annotator.

Every problem is reported with its line (or task) number; nothing is
imported from a file with any problem.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.textfiles import NotUTF8Error, read_utf8

FORMATS = ("auto", "jsonl", "csv", "labelstudio")
REQUIRED_COLUMNS = ("pair_id", "label")

#: The Label Studio labelling interface for the tasks of :func:`labelstudio_tasks`.
LABELSTUDIO_CONFIG = """\
<View>
  <Header value="Which response answers the prompt better?"/>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="preference" toName="text1,text2"/>
  <Text name="text1" value="$text1"/>
  <Text name="text2" value="$text2"/>
  <Choices name="tie" toName="prompt" choice="single">
    <Choice value="tie"/>
  </Choices>
</View>
"""


class LabelFileError(UsageError):
    """A label file that cannot be read; the message names the line and the fix."""


def read_label_file(path: Path, file_format: str = "auto") -> list[Any]:
    """Every label of ``path`` as ``ImportedLabel`` items; LabelFileError listing every problem."""
    if file_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}; got {file_format!r}")
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"no label file at {path}")
    try:
        text = read_utf8(path)
    except NotUTF8Error as exc:
        raise LabelFileError(str(exc)) from None
    if file_format == "auto":
        file_format = _guess_format(path, text)
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "labelstudio": _read_labelstudio}[file_format]
    items = reader(path, text)
    if not items:
        raise LabelFileError(f"{path} holds no labels")
    return items


def _guess_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    stripped = text.lstrip()
    if stripped.startswith("["):
        return "labelstudio"
    if suffix in (".jsonl", ".ndjson") or stripped.startswith("{"):
        return "jsonl"
    raise LabelFileError(f"cannot tell the format of {path} from its name or content; pass --format "
                         "jsonl, csv or labelstudio")


def _item(line: int, record: dict[str, Any], problems: list[str]) -> Any:
    from leaderboard.labels import ImportedLabel

    missing = [c for c in REQUIRED_COLUMNS if c not in record or record[c] in (None, "")]
    if missing:
        problems.append(f"line {line}: missing {', '.join(missing)} (each label needs pair_id and label)")
        return None
    from leaderboard.labels import LABEL_VALUES

    label = str(record["label"]).strip().lower()
    if label not in LABEL_VALUES:
        problems.append(f"line {line}: label {record['label']!r} is not one of {', '.join(LABEL_VALUES)}")
        return None
    annotator = record.get("annotator")
    return ImportedLabel(line=line, pair_id=str(record["pair_id"]).strip(), label=label,
                         annotator=None if annotator in (None, "") else str(annotator))


def _finish(path: Path, items: list[Any], problems: list[str]) -> list[Any]:
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LabelFileError(f"{path}: nothing imported; {len(problems)} problem(s):\n  {shown}{more}")
    return [item for item in items if item is not None]


def _read_jsonl(path: Path, text: str) -> list[Any]:
    items, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg}); each line must be one JSON object")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: a JSON {type(record).__name__}, not an object with pair_id and label")
            continue
        items.append(_item(number, record, problems))
    return _finish(path, items, problems)


def _read_csv(path: Path, text: str) -> list[Any]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    absent = [c for c in REQUIRED_COLUMNS if c not in columns]
    if absent:
        raise LabelFileError(f"{path}: the header has no {', '.join(absent)} column (found: {', '.join(columns) or 'none'}); "
                             "the first row must name the columns pair_id,label[,annotator]")
    items, problems = [], []
    for record in reader:
        items.append(_item(reader.line_num, record, problems))
    return _finish(path, items, problems)


def _read_labelstudio(path: Path, text: str) -> list[Any]:
    from leaderboard.labels import ImportedLabel

    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelFileError(f"{path}: not valid JSON at line {exc.lineno} ({exc.msg}); export the project from "
                             "Label Studio as JSON") from None
    if not isinstance(tasks, list):
        raise LabelFileError(f"{path}: a Label Studio JSON export is a list of tasks, not a {type(tasks).__name__}")
    items, problems = [], []
    for number, task in enumerate(tasks, start=1):
        data = task.get("data", {}) if isinstance(task, dict) else {}
        if "pair_id" not in data:
            problems.append(f"task {number}: no data.pair_id; import tasks made by harness label labelstudio")
            continue
        annotation = _newest_annotation(task.get("annotations") or [])
        if annotation is None:
            continue  # not labelled yet: the pair stays missing
        label = _labelstudio_label(annotation.get("result") or [])
        if label is None:
            problems.append(f"task {number} (pair {data['pair_id']}): its annotation selects neither response nor tie")
            continue
        annotator = annotation.get("completed_by")
        if isinstance(annotator, dict):
            annotator = annotator.get("email") or annotator.get("id")
        items.append(ImportedLabel(line=number, pair_id=str(data["pair_id"]), label=label,
                                   annotator=None if annotator is None else str(annotator)))
    return _finish(path, items, problems)


def _newest_annotation(annotations: Sequence[Any]) -> dict[str, Any] | None:
    done = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    return max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))


def _labelstudio_label(results: Sequence[Any]) -> str | None:
    for result in results:
        value = result.get("value", {}) if isinstance(result, dict) else {}
        choices = [str(c).lower() for c in value.get("choices", [])]
        if "tie" in choices:
            return "tie"
    for result in results:
        value = result.get("value", {}) if isinstance(result, dict) else {}
        selected = value.get("selected")
        if selected in ("left", "right"):
            return "a" if selected == "left" else "b"
    return None


def labelstudio_tasks(to_label: Path) -> list[dict[str, Any]]:
    """Label Studio tasks (``data``: pair_id, prompt, text1, text2) for the pairs of a ``to-label.jsonl``.

    ``text1`` is the file's ``response_a`` (left in the Pairwise tag), ``text2``
    its ``response_b``.
    """
    tasks = []
    for line in Path(to_label).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        tasks.append({"data": {"pair_id": record["pair_id"], "prompt": record["prompt"],
                               "text1": record["response_a"], "text2": record["response_b"]}})
    return tasks
