"""The ``function`` judge: a Python function of yours scores responses or compares pairs.

``callable`` names it as ``module:function`` (an importable module, e.g.
``mypkg.rewards:length_reward``) or ``path/to/file.py:function`` (a file,
loaded under a private module name). The text is what the world renders
(:meth:`World.texts`): the prompts as written in their file and the decoded
responses. The exact signatures:

``mode=score`` (default): pointwise scores::

    def fn(prompts: list[str], responses: list[str]) -> Sequence[float]

``prompts[k]`` and ``responses[k]`` belong together (a prompt is repeated
for each of its responses); return one finite number per item, higher is
better (a list, tuple or numpy array of length ``len(responses)``). Pairs
are then compared the base class's way: the higher score wins, equal scores tie.

``mode=compare``: pairwise preferences::

    def fn(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> Sequence[float]

return, for each pair, the probability-like preference for ``a``: a value in
[0, 1] where > 0.5 means ``a`` wins, < 0.5 means ``b`` wins and exactly 0.5
is a tie (``True``/``False`` work as 1/0). A compare-mode judge gives no
pointwise score, so it can annotate and evaluate but not fill an
explicit-reward column.

The function is imported when the judge is created, so a typo is a
UsageError before the run starts; wrong output (length, non-numbers, NaN,
out of range) is a UsageError naming the function. It must be deterministic
for runs to be reproducible: the judge passes it no random state.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness import hookimpl
from harness.errors import UsageError
from harness.interfaces import Judge, Labels, Pairs, Responses, pair_texts
from harness.options import Option


def load_callable(spec: str, label: str = "option 'callable' of judge 'function'") -> Callable:
    """The function named by ``module:function`` or ``path/to/file.py:function``; UsageError saying what failed."""
    if not spec or ":" not in spec:
        raise UsageError(f"{label} must be MODULE:FUNCTION or PATH.py:FUNCTION, got {spec!r}")
    target, _, attribute = spec.rpartition(":")
    if not target or not attribute:
        raise UsageError(f"{label} must be MODULE:FUNCTION or PATH.py:FUNCTION, got {spec!r}")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise UsageError(f"{label}: no such file {target!r}")
        name = f"_pairsel_judge_{zlib.crc32(str(path.resolve()).encode()):08x}"
        try:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UsageError(f"{label}: importing {target!r} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise UsageError(f"{label}: cannot import module {target!r} ({exc}); is it installed, or on "
                             "PYTHONPATH? A file is given as path/to/file.py:function") from None
        except Exception as exc:
            raise UsageError(f"{label}: importing {target!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        function = getattr(module, attribute)
    except AttributeError:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise UsageError(f"{label}: {target!r} has no attribute {attribute!r} "
                         f"(its functions: {', '.join(public) or 'none'})") from None
    if not callable(function):
        raise UsageError(f"{label}: {spec!r} is not callable")
    return function


def _as_values(result, expected: int, spec: str) -> np.ndarray:
    try:
        values = np.asarray(result, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"judge 'function': {spec} returned {type(result).__name__}, not numbers ({exc})") from None
    if values.shape[0] != expected:
        raise UsageError(f"judge 'function': {spec} returned {values.shape[0]} values for {expected} items")
    if not np.isfinite(values).all():
        raise UsageError(f"judge 'function': {spec} returned a non-finite value")
    return values


class FunctionJudge(Judge):
    name = "function"
    description = "Your Python function (module:function) scores responses or compares pairs of texts"
    options = (
        Option("callable", str, None, "MODULE:FUNCTION or PATH.py:FUNCTION (signatures: plugins/judges/function.py)"),
        Option("mode", str, "score", "score: fn(prompts, responses) -> scores; compare: fn(prompts, a, b) -> "
               "preference for a in [0, 1]", choices=("score", "compare")),
    )

    def __init__(self, settings=None):
        super().__init__(settings)
        self._function = load_callable(self.settings["callable"]) if self.settings["callable"] else None
        self._calls = 0

    def _get(self) -> Callable:
        if self._function is None:
            raise UsageError("judge 'function' needs its `callable` option: MODULE:FUNCTION or PATH.py:FUNCTION")
        return self._function

    def score(self, *, world, prompts, responses: Responses, rng) -> np.ndarray:
        """``(M, N)`` float64: the function's score of every response."""
        function = self._get()
        if self.settings["mode"] != "score":
            raise UsageError("judge 'function' with mode=compare gives pairwise preferences only, no score per "
                             "response; use it as an annotator or evaluator, or set mode=score")
        prompt_texts, response_texts = _world_texts(world, prompts, responses)
        m, n = responses.lengths.shape
        flat_prompts = [prompt_texts[i] for i in range(m) for _ in range(n)]
        flat_responses = [response_texts[i][j] for i in range(m) for j in range(n)]
        self._calls += len(flat_responses)
        values = _as_values(function(flat_prompts, flat_responses), m * n, self.settings["callable"])
        return values.reshape(m, n)

    def compare(self, *, world, prompts, responses: Responses, pairs: Pairs, rng) -> Labels:
        """Score mode: the base verdict on the paired responses only. Compare mode: the function's preference."""
        function = self._get()
        if len(pairs) == 0:
            return Labels(prefer_a=np.zeros(0, dtype=bool), tie=np.zeros(0, dtype=bool))
        prompt_texts, a_texts, b_texts = pair_texts(world, prompts, responses, pairs)
        spec = self.settings["callable"]
        k = len(pairs)
        if self.settings["mode"] == "score":
            self._calls += 2 * k
            values = _as_values(function(prompt_texts + prompt_texts, a_texts + b_texts), 2 * k, spec)
            a, b = values[:k], values[k:]
            return Labels(prefer_a=a > b, tie=a == b)
        self._calls += k
        preference = _as_values(function(prompt_texts, a_texts, b_texts), k, spec)
        if ((preference < 0) | (preference > 1)).any():
            raise UsageError(f"judge 'function': {spec} returned a preference outside [0, 1] (mode=compare)")
        return Labels(prefer_a=preference > 0.5, tie=preference == 0.5)

    def usage(self) -> dict[str, int]:
        """``{"function_items": ...}``: responses scored (score mode) or pairs compared (compare mode)."""
        return {"function_items": self._calls}


def _world_texts(world, prompts, responses: Responses) -> tuple[list[str], list[list[str]]]:
    """``world.texts`` with a clear error for a world that renders no text."""
    if not hasattr(world, "texts"):
        raise UsageError(f"judge 'function' reads text, and {type(world).__name__} cannot render any")
    return world.texts(prompts, responses)


@hookimpl
def register_judges(register):
    register(FunctionJudge)
