"""TaylorCallback: accumulates Taylor importance over the training batches of fit.

Attaches a :class:`~slim_callbacks.engine.taylor.TaylorImportance` to the network at
train begin and detaches it at train end. At every epoch end it starts afresh if the
network was pruned in that epoch (its channels are other channels now), so each event
scores the batches since the previous one. :class:`PruneCallback` adds one for
``criterion="taylor"``; its own ``on_epoch_end`` (the event) runs first.

Examples:
    >>> cb = TaylorCallback()
    >>> cb.importance is None
    True
"""
from __future__ import annotations

from typing import Optional, Tuple

import paddle

from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.engine.taylor import TaylorImportance


class TaylorCallback(paddle.callbacks.Callback):
    """Keeps Taylor importance scores of the model's network during fit."""

    def __init__(self):
        super().__init__()
        self.importance: Optional[TaylorImportance] = None
        self._shapes: Tuple = ()

    def _weight_shapes(self) -> Tuple:
        return tuple(tuple(p.shape) for p in self.importance.network.parameters())

    def on_train_begin(self, logs=None):
        if self.importance is None:
            self.importance = TaylorImportance(unwrap(self.model.network))
        self.importance.attach()
        self._shapes = self._weight_shapes()

    def on_epoch_end(self, epoch, logs=None):
        shapes = self._weight_shapes()
        if shapes != self._shapes:  # an event pruned the network this epoch
            self.importance.reset()
            self._shapes = shapes

    def on_train_end(self, logs=None):
        if self.importance is not None:
            self.importance.detach()
