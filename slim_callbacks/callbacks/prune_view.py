"""What a PruneCallback shows: its spec's fields and its pruner's state, read-only.

:class:`PrunerView` is the part of :class:`~slim_callbacks.callbacks.PruneCallback` that
observers (the aids, the ledger, the recipe runner, user code) read: before train begin
the spec's values and empty state, then the :class:`~slim_callbacks.pruning.Pruner`'s.

Examples:
    >>> from slim_callbacks.callbacks import PruneCallback
    >>> cb = PruneCallback(0.5, "fpgm", prune_epochs=[1, 2])
    >>> cb.criterion.name, cb.history, cb.round_to, cb.pruning_state.targeted_groups
    ('fpgm', [], 1, ())
"""
from __future__ import annotations

from typing import Dict

from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.pruning.state import PruningState, mean_targets


class PrunerView:
    """Read-only accessors of a callback with ``spec``, ``pruner`` (None before train
    begin), ``example_inputs`` and ``epoch_offset``."""

    criterion = property(lambda self: self.spec.criterion)
    ratios = property(lambda self: self.spec.ratios)
    strategy = property(lambda self: self.spec.strategy)
    skip = property(lambda self: self.spec.skip)
    structure = property(lambda self: self.spec.structure)
    fold_bn_shift = property(lambda self: self.spec.fold_bn_shift)
    target_flops_reduction = property(lambda self: self.spec.target_flops_reduction)

    @property
    def round_to(self):
        """The multiple channels are rounded to (``"auto"`` until train begin)."""
        return self.spec.round_to if self.pruner is None else self.pruner.round_to

    #: the cumulative plan, relative to the original network
    plan = property(lambda self: PruningPlan() if self.pruner is None else self.pruner.plan)
    #: one record per event (:class:`~slim_callbacks.pruning.state.PruningEvent`)
    history = property(lambda self: [] if self.pruner is None else self.pruner.history)
    original_widths = property(lambda self: {} if self.pruner is None else self.pruner.original_widths)
    group_ratios = property(lambda self: {} if self.pruner is None else self.pruner.group_ratios)
    targets = property(lambda self: {} if self.pruner is None else self.pruner.targets)
    uniform_ratio = property(lambda self: None if self.pruner is None else self.pruner.uniform_ratio)

    #: the shape of the one float32 example input, else None
    input_shape = property(lambda self: getattr(self.example_inputs, "shape", None))

    @property
    def pruning_state(self) -> PruningState:
        """A read-only snapshot of the run for observers such as the VisualDL logger."""
        if self.pruner is None:
            return PruningState(epoch_offset=self.epoch_offset)
        return self.pruner.state(self.epoch_offset)

    def planned_ratio(self, epoch: int) -> float:
        """Mean target ratio (over pruned groups) in force after global ``epoch``."""
        return PruningState(planned=mean_targets(self.targets)).planned_ratio(epoch)

    def achieved_ratio(self) -> float:
        """Share of the original channels of the targeted groups that is gone."""
        return 0.0 if self.pruner is None else self.pruner.achieved_ratio()

    def current_widths(self) -> Dict[str, int]:
        """Group name -> current width, from the cumulative plan (no trace needed)."""
        return {} if self.pruner is None else self.pruner.current_widths()
