"""Where a run's labels go, and how a run stops for people to label its pairs.

The loop hands every label it paid for to a :class:`LabelDesk`, which keeps
it in the leaderboard's ``labels`` table with the text it was given for. With
``--annotator external`` the desk also does the round trip:

1. :meth:`LabelDesk.request` writes ``RUN_DIR/iteration-<i>/to-label.jsonl``
   (``pair_id``, ``prompt``, ``response_a``, ``response_b``; which response is
   shown as ``a`` is randomised, and recorded on our side only), saves the
   iteration's selection beside it, records the pairs as awaited and raises
   :class:`~harness.labelling.AwaitingLabels`: the run is marked ``awaiting_labels``.
2. ``harness label import`` fills the labels in (:mod:`leaderboard.labels`).
3. ``harness run --resume`` restores the last checkpoint; the loop finds the
   saved selection (:meth:`LabelDesk.pending`) instead of sampling again, and
   :meth:`LabelDesk.collect` returns the imported labels: the run goes on from
   the annotation step.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import CheckpointError, UsageError
from harness.interfaces import Labels, Pairs, Responses
from harness.labelling import AwaitingLabels, PendingSelection

TO_LABEL = "to-label.jsonl"
SELECTION = "selection.npz"


def write_atomically(path: Path, write, *, binary: bool = False) -> None:
    """``write(handle)`` into a temporary file beside ``path``, synced, then renamed onto it; no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def iteration_dir(run_dir: Path, iteration: int) -> Path:
    """``RUN_DIR/iteration-<i>``: what an external annotator needs for iteration ``i``."""
    return Path(run_dir) / f"iteration-{int(iteration)}"


def save_selection(selection: PendingSelection, path: Path) -> None:
    """Write a pending selection as ``.npz`` (no pickles), atomically."""
    arrays = {
        "prompts": np.asarray(selection.prompts),
        "tokens": selection.responses.tokens,
        "lengths": selection.responses.lengths,
        "distinct": selection.distinct,
        "offered": np.asarray(selection.offered),
        "proxy_calls": np.asarray(selection.proxy_calls),
        "kept_prompt": selection.kept.prompt,
        "kept_a": selection.kept.a,
        "kept_b": selection.kept.b,
    }
    for name in ("logp_policy", "logp_ref"):
        if getattr(selection, name) is not None:
            arrays[name] = getattr(selection, name)
    if selection.responses.sources is not None:  # where each response was sampled from (selector contract 3)
        arrays["sources"] = selection.responses.sources
    write_atomically(path, lambda handle: np.savez(handle, **arrays), binary=True)


def load_selection(path: Path) -> PendingSelection:
    """Read a saved selection; CheckpointError naming the file if it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return PendingSelection(
            prompts=arrays["prompts"],
            responses=Responses(tokens=arrays["tokens"], lengths=arrays["lengths"], sources=arrays.get("sources")),
            distinct=arrays["distinct"],
            offered=int(arrays["offered"]),
            kept=Pairs(prompt=arrays["kept_prompt"], a=arrays["kept_a"], b=arrays["kept_b"]),
            logp_policy=arrays.get("logp_policy"),
            logp_ref=arrays.get("logp_ref"),
            proxy_calls=int(arrays.get("proxy_calls", 0)),
        )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"the saved selection {path} cannot be read ({exc}); the pairs out for "
                              "labelling cannot be matched to their pool") from None


def texts_of(world: Any, prompts: np.ndarray, responses: Responses) -> tuple[list[str], list[list[str]]]:
    """``world.texts`` when the testbed can render text, else the token ids written out."""
    if hasattr(world, "texts"):
        return world.texts(prompts, responses)
    prompt_texts = [" ".join(str(int(t)) for t in np.atleast_1d(row)) for row in np.asarray(prompts)]
    response_texts = [
        [" ".join(str(int(t)) for t in responses.tokens[i, j, : int(responses.lengths[i, j])])
         for j in range(responses.tokens.shape[1])]
        for i in range(responses.tokens.shape[0])
    ]
    return prompt_texts, response_texts


def pair_texts_of(world: Any, prompts: np.ndarray, responses: Responses, pairs: Pairs) -> tuple[list[str], list[str], list[str]]:
    """Prompt, ``a`` and ``b`` text of every pair, rendering only the paired responses."""
    if len(pairs) == 0:
        return [], [], []
    both = Responses(
        tokens=np.stack([responses.tokens[pairs.prompt, pairs.a], responses.tokens[pairs.prompt, pairs.b]], axis=1),
        lengths=np.stack([responses.lengths[pairs.prompt, pairs.a], responses.lengths[pairs.prompt, pairs.b]], axis=1),
    )
    prompt_texts, response_texts = texts_of(world, np.asarray(prompts)[pairs.prompt], both)
    return prompt_texts, [r[0] for r in response_texts], [r[1] for r in response_texts]


def prompt_messages_of(world: Any, prompt_texts: list[str]) -> list[list[dict[str, str]] | None]:
    """Per prompt text, the chat messages it renders (``world.prompt_messages``), or None for plain text."""
    find = getattr(world, "prompt_messages", None)
    return [None if find is None else find(text) for text in prompt_texts]


def label_names(labels: Labels) -> list[str]:
    """``a`` / ``b`` / ``tie`` for every pair of ``labels``."""
    tie = labels.tie_mask()
    prefer_a = np.asarray(labels.prefer_a, dtype=bool)
    return ["tie" if t else ("a" if p else "b") for p, t in zip(prefer_a, tie)]


class LabelDesk:
    """Keeps a run's labels in the leaderboard and runs the external round trip (module docstring).

    Implements :class:`harness.labelling.LabelDesk`, the protocol the loop sees.
    """

    def __init__(self, board: Any, run_id: str, run_dir: Path, recorder: Any = None):
        from harness.experiments.journal import Recorder

        self.board, self.run_id, self.run_dir = board, run_id, Path(run_dir)
        self.recorder = recorder or Recorder(board, run_id, run_dir)

    # -- every annotator ----------------------------------------------------

    def record_pairs(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                     pairs: Pairs, labels: Labels, source: str) -> None:
        """Keep one row per labelled pair, with its prompt and both responses."""
        from leaderboard.labels import PairLabel

        prompt_texts, a_texts, b_texts = pair_texts_of(world, prompts, responses, pairs)
        names = label_names(labels)
        messages = prompt_messages_of(world, prompt_texts)
        rows = [PairLabel(k, p, a, b, names[k], prompt_messages=messages[k])
                for k, (p, a, b) in enumerate(zip(prompt_texts, a_texts, b_texts))]
        self._write_pairs(iteration, rows, source)

    def _write_pairs(self, iteration: int, rows: list, source: str) -> None:
        from dataclasses import asdict

        from leaderboard.labels import record_pairs

        self.recorder.write(
            "pairs", lambda: {"iteration": iteration, "pairs": [asdict(r) for r in rows], "source": source},
            lambda: record_pairs(self.board, self.run_id, iteration, rows, source),
        )

    def record_scores(self, iteration: int, world: Any, prompts: np.ndarray, responses: Responses,
                      scores: np.ndarray, source: str) -> None:
        """Keep one row per pointwise gold score (one label per response scored)."""
        from leaderboard.labels import record_scores

        prompt_texts, response_texts = texts_of(world, prompts, responses)
        m, n = np.asarray(scores).shape
        flat_prompts = [prompt_texts[i] for i in range(m) for _ in range(n)]
        flat_responses = [response_texts[i][j] for i in range(m) for j in range(n)]
        values = np.asarray(scores, dtype=np.float64).ravel().tolist()
        self.recorder.write(
            "scores", lambda: {"iteration": iteration, "prompts": flat_prompts, "responses": flat_responses,
                               "scores": values, "source": source},
            lambda: record_scores(self.board, self.run_id, iteration, flat_prompts, flat_responses, values, source),
        )

    # -- external annotation ---------------------------------------------------

    def pending(self, iteration: int) -> PendingSelection | None:
        """The selection saved when iteration ``iteration``'s pairs went out for labelling, if any."""
        path = iteration_dir(self.run_dir, iteration) / SELECTION
        return load_selection(path) if path.exists() else None

    def collect(self, iteration: int, world: Any, selection: PendingSelection) -> Labels | None:
        """The imported labels of ``iteration``'s pairs, or None if they were never requested.

        UsageError when some are still missing (the resume is premature);
        CheckpointError when the pairs handed out are not the pairs of
        ``selection`` (never a silently wrong continuation).
        """
        from leaderboard.labels import requested_pairs, text_hash

        if self.board is None or self.recorder.failure is not None:
            raise UsageError("--annotator external needs a writable leaderboard to hand the pairs out and take the "
                             f"labels back, and it cannot be written ({self.recorder.failure or 'not opened'})")
        rows = requested_pairs(self.board, self.run_id, iteration)
        if not rows:
            return None
        kept = selection.kept
        _, a_texts, b_texts = pair_texts_of(world, selection.prompts, selection.responses, kept)
        expected = [(k, text_hash(a), text_hash(b)) for k, (a, b) in enumerate(zip(a_texts, b_texts))]
        if [(r["position"], r["a_hash"], r["b_hash"]) for r in rows] != expected:
            raise CheckpointError(
                f"run {self.run_id}, iteration {iteration}: the {len(rows)} pairs handed out for labelling are not "
                f"the {len(kept)} pairs of the saved selection in {iteration_dir(self.run_dir, iteration)}; "
                "the run directory does not match the database"
            )
        missing = sum(r["label"] is None for r in rows)
        if missing:
            raise UsageError(
                f"run {self.run_id} still awaits {missing} of {len(rows)} labels for iteration {iteration}; "
                f"import them with: harness label import {self.run_id} FILE (harness label status {self.run_id})"
            )
        names = [r["label"] for r in rows]
        return Labels(prefer_a=np.array([n == "a" for n in names], dtype=bool),
                      tie=np.array([n == "tie" for n in names], dtype=bool))

    def request(self, iteration: int, world: Any, selection: PendingSelection, rng: np.random.Generator) -> None:
        """Save the selection, write the file to label, record the pairs as awaited; raise AwaitingLabels."""
        from leaderboard.labels import PairLabel, pair_id

        folder = iteration_dir(self.run_dir, iteration)
        save_selection(selection, folder / SELECTION)
        kept = selection.kept
        prompt_texts, a_texts, b_texts = pair_texts_of(world, selection.prompts, selection.responses, kept)
        swapped = rng.random(len(kept)) < 0.5  # which response the annotator sees as "a"
        pairs, lines = [], []
        messages = prompt_messages_of(world, prompt_texts)
        for k, (prompt, text_a, text_b) in enumerate(zip(prompt_texts, a_texts, b_texts)):
            pairs.append(PairLabel(k, prompt, text_a, text_b, None, bool(swapped[k]), prompt_messages=messages[k]))
            shown = (text_b, text_a) if swapped[k] else (text_a, text_b)
            lines.append({"pair_id": pair_id(self.run_id, iteration, k), "prompt": prompt,
                          "response_a": shown[0], "response_b": shown[1]})
        path = folder / TO_LABEL
        write_atomically(path, lambda handle: handle.writelines(json.dumps(line, ensure_ascii=False) + "\n"
                                                                 for line in lines))
        self._write_pairs(iteration, pairs, "external")
        raise AwaitingLabels(iteration, len(kept), path)
