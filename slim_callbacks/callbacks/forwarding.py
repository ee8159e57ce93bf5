"""Child callbacks: one callback that runs others, passing them every hook.

A :class:`ForwardingCallback` subclass writes its hooks as a plain
``paddle.callbacks.Callback`` would, doing only its own work (without calling
``super()``). Every hook of :data:`HOOKS` - its own or not - is passed to the children
in order: those of :meth:`~ForwardingCallback.leading_callbacks` before the
subclass's own work, those of :meth:`~ForwardingCallback.trailing_callbacks` after
it, each with the same arguments, so a child sees exactly what it would see if it
were passed to ``fit`` itself, right beside its parent. Hooks other than the per-batch
ones run inside :func:`~slim_callbacks.core.quiet.quiet_paddle`: Paddle's known
repeated warnings raised by the callbacks' own work (tracing, pruning, recalibrating)
are not shown; the user's training steps run outside it.

Examples:
    >>> import paddle
    >>> class Record(paddle.callbacks.Callback):
    ...     def __init__(self, seen):
    ...         super().__init__()
    ...         self.seen = seen
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         self.seen.append(("child", epoch))
    >>> class Parent(ForwardingCallback):
    ...     def __init__(self, seen):
    ...         super().__init__()
    ...         self.seen, self.child = seen, Record(seen)
    ...     def trailing_callbacks(self):
    ...         return [self.child]
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         self.seen.append(("parent", epoch))
    >>> seen = []
    >>> parent = Parent(seen)
    >>> parent.set_model("a model")
    >>> parent.on_epoch_end(3)
    >>> seen, parent.child.model
    ([('parent', 3), ('child', 3)], 'a model')
"""
from __future__ import annotations

import contextlib
import functools
from typing import Sequence

import paddle

from slim_callbacks.core.quiet import quiet_paddle

#: Every hook of ``paddle.callbacks.Callback`` that ``fit``/``evaluate``/``predict`` call.
HOOKS = ("set_params", "set_model",
         "on_train_begin", "on_train_end", "on_eval_begin", "on_eval_end",
         "on_predict_begin", "on_predict_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_eval_batch_begin",
         "on_eval_batch_end", "on_predict_batch_begin", "on_predict_batch_end")


def _forwarding(name: str, own):
    """``name`` as: leading children, ``own``, trailing children (in
    :func:`quiet_paddle` unless a per-batch hook: leaving it makes Python forget which
    warnings it showed once, so doing that every step would repeat them)."""
    quiet = quiet_paddle if "_batch_" not in name else contextlib.nullcontext

    @functools.wraps(own)
    def hook(self, *args, **kwargs):
        with quiet():
            for child in self.leading_callbacks():
                getattr(child, name)(*args, **kwargs)
            result = own(self, *args, **kwargs)
            for child in self.trailing_callbacks():
                getattr(child, name)(*args, **kwargs)
        return result
    hook._forwards = True
    return hook


class ForwardingCallback(paddle.callbacks.Callback):
    """A callback that passes every hook (:data:`HOOKS`) to child callbacks.

    Subclasses override :meth:`leading_callbacks` / :meth:`trailing_callbacks`, and any
    hook with their own work only: the class wraps it so that the children get the hook
    too (calling ``super()`` from a hook would pass it to them twice).
    """

    def leading_callbacks(self) -> Sequence[paddle.callbacks.Callback]:
        """Children whose hooks run before this callback's own (in order)."""
        return ()

    def trailing_callbacks(self) -> Sequence[paddle.callbacks.Callback]:
        """Children whose hooks run after this callback's own (in order)."""
        return ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in HOOKS:
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_forwards", False):
                setattr(cls, name, _forwarding(name, own))


for _name in HOOKS:
    setattr(ForwardingCallback, _name, _forwarding(_name, getattr(paddle.callbacks.Callback, _name)))
del _name
