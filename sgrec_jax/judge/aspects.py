"""The aspects the judge scores a (user, item) pair on, and the evidence array's layout.

S-GRec's judge scores user-profile relevance, future-interest relevance, novelty and contextual
relevance. Context needs the request's time or location; the public datasets here carry neither,
so "context" is dropped and A = 3.

Evidence is float32 [n, A] with values in [0, 1], columns in ASPECTS order; NaN means the aspect
is missing for that pair (e.g. no future items to compare with, or the pair was not judged).
"""

from __future__ import annotations

import numpy as np

ASPECTS: tuple[str, ...] = ("profile", "future", "novelty")
NUM_ASPECTS = len(ASPECTS)


def missing_evidence(n: int) -> np.ndarray:
    """float32 [n, A] of NaN: nothing known yet."""
    return np.full((n, NUM_ASPECTS), np.nan, dtype=np.float32)
