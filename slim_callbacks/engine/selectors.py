"""Selectors: which units of a group to remove, given scores and a ratio."""
from __future__ import annotations

from typing import Optional

import numpy as np


def keep_count(width: int, ratio: float, round_to: int = 1,
               original: Optional[int] = None) -> int:
    """How many channels stay when ``ratio`` of ``original`` (or ``width``) goes.

    PaddleSlim's rule, ``round(n * ratio)`` removed, with at least one channel (or
    ``round_to``) kept; ``round_to`` rounds what stays to a multiple, for hardware
    that is fastest at multiples of 4 or 8. Never more than ``width`` stays.

    >>> keep_count(64, 0.3125)
    44
    >>> keep_count(64, 0.3125, round_to=8)
    48
    >>> keep_count(10, 0.99)
    1
    """
    base = width if original is None else original
    keep = base - min(base - 1, int(round(base * ratio)))
    if round_to > 1:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return max(1, min(width, keep))


def lowest(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of all but the ``keep`` highest scores (stable for ties)."""
    order = np.argsort(scores, kind="stable")
    return np.sort(order[: max(0, len(scores) - keep)])


def optimal_threshold(scores: np.ndarray, ratio: float, min_keep: int = 1) -> np.ndarray:
    """OptSlim's selector: ``ratio`` bounds the share of sum(score^2) removed.

    Sorted ascending, scores are accumulated (squared) until their share of the total
    exceeds ``ratio``; the threshold is the midpoint between that score and the one
    before (0 if it is the first), and every score below it is removed. Unlike
    PaddleSlim, at least ``min_keep`` channels always stay.

    >>> optimal_threshold(np.array([0.01, 1.0, 0.02, 2.0]), 0.1).tolist()
    [0, 2]
    """
    s = np.maximum(np.asarray(scores, dtype=np.float64), 1e-18)
    order = np.sort(s)
    share = np.cumsum(order ** 2) / np.sum(order ** 2)
    i = int(np.searchsorted(share, ratio, side="right"))
    threshold = 0.0 if i == 0 else (order[i - 1] + order[min(i, len(order) - 1)]) / 2
    pruned = np.flatnonzero(s < threshold)
    if len(s) - len(pruned) < min_keep:
        pruned = lowest(s, min_keep)
    return pruned
