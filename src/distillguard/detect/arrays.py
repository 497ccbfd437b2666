"""Array helpers the statistical tests share."""

from __future__ import annotations

import numpy as np


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an integer array, as ``np.unique(values)`` gives them, by one
    sort: numpy 2's ``np.unique`` without ``return_*`` flags hashes the values and then sorts
    them, about ten times slower on millions of distinct integers (a scan's entity-token pairs)."""
    ordered = np.sort(np.asarray(values).ravel())
    if ordered.size == 0:
        return ordered
    first = np.empty(ordered.size, dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
