"""Margin selectors: the pair with the smallest or largest implicit-reward margin.

Yang et al. 2024 ("Not All Preference Pairs Are Created Equal"): for each
prompt, of the N(N-1)/2 pairs of its *distinct* responses, take the pair with
the smallest (or largest) |r(a) - r(b)|, r the implicit reward; across the
pool, keep the ``n_keep`` pairs with the smallest (or largest) margin.

Selectors:

* ``smallest``: smallest margin at both levels. Option ``normalize`` (bool,
  default false) computes the margin on ``implicit_reward_normalized``
  (r(y)/|y|, paper eq. 6) instead of ``implicit_reward``; ``requires`` follows
  it: ``("implicit_reward",)`` or ``("implicit_reward_normalized",)``.
* ``largest``: largest margin at both levels; the same ``normalize`` option.
* ``normalized``: ``smallest`` on ``implicit_reward_normalized``, the paper's
  "normalized" strategy. It takes no options (it is exactly
  ``smallest -o normalize=true``; a ``normalize`` option that could be turned off
  would make the name lie).

At the corpus level the margin is recomputed from the selector's own score
column for whatever pairs it is given, so it combines with any instance
selector (e.g. instance ``random``, corpus ``smallest``). Kept pairs are returned
in the order they were given.

Ties are deterministic: the first candidate pair in row-major order (0,1),
(0,2), ..., (1,2), ... at the instance level, the earliest given pair at the
corpus level (stable sort). No randomness is used; the Generator is accepted
and left untouched.

NaN (or infinite) scores are invalid: at the instance level such a response is
never paired, and a prompt with fewer than two distinct, finitely scored
responses gives no pair. At the corpus level a pair whose margin is NaN ranks
after every valid pair (for ``largest`` too), so it is kept only when
``n_keep`` exceeds the number of valid pairs.
"""

from __future__ import annotations

from harness import hookimpl
from plugins.selectors._margin import NORMALIZED_COLUMN, MarginSelector


class SmallestMargin(MarginSelector):
    """Per prompt, the pair of distinct responses with the smallest |r(a) - r(b)|; keep the smallest margins."""

    name = "smallest"
    description = (
        "instance: per prompt, the pair of distinct responses with the smallest implicit-reward "
        "margin |r(a)-r(b)|; corpus: keep the n_keep pairs with the smallest margin "
        "(-o normalize=true: margins of r(y)/|y|)"
    )
    largest = False


class LargestMargin(MarginSelector):
    """Per prompt, the pair of distinct responses with the largest |r(a) - r(b)|; keep the largest margins."""

    name = "largest"
    description = (
        "instance: per prompt, the pair of distinct responses with the largest implicit-reward "
        "margin |r(a)-r(b)|; corpus: keep the n_keep pairs with the largest margin "
        "(-o normalize=true: margins of r(y)/|y|)"
    )
    largest = True


class NormalizedMargin(SmallestMargin):
    """``smallest`` on length-normalised implicit rewards r(y)/|y| (paper eq. 6); no options."""

    name = "normalized"
    description = (
        "smallest margin of the length-normalised implicit reward r(y)/|y| (paper eq. 6) at both "
        "levels; the same as smallest -o normalize=true"
    )
    options = ()
    requires = (NORMALIZED_COLUMN,)

    def __init__(self, settings=None):
        super().__init__(settings)
        self.column = NORMALIZED_COLUMN
        self.requires = (NORMALIZED_COLUMN,)


@hookimpl
def register_selectors(register):
    register(SmallestMargin)
    register(LargestMargin)
    register(NormalizedMargin)
