"""What judges that score texts share: a pairwise verdict that scores only the paired responses."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from harness.interfaces import Labels, Pairs, Responses, pair_texts


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
