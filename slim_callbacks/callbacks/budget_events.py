"""A PruneCallback's events run under its accuracy budget.

:class:`BudgetedEvents` decides at each epoch's end what to prune
(:meth:`MetricBudget.attempt <slim_callbacks.callbacks.budget.MetricBudget.attempt>`:
a pending retry, the schedule's event, or the targets in force when behind), prunes it
undoably (:meth:`Pruner.prune_to <slim_callbacks.pruning.Pruner.prune_to>`), and at the
eval judges it: kept, or undone (:meth:`Pruner.undo <slim_callbacks.pruning.Pruner.undo>`,
DataParallel rebuilt, checkpoints saved in between saved again) with a retry at half
the step. The rules themselves are :class:`~slim_callbacks.callbacks.budget.MetricBudget`'s.
"""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional

from slim_callbacks.callbacks.paddle_hooks import rebuild_reducer
from slim_callbacks.pruning.state import mean_targets

logger = logging.getLogger("slim_callbacks.callbacks.prune")


def in_force(targets: Mapping[int, Dict[str, float]], epoch: int) -> Optional[Dict[str, float]]:
    """The targets of the schedule's latest event at or before global ``epoch``."""
    past = [e for e in targets if e <= epoch]
    return targets[max(past)] if past else None


class BudgetedEvents:
    """The events of ``callback`` (a :class:`~slim_callbacks.PruneCallback` with a
    ``budget``), attempted at epoch ends and judged at evals."""

    def __init__(self, callback):
        self.callback = callback
        self.pending: Optional[tuple] = None  # (epoch, targets) of an event awaiting its eval

    @property
    def budget(self):
        return self.callback.budget

    def epoch_end(self, epoch: int, scheduled: Optional[Dict[str, float]]) -> None:
        """Prunes, undoably, what the budget attempts at the end of global ``epoch``."""
        attempt = self.budget.attempt(scheduled, in_force(self.callback.targets, epoch))
        if scheduled and self.budget.stopped:
            logger.info("epoch %d: pruning event skipped (stopped by max_metric_drop)", epoch)
        if attempt:
            self.pending = (epoch, attempt)
            self.callback.prune_now(epoch, attempt, undoable=True)

    def unevaluated(self) -> None:
        """The last epoch had no eval: its event is kept unchecked, with a warning."""
        if self.pending is not None:
            logger.warning("epoch %d: the pruning event had no eval after it (eval_freq > 1?): "
                           "max_metric_drop did not check it", self.pending[0])
            self.budget.keep(self.pending[1])
            self.callback.pruner.drop_undo()
            self.pending = None

    def eval_end(self, logs) -> None:
        """Judges the pending event by this eval, or takes the eval as the reference."""
        if self.pending is None:
            self.budget.observe(logs)
            return
        epoch, targets = self.pending
        self.pending = None
        before = self.budget.reference
        if self.budget.accepts(logs):
            self.budget.keep(targets)
            self.callback.pruner.drop_undo()
        else:
            self._undo(epoch, targets, before, self.budget.value(logs))

    def _undo(self, epoch: int, targets: Mapping[str, float], before: float, after: float) -> None:
        callback, budget = self.callback, self.budget
        callback.pruner.undo()
        rebuild_reducer(callback.model)
        retry = budget.refuse(dict(targets))
        budget.undone.append({"epoch": epoch, "metric": budget.metric, "before": before,
                              "after": after, "target": mean_targets({0: targets})[0][1]})
        then = (f"retry at the next epoch with mean target {mean_targets({0: retry})[0][1]:.4f}"
                if retry else f"pruning stops at {len(callback.history)} events, mean target "
                              f"{budget.reached():.4f}")
        logger.warning("epoch %d: pruning event undone: %s fell %.4f -> %.4f, more than "
                       "max_metric_drop=%g; %s", epoch, budget.metric, before, after,
                       budget.max_drop, then)
        callback.checkpoints.save_again(callback.model)  # saved between the event and its eval

    def summary(self) -> dict:
        """Which target the budget let the run reach: ``target`` and ``reached`` are mean
        shares of the original channels over the pruned groups; ``undone`` lists the
        refused events."""
        ratios = self.callback.group_ratios
        return {"max_metric_drop": self.budget.max_drop, "metric": self.budget.metric,
                "target": sum(ratios.values()) / len(ratios) if ratios else 0.0,
                "reached": self.budget.reached(), "stopped": self.budget.stopped,
                "undone": list(self.budget.undone)}
