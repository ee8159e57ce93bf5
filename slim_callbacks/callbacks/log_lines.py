"""The log line of a pruning event, and the K/M/G numbers in it.

Examples:
    >>> human(568740352)
    '568.7M'
    >>> event_line(3, 12, (568.7e6, 401.2e6), (4.25e6, 3.02e6))
    'epoch 3: pruned 12 groups, MACs 568.7M -> 401.2M (-29.5%), params 4.25M -> 3.02M'
"""
from __future__ import annotations


def human(n: float, digits: int = 1) -> str:
    """``568740352 -> '568.7M'``; K/M/G suffixes (decimal)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{suffix}"
    return f"{n:.0f}"


def event_line(epoch: int, groups: int, macs: tuple, params: tuple) -> str:
    """The fixed log line of one pruning event."""
    change = (macs[1] - macs[0]) / macs[0] * 100 if macs[0] else 0.0
    return (f"epoch {epoch}: pruned {groups} groups, MACs {human(macs[0])} -> "
            f"{human(macs[1])} ({change:+.1f}%), params {human(params[0], 2)} -> "
            f"{human(params[1], 2)}")
