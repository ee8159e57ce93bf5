"""The ``latency`` strategy: per-group ratios that meet a measured latency target with
the least importance removed.

A :class:`~slim_callbacks.latency.model.LatencyModel` (per-layer timings on
this machine, cached; one whole-network timing and one calibration copy) predicts the
latency of any set of group widths. Starting from the unpruned widths, a greedy
search repeatedly takes one step (``width / steps`` channels, a multiple of
``round_to``) from the group where it costs the least importance per millisecond
saved - importance being the channel scores of :func:`~slim_callbacks.analysis.global_strategy.normalized_scores`
(the ``global`` strategy's, comparable across groups) - until the predicted latency
reduction reaches the target. Groups never lose more than ``max_ratio``.

After it, :func:`latency_prediction` gives the prediction for the final plan, which
``slim-callbacks run`` reports next to the measured latency.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.global_strategy import NORMALIZATIONS, normalized_scores
from slim_callbacks.analysis.search import check_tolerance
from slim_callbacks.core.checks import check_choice, check_fraction, check_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.ratios import check_patterns, check_round_to
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.latency.model import GRID, LatencyModel
from slim_callbacks.latency.table import LatencyTable
from slim_callbacks.tracing.tracer import DependencyGraph

logger = logging.getLogger("slim_callbacks.analysis.strategies")


def check_grid(grid) -> tuple:
    """Kept fractions to time each side at: numbers in (0, 1], 1 included."""
    try:
        values = tuple(sorted({float(f) for f in grid}, reverse=True))
    except (TypeError, ValueError):
        values = ()
    if len(values) < 2 or values[0] != 1.0 or not all(0 < f <= 1 for f in values):
        raise ConfigError("grid", grid, "at least two kept fractions in (0, 1], 1.0 among them")
    return values


def build_model(network, input_shape, *, layers=None, skip=(), threads=1, onednn=True,
                cache_dir=None, grid=GRID, round_to=1, graph=None, calibrate=True,
                keep_intermediates=False) -> LatencyModel:
    """The calibrated latency model of ``network`` (timings cached in ``cache_dir``)."""
    table = LatencyTable(threads=threads, onednn=onednn, directory=cache_dir,
                         keep_intermediates=keep_intermediates)
    model = LatencyModel(network, input_shape, table, layers, skip, graph, check_grid(grid),
                         round_to=round_to)
    if calibrate:
        model.calibrate(round_to)
    return model


def next_keep(keep: int, step: int) -> int:
    """The next smaller width on the ``step`` lattice.

    >>> next_keep(100, 8), next_keep(96, 8)
    (96, 88)
    """
    return ((keep - 1) // step) * step


def latency_ratios(network: paddle.nn.Layer, input_shape: Sequence[int],
                   target_latency_reduction: float, *, layers: Optional[Sequence[str]] = None,
                   skip: Sequence[str] = (), criterion="l1_norm", max_ratio: float = 0.9,
                   normalize: str = "auto", round_to: int = 1, threads: int = 1,
                   onednn: bool = True, cache_dir: Optional[str] = None, grid=GRID,
                   steps: int = 64, feedback: int = 5, tolerance: float = 0.02,
                   keep_intermediates: bool = False,
                   graph: Optional[DependencyGraph] = None) -> Dict[str, float]:
    """Per-group ratios whose predicted latency is ``target_latency_reduction`` lower.

    Args:
        network: the network (left unchanged).
        input_shape: its input shape.
        target_latency_reduction: share of the batch-1 latency to remove, in (0, 1).
        layers: patterns of the layers to prune (default: all).
        skip: patterns of the layers to leave whole.
        criterion: which channels go, with the ``lowest`` selector.
        max_ratio: largest ratio of any one group, in (0, 1).
        normalize: score normalization across groups, as for ``global``.
        round_to: kept widths are multiples of this.
        threads: CPU threads of the Paddle Inference setting to be fast in.
        onednn: whether that setting uses oneDNN.
        cache_dir: where the latency table lives (default ``$SLIM_CALLBACKS_LATENCY_CACHE``
            or ``~/.cache/slim_callbacks/latency``).
        grid: kept fractions each layer side is timed at.
        steps: a group loses ``width / steps`` channels per greedy step.
        feedback: how often the search is repeated after the found network is timed
            whole (next to the unpruned one) and missed the target by more than
            ``tolerance``: the internal target is scaled by target / measured, then
            interpolated between tries on either side (:func:`next_goal`); the closest
            try is kept.
        tolerance: accepted distance of the measured reduction to the target.
        keep_intermediates: time with eager deletion off, for a deployment that keeps
            them (``deploy.keep_intermediates``; a latency table of its own).
        graph: a trace of ``network`` to reuse.

    Returns:
        ``{group: ratio}`` for the groups that lose channels.

    Raises:
        ConfigError: a bad argument. SlimError: the target is out of reach.
    """
    target = check_fraction("target_latency_reduction", target_latency_reduction)
    tolerance = check_tolerance(tolerance)
    max_ratio = check_fraction("max_ratio", max_ratio)
    round_to, steps = check_round_to(round_to), check_int("steps", steps, 1)
    check_choice("normalize", normalize, NORMALIZATIONS)
    criterion = get_criterion(criterion)
    if criterion.selector != "lowest":
        raise ConfigError("criterion", criterion.name, "a criterion with the 'lowest' selector "
                          "(the latency strategy removes the lowest-scored channels)")
    if normalize == "auto":
        normalize = "none" if criterion.needs == "bn_scales" else "mean"
    model = build_model(network, input_shape, layers=check_patterns("layers", layers), skip=skip,
                        threads=threads, onednn=onednn, cache_dir=cache_dir, grid=grid,
                        round_to=round_to, graph=graph, keep_intermediates=keep_intermediates)
    net_layers = layer_table(network)
    by_name = {g.name: g for g in model.graph.groups}
    cum, lattice, floor = {}, {}, {}
    for name, width in model.groups.items():
        scores = np.sort(normalized_scores(by_name[name], net_layers, criterion,
                                           model.graph.layer_types, normalize))
        cum[name] = np.concatenate([[0.0], np.cumsum(scores)])
        lattice[name] = max(round_to, round_to * int(round(width / steps / round_to)))
        floor[name] = keep_count(width, max_ratio, round_to)
    def search(reduction: float) -> Dict[str, int]:
        return greedy_widths(model, cum, lattice, floor, reduction * model.base_ms)

    reach = model.reduction(search(1.0))
    if reach < target - tolerance:
        raise SlimError(f"a latency reduction of {target:.2%} is out of reach with "
                        f"max_ratio={max_ratio}: at most {reach:.2%} predicted")
    goal, best, tried = target, None, []
    for _ in range(check_int("feedback", feedback, 0) + 1):
        widths = search(goal)
        measured = model.measured_reduction(widths, round_to)
        logger.info("latency strategy: internal target -%.2f%%: model -%.2f%%, measured -%.2f%%",
                    100 * goal, 100 * model.reduction(widths), 100 * measured)
        if best is None or abs(measured - target) < abs(best[1] - target):
            best = (widths, measured)
        if abs(measured - target) <= tolerance:
            break
        tried.append((goal, measured))
        goal = next_goal(tried, target, reach)
    keep, achieved = best
    if abs(achieved - target) > tolerance:
        logger.warning("latency strategy: measured -%.2f%%, the closest to the target -%.2f%% "
                       "found", 100 * achieved, 100 * target)
    ratios = {n: (w - keep[n]) / w for n, w in model.groups.items() if keep[n] < w}
    ref = model.reference or {}
    logger.info("latency strategy: %d groups; measured -%.2f%% (target -%.2f%%); check copy at "
                "half width: measured %.3f ms, model %.3f ms", len(ratios), 100 * achieved,
                100 * target, ref.get("measured_ms", math.nan), ref.get("predicted_ms", math.nan))
    return ratios


def next_goal(tried, target: float, reach: float) -> float:
    """The next internal target: interpolated between the two closest tries on either
    side of ``target`` once there are such, else the last one scaled by target / measured.

    >>> next_goal([(0.5, 0.25)], 0.5, 0.9), next_goal([(0.5, 0.25), (0.9, 0.75)], 0.5, 0.9)
    (0.9, 0.7)
    """
    below = [t for t in tried if t[1] < target]
    above = [t for t in tried if t[1] >= target]
    if below and above:
        (g0, m0), (g1, m1) = max(below, key=lambda t: t[1]), min(above, key=lambda t: t[1])
        goal = g0 + (target - m0) * (g1 - g0) / max(m1 - m0, 1e-9)
    else:
        goal, measured = tried[-1]
        goal = goal * target / max(measured, 1e-3)
    return float(np.clip(goal, 1e-3, reach))


def greedy_widths(model: LatencyModel, cum, lattice, floor, saving_ms: float) -> Dict[str, int]:
    """Group widths that save ``saving_ms`` (model) at the least importance: one lattice
    step at a time from the group where it costs the least importance per ms saved.
    A saving beyond reach gives the widths that save the most. Each step re-prices only
    the groups that share a layer with the one that moved."""
    keep = dict(model.groups)
    current = {n: model.layer_ms(n, keep) for n in model.layers}
    touching = {name: model.touching(name) for name in model.groups}
    sharing = {name: [g for g in model.groups if set(touching[g]) & set(layers)]
               for name, layers in touching.items()}

    def step(name):
        """(cost per ms, new width, layer ms after, gain) of one step of ``name``."""
        new = next_keep(keep[name], lattice[name])
        if new < floor[name] or new < 1:
            return None
        trial = dict(keep, **{name: new})
        after = {n: model.layer_ms(n, trial) for n in touching[name]}
        gain = sum(current[n] - ms for n, ms in after.items())
        if gain <= 1e-12:
            return None
        width = model.groups[name]
        return (cum[name][width - new] - cum[name][width - keep[name]]) / gain, new, after, gain

    steps = {name: step(name) for name in model.groups}
    saved = 0.0
    while saved < saving_ms:
        best = None
        for name, candidate in steps.items():  # the first of equal costs, in group order
            if candidate is not None and (best is None or candidate[0] < best[1][0]):
                best = (name, candidate)
        if best is None:
            break
        name, (_, new, after, gain) = best
        keep[name] = new
        current.update(after)
        saved += gain
        steps.update({g: step(g) for g in sharing[name]})
    return keep


def latency_prediction(network: paddle.nn.Layer, input_shape: Sequence[int], plan: PruningPlan,
                       **options) -> Dict[str, float]:
    """What the strategy expected of ``plan`` on the unpruned ``network``: the
    reduction it timed for these widths while searching (cached), else its model's
    prediction (``source`` says which; ``model_reduction`` is always the model's).
    ``options`` as :func:`build_model` takes them."""
    model = build_model(network, input_shape, **options)
    widths = model.plan_widths(plan)
    model_ms = model.predict(widths)
    searched = model.cached_reduction(widths, options.get("round_to", 1))
    predicted = 1 - model_ms / model.base_ms if searched is None else searched
    return {"base_ms": model.base_ms, "predicted_ms": model.base_ms * (1 - predicted),
            "predicted_reduction": predicted, "model_reduction": 1 - model_ms / model.base_ms,
            "source": "model" if searched is None else "timed during the search"}
