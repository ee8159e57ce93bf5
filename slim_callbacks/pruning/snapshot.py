"""Snapshot: an in-memory copy of everything a pruning event changes, to undo it.

Every network tensor, every optimizer accumulator and master weight, the layers'
channel attributes and plain ``int`` attributes (``head_dim`` ...), and a caller's
state (a deep copy): :meth:`Snapshot.restore` puts them all back bit for bit.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Linear(4, 2)
    >>> snap = Snapshot.take(net, None, {"events": 0})
    >>> _ = paddle.assign(paddle.zeros([4, 2]), net.weight)
    >>> before = snap.tensors[0][1]
    >>> snap.restore(), bool((net.weight.numpy() == before).all())
    ({'events': 0}, True)
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np

from slim_callbacks.core.paddle_utils import reset_static_programs
from slim_callbacks.engine.surgery import set_storage
from slim_callbacks.tracing.kinds import channel_attributes


def _optimizer_tensors(optimizer) -> List:
    if optimizer is None:
        return []
    tensors = [t for per_param in getattr(optimizer, "_accumulators", {}).values()
               for t in per_param.values()]
    return tensors + list(getattr(optimizer, "_master_weights", {}).values())


def _int_attributes(layer) -> Dict[str, int]:
    """The plain ``int`` attributes of a layer: a plan may set any of them
    (``self.head_dim``, ``self.num_heads``; see ``PruningPlan.attrs``)."""
    return {k: v for k, v in vars(layer).items() if type(v) is int}


@dataclasses.dataclass
class Snapshot:
    """Copies of the tensors, attributes and callback state an event changes."""

    tensors: List[Tuple[Any, np.ndarray]]
    attrs: List[Tuple[Any, Dict[str, Any]]]
    state: Dict[str, Any]
    network: Any = None

    @classmethod
    def take(cls, network, optimizer, state: Dict[str, Any]) -> "Snapshot":
        tensors = list(network.state_dict().values()) + _optimizer_tensors(optimizer)
        attrs = [(layer, dict(_int_attributes(layer), **channel_attributes(layer)))
                 for layer in network.sublayers(include_self=True)]
        return cls([(t, t.numpy().copy()) for t in tensors], attrs, copy.deepcopy(state), network)

    def restore(self) -> Dict[str, Any]:
        """Puts every tensor and attribute back; returns the callback state."""
        for tensor, array in self.tensors:
            set_storage(tensor, array)
        for layer, values in self.attrs:
            for key, value in values.items():
                setattr(layer, key, value)
        if self.network is not None:
            reset_static_programs(self.network)
        return self.state
