"""The ``latency`` strategy: per-group ratios that meet a measured latency target with
the least importance removed.

A :class:`~slim_callbacks.analysis.latency_model.LatencyModel` (per-layer timings on
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
from typing import Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.global_strategy import NORMALIZATIONS, normalized_scores
from slim_callbacks.analysis.latency_model import GRID, LatencyModel
from slim_callbacks.analysis.sensitivity import check_patterns
from slim_callbacks.core.checks import check_choice, check_fraction, check_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.deploy.latency_table import LatencyTable
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import check_round_to
from slim_callbacks.engine.selectors import keep_count
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
                cache_dir=None, grid=GRID, round_to=1, graph=None, calibrate=True) -> LatencyModel:
    """The calibrated latency model of ``network`` (timings cached in ``cache_dir``)."""
    table = LatencyTable(threads=threads, onednn=onednn, directory=cache_dir)
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
                   steps: int = 64, graph: Optional[DependencyGraph] = None) -> Dict[str, float]:
    """Per-group ratios whose predicted latency is ``target_latency_reduction`` lower.

    Args:
        network, input_shape: the network (left unchanged) and its input shape.
        target_latency_reduction: share of the batch-1 latency to remove, in (0, 1).
        layers, skip: patterns of the layers to prune / leave whole (default: all).
        criterion: which channels go, with the ``lowest`` selector.
        max_ratio: largest ratio of any one group, in (0, 1).
        normalize: score normalization across groups, as for ``global``.
        round_to: kept widths are multiples of this.
        threads, onednn: the Paddle Inference setting to be fast in (1 thread, oneDNN).
        cache_dir: where the latency table lives (default ``$SLIM_CALLBACKS_LATENCY_CACHE``
            or ``~/.cache/slim_callbacks/latency``).
        grid: kept fractions each layer side is timed at.
        steps: a group loses ``width / steps`` channels per greedy step.
        graph: a trace of ``network`` to reuse.

    Returns:
        ``{group: ratio}`` for the groups that lose channels.

    Raises:
        ConfigError: a bad argument. SlimError: the target is out of reach.
    """
    target = check_fraction("target_latency_reduction", target_latency_reduction)
    max_ratio = check_fraction("max_ratio", max_ratio)
    round_to, steps = check_round_to(round_to), check_int("steps", steps, 1)
    check_choice("normalize", normalize, NORMALIZATIONS)
    criterion = get_criterion(criterion)
    if criterion.selector != "lowest":
        raise ConfigError("criterion", criterion.name, "a criterion with the 'lowest' selector "
                          "(the latency strategy removes the lowest-scored channels)")
    if normalize == "auto":
        normalize = "none" if criterion.source == "bn_scale" else "mean"
    model = build_model(network, input_shape, layers=check_patterns("layers", layers), skip=skip,
                        threads=threads, onednn=onednn, cache_dir=cache_dir, grid=grid,
                        round_to=round_to, graph=graph)
    net_layers = dict(unwrap(network).named_sublayers())
    by_name = {g.name: g for g in model.graph.groups}
    cum, lattice, floor = {}, {}, {}
    for name, width in model.groups.items():
        scores = np.sort(normalized_scores(by_name[name], net_layers, criterion,
                                           model.graph.layer_types, normalize))
        cum[name] = np.concatenate([[0.0], np.cumsum(scores)])
        lattice[name] = max(round_to, round_to * int(round(width / steps / round_to)))
        floor[name] = keep_count(width, max_ratio, round_to)
    keep = dict(model.groups)
    current = {n: model.layer_ms(n, keep) for n in model.layers}
    needed = target * model.base_ms / max(model.alpha, 1e-12)  # layer ms to save
    saved = 0.0
    while saved < needed:
        best = None
        for name, width in model.groups.items():
            new = next_keep(keep[name], lattice[name])
            if new < floor[name] or new < 1:
                continue
            trial = dict(keep, **{name: new})
            after = {n: model.layer_ms(n, trial) for n in model.touching(name)}
            gain = sum(current[n] - ms for n, ms in after.items())
            if gain <= 1e-12:
                continue
            cost = (cum[name][width - new] - cum[name][width - keep[name]]) / gain
            if best is None or cost < best[0]:
                best = (cost, name, new, after, gain)
        if best is None:
            reach = model.alpha * saved / model.base_ms
            raise SlimError(f"a latency reduction of {target:.2%} is out of reach with "
                            f"max_ratio={max_ratio}: at most {reach:.2%} predicted")
        _, name, new, after, gain = best
        keep[name] = new
        current.update(after)
        saved += gain
    ratios = {n: (w - keep[n]) / w for n, w in model.groups.items() if keep[n] < w}
    plan = plan_pruning(network, model.graph, ratios, criterion, round_to)
    predicted = model.predict_plan(plan)
    logger.info("latency strategy: %d groups; predicted %.3f -> %.3f ms (-%.2f%%, target "
                "-%.2f%%; alpha %.3f)", len(ratios), model.base_ms, predicted,
                100 * (1 - predicted / model.base_ms), 100 * target, model.alpha)
    return ratios


def latency_prediction(network: paddle.nn.Layer, input_shape: Sequence[int], plan: PruningPlan,
                       **options) -> Dict[str, float]:
    """``{"base_ms", "predicted_ms", "predicted_reduction"}`` of ``plan`` on the unpruned
    ``network``, from the same (cached) model the strategy used; ``options`` as
    :func:`build_model` takes them."""
    model = build_model(network, input_shape, **options)
    predicted = model.predict_plan(plan)
    return {"base_ms": model.base_ms, "predicted_ms": predicted,
            "predicted_reduction": 1 - predicted / model.base_ms}
