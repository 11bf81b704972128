"""What the feature-reading selectors (APO, SEA) share: the options that pick and scale the features.

A selector that names a ``feature_source`` (selector contract 2) is handed
``batch.features``, ``(M, N, d)``: a policy's final hidden state after each
response (:meth:`harness.interfaces.World.features`). Both methods model the
reward as a function of a fixed feature map phi(x, y), so the default source
is pi_ref, whose map does not move between iterations; ``-o
features=policy`` reads pi_{i-1}'s instead.
"""

from __future__ import annotations

import numpy as np

from harness.errors import SelectionError
from harness.interfaces import FEATURE_SOURCES, Option, Pairs, SelectionBatch

FEATURES = Option("features", str, "reference",
                  "whose final hidden state phi(x, y) is: reference (pi_ref, one fixed map) or policy (pi_{i-1})",
                  choices=FEATURE_SOURCES)
NORMALIZE = Option("normalize", bool, True,
                   "scale every phi(x, y) to unit length (the methods assume bounded features, ||phi|| <= 1)")


feature_source_option = property(lambda self: str(self.settings["features"]),
                                 doc="The selector's feature_source: its ``features`` option (selector contract 2).")


def scaled(features: np.ndarray, normalize: bool) -> np.ndarray:
    """``features`` as float64, each vector scaled to unit length when ``normalize`` (a zero vector stays 0)."""
    features = np.asarray(features, dtype=np.float64)
    if not normalize:
        return features
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)


def response_features(batch: SelectionBatch, normalize: bool) -> np.ndarray:
    """``(M, N, d)`` features of every response in ``batch`` (:func:`scaled`); SelectionError without any."""
    return scaled(batch.feature_array(), normalize)


def pair_differences(features: np.ndarray, pairs: Pairs) -> np.ndarray:
    """``(len(pairs), d)``: z = phi(x, a) - phi(x, b) of each pair."""
    return features[pairs.prompt, pairs.a] - features[pairs.prompt, pairs.b]


def check_width(remembered: int, given: int, selector: str) -> None:
    """SelectionError when the remembered feature width differs from the batch's (another world's state)."""
    if remembered != given:
        raise SelectionError(f"selector {selector!r} remembers features of width {remembered}, but these have "
                             f"width {given}: its state comes from another world or feature source")
