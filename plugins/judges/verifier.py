"""The ``verifier`` judge: a program checks each response against its prompt's rule; 1 if it holds, else 0.

Each prompt the judge sees needs a check, read from ``tasks``: a local
JSONL/JSON/CSV/parquet file, or a directory whose data files are all read
(e.g. the verifiable regime's ``train.jsonl`` and ``test.jsonl``), with the
columns ``prompt`` and ``check`` (the names are options). A check is a JSON
object: ``kind`` names a rule of :data:`plugins._verifiable.CHECKS`
(``number``, ``contains_word``, ``yes_no``, ``starts_with``, ``lowercase``,
``list``) and the other fields are its parameters, e.g.
``{"kind": "number", "answer": 12}``. Prompts are matched by their text as the
world renders it (:meth:`World.texts`); a prompt without a check is a
UsageError naming it, and so is a malformed check (when the file is read).

The judge is *exact* (:attr:`harness.interfaces.Judge.exact`): deterministic,
free and model-free, so a testbed without a gold reward of its own (hf) may
use it as one. As gold judge there, it gives the run's ``gold_reward`` and
the label-noise diagnostics. Pairs are compared the base class's way: a
satisfied response beats an unsatisfied one, and two alike tie.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Pairs, Responses
from harness.options import Option
from plugins import _shipped as shipped
from plugins.judges._text import compare_by_text_scores, score_by_text_scores

LABEL = "judge 'verifier'"
#: The formats the judge reads with the standard library; parquet needs ``datasets`` (the hf extra).
PLAIN_FORMATS = (".jsonl", ".json", ".csv")
FORMATS = (*PLAIN_FORMATS, ".parquet")


def read_rows(path: Path, label: str) -> list[dict]:
    """The rows of a JSONL, JSON (a list of objects) or CSV file, read with the standard library; a parquet
    file through ``datasets``. UsageError naming the file and line for anything malformed."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            from plugins._hf import loading
        except ImportError:  # pragma: no cover - the hf extra brings datasets
            raise UsageError(f"{label}: reading {path.name} needs the hf extra (pip install -e '.[hf]'); or "
                             "write the tasks as JSONL, JSON or CSV") from None
        columns = loading.load_columns(path, [], label)
        names = list(columns)
        return [dict(zip(names, values)) for values in zip(*(columns[n] for n in names))]
    text = path.read_text(encoding="utf-8")
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            rows = json.loads(text)
        else:
            rows = list(csv.DictReader(text.splitlines()))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{label}: {path.name} is not valid {suffix[1:].upper()} (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UsageError(f"{label}: {path.name} must hold one object per row")
    return rows


class VerifierJudge(Judge):
    name = "verifier"
    description = ("A program checks each response against its prompt's rule (a number, a word, a format): "
                   "1 or 0, exact and free")
    exact = True
    options = (
        Option("tasks", str, None, "a local JSONL/JSON/CSV/parquet file, or a directory of them, with the check "
               "of every prompt (columns prompt and check)"),
        Option("prompt_column", str, "prompt", "name of the prompt column of the tasks files"),
        Option("check_column", str, "check", "name of the check column (a JSON object with a `kind`)"),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        if self.settings["tasks"]:
            self._files()  # a wrong path: an error before the run
        self._checks: dict[str, dict] | None = None
        self._items = 0

    def _files(self) -> list[Path]:
        label = f"option 'tasks' of {LABEL}"
        value = str(self.settings["tasks"])
        path = Path(shipped.resolve(value)).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in FORMATS)
            if not files:
                raise UsageError(f"{label}: directory {value!r} has no data files ({', '.join(FORMATS)})")
            return files
        if not path.exists():
            raise UsageError(f"{label}: no such file or directory {value!r}")
        if path.suffix.lower() not in FORMATS:
            raise UsageError(f"{label}: {value!r} has an unsupported extension; use one of {', '.join(FORMATS)}")
        return [path]

    def checks(self) -> dict[str, dict]:
        """The check of every prompt text, read from ``tasks`` once and validated."""
        if self._checks is None:
            from plugins._verifiable import parse_check

            if not self.settings["tasks"]:
                raise UsageError(f"{LABEL} needs its `tasks` option: a file or directory with the check of every "
                                 "prompt (columns prompt and check), e.g. "
                                 "-o gold_judge.tasks=shipped:verifiable (the verifiable regime's checks)")
            prompt_column, check_column = self.settings["prompt_column"], self.settings["check_column"]
            checks: dict[str, dict] = {}
            for path in self._files():
                label = f"option 'tasks' of {LABEL} ({path.name})"
                rows = read_rows(path, label)
                absent = [c for c in (prompt_column, check_column) if rows and c not in rows[0]]
                if absent:
                    raise UsageError(f"{label}: no column {absent[0]!r} (its columns: {', '.join(rows[0])})")
                for number, row in enumerate(rows, start=1):
                    prompt, check = row.get(prompt_column), row.get(check_column)
                    try:
                        parsed = parse_check(check, f"{label}, row {number}")
                    except ValueError as exc:
                        raise UsageError(str(exc)) from None
                    if checks.setdefault(str(prompt), parsed) != parsed:
                        raise UsageError(f"{label}: prompt {str(prompt)[:80]!r} has two different checks")
            self._checks = checks
        return self._checks

    def score_texts(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """1.0 or 0.0 for each ``(prompt, response)`` pair of texts."""
        from plugins._verifiable import verify

        checks = self.checks()
        missing = [p for p in prompts if p not in checks]
        if missing:
            raise UsageError(f"{LABEL}: no check for the prompt {missing[0][:80]!r} in {self.settings['tasks']!r} "
                             f"({len(set(missing))} prompts lack one); add rows for them")
        self._items += len(responses)
        return np.array([verify(checks[p], r) for p, r in zip(prompts, responses)], dtype=np.float64)

    def score(self, *, world, prompts, responses: Responses, rng) -> np.ndarray:
        """``(M, N)`` float64: 1 where the response satisfies its prompt's check, else 0."""
        return score_by_text_scores(self.score_texts, world, prompts, responses, LABEL)

    def compare(self, *, world, prompts, responses: Responses, pairs: Pairs, rng) -> Labels:
        """The base verdict on the paired responses only: satisfied beats unsatisfied, alike ties."""
        return compare_by_text_scores(self.score_texts, world, prompts, responses, pairs)

    def usage(self) -> dict[str, int]:
        """``{"verifier_items": ...}``: responses checked."""
        return {"verifier_items": self._items}


@hookimpl
def register_judges(register):
    register(VerifierJudge)
