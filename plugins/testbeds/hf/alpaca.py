"""AlpacaEval files and win-rate metrics for the hf testbed (testbed option ``alpaca_dir``; extra ``[alpaca]``).

**Export.** At every evaluation (pi_0 is iteration 0, pi_i iteration i) the
hf world writes, into the directory :func:`export_dir` names:

* ``model_outputs.json``: the policy's greedy output on every evaluation
  prompt, as AlpacaEval reads it: a JSON list of ``{"instruction": prompt
  text as written in the file, "output": decoded response, "generator":
  "<alpaca_generator>-iteration-<i>"}``;
* ``reference_outputs.json``: the reference outputs in the same format
  (``generator`` = ``"reference"``), in the same order.

These are exactly what the run's evaluator judge compared (``World.evaluation_pairs``),
so AlpacaEval's own annotator can re-judge them (command in
``docs/real-models-extras.md``).

**Metrics.** :func:`winrate_metrics` turns an evaluator's verdicts into
AlpacaEval's win rate and its standard error with
``alpaca_eval.metrics.get_winrate`` (preferences 1 = reference better,
2 = policy better, 1.5 = tie; AlpacaEval reports percentages), as
``alpaca_win_rate`` and ``alpaca_win_rate_se`` (0-100, AlpacaEval's units;
the loop's own ``win_rate`` is the same quantity on 0-1). When alpaca-eval is
not importable (the extra is not installed, or setuptools >= 82 removed the
``pkg_resources`` it imports) they are silently left out. alpaca-eval is
imported on first use only (about 1.6 s).

Writing is atomic (a temporary file, then ``os.replace``), so a reader never
sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError

MODEL_OUTPUTS = "model_outputs.json"
REFERENCE_OUTPUTS = "reference_outputs.json"
ANNOTATIONS = "annotations.json"
REFERENCE_GENERATOR = "reference"

_unavailable: str | None = None  # why alpaca_eval could not be imported, once tried


def export_dir(template: str, *, iteration: int, seed: int) -> Path:
    """The directory of one evaluation's files: ``template`` with ``{iteration}``/``{seed}`` filled in,
    or ``template/iteration-<i>`` when it has no ``{iteration}``."""
    try:
        text = str(template).format(iteration=int(iteration), seed=int(seed))
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"testbed option `alpaca_dir`: {template!r} may contain only the fields {{iteration}} "
                         f"and {{seed}} ({type(exc).__name__}: {exc})") from None
    path = Path(text).expanduser()
    if "{iteration}" not in str(template):
        path = path / f"iteration-{int(iteration)}"
    return path


def records(instructions: Sequence[str], outputs: Sequence[str], generator: str) -> list[dict[str, str]]:
    """AlpacaEval's output records: ``{"instruction", "output", "generator"}`` per prompt."""
    if len(instructions) != len(outputs):
        raise ValueError(f"{len(instructions)} instructions but {len(outputs)} outputs")
    return [{"instruction": str(i), "output": str(o), "generator": str(generator)}
            for i, o in zip(instructions, outputs)]


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented UTF-8 JSON to ``path`` atomically; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(value, out, ensure_ascii=False, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_outputs(directory: Path, *, instructions: Sequence[str], model_outputs: Sequence[str],
                  reference_outputs: Sequence[str], generator: str) -> tuple[Path, Path]:
    """Write ``model_outputs.json`` and ``reference_outputs.json`` into ``directory``; return both paths."""
    directory = Path(directory)
    return (
        write_json(directory / MODEL_OUTPUTS, records(instructions, model_outputs, generator)),
        write_json(directory / REFERENCE_OUTPUTS, records(instructions, reference_outputs, REFERENCE_GENERATOR)),
    )


def preferences(prefer_policy: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    """AlpacaEval's preference encoding of verdicts: 2 where the policy won, 1 where the reference won, 1.5 for a tie."""
    prefer_policy = np.asarray(prefer_policy, dtype=bool)
    out = np.where(prefer_policy, 2.0, 1.0)
    if tie is not None:
        out = np.where(np.asarray(tie, dtype=bool), 1.5, out)
    return out


def annotations(instructions: Sequence[str], model_outputs: Sequence[str], reference_outputs: Sequence[str],
                prefs: np.ndarray, *, generator: str, annotator: str) -> list[dict[str, Any]]:
    """The verdicts as AlpacaEval-style annotations: ``output_1`` the reference, ``output_2`` the policy."""
    return [
        {"instruction": str(i), "output_1": str(r), "generator_1": REFERENCE_GENERATOR, "output_2": str(o),
         "generator_2": str(generator), "annotator": str(annotator), "preference": float(p)}
        for i, o, r, p in zip(instructions, model_outputs, reference_outputs, prefs)
    ]


def import_metrics():
    """``alpaca_eval.metrics``, or None when alpaca-eval cannot be imported (the reason is kept in :func:`unavailable_reason`)."""
    global _unavailable
    if _unavailable is not None:
        return None
    previous = logging.root.manager.disable
    try:
        logging.disable(logging.WARNING)  # "glm_winrate is not available" and similar notices at import
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources deprecation
            import alpaca_eval.metrics as metrics
    except Exception as exc:  # not installed, or setuptools >= 82 (no pkg_resources)
        _unavailable = f"{type(exc).__name__}: {exc}"
        return None
    finally:
        logging.disable(previous)
    return metrics


def unavailable_reason() -> str | None:
    """Why :func:`import_metrics` returned None (None when it was not tried or succeeded)."""
    return _unavailable


def winrate_metrics(prefs: np.ndarray, metrics_module: Any = None) -> dict[str, float]:
    """``alpaca_win_rate``, ``alpaca_win_rate_se`` (percent) and ``alpaca_n_draws`` from AlpacaEval preferences.

    ``metrics_module`` defaults to ``alpaca_eval.metrics``; an empty dict when
    it cannot be imported or there are no preferences.
    """
    module = metrics_module if metrics_module is not None else import_metrics()
    prefs = np.asarray(prefs, dtype=np.float64)
    if module is None or prefs.size == 0:
        return {}
    result = module.get_winrate(annotations=[{"preference": float(p)} for p in prefs])
    se = float(result["standard_error"])
    return {
        "alpaca_win_rate": float(result["win_rate"]),
        "alpaca_win_rate_se": se if np.isfinite(se) else 0.0,
        "alpaca_n_draws": float(result["n_draws"]),
    }
