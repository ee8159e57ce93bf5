"""What to prune: the checks of the pruning entry points' arguments, ratio resolution,
and the groups that layer patterns choose (:func:`chosen_groups`).

Ratios are a float (every prunable group) or a dict from glob patterns to ratios.
A pattern matches a structural sublayer name (``named_sublayers()``) or anything below
it (``"layer1"`` matches ``"layer1.0.conv1"``), or a Paddle parameter name as in
PaddleSlim (``"conv2d_0.w_0"``). A group takes the ratio of the first pattern, in dict
order, that matches one of its producer layers.

    >>> matches("layer1.0.conv1", "layer1", {})
    True
    >>> check_ratios({"conv*": 0.5})
    {'conv*': 0.5}
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Dict, List, Mapping, Optional, Sequence, Union

import paddle

from slim_callbacks.core.checks import check_int, check_ratio, is_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import require_dygraph
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph

logger = logging.getLogger(__name__)

Ratios = Union[float, Mapping[str, float]]


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
    """An int >= 1. ``"auto"`` is measured above the engine: ``slim_callbacks.prune``,
    the strategies, ``PruneCallback`` and recipes resolve it to an int first."""
    if round_to == "auto":
        raise ConfigError("round_to", round_to, "an int >= 1 here: 'auto' is resolved by "
                          "slim_callbacks.prune, resolve_strategy, PruneCallback and recipes "
                          "(slim_callbacks.latency.auto_round)")
    return check_int("round_to", round_to, minimum=1)


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


def check_patterns(key: str, layers) -> Optional[List[str]]:
    """None (every prunable group), or layer name patterns as a list (a string is one)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not layers or not all(isinstance(p, str) for p in layers):
        raise ConfigError(key, layers, "None (every prunable group) or a non-empty list of "
                                       "layer name patterns, e.g. ['conv*._pointwise_conv*']")
    return list(layers)


def check_input_shape(shape) -> List[int]:
    """One example input's shape: a list of positive ints, batch first."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape or any(
            not is_int(d) or d < 1 for d in shape):
        raise ConfigError("input_shape", shape, "a list of positive ints, batch first, "
                          "e.g. [1, 3, 224, 224]")
    return [int(d) for d in shape]


def check_network(network) -> paddle.nn.Layer:
    if not isinstance(network, paddle.nn.Layer):
        raise ConfigError("network", network, "a paddle.nn.Layer (or paddle.DataParallel)")
    require_dygraph()
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
    check_patterns_match(graph, {"ratios": list(ratios) if isinstance(ratios, dict) else [],
                                 "skip": skip})
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


def named_producers(graph: DependencyGraph, ratios: Ratios) -> Dict[str, List[str]]:
    """Group name -> its producers that the pattern giving its ratio names (``{}`` for a
    float): the layers that rank a coupled group's channels with
    ``coupled_scoring="named"``.

    >>> named_producers(None, 0.5)
    {}
    """
    if not isinstance(ratios, Mapping):
        return {}
    named: Dict[str, List[str]] = {}
    for group in graph.groups:
        for pattern in ratios:
            hit = [p for p in group.producers if matches(p, pattern, graph.param_names)]
            if hit:
                named[group.name] = hit
                break
    return named


def check_patterns_match(graph: DependencyGraph, patterns: Mapping[str, Sequence[str]]) -> None:
    """Each pattern of ``{key: patterns}`` matches a producer (a Conv/Linear layer).

    Raises:
        ConfigError: naming ``"{key} pattern"``, the pattern and some producers.
    """
    producers = [p for g in graph.groups for p in g.producers]
    for key, pats in patterns.items():
        for pattern in pats:
            if not any(matches(p, pattern, graph.param_names) for p in producers):
                follower = follower_of(graph, pattern)
                if follower is not None:
                    layer, group = follower
                    raise ConfigError(f"{key} pattern", pattern, f"a producer: {layer} is a "
                                      f"depthwise conv, whose channels follow its input; prune "
                                      f"the conv feeding it ({group.name}) and it follows")
                raise ConfigError(f"{key} pattern", pattern, "a pattern matching a Conv2D/"
                                  f"Linear layer, e.g. one of {', '.join(producers[:5])}")


def follower_of(graph: DependencyGraph, pattern: str):
    """``(layer, group)`` for a conv that ``pattern`` names whose output channels follow
    a group's (a depthwise conv), or None."""
    for group in graph.groups:
        for m in group.members:
            if (m.role == "channel" and "Conv" in graph.layer_types.get(m.layer, "")
                    and matches(m.layer, pattern, graph.param_names)):
                return m.layer, group
    return None


def chosen_groups(graph: DependencyGraph, layers: Optional[List[str]],
                  skip: Sequence[str] = ()) -> List[ChannelGroup]:
    """The prunable groups matched by ``layers`` (all if None) less ``skip``, in network order.

    Raises:
        ConfigError: a pattern that matches no conv/linear layer.
        SlimError: nothing prunable is left.
    """
    check_patterns_match(graph, {"layers": layers or [],
                                 "skip": [skip] if isinstance(skip, str) else skip})
    patterns = {p: 0.5 for p in layers} if layers is not None else 0.5
    names = resolve_ratios(graph, patterns, skip)
    groups = [g for g in graph.groups if g.name in names]
    if not groups:
        raise SlimError(f"no prunable group matches layers={layers} (skip={list(skip)}); "
                        f"prunable groups: {[g.name for g in graph.prunable_groups()][:8]}")
    return groups
