"""VisualDLLogger: training, model-size and pruning curves for VisualDL dashboards.

Tags (steps are global train steps for ``train/*``, epochs for everything else):

==========================  =============================================================
``train/loss``              train loss, every ``log_freq`` steps
``train/<metric>``          each train metric (``train/acc``), every ``log_freq`` steps
``eval/loss``               eval loss, once per evaluation (step = epoch)
``eval/<metric>``           each eval metric, once per evaluation (step = epoch)
``model/gflops``            GFLOPs per sample, 2 x multiply-adds of Conv2D and Linear
``model/gflops_legacy``     PaddleSlim's legacy GFLOPs (the seed table's "1.11 G")
``model/params``            parameters + buffers (BN statistics included)
``model/size_mb``           float32 size of the state dict, MB
``pruning/planned_ratio``   mean scheduled target ratio in force (needs ``pruner``)
``pruning/achieved_ratio``  share of the targeted groups' original channels gone
``widths/<layer>``          output channels of every pruned producer layer
``bn/gamma``                histogram of all BatchNorm |gamma| (one per epoch)
``bn/gamma_below_1e-2``     share of BatchNorm |gamma| < 1e-2
==========================  =============================================================

Only rank 0 writes (``paddle.distributed.get_rank()``); the ``visualdl.LogWriter`` is
opened lazily at the first record and closed in ``on_train_end``.

Layout: VisualDL (2.5.3) shows one record file per directory, the newest, and names a
run after its directory. So every writer gets a directory of its own below ``log_dir``
(:func:`new_session_dir`): a fit writes ``<log_dir>/train``, a resumed fit (or a second
fit) ``train-2``, ``train-3``..., and a recipe run's end-of-run latency ``latency``;
VisualDL shows each as a run, and the same tag of all of them shares one chart.

Beside a :class:`PruneCallback` it finds that callback itself and logs its pruning
curves; place it AFTER the :class:`PruneCallback` in ``callbacks`` so an epoch's model
scalars are taken after that epoch's pruning.

Examples:
    >>> import paddle
    >>> from slim_callbacks.callbacks import VisualDLLogger
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4),
    ...                            paddle.nn.Flatten(), paddle.nn.Linear(4 * 6 * 6, 2))
    >>> model = paddle.Model(net)
    >>> model.prepare(paddle.optimizer.Adam(parameters=net.parameters()),
    ...               paddle.nn.CrossEntropyLoss())
    >>> data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]),
    ...                                 paddle.randint(0, 2, [8, 1])])
    >>> model.fit(data, epochs=1, batch_size=4, verbose=0, callbacks=[
    ...     VisualDLLogger("/tmp/vdl_example", log_freq=1, input_shape=[1, 3, 8, 8])])
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Sequence

import numpy as np

from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.callbacks.bn_l1 import abs_gammas
from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.example_inputs import given_inputs
from slim_callbacks.core.paddle_utils import is_rank0, model_example_inputs, unwrap
from slim_callbacks.tracing.kinds import kind_of

logger = logging.getLogger(__name__)

#: Every tag the logger writes (``<metric>`` and ``<layer>`` are filled in).
TAGS = ("train/loss", "train/<metric>", "eval/loss", "eval/<metric>", "model/gflops",
        "model/gflops_legacy", "model/params", "model/size_mb", "pruning/planned_ratio",
        "pruning/achieved_ratio", "widths/<layer>", "bn/gamma", "bn/gamma_below_1e-2")


def scalar(value) -> Optional[float]:
    """A float from a Paddle log value (number, 1-element list/array), or None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(array.ravel()[0]) if array.size else None


def new_session_dir(log_dir: str, name: str) -> str:
    """Creates and returns ``<log_dir>/<name>``, or ``<name>-2``, ``<name>-3``... if taken:
    the directory of one writer's records (VisualDL shows only the newest record file of
    a directory, so writers never share one).

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> [os.path.basename(new_session_dir(root, "train")) for _ in range(3)]
    ['train', 'train-2', 'train-3']
    """
    os.makedirs(log_dir, exist_ok=True)
    n = 1
    while True:
        path = os.path.join(log_dir, name if n == 1 else f"{name}-{n}")
        try:
            os.mkdir(path)  # atomic: two writers never get the same directory
            return path
        except FileExistsError:
            n += 1


class VisualDLLogger(PruningAid):
    """Writes train/eval scalars, model size and pruning progress to VisualDL.

    Args:
        log_dir: VisualDL log directory; this logger's records go to a new
            subdirectory, ``train`` (``train-2``... for later fits or sessions).
        log_freq: global train steps between train scalars.
        input_shape: example input (batch first) for the GFLOPs scalars; defaults to
            the pruner's example inputs, then to the model's InputSpecs; without them,
            ``model/gflops*`` are skipped. ``example_inputs``: inputs of any structure
            instead (see :class:`~slim_callbacks.Pruner`).
        pruner: the :class:`PruneCallback` whose ratios and pruned layers are logged
            (read from its ``pruning_state``, a
            :class:`~slim_callbacks.pruning.state.PruningState`); default: the
            PruneCallback of the same fit, if any.
        bn_histograms: write ``bn/gamma`` histograms.
    """

    def __init__(self, log_dir: str, log_freq: int = 10, input_shape: Optional[Sequence[int]] = None,
                 pruner=None, bn_histograms: bool = True, *, example_inputs=None):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ConfigError("log_dir", log_dir, "a directory path")
        self.log_dir, self.log_freq = log_dir, check_int("log_freq", log_freq, 1)
        self.input_shape = (None if input_shape is None and example_inputs is None
                            else given_inputs(example_inputs, input_shape))
        self.prune_callback, self.bn_histograms = pruner, bn_histograms
        self._writer = None
        self._step = 0
        self._epoch = 0
        self._profiled = ("", {})  # (structure fingerprint, its profile)

    pruner = property(lambda self: self.prune_callback)

    def attach(self, prune_callback) -> None:
        if self.prune_callback is None:
            super().attach(prune_callback)

    # -- writer ------------------------------------------------------------------
    @staticmethod
    def is_writer() -> bool:
        return is_rank0()

    @property
    def writer(self):
        if self._writer is None:
            from visualdl import LogWriter
            self._writer = LogWriter(logdir=new_session_dir(self.log_dir, "train"))
        return self._writer

    def _add(self, tag: str, step: int, value) -> None:
        value = scalar(value)
        if value is not None and np.isfinite(value):
            self.writer.add_scalar(tag=tag, step=int(step), value=value)

    # -- hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        # a resumed fit continues the step axis where the interrupted one stopped
        self._step = self._offset() * (self.params.get("steps") or 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + self._offset()

    def _offset(self) -> int:
        return self.epoch_offset

    def on_train_batch_end(self, step, logs=None):
        self._step += 1
        if not self.is_writer() or self._step % self.log_freq or not logs:
            return
        for key in ["loss"] + [m for m in self.params.get("metrics", []) if m != "loss"]:
            if key in logs:
                self._add(f"train/{key}", self._step, logs[key])

    def on_eval_end(self, logs=None):
        if not self.is_writer() or not logs:
            return
        for key, value in logs.items():
            if key in ("batch_size", "steps", "step"):  # Paddle's counters, not metrics
                continue
            self._add(f"eval/{key}", self._epoch, value)

    def on_epoch_end(self, epoch, logs=None):
        if not self.is_writer():
            return
        self.log_model(epoch + self._offset())

    def log_model(self, epoch: int) -> None:
        """Writes the per-epoch model, pruning and BatchNorm records for ``epoch``."""
        net = unwrap(self.model.network)
        state = None if self.pruner is None else self.pruner.pruning_state
        shape = self.input_shape or getattr(state, "example_inputs", None) or self._spec_shape()
        from slim_callbacks.analysis import flops
        if shape is not None:
            stats = self._profile(net, shape)
            self._add("model/gflops", epoch, stats["gflops"])
            self._add("model/gflops_legacy", epoch, stats["gflops_legacy"])
            self._add("model/params", epoch, stats["params"])
            self._add("model/size_mb", epoch, stats["size_mb"])
        else:
            params = flops.count_params(net)
            self._add("model/params", epoch, params)
            self._add("model/size_mb", epoch, flops.model_size_mb(net))
        if state is not None and state.targeted_groups:
            self._add("pruning/planned_ratio", epoch, state.planned_ratio(epoch))
            self._add("pruning/achieved_ratio", epoch, state.achieved_ratio)
            layers = dict(net.named_sublayers())
            for name in state.pruned_layers:
                kind = kind_of(layers[name]) if name in layers else None
                if kind is not None and kind.width is not None:
                    self._add(f"widths/{name}", epoch, kind.width(layers[name]))
        allg = abs_gammas(net)
        if allg is not None:
            self._add("bn/gamma_below_1e-2", epoch, float((allg < 1e-2).mean()))
            if self.bn_histograms:
                self.writer.add_histogram(tag="bn/gamma", values=allg, step=int(epoch), buckets=30)

    def _profile(self, net, shape) -> dict:
        """The FLOPs profile, counted again only when the structure changed."""
        from slim_callbacks.analysis import flops
        from slim_callbacks.latency.model import fingerprint
        key = fingerprint(net, shape)
        if self._profiled[0] != key:
            self._profiled = (key, flops.profile(net, shape))
        return self._profiled[1]

    def pruned_layers(self) -> List[str]:
        """Producer layers of the groups the pruner targets."""
        return [] if self.pruner is None else list(self.pruner.pruning_state.pruned_layers)

    def _spec_shape(self):
        return model_example_inputs(self.model)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
