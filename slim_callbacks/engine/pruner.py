"""The pruning loop: trace, resolve ratios, score, select, and shrink.

    >>> import paddle
    >>> from slim_callbacks import prune, count_flops
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> plan = prune(net, [1, 3, 32, 32], {"conv*._pointwise_conv*": 0.5})
    >>> len(plan)
    13

Ratios are a float (every prunable group) or a dict from glob patterns to ratios.
A pattern matches a structural sublayer name (``named_sublayers()``) or anything below
it (``"layer1"`` matches ``"layer1.0.conv1"``), or a Paddle parameter name as in
PaddleSlim (``"conv2d_0.w_0"``). A group takes the ratio of the first pattern, in dict
order, that matches one of its producer layers.
"""
from __future__ import annotations

import fnmatch
import logging
import numbers
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import paddle

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.engine.criteria import Criterion, get_criterion, group_scores
from slim_callbacks.engine.plan import ParamCut, PruningPlan
from slim_callbacks.engine.selectors import keep_count, lowest, optimal_threshold
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger(__name__)

Ratios = Union[float, Mapping[str, float]]


def check_ratio(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(key, value, "a number in [0, 1)")
    return float(value)


def check_ratios(ratios: Ratios) -> Ratios:
    """Validates a float or a {pattern: ratio} dict; returns it normalized."""
    if isinstance(ratios, Mapping):
        if not ratios:
            raise ConfigError("ratios", dict(ratios), "a non-empty {pattern: ratio} dict")
        for pattern in ratios:
            if not isinstance(pattern, str):
                raise ConfigError("ratios", pattern, "string patterns as keys")
        return {p: check_ratio(f"ratios[{p!r}]", r) for p, r in ratios.items()}
    return check_ratio("ratios", ratios)


def check_round_to(round_to) -> int:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConfigError("round_to", round_to, "an integer >= 1")
    return round_to


def check_skip(skip) -> List[str]:
    """Patterns of layers to leave whole: a string or a list of strings."""
    if skip is None:
        return []
    if isinstance(skip, str):
        return [skip]
    if not isinstance(skip, Sequence) or not all(isinstance(p, str) and p for p in skip):
        raise ConfigError("skip", skip, "a list of layer name patterns, e.g. ['fc'] "
                                        "(or [] to prune everything chosen)")
    return list(skip)


def check_input_shape(shape) -> List[int]:
    """One example input's shape: a list of positive ints, batch first."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape):
        raise ConfigError("input_shape", shape, "a list of positive ints, batch first, "
                          "e.g. [1, 3, 224, 224]")
    return [int(d) for d in shape]


def check_network(network) -> paddle.nn.Layer:
    if not isinstance(network, paddle.nn.Layer):
        raise ConfigError("network", network, "a paddle.nn.Layer (or paddle.DataParallel)")
    return network


def check_optimizer(optimizer):
    """None or a ``paddle.optimizer.Optimizer`` (whose state is sliced with the weights)."""
    if optimizer is not None and not isinstance(optimizer, paddle.optimizer.Optimizer):
        raise ConfigError("optimizer", optimizer, "None or the paddle.optimizer.Optimizer "
                          "training the network (with paddle.Model: model._optimizer)")
    return optimizer


def matches(name: str, pattern: str, param_names: Mapping[str, tuple]) -> bool:
    """True if ``pattern`` names layer ``name``, an ancestor of it, or one of its params."""
    if pattern in param_names:
        return param_names[pattern][0] == name
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def resolve_ratios(graph: DependencyGraph, ratios: Ratios, skip: Sequence[str] = ()) -> Dict[str, float]:
    """Group name -> ratio for every group to prune. Raises before anything changes.

    Raises:
        ConfigError: a pattern in ``ratios`` or ``skip`` that matches no conv/linear
            producer of the network.
    """
    ratios = check_ratios(ratios)
    skip = check_skip(skip)
    producers = [p for g in graph.groups for p in g.producers]
    patterns = list(ratios) if isinstance(ratios, dict) else []
    for key, pats in (("ratios", patterns), ("skip", list(skip))):
        for pattern in pats:
            if not any(matches(p, pattern, graph.param_names) for p in producers):
                raise ConfigError(f"{key} pattern", pattern, "a pattern matching a Conv2D/"
                                  f"Linear layer, e.g. one of {', '.join(producers[:5])}")
    chosen: Dict[str, float] = {}
    for group in graph.groups:
        if any(matches(p, s, graph.param_names) for p in group.producers for s in skip):
            continue
        ratio = ratios if not isinstance(ratios, dict) else next(
            (r for pat, r in ratios.items()
             if any(matches(p, pat, graph.param_names) for p in group.producers)), None)
        if ratio is None or ratio == 0:
            continue
        if not group.prunable:
            if isinstance(ratios, dict):
                logger.warning("group %s is not pruned: %s", group.name,
                               group.blocked or "it has a single channel")
            continue
        chosen[group.name] = ratio
    return chosen


def select_units(group: ChannelGroup, scores: np.ndarray, ratio: float, criterion: Criterion,
                 round_to: int = 1, original: Optional[int] = None) -> np.ndarray:
    """Unit indices of ``group`` to remove."""
    if criterion.selector == "optimal_threshold":
        return optimal_threshold(scores, ratio, min_keep=min(round_to, group.num_units))
    return lowest(scores, keep_count(group.num_units, ratio, round_to, original))


def plan_pruning(network: paddle.nn.Layer, graph: DependencyGraph, group_ratios: Mapping[str, float],
                 criterion="l1_norm", round_to: int = 1,
                 original_widths: Optional[Mapping[str, int]] = None) -> PruningPlan:
    """Decides what to remove without changing anything.

    Args:
        network: the traced network.
        graph: its trace.
        group_ratios: group name -> ratio, e.g. from :func:`resolve_ratios`.
        criterion: a registered name or a :class:`Criterion`.
        round_to: channels kept are rounded to a multiple of this.
        original_widths: group name -> width before any pruning. Ratios are then
            relative to these (so progressive steps never compound).
    """
    check_network(network)
    if not isinstance(graph, DependencyGraph):
        raise ConfigError("graph", graph, "the DependencyGraph of trace(network, input_shape)")
    if not isinstance(group_ratios, Mapping):
        raise ConfigError("group_ratios", group_ratios, "a {group name: ratio} dict, e.g. "
                          "from resolve_ratios")
    group_ratios = {name: check_ratio(f"group_ratios[{name!r}]", r) for name, r in group_ratios.items()}
    criterion = get_criterion(criterion)
    round_to = check_round_to(round_to)
    layers = dict(unwrap(network).named_sublayers())
    removed: Dict[tuple, Dict[int, set]] = {}
    plan = PruningPlan()
    for group in graph.groups:
        if group.name not in group_ratios or not group.prunable:
            continue
        original = (original_widths or {}).get(group.name)
        scores = group_scores(group, layers, criterion, graph.layer_types)
        units = select_units(group, scores, group_ratios[group.name], criterion, round_to, original)
        if len(units) == 0:
            continue
        for m in group.members:
            hit = m.indices[np.isin(m.units, units)]
            removed.setdefault((m.layer, m.attr), {}).setdefault(m.axis, set()).update(hit.tolist())
        plan.groups.append({"name": group.name, "producers": list(group.producers),
                            "before": group.num_units, "after": group.num_units - len(units),
                            "criterion": criterion.name})
    for (name, attr), axes in removed.items():
        shape = list(layers[name]._parameters[attr].shape)
        kept = {axis: [i for i in range(shape[axis]) if i not in gone] for axis, gone in axes.items()}
        plan.params[(name, attr)] = ParamCut(shape, kept)
    return plan


def prune(network: paddle.nn.Layer, input_shape: Sequence[int], ratios: Ratios,
          criterion="l1_norm", *, skip: Sequence[str] = (), optimizer=None,
          round_to: int = 1) -> PruningPlan:
    """Prunes ``network`` in place and returns what was removed.

    Args:
        network: a dygraph ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        input_shape: shape of one example input, e.g. ``[1, 3, 224, 224]``.
        ratios: share of channels to remove: a float for every prunable group, or
            ``{glob pattern: ratio}`` (see the module docstring).
        criterion: ``l1_norm``, ``l2_norm``, ``fpgm`` (``geometry_median``), ``slim``
            (``bn_scale``), ``opt_slim`` or a name added with ``register_criterion``.
        skip: patterns of layers whose groups stay whole.
        optimizer: the optimizer training ``network``; its state is sliced to match.
        round_to: channels kept are rounded to a multiple of this (at least one).

    Returns:
        The :class:`PruningPlan` that was applied.

    Raises:
        ConfigError: bad network, input_shape, ratio, pattern, criterion, skip,
            optimizer or round_to; nothing is changed.
        SlimError: the network rejects ``input_shape``; nothing is changed.
    """
    check_network(network)
    input_shape = check_input_shape(input_shape)
    criterion = get_criterion(criterion)
    check_ratios(ratios)
    round_to = check_round_to(round_to)
    skip = check_skip(skip)
    check_optimizer(optimizer)
    graph = trace(network, input_shape)
    group_ratios = resolve_ratios(graph, ratios, skip)
    plan = plan_pruning(network, graph, group_ratios, criterion, round_to)
    return plan.apply(network, optimizer, input_shape=input_shape)


class FilterPruner:
    """PaddleSlim-compatible front end: ``pruner.prune_vars({"conv2d_0.w_0": 0.3})``.

    Keys of ``ratios`` may be Paddle parameter names exactly as in PaddleSlim's
    examples, or structural layer names and patterns.

    Example:
        >>> import paddle
        >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
        >>> pruner = L1NormFilterPruner(net, [1, 3, 32, 32])
        >>> plan = pruner.prune_vars({"conv1": 0.5})
        >>> net.conv1._conv._out_channels
        4
    """

    criterion = "l1_norm"

    def __init__(self, model: paddle.nn.Layer, inputs: Sequence[int], opt=None, round_to: int = 1):
        self.model, self.input_shape, self.optimizer = model, list(inputs), opt
        self.round_to = check_round_to(round_to)

    def prune_vars(self, ratios: Ratios, axis: int = 0, optimizer=None) -> PruningPlan:
        """Prunes the output channels (``axis=0``) of the named parameters' layers."""
        if axis != 0:
            raise ConfigError("axis", axis, "0 (output channels of conv filters)")
        return prune(self.model, self.input_shape, ratios, self.criterion,
                     optimizer=optimizer or self.optimizer, round_to=self.round_to)


class L1NormFilterPruner(FilterPruner):
    """Prunes the filters with the smallest L1 norm (arXiv 1608.08710)."""
    criterion = "l1_norm"


class L2NormFilterPruner(FilterPruner):
    """Prunes the filters with the smallest L2 norm."""
    criterion = "l2_norm"


class FPGMFilterPruner(FilterPruner):
    """Prunes the filters closest to the geometric median (arXiv 1811.00250)."""
    criterion = "fpgm"


class SlimFilterPruner(FilterPruner):
    """Prunes the channels whose BatchNorm scale |gamma| is smallest (arXiv 1708.06519)."""
    criterion = "slim"


class OptSlimFilterPruner(FilterPruner):
    """Slim with the optimal-threshold selector: ratio bounds a share of sum(gamma^2)."""
    criterion = "opt_slim"
