"""PruningAid: a callback that works beside a ``PruneCallback`` in the same ``fit``.

An aid (``DistillCallback``, ``BNRecalibration``, ``AccuracyBudget``, ``BNScaleL1``,
``VisualDLLogger``) is put in ``fit(callbacks=[...])`` next to a ``PruneCallback``, or
added by the ``PruneCallback`` itself when its spec switches the aid on. Either way it
finds the ``PruneCallback`` without being told: Paddle gives every callback of one fit
the same ``params`` dict (``set_params``) before any ``on_train_begin``, so the
``PruneCallback`` and its aids meet there, in any order of the list.

The ``PruneCallback`` then calls, on each attached aid:

- :meth:`PruningAid.pruning_started` at the end of its ``on_train_begin`` (the pruner is
  ready; a resumed run has replayed its ledger);
- :meth:`PruningAid.before_event` right before an event prunes;
- :meth:`PruningAid.after_event` right after an event that removed channels (the
  network and optimizer are pruned, DataParallel's buckets rebuilt), before its eval.

An aid reads the run through ``self.prune_callback`` (``pruner``, ``history``,
``pruning_state``, ``epoch_offset``, ``schedule``); it never changes the pruner except
through its API (the budget's ``undo``).

Examples:
    >>> aid = PruningAid()
    >>> params = {"epochs": 2}
    >>> aid.set_params(params)
    >>> params[AIDS] == [aid], aid.prune_callback is None
    (True, True)
"""
from __future__ import annotations

import paddle

#: The ``params`` key under which the aids of a fit list themselves.
AIDS = "slim_callbacks.aids"
#: The ``params`` key under which a fit's ``PruneCallback`` is found.
PRUNE_CALLBACK = "slim_callbacks.prune_callback"


def meet(params, aid=None, prune_callback=None) -> None:
    """Registers ``aid`` or ``prune_callback`` in a fit's shared ``params`` and attaches
    every aid of the fit to its ``PruneCallback`` once both are known."""
    if not isinstance(params, dict):
        return
    aids = params.setdefault(AIDS, [])
    if aid is not None and all(a is not aid for a in aids):
        aids.append(aid)
    if prune_callback is not None:
        params[PRUNE_CALLBACK] = prune_callback
    owner = params.get(PRUNE_CALLBACK)
    if owner is not None:
        for each in aids:
            owner.attach(each)


class PruningAid(paddle.callbacks.Callback):
    """Base of the callbacks that read a ``PruneCallback``'s pruner (module docstring).

    Attributes:
        prune_callback: the ``PruneCallback`` of the fit (None alone, or until
            ``set_params``).
    """

    prune_callback = None

    def set_params(self, params):
        self.params = params
        meet(params, aid=self)

    def attach(self, prune_callback) -> None:
        """Called by the ``PruneCallback`` this aid works for."""
        self.prune_callback = prune_callback

    def pruning_started(self, resumed: bool) -> None:
        """The pruner is ready (``resumed``: the run continues from a checkpoint)."""

    def before_event(self, epoch: int) -> None:
        """An event is about to prune at global ``epoch``."""

    def after_event(self, epoch: int, plan) -> None:
        """An event removed channels (``plan``) at global ``epoch``."""

    @property
    def epoch_offset(self) -> int:
        """Global epoch of this fit's epoch 0 (non-zero when the run was resumed)."""
        return 0 if self.prune_callback is None else self.prune_callback.epoch_offset

