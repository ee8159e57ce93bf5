"""First-order Taylor importance (Molchanov et al., CVPR 2019, arXiv 1906.10771).

The importance of a channel is the squared first-order estimate of the loss change when
it is removed: ``(sum over its parameters of w * dL/dw)^2``, averaged over training
batches. For a BatchNorm scale that is ``(gamma * dL/dgamma)^2`` per channel; for a
producer's weights the sum runs over the channel's filter. The ``taylor`` criterion
scores a group's units with its BatchNorm scales when it has them (the paper's best
variant), else with its producers' weights.

Scores need gradients, so they are accumulated while the network trains:
:class:`TaylorImportance` puts a gradient hook on every BatchNorm scale and Conv/Linear
weight and sums the squared per-channel products of each backward pass.
:class:`~slim_callbacks.callbacks.TaylorCallback` does that inside ``Model.fit`` (the
:class:`~slim_callbacks.callbacks.PruneCallback` adds it for ``criterion="taylor"``),
starting afresh after each pruning event. Outside fit, attach one yourself:

    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4))
    >>> with TaylorImportance(net) as taylor:
    ...     net(paddle.randn([2, 3, 8, 8])).square().mean().backward()
    >>> taylor.batches, taylor.scores(net[1].weight).shape
    (1, (4,))

While it is attached (and only then), ``prune(..., criterion="taylor")`` reads its scores.
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.tracing.kinds import kind_of

_ATTACHED: "weakref.WeakSet[TaylorImportance]" = weakref.WeakSet()


def channel_axis(layer) -> Optional[int]:
    """The output-channel axis of a layer's ``weight`` (None: not tracked), from its
    :attr:`~slim_callbacks.tracing.kinds.LayerKind.out_axis`."""
    kind = kind_of(layer)
    return None if kind is None else kind.out_axis


class TaylorImportance:
    """Accumulates ``(sum w * grad)^2`` per output channel of every BatchNorm scale and
    Conv/Linear weight of ``network`` over backward passes (see the module docstring)."""

    def __init__(self, network: paddle.nn.Layer):
        self.network = unwrap(network)
        self.sums: Dict[str, np.ndarray] = {}
        self.counts: Dict[str, int] = {}
        self.handles: List = []

    @property
    def batches(self) -> int:
        """Backward passes seen since the last reset (the most of any parameter)."""
        return max(self.counts.values(), default=0)

    def attach(self) -> "TaylorImportance":
        if self.handles:
            return self
        for layer in self.network.sublayers():
            axis = channel_axis(layer)
            weight = getattr(layer, "weight", None)
            if axis is not None and weight is not None and not weight.stop_gradient:
                self.handles.append(weight.register_hook(self._hook(weight, axis)))
        _ATTACHED.add(self)
        return self

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        _ATTACHED.discard(self)

    def reset(self) -> None:
        """Forgets every score (after a pruning event the channels are others)."""
        self.sums.clear()
        self.counts.clear()

    def _hook(self, weight, axis: int):
        def hook(grad):
            product = weight.detach().astype("float64") * grad.detach().astype("float64")
            others = [a for a in range(product.ndim) if a != axis]
            # reduce in Paddle: only one number per channel crosses to numpy per step
            per_channel = (product.sum(axis=others) if others else product).numpy()
            name = weight.name
            if name in self.sums and self.sums[name].shape != per_channel.shape:
                self.sums.pop(name)  # the parameter was resized: start it afresh
                self.counts.pop(name)
            self.sums[name] = self.sums.get(name, 0.0) + np.square(per_channel)
            self.counts[name] = self.counts.get(name, 0) + 1
            return None  # the gradient is not changed
        return hook

    def scores(self, weight) -> Optional[np.ndarray]:
        """Mean squared Taylor term per channel of ``weight``, or None if none was seen
        for its current shape."""
        total = self.sums.get(weight.name)
        if total is None:
            return None
        return total / self.counts[weight.name]

    def __enter__(self) -> "TaylorImportance":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


def taylor_scores(weight, axis: int) -> np.ndarray:
    """The attached accumulator's scores for ``weight`` (channels along ``axis``).

    Raises:
        SlimError: no :class:`TaylorImportance` is attached to the network, or it has
            seen no backward pass since the network's last pruning event.
    """
    for accumulator in list(_ATTACHED):
        values = accumulator.scores(weight)
        if values is not None and len(values) == weight.shape[axis]:
            return values
    raise SlimError(
        f"criterion 'taylor' has no gradient scores for parameter {weight.name}: it needs "
        "training batches before each event. Use it in PruneCallback(criterion='taylor') "
        "(it accumulates them during fit), or attach "
        "slim_callbacks.engine.taylor.TaylorImportance(network) and run backward passes "
        "before prune()")


__all__ = ["TaylorImportance", "channel_axis", "taylor_scores"]
