"""Selectors: which units of a group to remove, given scores and a ratio.

A selector is a callable ``select(scores, ratio, *, keep, min_keep)`` returning the
sorted indices of the units to remove: ``keep`` is how many units the ratio leaves
(:func:`keep_count`: relative to the original width, rounded to ``round_to``) and
``min_keep`` how many must stay at least (``round_to``, at most the width). Each
:class:`~slim_callbacks.engine.criteria.Criterion` carries one; the built-in ones are
named in :data:`SELECTORS`.

    >>> scores = np.array([0.01, 1.0, 0.02, 2.0])
    >>> SELECTORS["lowest"](scores, 0.25, keep=3, min_keep=1).tolist()
    [0]
    >>> SELECTORS["optimal_threshold"](scores, 0.1, keep=3, min_keep=1).tolist()
    [0, 2]
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Union

import numpy as np

from slim_callbacks.core.errors import ConfigError

Selector = Callable[..., np.ndarray]


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


def select_lowest(scores: np.ndarray, ratio: float, *, keep: int, min_keep: int = 1) -> np.ndarray:
    """The ``lowest`` selector: every unit but the ``keep`` highest-scored ones."""
    return lowest(scores, keep)


def select_optimal_threshold(scores: np.ndarray, ratio: float, *, keep: int,
                             min_keep: int = 1) -> np.ndarray:
    """The ``optimal_threshold`` selector: :func:`optimal_threshold`."""
    return optimal_threshold(scores, ratio, min_keep=min_keep)


SELECTORS: Dict[str, Selector] = {"lowest": select_lowest,
                                  "optimal_threshold": select_optimal_threshold}


def get_selector(selector: Union[str, Selector]) -> Selector:
    """The selector named ``selector`` (a key of :data:`SELECTORS`), or ``selector``
    itself if it is a callable; a ConfigError otherwise."""
    if callable(selector):
        return selector
    if not isinstance(selector, str) or selector not in SELECTORS:
        raise ConfigError("selector", selector, f"one of {', '.join(SELECTORS)} or a callable "
                          "(scores, ratio, *, keep, min_keep) -> unit indices to remove")
    return SELECTORS[selector]
