"""BNRecalibration: fresh BatchNorm statistics after each pruning event, before its eval.

Beside a ``PruneCallback`` (``fit(callbacks=[PruneCallback(...), BNRecalibration(8)])``,
or ``PruningSpec(aids={"recalibrate_bn": 8})``), it keeps detached copies of the inputs
of the last ``batches`` training batches of each epoch (a forward pre-hook armed during
training batches only, :class:`~slim_callbacks.analysis.bn_recalibration.InputRecorder`),
and after each event that removed channels re-estimates the BatchNorm running
statistics of the pruned network on them
(:func:`~slim_callbacks.analysis.bn_recalibration.recalibrate_bn`): no gradient step,
parameters untouched, before the event's eval and checkpoint.

Examples:
    >>> import paddle
    >>> from slim_callbacks.callbacks import PruneCallback
    >>> nn = paddle.nn
    >>> net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 4))
    >>> model = paddle.Model(net)
    >>> model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
    ...               nn.CrossEntropyLoss())
    >>> data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]),
    ...                                 paddle.randint(0, 4, [8, 1])])
    >>> recal = BNRecalibration(batches=2)
    >>> model.fit(data, epochs=1, batch_size=4, verbose=0, callbacks=[
    ...     PruneCallback(0.5, input_shape=[1, 3, 8, 8]), recal])
    >>> recal.recalibrated
    [(0, 2)]
"""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple

from slim_callbacks.analysis.bn_recalibration import InputRecorder, check_recalibrate_bn, recalibrate_bn
from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.core.errors import ConfigError, SlimError

logger = logging.getLogger("slim_callbacks.callbacks.prune")


class BNRecalibration(PruningAid):
    """Re-estimates BatchNorm statistics after each pruning event of the fit's
    ``PruneCallback``.

    Args:
        batches: how many of the last training batches of an epoch to recalibrate on,
            an int in [1, 128] (each one kept in memory).

    Attributes:
        recalibrated: ``(global epoch, batches used)`` of every recalibration.

    Raises:
        ConfigError: a bad ``batches``.
        SlimError: at train begin, when the fit has no ``PruneCallback``.
    """

    def __init__(self, batches: int = 8):
        super().__init__()
        self.batches = check_recalibrate_bn(batches, "batches")
        if not self.batches:
            raise ConfigError("batches", batches, "an int in [1, 128] (0 is no recalibration: "
                                                  "leave the callback out)")
        self.recalibrated: List[Tuple[int, int]] = []
        self._recorder: Optional[InputRecorder] = None

    def on_train_begin(self, logs=None):
        if self.prune_callback is None:
            raise SlimError("BNRecalibration recalibrates after pruning events: put a "
                            "PruneCallback in the same fit's callbacks")
        if self._recorder is None:
            self._recorder = InputRecorder(self.model.network, self.batches)

    def on_train_batch_begin(self, step, logs=None):
        if self._recorder is not None:
            self._recorder.armed = True

    def on_train_batch_end(self, step, logs=None):
        if self._recorder is not None:
            self._recorder.armed = False

    def after_event(self, epoch: int, plan) -> None:
        if self._recorder is None or not self._recorder.batches:
            return
        used = recalibrate_bn(self.model.network, list(self._recorder.batches))
        self.recalibrated.append((epoch, used))
        logger.debug("epoch %d: BatchNorm statistics re-estimated on %d batches", epoch, used)

    def on_train_end(self, logs=None):
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
