"""DistillCallback: knowledge distillation from a frozen teacher inside ``paddle.Model.fit``.

The training loss becomes ``(1 - alpha) * task_loss + alpha * kd_loss`` with
``kd_loss = T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al.
2015), averaged over the batch, on the network's first output.

How it gets the inputs: ``paddle.Model.train_batch`` calls the loss as
``loss(*(outputs + labels))`` - the loss never sees the inputs, and callbacks get
logs, not batches. So at train begin the callback registers a forward pre-hook on the
network and swaps ``model._loss`` for a wrapper:

- the hook runs only while a training batch is under way (armed in
  ``on_train_batch_begin``, disarmed in ``on_train_batch_end``): it runs the teacher
  on the same inputs, in eval mode under ``paddle.no_grad()``, and keeps its first
  output;
- the wrapper calls the user's loss, and adds the KD term only if the hook left a
  teacher output for this batch. Evaluation batches never arm the hook, so eval loss
  and metrics are the student's alone (metrics never see the wrapper at all).

Both are undone at train end (the user's loss is put back). The teacher's parameters
are not in the optimizer, so pruning events (which slice the optimizer state of the
student) never touch it, and the student may change shape under it at every event.

``teacher=None`` takes a deep copy of the network at train begin (before any pruning
event): the unpruned network teaches the pruned one. It costs one extra forward pass
per training step and one copy of the weights (see BENCHMARKS.md). Under data
parallel each rank holds its own teacher and distils its own shard; under AMP the
teacher runs inside the same ``auto_cast`` as the student and the KD term is
computed in float32.

Example:
    >>> import paddle
    >>> from slim_callbacks.callbacks import DistillCallback
    >>> _ = paddle.seed(0)
    >>> net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(12, 3))
    >>> model = paddle.Model(net)
    >>> model.prepare(paddle.optimizer.Adam(0.01, parameters=net.parameters()),
    ...               paddle.nn.CrossEntropyLoss())
    >>> data = paddle.io.TensorDataset([paddle.randn([8, 3, 2, 2]),
    ...                                 paddle.randint(0, 3, [8, 1])])
    >>> cb = DistillCallback(alpha=0.5, temperature=2.0)
    >>> model.fit(data, epochs=1, batch_size=4, verbose=0, callbacks=[cb])
    >>> cb.steps, model._loss is cb.task_loss
    (2, True)
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

import paddle
import paddle.nn.functional as F

from slim_callbacks.core.checks import check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import unwrap

logger = logging.getLogger(__name__)

#: The keyword arguments of :class:`DistillCallback` (``PruneCallback(distill={...})``).
OPTIONS = ("teacher", "alpha", "temperature")


def first_output(outputs) -> paddle.Tensor:
    """The first output of a network (its logits by convention)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def kd_loss(student_logits, teacher_logits, temperature: float = 4.0) -> paddle.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, summed over classes and
    averaged over the batch (computed in float32; the teacher gets no gradient).

    Example:
        >>> import paddle
        >>> s = paddle.to_tensor([[1.0, 2.0, 3.0]])
        >>> round(float(kd_loss(s, s, 2.0)), 6)
        0.0
        >>> float(kd_loss(s, paddle.to_tensor([[3.0, 2.0, 1.0]]), 1.0)) > 0
        True
    """
    t = float(temperature)
    student = student_logits.astype("float32") / t
    teacher = teacher_logits.detach().astype("float32") / t
    log_p_student = F.log_softmax(student, axis=-1)
    log_p_teacher = F.log_softmax(teacher, axis=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(axis=-1)
    return kl.mean() * (t * t)


def check_teacher(teacher) -> Optional[paddle.nn.Layer]:
    if teacher is None or isinstance(teacher, paddle.nn.Layer):
        return teacher
    if isinstance(teacher, paddle.Model):
        return teacher.network
    raise ConfigError("teacher", teacher, "None (a frozen copy of the network at train "
                                          "begin), a paddle.nn.Layer or a paddle.Model")


class DistilledLoss:
    """The user's loss plus ``alpha`` times the KD term of the pending teacher output."""

    def __init__(self, task_loss, owner: "DistillCallback"):
        self.task_loss, self.owner = task_loss, owner

    def __call__(self, *args):
        task = self.task_loss(*args)
        teacher = self.owner.take_teacher_output()
        if teacher is None:  # evaluation, or a forward outside a training batch
            return task
        kd = kd_loss(first_output(list(args)), teacher, self.owner.temperature)
        if isinstance(task, (list, tuple)):
            task = paddle.add_n(list(task))
        self.owner.last_terms = (task.detach(), kd.detach())
        self.owner.steps += 1
        alpha = self.owner.alpha
        return task * (1.0 - alpha) + kd.astype(task.dtype) * alpha


class DistillCallback(paddle.callbacks.Callback):
    """Distils a frozen teacher into the network during ``fit``.

    Args:
        teacher: ``None`` (a frozen deep copy of ``model.network`` taken at the
            first train begin and kept for later fits with this callback), or a
            ``paddle.nn.Layer`` / ``paddle.Model`` taking the same inputs and giving
            logits of the same shape as the student's first output.
        alpha: weight of the KD term in [0, 1]; 0 trains on the task loss only, 1 on
            the KD term only.
        temperature: softmax temperature ``T > 0`` (the KD term is scaled by ``T^2``).

    Attributes:
        teacher: the teacher network in use (after train begin).
        task_loss: the user's loss (``model._loss`` before the wrapping).
        steps: training steps that included the KD term.
        last_terms: ``(task loss, kd loss)`` of the last such step, as tensors.

    Raises:
        ConfigError: a bad argument (at construction).
        SlimError: at train begin, a model without a loss.
    """

    def __init__(self, teacher=None, alpha: float = 0.5, temperature: float = 4.0):
        super().__init__()
        self.given_teacher = check_teacher(teacher)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0,
                                  allowed="a number in [0, 1] (the weight of the KD term)")
        self.temperature = check_number("temperature", temperature, 0.0, low_open=True,
                                        allowed="a number > 0 (the softmax temperature)")
        self.teacher: Optional[paddle.nn.Layer] = None
        self.task_loss = None
        self.steps = 0
        self.last_terms = None
        self._armed = False
        self._pending = None
        self._handle = None

    @classmethod
    def from_option(cls, value, key: str = "distill") -> Optional["DistillCallback"]:
        """``PruneCallback(distill=...)``: None/False (off), True (defaults), a dict of
        the options or a DistillCallback."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            for name in value:
                if name not in OPTIONS:
                    raise ConfigError(f"{key}[{name!r}]", value[name],
                                      f"an option of DistillCallback: {', '.join(OPTIONS)}")
            return cls(**value)
        raise ConfigError(key, value, "None, True, a dict of teacher/alpha/temperature or a "
                                      "DistillCallback")

    # -- the teacher's forward -------------------------------------------------
    def _teacher_forward(self, layer, inputs):
        if not self._armed:
            return None
        with paddle.no_grad():
            self._pending = first_output(self.teacher(*inputs)).detach()
        return None

    def take_teacher_output(self):
        """The teacher output of the current training batch (once), or None."""
        pending, self._pending = self._pending, None
        return pending

    def _make_teacher(self) -> paddle.nn.Layer:
        if self.given_teacher is not None:
            teacher = self.given_teacher
        else:
            teacher = copy.deepcopy(unwrap(self.model.network))
            for param in teacher.parameters():
                param.stop_gradient = True
        teacher.eval()
        return teacher

    # -- callback hooks ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        if getattr(self.model, "_loss", None) is None:
            raise SlimError("DistillCallback needs a loss: call model.prepare(optimizer, loss) "
                            "(the KD term is added to it)")
        if self.teacher is None:
            self.teacher = self._make_teacher()
        self.task_loss = self.model._loss
        self.model._loss = DistilledLoss(self.task_loss, self)
        self._handle = unwrap(self.model.network).register_forward_pre_hook(self._teacher_forward)

    def on_train_batch_begin(self, step, logs=None):
        self._armed = self._handle is not None
        self._pending = None

    def on_train_batch_end(self, step, logs=None):
        self._armed = False
        self._pending = None

    def on_train_end(self, logs=None):
        self._armed = False
        self._pending = None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if isinstance(self.model._loss, DistilledLoss):
            self.model._loss = self.task_loss
