"""BatchNorm recalibration: re-estimate running statistics of a (pruned) network.

After channels are removed, every BatchNorm downstream of a pruned layer sees inputs
with other statistics than its running mean/variance were estimated on; evaluating
with those stale statistics understates the pruned network (adaptive-BN evaluation,
EagleEye arXiv 2007.02491). :func:`recalibrate_bn` re-estimates them:

- every BatchNorm runs in train mode, every other layer in eval mode (dropout off),
  under ``paddle.no_grad()``: no gradient, no optimizer step, no parameter changes;
- the running mean/variance of each BatchNorm become the cumulative average of the
  per-batch mean and (biased, as Paddle's kernel computes it) variance over the
  batches given - not a momentum-decayed average: batch ``k`` is mixed in with
  momentum ``(k - 1) / k``, so batch 1 replaces the old statistics entirely;
- train/eval flags and every BatchNorm's momentum are put back afterwards.

:class:`InputRecorder` keeps the last ``N`` inputs a network was called with, as
detached copies, through a forward pre-hook that records only while it is armed (the
callbacks arm it for training batches only, so traces, FLOPs counts and evaluations
are never recorded).

Examples:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4))
    >>> batches = [paddle.full([2, 3, 5, 5], 1.0), paddle.full([2, 3, 5, 5], 3.0)]
    >>> recalibrate_bn(net, batches)
    2
    >>> bn = net[1]
    >>> import numpy as np
    >>> means = [float(net[0](b).mean()) for b in batches]   # conv output per batch
    >>> bool(np.allclose(bn._mean.numpy().mean(), np.mean(means), atol=1e-5))
    True
"""
from __future__ import annotations

import collections
import contextlib
from typing import Iterable, Iterator, List, Sequence

import paddle

from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import is_batch_norm, modes_restored, unwrap
from slim_callbacks.core.quiet import quiet_paddle

#: The most batches recalibration keeps (each one in memory, as a copy): the
#: statistics of a few thousand images are settled (adaptive BN uses ~50 batches).
MAX_BATCHES = 128


def check_recalibrate_bn(value, key: str = "recalibrate_bn") -> int:
    """Number of batches to recalibrate on: an int in [0, :data:`MAX_BATCHES`] (0 = off)."""
    allowed = (f"an int in [0, {MAX_BATCHES}] (training batches, each kept in memory, to "
               f"re-estimate BatchNorm statistics on; 0 turns it off)")
    return check_int(key, value, 0, allowed, maximum=MAX_BATCHES)


def batch_norms(network: paddle.nn.Layer) -> List[paddle.nn.Layer]:
    """Every BatchNorm layer of ``network`` that tracks running statistics."""
    return [layer for layer in unwrap(network).sublayers()
            if is_batch_norm(layer) and getattr(layer, "_mean", None) is not None]


def as_inputs(batch) -> tuple:
    """The network inputs of one batch: a tensor, or a tuple/list of tensors."""
    if isinstance(batch, (list, tuple)):
        return tuple(batch)
    return (batch,)


@contextlib.contextmanager
def _momenta_restored(layers: Sequence[paddle.nn.Layer]) -> Iterator[None]:
    saved = [(layer, layer._momentum) for layer in layers]
    try:
        yield
    finally:
        for layer, momentum in saved:
            layer._momentum = momentum


def recalibrate_bn(network: paddle.nn.Layer, batches: Iterable) -> int:
    """Re-estimates the running mean/variance of every BatchNorm on ``batches``.

    Args:
        network: a ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        batches: network inputs, one item per batch: a tensor, or a tuple of the
            network's positional inputs (labels are not wanted here).

    Returns:
        The number of batches used (0 leaves every statistic as it was).

    Raises:
        SlimError: a batch the network cannot run (statistics then are partial;
            nothing else changed).
    """
    layer = unwrap(network)
    norms = batch_norms(layer)
    count = 0
    with modes_restored(layer, training=False), _momenta_restored(norms), \
            quiet_paddle(), paddle.no_grad():
        for norm in norms:
            norm.training = True
        for batch in batches:
            count += 1
            for norm in norms:
                norm._momentum = (count - 1) / count
            try:
                layer(*as_inputs(batch))
            except Exception as err:
                raise SlimError(f"recalibrate_bn: batch {count} does not run through the "
                                f"network ({type(err).__name__}: {err})") from err
    return count


class InputRecorder:
    """Keeps detached copies of the last ``size`` inputs ``network`` was called with
    (the first ``size`` with ``first=True``).

    Records only while :attr:`armed` is True; :meth:`remove` takes the hook off.

    Examples:
        >>> import paddle
        >>> net = paddle.nn.Linear(2, 1)
        >>> rec = InputRecorder(net, size=2)
        >>> rec.armed = True
        >>> for i in range(3):
        ...     _ = net(paddle.full([1, 2], float(i)))
        >>> [float(b[0][0, 0]) for b in rec.batches]
        [1.0, 2.0]
        >>> rec.remove()
    """

    def __init__(self, network: paddle.nn.Layer, size: int, first: bool = False):
        self.size = check_int("size", size, 1)
        self.first = bool(first)
        self.batches: collections.deque = collections.deque(maxlen=self.size)
        self.armed = False
        self._handle = unwrap(network).register_forward_pre_hook(self._record)

    def _record(self, layer, inputs):
        if self.armed and not (self.first and len(self.batches) == self.size):
            self.batches.append(tuple(x.detach().clone() if isinstance(x, paddle.Tensor) else x
                                      for x in inputs))

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
