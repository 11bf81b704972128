"""What judges that score texts share: every response's score from its text, and a pairwise verdict that
scores only the paired responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from harness.errors import UsageError
from harness.interfaces import Labels, Pairs, Responses, pair_texts


def score_by_text_scores(score_texts: Callable[[Sequence[str], Sequence[str]], np.ndarray], world, prompts,
                         responses: Responses, judge: str) -> np.ndarray:
    """``(M, N)`` float64: ``score_texts(prompts, responses)`` over every response as the world renders it
    (:meth:`World.texts`); UsageError naming ``judge`` for a world that renders no text."""
    if not hasattr(world, "texts"):
        raise UsageError(f"{judge} reads text, and {type(world).__name__} cannot render any")
    prompt_texts, response_texts = world.texts(prompts, responses)
    m, n = responses.lengths.shape
    flat = score_texts([prompt_texts[i] for i in range(m) for _ in range(n)],
                       [response_texts[i][j] for i in range(m) for j in range(n)])
    return np.asarray(flat, dtype=np.float64).reshape(m, n)


def compare_by_text_scores(score_texts: Callable[[Sequence[str], Sequence[str]], np.ndarray], world,
                           prompts, responses: Responses, pairs: Pairs) -> Labels:
    """The base :meth:`harness.interfaces.Judge.compare` verdict (higher score wins, equal scores tie),
    computed from ``score_texts(prompts, responses)`` over the two responses of each pair only."""
    if len(pairs) == 0:
        return Labels(prefer_a=np.zeros(0, dtype=bool), tie=np.zeros(0, dtype=bool))
    prompt_texts, a_texts, b_texts = pair_texts(world, prompts, responses, pairs)
    scores = np.asarray(score_texts(prompt_texts + prompt_texts, a_texts + b_texts), dtype=np.float64)
    a, b = scores[: len(pairs)], scores[len(pairs):]
    return Labels(prefer_a=a > b, tie=a == b)
