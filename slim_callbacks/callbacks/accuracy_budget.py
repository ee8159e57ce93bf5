"""AccuracyBudget: a PruneCallback's events run under an accuracy budget.

Put ``AccuracyBudget(max_metric_drop)`` beside a ``PruneCallback`` (or switch it on with
``PruningSpec(aids={"max_metric_drop": ...})``). The ``PruneCallback`` then hands its
events to the budget: at each epoch's end the budget decides what to prune
(:meth:`MetricBudget.attempt <slim_callbacks.callbacks.budget.MetricBudget.attempt>`: a
pending retry, the schedule's event, or the targets in force when behind), prunes it
undoably (:meth:`Pruner.prune_to <slim_callbacks.pruning.Pruner.prune_to>`), and at the
eval judges it: kept, or undone (:meth:`Pruner.undo <slim_callbacks.pruning.Pruner.undo>`,
DataParallel rebuilt, checkpoints saved in between saved again) with a retry at half
the step. The rules themselves are :class:`~slim_callbacks.callbacks.budget.MetricBudget`'s;
its state goes into every checkpoint's ledger, and a resumed run loads it.

Examples:
    >>> budget = AccuracyBudget(0.02, metric="acc")
    >>> budget.max_drop, budget.min_step, budget.prune_callback is None
    (0.02, 0.02, True)
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional

from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.callbacks.budget import MetricBudget
from slim_callbacks.callbacks.paddle_hooks import rebuild_reducer
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import fit_evaluates, is_rank0
from slim_callbacks.pruning.aids import MIN_STEP
from slim_callbacks.pruning.state import mean_targets

logger = logging.getLogger("slim_callbacks.callbacks.prune")


def in_force(targets: Mapping[int, Dict[str, float]], epoch: int) -> Optional[Dict[str, float]]:
    """The targets of the schedule's latest event at or before global ``epoch``."""
    past = [e for e in targets if e <= epoch]
    return targets[max(past)] if past else None


class AccuracyBudget(MetricBudget, PruningAid):
    """Undoes a pruning event whose eval fell more than ``max_metric_drop`` below the
    last accepted eval, and retries at half the step (see the module docstring).

    Args:
        max_metric_drop: the largest allowed worsening of the metric, in its units
            (0.02 = two points of top-1), > 0.
        metric: the eval log key; default the first eval metric that is not ``loss``.
        min_step: when half a refused step (a share of the original channels) is below
            this, pruning stops advancing.
        mode: ``max`` (higher is better), ``min``, or None (``min`` for ``loss`` and
            ``error`` names).

    Raises:
        ConfigError: a bad argument (at construction), or at train begin a metric the
            fit does not log.
        SlimError: at train begin, a fit without eval data or without a PruneCallback.
    """

    def __init__(self, max_metric_drop: float, metric: Optional[str] = None,
                 min_step: float = MIN_STEP, mode: Optional[str] = None):
        MetricBudget.__init__(self, max_metric_drop, metric, min_step, mode)
        PruningAid.__init__(self)
        self.pending: Optional[tuple] = None  # (epoch, targets) of an event awaiting its eval

    def on_train_begin(self, logs=None):
        if self.prune_callback is None:
            raise SlimError("AccuracyBudget judges pruning events: put a PruneCallback in "
                            "the same fit's callbacks")

    def check_fit(self, metrics=None, has_eval=None) -> None:
        """Before anything is pruned (the PruneCallback's train begin): the fit
        evaluates, and logs the metric."""
        self.on_train_begin()
        model = self.prune_callback.model
        MetricBudget.check_fit(self, self.params.get("metrics") if metrics is None else metrics,
                               fit_evaluates(model) if has_eval is None else has_eval)

    # -- driven by the PruneCallback -------------------------------------------------
    def epoch_end(self, epoch: int, scheduled: Optional[Dict[str, float]]) -> None:
        """Prunes, undoably, what the budget attempts at the end of global ``epoch``."""
        callback = self.prune_callback
        attempt = self.attempt(scheduled, in_force(callback.targets, epoch))
        if scheduled and self.stopped:
            logger.info("epoch %d: pruning event skipped (stopped by max_metric_drop)", epoch)
        if attempt:
            self.pending = (epoch, attempt)
            callback.prune_now(epoch, attempt, undoable=True)

    def unevaluated(self) -> None:
        """The last epoch had no eval: its event is kept unchecked, with a warning."""
        if self.pending is not None:
            logger.warning("epoch %d: the pruning event had no eval after it (eval_freq > 1?): "
                           "max_metric_drop did not check it", self.pending[0])
            self.keep(self.pending[1])
            self.prune_callback.pruner.drop_undo()
            self.pending = None

    def eval_end(self, logs) -> None:
        """Judges the pending event by this eval, or takes the eval as the reference."""
        if self.pending is None:
            self.observe(logs)
            return
        epoch, targets = self.pending
        self.pending = None
        before = self.reference
        if self.accepts(logs):
            self.keep(targets)
            self.prune_callback.pruner.drop_undo()
        else:
            self._undo(epoch, targets, before, self.value(logs))

    def _undo(self, epoch: int, targets: Mapping[str, float], before: float, after: float) -> None:
        callback = self.prune_callback
        callback.pruner.undo()
        rebuild_reducer(callback.model)
        retry = self.refuse(dict(targets))
        self.undone.append({"epoch": epoch, "metric": self.metric, "before": before,
                            "after": after, "target": mean_targets({0: targets})[0][1]})
        then = (f"retry at the next epoch with mean target {mean_targets({0: retry})[0][1]:.4f}"
                if retry else f"pruning stops at {len(callback.history)} events, mean target "
                              f"{self.reached():.4f}")
        logger.warning("epoch %d: pruning event undone: %s fell %.4f -> %.4f, more than "
                       "max_metric_drop=%g; %s", epoch, self.metric, before, after,
                       self.max_drop, then)
        callback.checkpoints.save_again(callback.model)  # saved between the event and its eval

    def summary(self) -> dict:
        """Which target the budget let the run reach: ``target`` and ``reached`` are mean
        shares of the original channels over the pruned groups; ``undone`` lists the
        refused events."""
        ratios = self.prune_callback.group_ratios
        return {"max_metric_drop": self.max_drop, "metric": self.metric,
                "target": sum(ratios.values()) / len(ratios) if ratios else 0.0,
                "reached": self.reached(), "stopped": self.stopped,
                "undone": list(self.undone)}

    def log_summary(self) -> None:
        """At train end: one line when events were undone (rank 0)."""
        summary = self.summary()
        if summary["undone"] and is_rank0():
            logger.info("max_metric_drop: reached mean target %.4f of %.4f (%d events undone%s)",
                        summary["reached"], summary["target"], len(summary["undone"]),
                        ", stopped" if summary["stopped"] else "")
