"""Every label a run paid for: the ``labels`` and ``texts`` tables.

A run's budget ledger is the count of its ``labels`` rows: the loop records a
row for every pairwise preference and every pointwise gold score it was
charged for, with the text it was given for (stored once in ``texts``, by
hash). Pairs handed to an external annotator are recorded when they are
exported (``label`` NULL) and filled in by :func:`import_labels`, which checks
the whole file before it writes anything.

Label values are in the harness's own orientation of a pair: ``a`` means
the pair's response ``a`` won. What the external annotator saw as ``a`` may
have been ``b`` (``shown_swapped``); :func:`import_labels` undoes the swap.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LABEL_VALUES = ("a", "b", "tie")
"""What an annotator may answer about a pair."""


def text_hash(text: str) -> str:
    """sha256 of ``text`` (UTF-8), 16 hex digits: the key of the ``texts`` table."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def pair_id(run_id: str, iteration: int, position: int) -> str:
    """The id an annotator sees for pair ``position`` of ``iteration``: ``RUN/ITERATION/pPOSITION``."""
    return f"{run_id}/{int(iteration)}/p{int(position):05d}"


def score_id(run_id: str, iteration: int, position: int) -> str:
    """The id of a pointwise gold score of response ``position`` (flattened over the pool)."""
    return f"{run_id}/{int(iteration)}/s{int(position):05d}"


@dataclass(frozen=True)
class PairLabel:
    """One pair and, once known, its label; what the loop records and the exporter reads."""

    position: int
    prompt: str
    response_a: str
    response_b: str
    label: str | None  # a / b / tie, the harness's orientation; None while awaited
    shown_swapped: bool | None = None  # set only for pairs shown to an external annotator
    annotator: str | None = None
    prompt_messages: list[dict[str, str]] | None = None  # a conversational prompt's messages (``texts.messages``)


def record_pairs(board: Any, run_id: str, iteration: int, pairs: Sequence[PairLabel], source: str, *,
                 replace: bool = True) -> None:
    """Insert one ``labels`` row per pair and their texts, in one transaction.

    A row of the same id is replaced (a re-run iteration), or with ``replace=False`` kept
    (a replayed journal never overwrites a label imported meanwhile).
    """
    now = _now()
    texts: dict[str, str] = {}
    messages: dict[str, str] = {}
    rows = []
    for pair in pairs:
        if pair.prompt_messages is not None:
            messages[text_hash(pair.prompt)] = json.dumps(pair.prompt_messages, ensure_ascii=False)
        hashes = []
        for text in (pair.prompt, pair.response_a, pair.response_b):
            key = text_hash(text)
            texts[key] = text
            hashes.append(key)
        rows.append((
            pair_id(run_id, iteration, pair.position), run_id, int(iteration), "pair", int(pair.position),
            *hashes, None if pair.shown_swapped is None else int(pair.shown_swapped), pair.label, None,
            source, pair.annotator, now, now if pair.label is not None else None,
        ))
    _insert(board, texts, rows, replace=replace, messages=messages)


def record_scores(
    board: Any, run_id: str, iteration: int, prompts: Sequence[str], responses: Sequence[str],
    scores: Sequence[float], source: str, *, replace: bool = True,
) -> None:
    """Insert one ``labels`` row (kind ``score``) per pointwise gold score, in one transaction."""
    now = _now()
    texts: dict[str, str] = {}
    rows = []
    for position, (prompt, response, score) in enumerate(zip(prompts, responses, scores, strict=True)):
        prompt_key, response_key = text_hash(prompt), text_hash(response)
        texts[prompt_key], texts[response_key] = prompt, response
        rows.append((
            score_id(run_id, iteration, position), run_id, int(iteration), "score", position,
            prompt_key, response_key, None, None, None, float(score), source, None, now, now,
        ))
    _insert(board, texts, rows, replace=replace)


def _insert(board: Any, texts: Mapping[str, str], rows: Sequence[tuple], *, replace: bool = True,
            messages: Mapping[str, str] | None = None) -> None:
    with board._writing():
        board.conn.executemany("INSERT OR IGNORE INTO texts (hash, text) VALUES (?, ?)", list(texts.items()))
        if messages:  # a text is stored once: its messages too, by whichever run saw them first
            board.conn.executemany("UPDATE texts SET messages = ? WHERE hash = ? AND messages IS NULL",
                                   [(value, key) for key, value in messages.items()])
        board.conn.executemany(
            f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO labels (id, run_id, iteration, kind, position, prompt_hash, a_hash, b_hash, "
            "shown_swapped, label, score, source, annotator, requested_at, labelled_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def requested_pairs(board: Any, run_id: str, iteration: int) -> list[dict[str, Any]]:
    """The pairs of ``iteration`` handed to an external annotator, by position, with their labels (or None)."""
    cursor = board.conn.execute(
        "SELECT position, label, shown_swapped, annotator, a_hash, b_hash FROM labels "
        "WHERE run_id = ? AND iteration = ? AND kind = 'pair' AND shown_swapped IS NOT NULL ORDER BY position",
        (run_id, int(iteration)),
    )
    return [dict(zip(("position", "label", "shown_swapped", "annotator", "a_hash", "b_hash"), row)) for row in cursor]


def count_labels(board: Any, run_id: str) -> dict[int, int]:
    """Rows of ``labels`` per iteration of ``run_id``: the ledger as recorded."""
    cursor = board.conn.execute(
        "SELECT iteration, count(*) FROM labels WHERE run_id = ? GROUP BY iteration ORDER BY iteration", (run_id,)
    )
    return {int(iteration): int(n) for iteration, n in cursor}


@dataclass(frozen=True)
class IterationStatus:
    """Labels of one iteration: how many were requested, given, tied, still missing."""

    iteration: int
    requested: int
    labelled: int
    ties: int
    source: str

    @property
    def missing(self) -> int:
        return self.requested - self.labelled


def status(board: Any, run_id: str) -> list[IterationStatus]:
    """Per iteration: requested / labelled / ties / missing, and where the labels came from."""
    cursor = board.conn.execute(
        "SELECT iteration, count(*), count(label) + count(score), sum(label = 'tie'), "
        "group_concat(DISTINCT source) FROM labels WHERE run_id = ? GROUP BY iteration ORDER BY iteration",
        (run_id,),
    )
    return [
        IterationStatus(int(i), int(requested), int(labelled), int(ties or 0), str(source or ""))
        for i, requested, labelled, ties, source in cursor
    ]


# ---------------------------------------------------------------------- import


class LabelImportError(ValueError):
    """A label file that cannot be imported; the message lists every problem found."""


@dataclass(frozen=True)
class ImportedLabel:
    """One line of a label file: the pair id, the label as the annotator saw the pair, who gave it."""

    line: int
    pair_id: str
    label: str
    annotator: str | None = None


@dataclass(frozen=True)
class ImportResult:
    """What an import changed: labels written, identical ones already there, still missing per iteration."""

    written: int
    unchanged: int
    missing: dict[int, int]


def import_labels(board: Any, run_id: str, items: Sequence[ImportedLabel], *, source_file: str) -> ImportResult:
    """Check every item against the pairs ``run_id`` handed out, then write them all or nothing.

    Refused (LabelImportError, nothing written): a pair id of another run, an
    unknown or duplicated pair id, a label outside a / b / tie, a pair that
    already has a different label. Importing a file twice changes nothing.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for item in items:
        if item.pair_id in seen:
            problems.append(f"line {item.line}: pair_id {item.pair_id!r} repeats line {seen[item.pair_id]}")
        seen.setdefault(item.pair_id, item.line)
        if item.label not in LABEL_VALUES:
            problems.append(f"line {item.line}: label {item.label!r} is not one of {', '.join(LABEL_VALUES)}")
    other_runs = sorted({item.pair_id.split("/", 1)[0] for item in items if not item.pair_id.startswith(run_id + "/")})
    if other_runs:
        raise LabelImportError(
            f"{source_file} has labels for run(s) {', '.join(other_runs[:3])}, not for run {run_id}: "
            f"import it with harness label import {other_runs[0]} {source_file}"
        )
    known = _requested_by_id(board, run_id)
    updates = []
    unchanged = 0
    for item in items:
        row = known.get(item.pair_id)
        if row is None:
            problems.append(f"line {item.line}: pair_id {item.pair_id!r} was not handed out for run {run_id} "
                            "(harness label status shows the iterations awaiting labels)")
            continue
        if item.label not in LABEL_VALUES:
            continue
        label = _unswap(item.label, bool(row["shown_swapped"]))
        if row["label"] is not None:
            if row["label"] != label:
                problems.append(f"line {item.line}: pair {item.pair_id} already has label {row['label']!r} "
                                f"(in the harness's order); refusing to change a label that was paid for")
            else:
                unchanged += 1
            continue
        updates.append((label, item.annotator, _now(), item.pair_id))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LabelImportError(f"{source_file}: nothing imported; {len(problems)} problem(s):\n  {shown}{more}")
    with board._writing():
        board.conn.executemany(
            "UPDATE labels SET label = ?, annotator = ?, labelled_at = ? WHERE id = ? AND label IS NULL", updates
        )
    missing = {s.iteration: s.missing for s in status(board, run_id) if s.missing}
    return ImportResult(written=len(updates), unchanged=unchanged, missing=missing)


def _unswap(shown_label: str, swapped: bool) -> str:
    """The label in the harness's order, from the label of the order the annotator saw."""
    if not swapped or shown_label == "tie":
        return shown_label
    return "b" if shown_label == "a" else "a"


def shown_label(label: str, swapped: bool) -> str:
    """The label in the order an annotator saw: the inverse of the import's un-swapping."""
    return _unswap(label, swapped)


def _requested_by_id(board: Any, run_id: str) -> dict[str, dict[str, Any]]:
    cursor = board.conn.execute(
        "SELECT id, label, shown_swapped FROM labels WHERE run_id = ? AND kind = 'pair' AND shown_swapped IS NOT NULL",
        (run_id,),
    )
    return {row[0]: {"label": row[1], "shown_swapped": row[2]} for row in cursor}


# ---------------------------------------------------------------------- export


def preference_rows(board: Any, run_id: str, iterations: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Labelled, untied pairs of ``run_id`` as ``prompt`` / ``chosen`` / ``rejected`` rows, in order."""
    params: list[Any] = [run_id]
    where = ""
    if iterations is not None:
        wanted = sorted({int(i) for i in iterations})
        where = f" AND l.iteration IN ({', '.join('?' for _ in wanted)})"
        params += wanted
    cursor = board.conn.execute(
        "SELECT l.id, l.iteration, l.label, l.source, l.annotator, p.text, a.text, b.text FROM labels l "
        "JOIN texts p ON p.hash = l.prompt_hash JOIN texts a ON a.hash = l.a_hash JOIN texts b ON b.hash = l.b_hash "
        f"WHERE l.run_id = ? AND l.kind = 'pair' AND l.label IN ('a', 'b'){where} ORDER BY l.iteration, l.position",
        params,
    )
    rows = []
    for pair, iteration, label, source, annotator, prompt, a, b in cursor:
        chosen, rejected = (a, b) if label == "a" else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "pair_id": pair,
                     "iteration": int(iteration), "source": source, "annotator": annotator})
    return rows


def prompt_messages(board: Any, run_id: str, prompt_text: str) -> list[dict[str, str]]:
    """The chat messages ``prompt_text`` stands for in ``run_id``: what the conversational export writes as its prompt.

    A testbed that renders a conversation into one canonical prompt text keeps the original message list, and
    the run stores it beside the text (``texts.messages``, a JSON list of ``{"role", "content"}``); it is
    returned as stored. A plain prompt is one user message holding the whole text.
    """
    found = board.conn.execute("SELECT messages FROM texts WHERE hash = ?", (text_hash(prompt_text),)).fetchone()
    if found and found[0]:
        messages = json.loads(found[0])
        if isinstance(messages, list) and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages):
            return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    return [{"role": "user", "content": prompt_text}]


def conversational_rows(board: Any, run_id: str, iterations: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """:func:`preference_rows` in TRL's conversational preference format: ``prompt`` a list of messages
    (:func:`prompt_messages`), ``chosen`` and ``rejected`` each one assistant message; the other columns as they are."""
    rows = []
    for row in preference_rows(board, run_id, iterations):
        rows.append({**row, "prompt": prompt_messages(board, run_id, row["prompt"]),
                     "chosen": [{"role": "assistant", "content": row["chosen"]}],
                     "rejected": [{"role": "assistant", "content": row["rejected"]}]})
    return rows
