"""Layers and parameters used in more than one place, which pruning refuses up front.

Pruning a layer object registered twice, called twice in one forward pass, or holding
a parameter another layer also holds (tied weights) would have to cut the same tensor
for two sets of channels; the engine does not support it. :func:`check_not_shared`
names the layer and the reason before anything changes (without it the pruned network
fails its check with an IndexError or a channel mismatch, and is restored).

Examples:
    >>> import paddle
    >>> from slim_callbacks.tracing.tracer import trace
    >>> conv = paddle.nn.Conv2D(4, 4, 1)
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 1), conv, conv)
    >>> shared_layers(net, trace(net, [1, 3, 4, 4]))
    {'1': 'layer 1 is used twice (also as 2)'}
"""
from __future__ import annotations

from typing import Dict, Iterator, Mapping, Tuple

import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import layer_table, unwrap
from slim_callbacks.tracing.tracer import DependencyGraph


def shared_layers(network: paddle.nn.Layer, graph: DependencyGraph) -> Dict[str, str]:
    """Structural name -> why that layer is shared, for every shared layer."""
    shared: Dict[str, str] = {}
    names: Dict[int, str] = {}
    for name, layer in _all_names(unwrap(network)):
        first = names.setdefault(id(layer), name)
        if first != name and first not in shared:
            shared[first] = f"layer {first} is used twice (also as {name})"
    for name, count in graph.calls.items():
        if count > 1 and name not in shared:
            shared[name] = f"layer {name} is called {count} times in one forward pass"
    owners: Dict[int, Tuple[str, str]] = {}
    for name, layer in layer_table(network).items():
        for attr, param in layer._parameters.items():
            if param is None:
                continue
            other, other_attr = owners.setdefault(id(param), (name, attr))
            if other != name:
                why = (f"parameter {param.name} is shared by {_dotted(other, other_attr)} and "
                       f"{_dotted(name, attr)}")
                shared.setdefault(name, why)
                shared.setdefault(other, why)
    return shared


def _dotted(layer: str, attr: str) -> str:
    return f"{layer}.{attr}" if layer else attr


def _all_names(layer: paddle.nn.Layer, prefix: str = "") -> Iterator[Tuple[str, paddle.nn.Layer]]:
    """Every (structural name, sublayer), a layer held twice listed under both names."""
    for child_name, child in layer._sub_layers.items():
        if child is None:
            continue
        name = f"{prefix}.{child_name}" if prefix else child_name
        yield name, child
        yield from _all_names(child, name)


def check_not_shared(network: paddle.nn.Layer, graph: DependencyGraph,
                     group_ratios: Mapping[str, float]) -> None:
    """SlimError if a group about to be pruned has a shared layer among its members."""
    shared = shared_layers(network, graph)
    if not shared:
        return
    hits = {group.name: next(m.layer for m in group.members if m.layer in shared)
            for group in graph.groups if group_ratios.get(group.name)
            and any(m.layer in shared for m in group.members)}
    if hits:
        first = next(iter(hits.values()))
        raise SlimError(f"{shared[first]}; pruning shared layers is not supported: leave the "
                        f"group(s) holding it whole (skip={sorted(hits)}); nothing was changed")
