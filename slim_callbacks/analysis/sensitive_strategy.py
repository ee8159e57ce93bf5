"""The ``sensitive`` strategy: per-group ratios from a sensitivity analysis
(:func:`~slim_callbacks.analysis.sensitivity.sensitivity`): every group takes the
largest ratio whose interpolated loss is at most ``L``; ``L`` is found by bisection on
a FLOPs target.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, Mapping, Optional, Sequence

import paddle

from slim_callbacks.analysis.flops_model import check_convention
from slim_callbacks.analysis.search import Search, check_tolerance, share_the_jump, width_criterion
from slim_callbacks.analysis.sensitivity_file import load_sensitivities
from slim_callbacks.core.checks import check_fraction
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.ratios import check_round_to
from slim_callbacks.tracing.tracer import DependencyGraph

# the records belong to the strategies: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.strategies")


def ratio_for_loss(losses: Mapping[float, float], level: float) -> float:
    """The largest ratio whose loss, linearly interpolated, is at most ``level``.

    The curve starts at (0, 0) and is not extrapolated past the largest ratio given.
    Interpolation is what PaddleSlim's ``get_ratios_by_loss`` does; the (0, 0) point
    also lets a layer whose first ratio already loses too much be pruned a little.

    >>> ratio_for_loss({0.1: 0.01, 0.2: 0.03, 0.3: 0.2}, 0.02)
    0.15
    >>> ratio_for_loss({0.1: 0.01, 0.2: 0.03}, 0.5)
    0.2
    """
    points = [(0.0, 0.0)] + sorted((float(r), float(l)) for r, l in losses.items())
    best = 0.0
    for (r0, l0), (r1, l1) in zip(points, points[1:]):
        if l1 <= level:
            best = max(best, r1)
        elif l0 <= level:
            best = max(best, r0 + (level - l0) * (r1 - r0) / (l1 - l0))
    return round(best, 12)


def check_sensitivities(sensitivities, graph: DependencyGraph) -> Dict[str, Dict[float, float]]:
    """``{group: {ratio: loss}}`` (or a file from
    :func:`~slim_callbacks.analysis.sensitivity.sensitivity`), checked against
    the network's prunable groups."""
    if isinstance(sensitivities, (str, os.PathLike)):
        sensitivities = load_sensitivities(os.fspath(sensitivities))
    if not isinstance(sensitivities, Mapping) or not sensitivities:
        raise ConfigError("sensitivities", sensitivities,
                          "a non-empty {group: {ratio: loss}} dict or a sensitivity file")
    names = [g.name for g in graph.prunable_groups()]
    out = {}
    for name, losses in sensitivities.items():
        if name not in names:
            raise ConfigError("sensitivities", name, f"group names of this network, e.g. "
                                                     f"{', '.join(names[:4])}")
        if not isinstance(losses, Mapping) or not losses:
            raise ConfigError(f"sensitivities[{name!r}]", losses, "a non-empty {ratio: loss} dict")
        curve = {}
        for r, l in losses.items():
            try:
                r, l = float(r), float(l)
            except (TypeError, ValueError):
                r = l = math.nan
            if not 0 < r < 1 or not math.isfinite(l):
                raise ConfigError(f"sensitivities[{name!r}]", {r: l}, "ratios in (0, 1) with finite losses")
            curve[r] = l
        out[name] = curve
    return out


def sensitive_ratios(sensitivities, network: paddle.nn.Layer, input_shape: Sequence[int],
                     target_flops_reduction: float, criterion="l1_norm", *, round_to: int = 1,
                     tolerance: float = 0.01, convention: str = "macs", max_steps: int = 60,
                     graph: Optional[DependencyGraph] = None) -> Dict[str, float]:
    """Per-group ratios that spend an equal loss budget and meet a FLOPs target.

    For a loss level ``L`` every analysed group takes :func:`ratio_for_loss` (the
    largest ratio whose interpolated loss is at most ``L``); ``L`` is bisected until
    the FLOPs reduction is within ``tolerance`` of the target. Where the target falls
    inside a jump (groups whose curves pass ``L`` at the same level, as equal or
    non-monotonic losses do), the groups that jump share what is left of the target
    (:func:`~slim_callbacks.analysis.search.share_the_jump`).

    Args:
        sensitivities: ``{group: {ratio: loss}}`` from :func:`~slim_callbacks.analysis.sensitivity.sensitivity`,
            or the path of its file. Groups not listed are not pruned.
        network: the network (left unchanged).
        input_shape: its input shape.
        target_flops_reduction: share of the FLOPs to remove, in (0, 1).
        criterion: as the later prune will use it.
        round_to: as the later prune will use it.
        tolerance: accepted distance to the target (0.01 = one point).
        convention: ``macs``, ``flops`` or ``paddleslim_legacy``.
        max_steps: bisection steps at most.
        graph: a trace of ``network`` to reuse.

    Returns:
        ``{group: ratio}`` for the groups that are pruned, in the order given.

    Raises:
        ConfigError: a bad argument.
        SlimError: the target is out of reach even with every group at its largest
            analysed ratio.
    """
    target = check_fraction("target_flops_reduction", target_flops_reduction)
    tolerance, round_to = check_tolerance(tolerance), check_round_to(round_to)
    search = Search(network, input_shape, width_criterion(get_criterion(criterion)), round_to,
                     check_convention(convention), graph)
    curves = check_sensitivities(sensitivities, search.graph)

    def ratios_at(level: float) -> Dict[str, float]:
        return {name: ratio_for_loss(curve, level) for name, curve in curves.items()}

    every = [l for curve in curves.values() for l in curve.values()]
    low, high = min(0.0, min(every)) - 1e-12, max(every)
    reach = search.reduction(ratios_at(high))
    search.out_of_reach(list(curves), target, tolerance, reach)
    low_reduction, high_reduction = 0.0, reach
    for _ in range(max_steps):
        if min(target - low_reduction, high_reduction - target) <= tolerance:
            break
        level = (low + high) / 2
        reduction = search.reduction(ratios_at(level))
        logger.info("loss level %.6g: -%.2f%% %s", level, 100 * reduction, search.convention)
        if reduction > target:
            high, high_reduction = level, reduction
        else:
            low, low_reduction = level, reduction
    over, under = high_reduction - target, target - low_reduction
    if over <= tolerance and over <= under:
        ratios = ratios_at(high)
    elif under <= tolerance:
        ratios = ratios_at(low)
    else:
        ratios = share_the_jump(search, ratios_at(low), ratios_at(high), target, tolerance, max_steps)
    return {name: r for name, r in ratios.items() if r > 0}
