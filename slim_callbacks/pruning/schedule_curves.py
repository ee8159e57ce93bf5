"""Schedule curves: the target ratio reached by each of ``K`` pruning events.

With ``K`` events, event ``k = 1..K`` reaches ``curve(k / K)`` where
``curve(0) = initial_ratio`` (the virtual state before the first event, never an event
itself) and ``curve(1) = final_ratio``:

* ``linear``: ``s_i + (s_f - s_i) * u``
* ``agp`` (Zhu & Gupta, arXiv 1710.01878): ``s_f + (s_i - s_f) * (1 - u) ** 3``
* ``exp`` (NNI lottery ticket, geometric): ``1 - (1 - s_i) * ((1 - s_f) / (1 - s_i)) ** u``
  (``1 - (1 - s_f) ** u`` for ``s_i = 0``): each event removes the same share of the
  channels still there, with the shares computed against the original widths.

Examples:
    >>> curve_targets(4, "linear", 0.0, 0.8)
    [0.2, 0.4, 0.6000000000000001, 0.8]
    >>> [round(t, 4) for t in curve_targets(4, "agp", 0.0, 0.5)]
    [0.2891, 0.4375, 0.4922, 0.5]
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

from slim_callbacks.core.checks import check_ratio
from slim_callbacks.core.errors import ConfigError

Event = Tuple[int, float]
Curve = Callable[[float, float, float], float]


def _linear(u: float, s_i: float, s_f: float) -> float:
    return s_i + (s_f - s_i) * u


def _agp(u: float, s_i: float, s_f: float) -> float:
    return s_f + (s_i - s_f) * (1.0 - u) ** 3


def _exp(u: float, s_i: float, s_f: float) -> float:
    return 1.0 - (1.0 - s_i) * ((1.0 - s_f) / (1.0 - s_i)) ** u


#: Curve name -> ``curve(u, initial_ratio, final_ratio)`` for ``u`` in ``[0, 1]``.
CURVES: Dict[str, Curve] = {"linear": _linear, "agp": _agp, "exp": _exp}


def curve_targets(count: int, curve: str, initial_ratio: float, final_ratio) -> List[float]:
    """Targets of events ``k = 1..count``: ``CURVES[curve](k/count, s_i, s_f)``,
    non-decreasing, the last exactly ``final_ratio`` (ConfigError if it is not a ratio
    or lies below ``initial_ratio``)."""
    s_f = check_ratio("final_ratio", final_ratio)
    s_i = initial_ratio
    if s_f < s_i:
        raise ConfigError("final_ratio", final_ratio,
                          f"a number in [initial_ratio={s_i!r}, 1): targets never decrease")
    fn = CURVES[curve]
    targets, previous = [], s_i
    for k in range(1, count + 1):
        # clamp: float rounding must never break monotonicity or overshoot s_f
        target = s_f if k == count else min(max(fn(k / count, s_i, s_f), previous), s_f)
        targets.append(target)
        previous = target
    return targets
