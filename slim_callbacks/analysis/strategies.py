"""Strategies: turn a target (a FLOPs reduction, a channel share) into pruning ratios.

Every strategy decides without changing the network: candidate plans are made with
:func:`~slim_callbacks.engine.planner.plan_pruning` and their FLOPs computed from the plan's
parameter shapes (:class:`~slim_callbacks.analysis.flops_model.FlopsModel`; the search
helper is :mod:`~slim_callbacks.analysis.search`).

- ``uniform``: one ratio for every chosen group, found by bisection on the FLOPs
  target (PaddleSlim's uniform strategy: 0.5, 0.25, 0.375, 0.3125 for MobileNetV1's
  13 pointwise convs at target 0.5).
- ``sensitive``: per-group ratios from a sensitivity analysis
  (:func:`~slim_callbacks.analysis.sensitivity.sensitivity`): every group takes the largest
  ratio whose interpolated loss is at most ``L``; ``L`` is found by bisection.
- ``global``: one threshold on normalized channel scores across all groups (Network
  Slimming's global |gamma| threshold), with a per-group maximum ratio
  (:mod:`~slim_callbacks.analysis.global_strategy`).
- ``custom``: the user's ratios, validated against the network.
- ``latency``: per-group ratios that meet a latency target measured on this machine
  with the least importance removed (:mod:`~slim_callbacks.analysis.latency_strategy`).

This module owns the ``uniform``, ``sensitive`` and ``custom`` strategies and the
registry (:data:`STRATEGIES`, the one source of strategy names).
:func:`resolve_strategy` is the single entry point for callbacks and recipes:

    >>> import paddle
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> ratios = resolve_strategy("uniform", net, [1, 3, 32, 32],
    ...                           target_flops_reduction=0.3, layers=["conv*._pointwise_conv*"])
    >>> sorted(ratios) == ["conv*._pointwise_conv*"]
    True
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import paddle

from slim_callbacks.analysis.auto_round import resolve_round_to
from slim_callbacks.analysis.flops_model import check_convention
from slim_callbacks.analysis.global_strategy import global_ratios
from slim_callbacks.analysis.latency_strategy import latency_ratios
from slim_callbacks.analysis.search import Search, check_one_target, check_tolerance, share_the_jump
from slim_callbacks.analysis.sensitivity import check_patterns, chosen_groups, load_sensitivities
from slim_callbacks.core.checks import check_bool, check_fraction, check_ratio
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.engine.criteria import Criterion, get_criterion
from slim_callbacks.engine.ratios import Ratios, check_ratios, check_round_to, resolve_ratios
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger(__name__)

MAX_RATIO = 1 - 1e-9  # "everything but the channels that must stay"


# ----------------------------------------------------------------------- uniform
def width_criterion(criterion: Criterion) -> Criterion:
    """``criterion``, or for a gradient-scored (``taylor``) one with the ``lowest``
    selector a weight-scored stand-in: the widths it plans are the same, and it needs
    no training batches.

    Example:
        >>> width_criterion(get_criterion("taylor")).source
        'weight'
    """
    if criterion.source == "taylor" and criterion.selector == "lowest":
        return dataclasses.replace(criterion, source="weight")
    return criterion


def uniform_ratio(network: paddle.nn.Layer, input_shape: Sequence[int], target_flops_reduction: float,
                  layers: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                  criterion="l1_norm", *, round_to: int = 1, tolerance: float = 0.01,
                  convention: str = "macs", max_steps: int = 30,
                  graph: Optional[DependencyGraph] = None) -> float:
    """One ratio for every chosen group that removes ``target_flops_reduction`` of the FLOPs.

    Bisection on the ratio in (0, 1), starting at 0.5, until the reduction is within
    ``tolerance`` of the target (PaddleSlim's rule: 0.5, 0.25, 0.375, 0.3125 for
    MobileNetV1's pointwise convs at target 0.5). Each try is logged.

    Args:
        network: the network to prune (left unchanged).
        input_shape: input shape for FLOPs counting, e.g. ``[1, 3, 224, 224]``.
        target_flops_reduction: share of the FLOPs to remove, in (0, 1).
        layers: patterns of the layers to prune; None prunes every prunable group.
        skip: patterns of layers to leave whole.
        criterion: which channels go (matters for ``opt_slim`` and ``round_to``). A
            ``taylor`` criterion has no scores before training; its "lowest share"
            selection keeps the same widths whatever the scores, so the search plans
            with weight L1 scores and the same selector.
        round_to: channels kept are rounded to a multiple of this.
        tolerance: accepted distance to the target (0.01 = one point).
        convention: ``macs``, ``flops`` or ``paddleslim_legacy``.
        max_steps: bisection steps at most.
        graph: a trace of ``network`` to reuse.

    Returns:
        The ratio. If the tolerance cannot be met (a tiny network), the closest ratio
        found, with a warning.

    Raises:
        ConfigError: a bad argument. SlimError: the target is out of reach.
    """
    target = check_fraction("target_flops_reduction", target_flops_reduction)
    tolerance, round_to = check_tolerance(tolerance), check_round_to(round_to)
    patterns = check_patterns("layers", layers)
    search = Search(network, input_shape, width_criterion(get_criterion(criterion)), round_to,
                     check_convention(convention), graph)
    names = [g.name for g in chosen_groups(search.graph, patterns, skip)]
    low, high, best = 0.0, 1.0, None
    for _ in range(max_steps):
        ratio = (low + high) / 2
        reduction = search.reduction({name: ratio for name in names})
        logger.info("uniform ratio %.6g: -%.2f%% %s", ratio, 100 * reduction, search.convention)
        if best is None or abs(reduction - target) < abs(best[1] - target):
            best = (ratio, reduction)
        if abs(reduction - target) <= tolerance:
            return ratio
        low, high = (low, ratio) if reduction > target else (ratio, high)
    search.out_of_reach(names, target, tolerance, search.reduction({n: MAX_RATIO for n in names}))
    logger.warning("uniform ratio %.6g gives -%.2f%%, the closest to the target -%.2f%% "
                   "(tolerance %.2f points)", best[0], 100 * best[1], 100 * target, 100 * tolerance)
    return best[0]


# --------------------------------------------------------------------- sensitive
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
    """``{group: {ratio: loss}}`` (or a file from :func:`sensitivity`), checked against
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


# ------------------------------------------------------------------------ custom
def custom_ratios(network: paddle.nn.Layer, input_shape: Sequence[int], ratios: Ratios,
                  skip: Sequence[str] = (), graph: Optional[DependencyGraph] = None) -> Ratios:
    """The user's ratios, checked against the network.

    Raises:
        ConfigError: a ratio outside [0, 1) or a pattern that matches no layer.
        SlimError: the ratios prune no group.
    """
    ratios = check_ratios(ratios)
    graph = graph if graph is not None else trace(network, input_shape)
    if not resolve_ratios(graph, ratios, skip):
        raise SlimError(f"ratios {ratios!r} prune no group of the network")
    return ratios


# ------------------------------------------------------------------- entry point
def _uniform(network, input_shape, target_flops_reduction=None, layers=None, skip=(),
             criterion="l1_norm", round_to=1, tolerance=0.01, convention="macs", ratios=None,
             graph=None):
    check_one_target({"target_flops_reduction": target_flops_reduction, "ratios": ratios}, " (a float)")
    if ratios is None:
        ratio = uniform_ratio(network, input_shape, target_flops_reduction, layers, skip, criterion,
                              round_to=round_to, tolerance=tolerance, convention=convention,
                              graph=graph)
    elif isinstance(ratios, Mapping):
        raise ConfigError("ratios", dict(ratios), "a float for strategy uniform (per-layer "
                                                  "ratios: strategy custom)")
    else:
        ratio = check_ratio("ratios", ratios)
    out = ratio if layers is None else {p: ratio for p in check_patterns("layers", layers)}
    return custom_ratios(network, input_shape, out, skip, graph) if ratios is not None else out


def _sensitive(network, input_shape, sensitivities, target_flops_reduction, criterion="l1_norm",
               round_to=1, tolerance=0.01, convention="macs", graph=None):
    return sensitive_ratios(sensitivities, network, input_shape, target_flops_reduction, criterion,
                            round_to=round_to, tolerance=tolerance, convention=convention, graph=graph)


STRATEGIES: Dict[str, Callable] = {
    "uniform": _uniform,
    "sensitive": _sensitive,
    "global": global_ratios,
    "custom": custom_ratios,
    "latency": latency_ratios,
}


#: Strategy arguments that recipes set with their own keys: argument -> recipe key.
RECIPE_KEYS = {"ratios": "pruning.ratios", "channel_ratio": "pruning.ratios",
               "target_flops_reduction": "pruning.target_flops_reduction",
               "target_latency_reduction": "pruning.target_latency_reduction",
               "layers": "pruning.layers", "skip": "pruning.skip",
               "criterion": "pruning.criterion", "round_to": "pruning.round_to",
               "sensitivities": "pruning.sensitivities"}


#: strategy options that must be bools (the latency strategy's runtime settings)
BOOL_OPTIONS = ("onednn", "keep_intermediates")


def check_option_values(options: Mapping, path: Callable[[str], str]) -> None:
    """The bool options of ``options`` checked before any work (a string ``"false"``
    would be truthy); ``path(key)`` names the key in the error.

    >>> check_option_values({"onednn": "no"}, lambda k: f"options.{k}")
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: options.onednn: 'no' is not allowed; expected a bool (true or false)
    """
    for key in BOOL_OPTIONS:
        if key in options:
            check_bool(path(key), options[key])


def strategy_option_names(strategy: str) -> List[str]:
    """The options :func:`resolve_strategy` accepts for a registered ``strategy``.

    Example:
        >>> strategy_option_names("custom")
        ['ratios', 'skip']
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"one of {', '.join(STRATEGIES)}")
    return [name for name in inspect.signature(STRATEGIES[strategy]).parameters
            if name not in ("network", "input_shape", "graph")]


def strategy_options(strategy: str, *, ratios: Optional[Ratios] = None,
                     target_flops_reduction: Optional[float] = None,
                     layers: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                     criterion="l1_norm", round_to: int = 1, sensitivities=None,
                     options: Optional[Mapping] = None,
                     target_latency_reduction: Optional[float] = None) -> Dict[str, object]:
    """The options of :func:`resolve_strategy` for the arguments that recipes and
    :class:`~slim_callbacks.PruneCallback` share, so both decide the same way.

    A float ``ratios`` is the strategy's own target: ``uniform``'s one ratio,
    ``global``'s ``channel_ratio`` (share of all chosen channels under one score
    threshold). ``options`` adds the strategy's other arguments (``max_ratio`` ...).

    Example:
        >>> options = strategy_options("global", ratios=0.4, options={"max_ratio": 0.8})
        >>> options["channel_ratio"], options["max_ratio"], options["criterion"]
        (0.4, 0.8, 'l1_norm')

    ``layers``, ``skip``, ``criterion`` and ``round_to`` go to the strategies that take
    them (``sensitive`` prunes the groups of its sensitivities file instead).

    Raises:
        ConfigError: a target the strategy does not take (``ratios`` for
            ``sensitive``), naming it.
    """
    names = strategy_option_names(strategy)
    targets = {"target_flops_reduction": target_flops_reduction, "sensitivities": sensitivities,
               "target_latency_reduction": target_latency_reduction}
    if ratios is not None:
        targets["channel_ratio" if "channel_ratio" in names else "ratios"] = ratios
    out = {}
    for key, value in targets.items():
        if value is not None and key not in names:
            raise ConfigError(key, value, f"None for strategy {strategy} (it takes "
                                          f"{', '.join(names)})")
        if value is not None:
            out[key] = value
    context = {"layers": layers, "skip": list(skip), "criterion": criterion, "round_to": round_to}
    out.update({key: value for key, value in context.items()
                if key in names and value is not None})
    for key, value in (options or {}).items():
        if key in RECIPE_KEYS:
            raise ConfigError(key, value, "an option set by its own argument, not in options")
        out[key] = value
    return out


def resolve_strategy(strategy: Union[str, Callable], network: paddle.nn.Layer,
                     input_shape: Sequence[int], *, structure=None, **options) -> Ratios:
    """Ratios for :func:`~slim_callbacks.prune` from a named strategy and its options.

    Strategies and their options (``*`` = required):

    - ``uniform``: target_flops_reduction* or ratios* (one float), layers, skip,
      criterion, round_to, tolerance, convention. Returns a float (``layers`` None:
      every prunable group; pass the same ``skip`` to prune) or ``{pattern: ratio}``.
    - ``sensitive``: sensitivities* (dict or file), target_flops_reduction*,
      criterion, round_to, tolerance, convention. Returns ``{group: ratio}``.
    - ``global``: target_flops_reduction or channel_ratio*, layers, skip, criterion,
      max_ratio, normalize, round_to, tolerance, convention. Returns ``{group: ratio}``.
    - ``custom``: ratios*, skip. Returns the ratios, validated.
    - ``latency``: target_latency_reduction*, layers, skip, criterion, max_ratio,
      normalize, round_to, threads, onednn, cache_dir, grid, steps, feedback, tolerance,
      keep_intermediates.
      Returns ``{group: ratio}`` (:mod:`~slim_callbacks.analysis.latency_strategy`).

    ``strategy`` may also be a callable ``f(network, input_shape, **options)``.
    ``round_to="auto"`` is measured first (:mod:`~slim_callbacks.analysis.auto_round`)
    and the strategy gets the int. ``structure`` (:mod:`slim_callbacks.tracing.structure`)
    is what the network is traced with, so the ratios are found on the units that will
    be pruned.

    Raises:
        ConfigError: an unknown strategy, an unknown or missing option (checked before
            any work), or a bad value. SlimError: a target that cannot be met.
    """
    if callable(strategy):
        return strategy(network, input_shape, **options)
    if strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"one of {', '.join(STRATEGIES)}")
    func = STRATEGIES[strategy]
    params = {name: p for name, p in inspect.signature(func).parameters.items()
              if name not in ("network", "input_shape", "graph")}
    for key in options:
        if key not in params:
            raise ConfigError(f"{strategy} option", key, f"one of {', '.join(params)}")
    for name, p in params.items():
        if p.default is inspect.Parameter.empty and name not in options:
            raise ConfigError(f"{strategy}.{name}", None, "a value: this option is required")
    check_option_values(options, str)
    graph = trace(network, input_shape, structure)
    if options.get("round_to") == "auto":
        options["round_to"] = resolve_round_to("auto", network, input_shape, graph=graph,
                                               skip=options.get("skip", ()),
                                               cache_dir=options.get("cache_dir"))
    return func(network, input_shape, graph=graph, **options)
