"""BNScaleL1: L1 sparsity on BatchNorm scales during fit (Network Slimming, arXiv 1708.06519).

``paddle.Model.train_batch`` runs forward, backward, the optimizer step and
``clear_gradients`` in one call, so a callback has no moment between backward and step
to add ``coeff * sign(gamma)`` to a gradient; under AMP such a tweak would also be
loss-scaled away. Instead every BatchNorm weight (gamma) gets a per-parameter
``paddle.regularizer.L1Decay(coeff)`` for the epochs in ``[start_epoch, end_epoch)``.
The optimizer applies it to the unscaled gradient at its step, with or without AMP.

Note:
    A per-parameter regularizer REPLACES the optimizer's global ``weight_decay`` for
    that parameter (``AdamW``'s decoupled decay still applies). While the callback is
    active, BatchNorm scales get L1 only, no L2; the previous ``regularizer`` of each
    scale is restored outside the active epochs and at the end of training.

Examples:
    >>> import paddle
    >>> from slim_callbacks.callbacks import BNScaleL1
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4),
    ...                            paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 2))
    >>> model = paddle.Model(net)
    >>> model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
    ...               paddle.nn.CrossEntropyLoss())
    >>> data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]),
    ...                                 paddle.randint(0, 2, [8, 1])])
    >>> model.fit(data, epochs=1, batch_size=4, verbose=0,
    ...           callbacks=[BNScaleL1(coeff=1e-4)])

Beside a ``PruneCallback`` (``callbacks=[PruneCallback(0.5, "slim"), BNScaleL1(1e-4)]``)
its epochs are global epochs of the pruning run (a resumed fit counts on) and, without
an ``end_epoch``, the penalty ends after the last pruning event (sparse scales serve
the events; after them they only cost accuracy).
"""
from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np
import paddle

from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.core.checks import check_epoch, check_number
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import is_batch_norm, unwrap

logger = logging.getLogger(__name__)


def bn_scales(network: paddle.nn.Layer) -> List[paddle.Tensor]:
    """The weight (gamma) of every BatchNorm layer that has one."""
    return [layer.weight for layer in unwrap(network).sublayers()
            if is_batch_norm(layer) and getattr(layer, "weight", None) is not None]


def abs_gammas(network: paddle.nn.Layer) -> Optional[np.ndarray]:
    """All BatchNorm |gamma| of ``network`` in one flat array (None without BN)."""
    values = [np.abs(p.numpy()).ravel() for p in bn_scales(network)]
    return np.concatenate(values) if values else None


def gamma_below_share(network: paddle.nn.Layer, threshold: float = 1e-2) -> float:
    """Share of all BatchNorm scales with |gamma| < ``threshold`` (0.0 without BN)."""
    gammas = abs_gammas(network)
    return 0.0 if gammas is None else float((gammas < threshold).mean())


class BNScaleL1(PruningAid):
    """L1 penalty ``coeff * |gamma|`` on every BatchNorm scale, for some epochs.

    Args:
        coeff: L1 coefficient, a number > 0 (Network Slimming uses 1e-4 to 1e-5).
        start_epoch: first epoch (0-based) with the penalty.
        end_epoch: first epoch without it again; ``None`` keeps it to the end of fit
            (beside a ``PruneCallback``: to its last event).

    Raises:
        ConfigError: at construction for a bad argument; in ``on_train_begin`` if
            ``start_epoch`` is not inside the fit (the penalty would never apply).
    """

    def __init__(self, coeff: float = 1e-4, start_epoch: int = 0, end_epoch: Optional[int] = None):
        super().__init__()
        self.coeff = check_number("coeff", coeff, 0.0, low_open=True, allowed="a number > 0")
        self.start_epoch = check_epoch("start_epoch", start_epoch)
        self.given_end_epoch = check_epoch("end_epoch", end_epoch, allow_none=True)
        if end_epoch is not None and self.given_end_epoch <= self.start_epoch:
            raise ConfigError("end_epoch", end_epoch, f"None or an epoch > start_epoch={start_epoch}")
        self._saved = {}
        self._active = False

    @property
    def end_epoch(self) -> Optional[int]:
        """First epoch without the penalty: the given one, else (beside a
        ``PruneCallback``) the one after its last event, else None (the end of fit)."""
        if self.given_end_epoch is not None or self.prune_callback is None:
            return self.given_end_epoch
        return self.prune_callback.schedule.last_epoch + 1

    def validate(self, epochs: Optional[int]) -> None:
        """Raises ConfigError if ``start_epoch`` lies beyond a fit of ``epochs`` epochs."""
        if epochs is not None and self.start_epoch >= self.epoch_offset + epochs:
            raise ConfigError("bn_l1 start_epoch", self.start_epoch,
                              f"an epoch < {self.epoch_offset + epochs} (the fit's last epoch + 1)")

    def active_at(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def on_train_begin(self, logs=None):
        self.validate(self.params.get("epochs"))
        params = bn_scales(self.model.network)
        if not params:
            logger.warning("BNScaleL1: the network has no BatchNorm scale to regularize")
        self._saved = {id(p): (p, p.regularizer) for p in params}

    def set_active(self, active: bool) -> None:
        """Sets (or restores) the per-parameter regularizer of every BN scale."""
        if active == self._active:
            return
        decay = paddle.regularizer.L1Decay(self.coeff)
        for param, previous in self._saved.values():
            param.regularizer = decay if active else previous
        self._active = active

    def on_epoch_begin(self, epoch, logs=None):
        self.set_active(self.active_at(epoch + self.epoch_offset))

    def on_train_end(self, logs=None):
        self.set_active(False)
