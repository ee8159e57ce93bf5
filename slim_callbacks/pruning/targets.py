"""Which group reaches which ratio when: a schedule applied to per-group final ratios.

Targets are shares of the ORIGINAL widths (see :mod:`slim_callbacks.pruning.schedules`);
with an ``{epoch: ratio}`` map, each group reaches ``ratio * map_value / map_final``.

Examples:
    >>> from slim_callbacks.pruning.schedules import AtEpochs, RatioMap
    >>> group_targets(AtEpochs([1, 3]), {"a": 0.5, "b": 0.25})
    {1: {'a': 0.25, 'b': 0.125}, 3: {'a': 0.5, 'b': 0.25}}
    >>> group_targets(RatioMap({2: 0.2, 4: 0.4}), {"a": 0.8})
    {2: {'a': 0.4}, 4: {'a': 0.8}}
"""
from __future__ import annotations

from typing import Dict, List, Mapping

from slim_callbacks.core.errors import ConfigError


def check_curve_start(schedule, ratios) -> None:
    """Known final ratios must not lie below the schedule's ``initial_ratio``."""
    initial = getattr(schedule, "initial_ratio", 0.0)
    finals = list(ratios.values()) if isinstance(ratios, dict) else [ratios]
    if ratios is not None and schedule.final_ratio is None and min(finals) < initial:
        raise ConfigError("ratios", ratios, f"final ratios >= the schedule's initial_ratio="
                          f"{initial!r} (targets never decrease)")


def group_targets(schedule, group_ratios: Mapping[str, float]) -> Dict[int, Dict[str, float]]:
    """Global epoch -> {group: target ratio} for every event."""
    map_final = schedule.final_ratio
    out: Dict[int, Dict[str, float]] = {}
    by_ratio: Dict[float, list] = {}
    for group, ratio in group_ratios.items():
        by_ratio.setdefault(ratio, []).append(group)
    for ratio, groups in by_ratio.items():
        if map_final is not None:
            scale = ratio / map_final if map_final else 0.0
            events = [(e, t * scale) for e, t in schedule.events(None)]
        else:
            events = schedule.events(ratio)
        for epoch, target in events:
            out.setdefault(epoch, {}).update({g: target for g in groups})
    return out


def current_widths(plan) -> Dict[str, int]:
    """Group name -> current width, from a cumulative plan (no trace needed)."""
    widths = {}
    for g in plan.groups:
        widths[g["name"]] = g["after"]
    return widths


def achieved_ratio(plan, original_widths: Mapping[str, int], groups) -> float:
    """Share of the original channels of ``groups`` that ``plan`` removed."""
    widths = current_widths(plan)
    total = sum(original_widths[g] for g in groups)
    now = sum(widths.get(g, original_widths[g]) for g in groups)
    return 1 - now / total if total else 0.0


def producer_layers(plan) -> List[str]:
    """Producer layers of the groups of ``plan``, in plan order, each once."""
    layers: List[str] = []
    for g in plan.groups:
        layers.extend(p for p in g["producers"] if p not in layers)
    return layers


def final_ratios(schedule, ratios, target_flops_reduction=None, target_latency_reduction=None):
    """``ratios``, or the last value of an ``{epoch: ratio}`` schedule when no target is
    given (None then: the spec says what is missing).

    >>> from slim_callbacks.pruning.schedules import RatioMap
    >>> final_ratios(RatioMap(ratios={1: 0.25, 3: 0.5}), None)
    0.5
    """
    map_final = schedule.final_ratio
    if ratios is None and target_flops_reduction is None and target_latency_reduction is None:
        return map_final
    if map_final is not None and not isinstance(ratios, Mapping) and ratios != map_final:
        raise ConfigError("ratios", ratios, f"None or {map_final} (the final ratio of the "
                          f"{{epoch: ratio}} schedule)")
    return ratios
