"""FiniteLossGuard: stop ``fit`` at the first NaN/Inf training loss or weight.

A diverged step leaves non-finite weights, and not always a non-finite loss (a ReLU
after a NaN BatchNorm output gives 0). So the guard checks the loss after every batch
and every parameter and buffer at each epoch end; raising there ends the fit before
``ModelCheckpoint`` saves that epoch or ``final``, and before a runner writes its
summary. :class:`~slim_callbacks.callbacks.PruneCallback` runs one itself.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import unwrap

ADVICE = ("training stopped before saving this epoch; earlier checkpoints are intact "
          "(check the data for NaN/Inf or lower the learning rate)")


class FiniteLossGuard(paddle.callbacks.Callback):
    """Raises :class:`SlimError` at the first non-finite training loss (naming the
    global epoch and step) or weight at an epoch end (naming the parameter)."""

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
                            f"step {step}: {ADVICE}")

    def on_epoch_end(self, epoch, logs=None):
        for name, tensor in unwrap(self.model.network).state_dict().items():
            if not is_finite(tensor):
                raise SlimError(f"{name} holds NaN/Inf after epoch {self.epoch}: {ADVICE}")


def is_finite(tensor) -> bool:
    """No NaN/Inf in ``tensor``: in numpy for a float32/float64 tensor on the CPU (several
    times faster than Paddle's ops on small tensors), else with Paddle's ops.

    >>> is_finite(paddle.to_tensor([1.0, 2.0])), is_finite(paddle.to_tensor([1.0, float("nan")]))
    (True, False)
    """
    if tensor.place.is_cpu_place() and tensor.dtype in (paddle.float32, paddle.float64):
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(paddle.isfinite(tensor).all())
