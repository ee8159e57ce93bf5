"""DistillCallback: knowledge distillation from a frozen teacher inside ``paddle.Model.fit``.

The training loss becomes ``(1 - alpha) * task_loss + alpha * kd_loss`` with
``kd_loss = T^2 * KL(softmax(teacher / T) || softmax(student / T))`` (Hinton et al.
2015), averaged over the batch, on the network's first output.

How it gets the inputs: ``paddle.Model.train_batch`` calls the loss as
``loss(*(outputs + labels))`` - the loss never sees the inputs, and callbacks get
logs, not batches. So at train begin the callback registers a forward pre-hook on the
network and swaps ``model._loss`` for a wrapper:

- the hook runs once per training batch (armed in ``on_train_batch_begin``, disarmed
  when it runs): it runs the teacher on the same inputs, in eval mode under
  ``paddle.no_grad()``, and keeps its first output;
- the wrapper calls the user's loss, and adds the KD term only if the hook left a
  teacher output for this batch. Evaluation batches never arm the hook, so eval loss
  and metrics are the student's alone (metrics never see the wrapper at all).

Both are undone at train end (the user's loss is put back), and by the next train
begin of the callback if a fit raised before its end (Paddle calls no hook then).
Installing is idempotent: a callback passed twice to one fit adds the KD term once.
The teacher's parameters are not in the optimizer, so pruning events (which slice the
optimizer state of the student) never touch it.

Which teacher (checked before the first training step: a teacher that is the network
itself or shares parameters with it is refused at train begin; at the first training
batch, before the student's forward, the first outputs of teacher and student on that
batch must have the same shape):

- ``teacher=...``: that network, from the start;
- ``teacher=None`` beside a ``PruneCallback`` (in the same ``fit``, or switched on by
  its spec): a frozen copy of the network taken right before the FIRST pruning event,
  when it has trained for at least one epoch (a copy at train begin of a network trained
  from scratch has learned nothing and teaches noise). Until then the loss is the task
  loss alone. A run resumed after its first event takes the copy at train begin (of the
  resumed, pruned network);
- ``teacher=None`` on its own: a frozen copy at train begin. Meant for a network that
  is already trained (fine-tuning); training from scratch, pass a teacher.

It costs one extra forward pass per distilled training step and one copy of the
weights (see BENCHMARKS.md). Under data parallel each rank holds its own teacher and
distils its own shard; under AMP the teacher runs inside the same ``auto_cast`` as the
student and the KD term is computed in float32.

Examples:
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

import logging
from typing import Optional

import paddle
import paddle.nn.functional as F

from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import copy_without_hooks, modes_restored, unwrap
from slim_callbacks.pruning.aids import (  # noqa: F401 (check_temperature: the recipe's rule)
    DISTILL_OPTIONS,
    check_alpha,
    check_distill,
    check_teacher,
    check_temperature,
)

logger = logging.getLogger(__name__)

#: The keyword arguments of :class:`DistillCallback` (``TrainingAids.distill``).
OPTIONS = DISTILL_OPTIONS


def first_output(outputs) -> paddle.Tensor:
    """The first output of a network (its logits by convention)."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def kd_loss(student_logits, teacher_logits, temperature: float = 4.0) -> paddle.Tensor:
    """``T^2 * KL(softmax(t / T) || softmax(s / T))``, summed over classes and
    averaged over the batch (computed in float32; the teacher gets no gradient).

    Examples:
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


def check_separate(teacher: paddle.nn.Layer, student: paddle.nn.Layer) -> None:
    """The teacher must not be the student, nor share a parameter with it."""
    own = {id(p) for p in student.parameters()}
    if teacher is student or any(id(p) in own for p in teacher.parameters()):
        raise SlimError(f"distill teacher: the {type(teacher).__name__} given is the network "
                        f"being trained or shares parameters with it; expected a separate "
                        f"network (or teacher=None: a frozen copy of the network)")


def describe(outputs) -> str:
    """``shape [8, 10]``, or ``a tuple of 2 outputs, the first of shape [8, 10]``."""
    first = first_output(outputs)
    what = (f"shape {list(first.shape)}" if isinstance(first, paddle.Tensor)
            else f"a {type(first).__name__}, not a tensor")
    if isinstance(outputs, (list, tuple)):
        return f"a {type(outputs).__name__} of {len(outputs)} outputs, the first of {what}"
    return what


def check_outputs(student_outputs, teacher_outputs) -> None:
    """The KD term compares first outputs: they must be tensors of one shape."""
    student, teacher = first_output(student_outputs), first_output(teacher_outputs)
    if not (isinstance(student, paddle.Tensor) and isinstance(teacher, paddle.Tensor)
            and list(student.shape) == list(teacher.shape)):
        raise SlimError(f"distill teacher: its output is {describe(teacher_outputs)}, the "
                        f"student's {describe(student_outputs)}; expected a teacher whose "
                        f"first output has the student's shape (logits over the same classes)")


class DistilledLoss:
    """The user's loss plus ``alpha`` times the KD term of the pending teacher output."""

    def __init__(self, task_loss, owner: "DistillCallback"):
        self.task_loss, self.owner = task_loss, owner

    def __call__(self, *args):
        teacher = self.owner.take_teacher_output()
        task = self.task_loss(*args)
        if teacher is None:  # evaluation, or a forward outside a training batch
            return task
        kd = kd_loss(first_output(list(args)), teacher, self.owner.temperature)
        if isinstance(task, (list, tuple)):
            task = paddle.add_n(list(task))
        self.owner.last_terms = (task.detach(), kd.detach())
        self.owner.steps += 1
        alpha = self.owner.alpha
        return task * (1.0 - alpha) + kd.astype(task.dtype) * alpha


def _one_line(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


class DistillCallback(PruningAid):
    """Distils a frozen teacher into the network during ``fit``.

    Args:
        teacher: ``None`` (a frozen copy of ``model.network``, taken at train begin,
            or right before the first pruning event under ``PruneCallback``; kept for
            later fits with this callback), or a ``paddle.nn.Layer`` /
            ``paddle.Model`` taking the same inputs and giving a first output of the
            shape of the student's.
        alpha: weight of the KD term in [0, 1]; 0 trains on the task loss only, 1 on
            the KD term only.
        temperature: softmax temperature ``T`` in [0.1, 100] (the KD term is scaled
            by ``T^2``).

    Attributes:
        teacher: the teacher network in use (None until it is taken).
        at_first_event: the default teacher waits for the first pruning event (set
            when a ``PruneCallback`` of the fit attaches the callback).
        task_loss: the user's loss (``model._loss`` before the wrapping).
        steps: training steps that included the KD term.
        last_terms: ``(task loss, kd loss)`` of the last such step, as tensors.

    Raises:
        ConfigError: a bad argument (at construction).
        SlimError: at train begin, a model without a loss, or a teacher that is the
            network itself or shares its parameters; at the first training batch
            (before the student's forward), a teacher that does not run on the
            student's inputs or whose first output has another shape.
    """

    def __init__(self, teacher=None, alpha: float = 0.5, temperature: float = 4.0):
        super().__init__()
        self.given_teacher = check_teacher(teacher)
        self.alpha = check_alpha("alpha", alpha)
        self.temperature = check_temperature("temperature", temperature)
        self.at_first_event = False
        self.teacher: Optional[paddle.nn.Layer] = None
        self.task_loss = None
        self.steps = 0
        self.last_terms = None
        self._armed = False
        self._checked = False
        self._pending = None
        self._handle = None
        self._wrapped = None  # (model, DistilledLoss) while installed

    @classmethod
    def from_option(cls, value, key: str = "distill") -> Optional["DistillCallback"]:
        """The callback of a ``distill`` option: None/False (off), True (defaults), a dict
        of its options (:func:`~slim_callbacks.pruning.aids.check_distill`) or a
        DistillCallback."""
        if value is None or value is False or isinstance(value, cls):
            return value or None
        if value is not True and not isinstance(value, dict):
            raise ConfigError(key, value, "None, True, a dict of teacher/alpha/temperature "
                                          "or a DistillCallback")
        return cls(**check_distill(value, key))

    # -- beside a PruneCallback ---------------------------------------------------
    def attach(self, prune_callback) -> None:
        """The default teacher waits for the first event of ``prune_callback``."""
        super().attach(prune_callback)
        self.at_first_event = True

    def before_event(self, epoch: int) -> None:
        self.take_teacher()  # the default teacher: the network before its first event

    def pruning_started(self, resumed: bool) -> None:
        """A run resumed after its first event: the default teacher is the resumed
        network (with a warning), taken now."""
        if not (resumed and self.prune_callback.history):
            return
        if self.given_teacher is None and self.teacher is None:
            logger.warning("distill: resuming after a pruning event, so the teacher is a copy "
                           "of the resumed (already pruned) network, not the unpruned one; "
                           "pass DistillCallback(teacher=...) to keep the original teacher")
        self.take_teacher()

    # -- the teacher -------------------------------------------------------------
    def take_teacher(self) -> None:
        """Takes the teacher now, unless there is one: the given network, or a frozen
        copy of the network as it is (eval mode, no gradient)."""
        if self.teacher is not None:
            return
        teacher = self.given_teacher
        if teacher is None:
            teacher = copy_without_hooks(unwrap(self.model.network))
            for param in teacher.parameters():
                param.stop_gradient = True
            logger.debug("distill: the teacher is a copy of the network as it is now")
        teacher.eval()
        self.teacher = teacher

    def _teacher_forward(self, layer, inputs):
        if not self._armed or self.teacher is None:
            return None
        self._armed = False  # once per training batch
        with paddle.no_grad():
            outputs = self.teacher(*inputs) if self._checked else self._first_batch(layer, inputs)
        self._pending = first_output(outputs).detach()
        return None

    def _first_batch(self, layer, inputs):
        """The teacher's outputs on the first training batch, checked against the
        student's (run in eval mode, so no statistic moves) before the student's own
        forward; a bad teacher is refused with the callback detached."""
        try:
            try:
                outputs = self.teacher(*inputs)
            except Exception as err:
                raise SlimError(f"distill teacher: it does not run on the student's inputs "
                                f"({_one_line(err)}); expected a network taking the "
                                f"student's inputs") from err
            with modes_restored(layer, training=False):
                check_outputs(layer.forward(*inputs), outputs)
        except SlimError:
            self.detach()
            raise
        self._checked = True
        return outputs

    def take_teacher_output(self):
        """The teacher output of the current training batch (once), or None."""
        pending, self._pending = self._pending, None
        return pending

    # -- installing --------------------------------------------------------------
    def _install(self) -> None:
        self.detach()  # idempotent: passed twice, or left over by a fit that raised
        self.task_loss = self.model._loss
        wrapper = DistilledLoss(self.task_loss, self)
        self.model._loss, self._wrapped = wrapper, (self.model, wrapper)
        self._handle = unwrap(self.model.network).register_forward_pre_hook(self._teacher_forward)
        self._checked = self.given_teacher is None  # a copy has the student's outputs

    def detach(self) -> None:
        """Puts the user's loss back and removes the hook (at train end; call it after
        a fit that raised, if the callback is not used again)."""
        self._armed, self._pending = False, None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._wrapped is not None:
            model, wrapper = self._wrapped
            if model._loss is wrapper:
                model._loss = wrapper.task_loss
            self._wrapped = None

    # -- callback hooks ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        if getattr(self.model, "_loss", None) is None:
            raise SlimError("DistillCallback needs a loss: call model.prepare(optimizer, loss) "
                            "(the KD term is added to it)")
        if self.given_teacher is not None:
            check_separate(self.given_teacher, unwrap(self.model.network))
        if self.given_teacher is not None or not self.at_first_event:
            self.take_teacher()
        self._install()

    def on_train_batch_begin(self, step, logs=None):
        self._armed = self._handle is not None
        self._pending = None

    def on_train_batch_end(self, step, logs=None):
        self._armed = False
        self._pending = None

    def on_train_end(self, logs=None):
        self.detach()
