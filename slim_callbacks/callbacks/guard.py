"""FiniteLossGuard: stop ``fit`` at the first NaN/Inf training loss.

A diverged step leaves non-finite weights; raising in ``on_train_batch_end`` ends the fit
before ``ModelCheckpoint`` saves that epoch or ``final``, and before a runner writes its
summary. :class:`~slim_callbacks.callbacks.PruneCallback` runs one itself.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.errors import SlimError


class FiniteLossGuard(paddle.callbacks.Callback):
    """Raises :class:`SlimError` naming the (global) epoch and step of the first
    non-finite training loss."""

    def __init__(self):
        super().__init__()
        self.epoch_offset = 0  # set by PruneCallback when resuming
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + self.epoch_offset

    def on_train_batch_end(self, step, logs=None):
        losses = (logs or {}).get("loss")
        if losses is None:
            return
        parts = losses if isinstance(losses, (list, tuple)) else [losses]
        values = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in parts])
        if not np.all(np.isfinite(values)):
            raise SlimError(f"the training loss is {values.tolist()} at epoch {self.epoch}, "
                            f"step {step}: training stopped before saving this epoch (check "
                            f"the data for NaN/Inf or lower train.lr; earlier checkpoints "
                            f"are intact)")
