"""Strategies: turn a target (a FLOPs reduction, a channel share) into pruning ratios.

Every strategy decides without changing the network: candidate plans are made with
:func:`~slim_callbacks.engine.planner.plan_pruning` and their FLOPs computed from the plan's
parameter shapes (:class:`~slim_callbacks.analysis.flops_model.FlopsModel`; the search
helper is :mod:`~slim_callbacks.analysis.search`).

- ``uniform``: one ratio for every chosen group, found by bisection on the FLOPs
  target (:mod:`~slim_callbacks.analysis.uniform_strategy`).
- ``sensitive``: per-group ratios from a sensitivity analysis, at an equal loss level
  found by bisection (:mod:`~slim_callbacks.analysis.sensitive_strategy`).
- ``global``: one threshold on normalized channel scores across all groups (Network
  Slimming's global |gamma| threshold), with a per-group maximum ratio
  (:mod:`~slim_callbacks.analysis.global_strategy`).
- ``custom``: the user's ratios, validated against the network.
- ``latency``: per-group ratios that meet a latency target measured on this machine
  with the least importance removed (:mod:`~slim_callbacks.latency.strategy`).

This module owns the ``custom`` strategy and the registry (:data:`STRATEGIES`, the one
source of strategy names).
:func:`resolve_strategy` is the single entry point for callbacks and recipes:

    >>> import paddle
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> ratios = resolve_strategy("uniform", net, [1, 3, 32, 32],
    ...                           target_flops_reduction=0.3, layers=["conv*._pointwise_conv*"])
    >>> sorted(ratios) == ["conv*._pointwise_conv*"]
    True
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import paddle

from slim_callbacks.analysis.global_strategy import global_ratios
from slim_callbacks.analysis.search import check_one_target
from slim_callbacks.analysis.sensitive_strategy import sensitive_ratios
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.core.checks import check_bool, check_ratio
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import given_inputs
from slim_callbacks.engine.ratios import Ratios, check_patterns, check_ratios, resolve_ratios
from slim_callbacks.tracing.tracer import DependencyGraph, trace


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
    check_something_to_prune(graph, ratios, resolve_ratios(graph, ratios, skip))
    return ratios


def check_something_to_prune(graph: DependencyGraph, ratios, group_ratios) -> None:
    """SlimError when ``ratios`` ask for pruning (a ratio above 0) and no group takes it,
    never an empty plan without a word (:func:`nothing_to_prune` says why)."""
    asked = ratios.values() if isinstance(ratios, Mapping) else [ratios]
    if not group_ratios and any(r > 0 for r in asked):
        raise SlimError(nothing_to_prune(graph, ratios))


def nothing_to_prune(graph: DependencyGraph, ratios) -> str:
    """Why ``ratios`` prune nothing: every group is blocked (the first reason named),
    or the patterns and ``skip`` leave out every prunable one."""
    if graph.prunable_groups():
        return (f"ratios {ratios!r} select no prunable group (their patterns and skip leave "
                f"out all {len(graph.prunable_groups())}); nothing was changed")
    reasons = [g for g in graph.groups if g.blocked]
    first = f": {reasons[0].name} - {reasons[0].blocked}" if reasons else ""
    return (f"the network has no prunable channel group ({len(graph.groups)} groups, "
            f"{len(reasons)} blocked{first}); nothing was changed. "
            f"slim_callbacks.explain(network, input_shape) lists every reason")


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
}   # + "latency", registered by slim_callbacks.latency (a layer above this one)

#: ``round_to`` values measured into an int: value -> ``f(network, inputs, **options)``
#: (``"auto"``, registered by :mod:`slim_callbacks.latency`).
MEASURED_ROUND_TO: Dict[str, Callable] = {}


def register_strategy(name: str, func: Callable) -> None:
    """Adds ``func`` to :data:`STRATEGIES` as ``name``: how a layer above this one (the
    latency strategy of :mod:`slim_callbacks.latency`) joins the one registry.

    >>> list(STRATEGIES)[-1]    # registered by slim_callbacks.latency
    'latency'
    """
    STRATEGIES[name] = func


def register_measured_round_to(value: str, func: Callable) -> None:
    """``round_to=value`` is turned into an int by ``func(network, inputs, **options)``
    before a strategy runs (``"auto"``: :mod:`slim_callbacks.latency.auto_round`)."""
    MEASURED_ROUND_TO[value] = func


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


def strategy_option_names(strategy: str, required: bool = False) -> List[str]:
    """The options :func:`resolve_strategy` accepts for a registered ``strategy``
    (``required``: only those without a default).

    Examples:
        >>> strategy_option_names("custom"), strategy_option_names("sensitive", required=True)
        (['ratios', 'skip'], ['sensitivities', 'target_flops_reduction'])
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ConfigError("strategy", strategy, f"one of {', '.join(STRATEGIES)}")
    return [name for name, p in inspect.signature(STRATEGIES[strategy]).parameters.items()
            if name not in ("network", "input_shape", "graph")
            and not (required and p.default is not inspect.Parameter.empty)]


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

    Examples:
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
                     example_inputs=None, *, structure=None,
                     graph: Optional[DependencyGraph] = None, input_shape=None, **options) -> Ratios:
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
      Returns ``{group: ratio}`` (:mod:`~slim_callbacks.latency.strategy`).

    ``example_inputs`` are the network's inputs of any structure (``input_shape``: the
    shorthand for one float32 input; see :mod:`slim_callbacks.core.example_inputs`).
    ``strategy`` may also be a callable ``f(network, input_shape, **options)`` (given the
    shape for one float32 input, else the
    :class:`~slim_callbacks.core.example_inputs.ExampleInputs`).
    ``round_to="auto"`` is measured first (:mod:`~slim_callbacks.latency.auto_round`)
    and the strategy gets the int. ``structure`` (:mod:`slim_callbacks.tracing.structure`)
    is what the network is traced with, so the ratios are found on the units that will
    be pruned; ``graph``, when given, is that trace (not traced again).

    Raises:
        ConfigError: an unknown strategy, an unknown or missing option (checked before
            any work), or a bad value. SlimError: a target that cannot be met.
    """
    inputs = given_inputs(example_inputs, input_shape)
    if callable(strategy):
        return strategy(network, inputs.shape or inputs, **options)
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
    graph = graph if graph is not None else trace(network, inputs, structure)
    round_to = options.get("round_to")
    if isinstance(round_to, str) and round_to in MEASURED_ROUND_TO:
        options["round_to"] = MEASURED_ROUND_TO[round_to](network, inputs, graph=graph,
                                                          skip=options.get("skip", ()),
                                                          cache_dir=options.get("cache_dir"))
    return func(network, inputs, graph=graph, **options)
