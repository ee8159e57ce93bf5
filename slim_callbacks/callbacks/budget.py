"""The accuracy budget: undo a pruning event whose eval fell too far, retry smaller.

An :class:`~slim_callbacks.callbacks.AccuracyBudget` (``AccuracyBudget(0.02)`` beside a
``PruneCallback``, or ``PruningSpec(aids={"max_metric_drop": 0.02})``) takes an in-memory :class:`Snapshot` of
everything an event changes (every network tensor, every optimizer accumulator and
master weight, the layers' channel attributes, the callback's plan and history) right
before the event. ``Model.fit`` evaluates after ``on_epoch_end``, so the event's own
eval comes next; if its metric is more than ``max_metric_drop`` below the last accepted
eval, the snapshot is put back bit for bit.

Then the budget retries with half the refused step: at the next epoch's end it prunes to
the midpoint between the last accepted targets and the refused ones (per group, in
shares of the original channels). A retry comes before the schedule's own event of that
epoch; after an accepted retry the budget is behind the schedule, so the next epoch
tries the targets in force again (the whole remaining step; refused, it is halved
again). When a refused step's half is below ``min_step`` (``budget_min_step``, default
0.02) pruning stops advancing: later events are skipped and the run ends at the last
accepted structure. :attr:`MetricBudget.undone` lists the refused events,
:attr:`MetricBudget.accepted` the targets reached (:meth:`MetricBudget.reached`).

Higher is better for the metric unless it is lower-is-better: ``mode="min"``, or by
default a ``loss``/``error`` name (:func:`lower_is_better`). The fit must evaluate and
log the metric: :meth:`MetricBudget.check_fit` refuses it at train begin otherwise,
before any event. The reference is the eval before the event (if the fit ran none yet,
the first event is accepted and its eval becomes the reference). An event whose epoch
has no eval (an ``eval_freq`` > 1) is kept unchecked, with a warning. A checkpoint
saved at an epoch's end gets its ledger only after that epoch's eval has judged it
(saved again if the event was undone), so every ledger carries the budget's state after
the judgement (:meth:`MetricBudget.to_dict`: the reference that eval set, the accepted
targets, a pending retry, stopped) and a resumed run decides as an uninterrupted one; a
run killed before the judgement resumes from the checkpoint before (one without a
ledger is not a checkpoint to resume from).

Examples:
    >>> budget = MetricBudget(0.02, metric="acc", min_step=0.1)
    >>> budget.accepts({"acc": [0.90]}), budget.accepts({"acc": [0.885]})
    (True, True)
    >>> budget.reference = 0.90
    >>> budget.accepts({"acc": [0.87]})
    False
    >>> budget.keep({"g": 0.25})
    >>> budget.refuse({"g": 0.75}), budget.stopped  # retry at half the step
    ({'g': 0.5}, False)
    >>> budget.refuse({"g": 0.5})
    {'g': 0.375}
    >>> budget.refuse({"g": 0.375}), budget.stopped, budget.reached()  # half < min_step
    (None, True, 0.25)
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import numpy as np

from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.pruning.aids import MIN_STEP, MODES, check_budget

logger = logging.getLogger(__name__)

def lower_is_better(metric: str) -> bool:
    """The metrics whose fall is an improvement: ``loss`` and names ending in ``loss``
    or ``error`` (``val_loss``, ``top1_error``)."""
    return metric.lower().endswith(("loss", "error"))


def first_metric(names: List[str]) -> str:
    """The default budget metric: the first eval log key that is not the loss."""
    metrics = [name for name in names if name not in ("loss", "step", "batch_size", "steps")]
    if not metrics:
        raise SlimError(f"max_metric_drop needs an eval metric; the fit logs only {names} "
                        f"(prepare the model with metrics=..., or set budget_metric='loss')")
    return metrics[0]


class MetricBudget:
    """Decides whether an event's eval stayed within ``max_drop`` of the reference.

    Args:
        max_drop: the largest allowed worsening of the metric (in its units, e.g.
            0.02 = two points of top-1), > 0.
        metric: the eval log key; ``None``: the first eval metric that is not ``loss``.
        mode: ``max`` (higher is better: a fall is a worsening) or ``min`` (lower is
            better: a rise is); ``None``: ``min`` for :func:`lower_is_better` names.
    """

    def __init__(self, max_drop: float, metric: Optional[str] = None, min_step: float = MIN_STEP,
                 mode: Optional[str] = None):
        self.max_drop, self.metric, self.min_step, self.mode = check_budget(
            max_drop, metric, min_step, mode)
        self.reference: Optional[float] = None
        self.undone: List[dict] = []
        self.accepted: Dict[str, float] = {}  # group -> target of the structure kept
        self.retry: Optional[Dict[str, float]] = None  # targets of the next attempt
        self.stopped = False

    def attempt(self, scheduled: Optional[Dict[str, float]],
                in_force: Optional[Dict[str, float]]) -> Optional[Dict[str, float]]:
        """The targets to prune to at this epoch's end, or None: the pending retry, else
        the schedule's event of this epoch, else (behind the schedule after an accepted
        retry) the targets in force; None once stopped."""
        if self.stopped:
            return None
        if self.retry is not None:
            return dict(self.retry)
        if scheduled:
            return dict(scheduled)
        if in_force and any(t - self.accepted.get(g, 0.0) > 1e-9 for g, t in in_force.items()):
            return dict(in_force)
        return None

    def keep(self, targets: Dict[str, float]) -> None:
        """An attempt was kept: its targets are the ones reached."""
        self.accepted, self.retry = dict(targets), None

    def refuse(self, targets: Dict[str, float]) -> Optional[Dict[str, float]]:
        """An attempt was undone: the retry's targets (half the step), or None (half
        the step is below ``min_step``: pruning stops)."""
        base = {g: self.accepted.get(g, 0.0) for g in targets}
        step = max((targets[g] - base[g] for g in targets), default=0.0)
        if step / 2 < self.min_step:
            self.retry, self.stopped = None, True
            return None
        self.retry = {g: base[g] + (targets[g] - base[g]) / 2 for g in targets}
        return dict(self.retry)

    def reached(self) -> float:
        """Mean target (share of the original channels) of the structure kept."""
        return sum(self.accepted.values()) / len(self.accepted) if self.accepted else 0.0

    def check_fit(self, metrics: Optional[List[str]], has_eval: bool) -> None:
        """Before anything is pruned: the fit evaluates (``eval_data``), and logs the
        metric (``metrics``: the fit's ``params["metrics"]``, loss first); resolves
        ``metric=None`` to the first one that is not ``loss``."""
        if not has_eval:
            raise SlimError("max_metric_drop needs an eval after each event: pass eval_data "
                            "to fit (or drop max_metric_drop)")
        names = list(metrics or [])
        if self.metric is None:
            self.metric = first_metric(names)
        elif self.metric not in names:
            raise ConfigError("budget_metric", self.metric, f"one of the fit's eval logs: {names}")

    def worsening(self, value: float) -> float:
        """How much worse ``value`` is than the reference (negative: better)."""
        mode = self.mode or ("min" if lower_is_better(self.metric) else "max")
        return value - self.reference if mode == "min" else self.reference - value

    def value(self, logs: Dict[str, Any]) -> float:
        """The budget's metric in eval ``logs`` (a scalar or a one-element list)."""
        if self.metric is None:
            self.metric = first_metric(list(logs))
        if self.metric not in logs:
            raise SlimError(f"budget_metric {self.metric!r} is not in the eval logs "
                            f"{sorted(logs)}")
        return float(np.asarray(logs[self.metric]).ravel()[0])

    def accepts(self, logs: Dict[str, Any]) -> bool:
        """True if the metric worsened by at most ``max_drop`` from the reference (which
        then becomes this value); the first value seen is the reference and is accepted."""
        value = self.value(logs)
        if self.reference is not None and self.worsening(value) > self.max_drop:
            return False
        self.reference = value
        return True

    def to_dict(self) -> Dict[str, Any]:
        """What a resumed run needs (kept in the checkpoint's ledger)."""
        return {"metric": self.metric, "reference": self.reference, "undone": list(self.undone),
                "accepted": dict(self.accepted), "retry": self.retry, "stopped": self.stopped,
                "min_step": self.min_step}

    def load(self, state: Dict[str, Any]) -> None:
        """Continues from :meth:`to_dict` of an earlier session: a pending retry is
        still due, a stopped run stays stopped (a ledger without these keys, written
        before retries existed, stopped at its first undo)."""
        self.metric = self.metric or state.get("metric")
        self.reference = state.get("reference")
        self.undone = list(state.get("undone", []))
        self.accepted = dict(state.get("accepted", {}))
        self.retry = state.get("retry")
        self.stopped = bool(state.get("stopped", bool(self.undone)))

    def observe(self, logs: Dict[str, Any]) -> None:
        """An eval with no event to judge: it becomes the reference."""
        self.reference = self.value(logs)


__all__ = ["MODES", "MetricBudget"]
