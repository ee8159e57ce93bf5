"""What a pruning run shows an observer: a read-only snapshot of ``PruneCallback``.

:attr:`PruneCallback.pruning_state <slim_callbacks.callbacks.PruneCallback.pruning_state>`
builds one on demand; the VisualDL logger reads only this, never the callback's
internals.

Examples:
    >>> state = PruningState(planned=mean_targets({2: {"a": 0.25, "b": 0.75}, 4: {"a": 0.5}}))
    >>> [state.planned_ratio(e) for e in (1, 2, 3, 4)]
    [0.0, 0.5, 0.5, 0.5]
"""
from __future__ import annotations

import bisect
import dataclasses
import types
from typing import Any, Dict, List, Mapping, Optional, Tuple

from slim_callbacks.core.example_inputs import ExampleInputs


def mean_targets(targets: Mapping[int, Mapping[str, float]]) -> Tuple[Tuple[int, float], ...]:
    """``(epoch, mean target over the event's groups)`` by epoch (0.0 for an event
    without groups)."""
    return tuple((e, sum(t.values()) / len(t) if t else 0.0) for e, t in sorted(targets.items()))


@dataclasses.dataclass(frozen=True)
class PruningState:
    """A snapshot of a pruning run.

    Attributes:
        epoch_offset: global epoch of this fit's epoch 0 (non-zero when resuming).
        example_inputs: the :class:`~slim_callbacks.core.example_inputs.ExampleInputs`
            the pruner measures with, or None (:attr:`input_shape`: their shape when
            they are one float32 input).
        planned: ``(global epoch, mean target ratio)`` of every scheduled event.
        achieved_ratio: share of the targeted groups' original channels gone now.
        original_widths: group name -> width before any pruning (read-only).
        targeted_groups: the groups the run prunes (empty before ``on_train_begin``).
        pruned_layers: producer layers of the groups pruned so far, in plan order.
    """

    epoch_offset: int = 0
    example_inputs: Optional[ExampleInputs] = None
    planned: Tuple[Tuple[int, float], ...] = ()
    achieved_ratio: float = 0.0
    original_widths: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}))
    targeted_groups: Tuple[str, ...] = ()
    pruned_layers: Tuple[str, ...] = ()

    @property
    def input_shape(self) -> Optional[Tuple[int, ...]]:
        """The shape of the one float32 example input, else None."""
        shape = None if self.example_inputs is None else self.example_inputs.shape
        return None if shape is None else tuple(shape)

    def planned_ratio(self, epoch: int) -> float:
        """Mean target ratio (over the event's groups) in force after global ``epoch``."""
        index = bisect.bisect_right([e for e, _ in self.planned], epoch)
        return self.planned[index - 1][1] if index else 0.0


@dataclasses.dataclass(frozen=True)
class PruningEvent:
    """One pruning event, a ``history`` entry: the global ``epoch``, its ``target``
    ratio (the largest of the event's group targets), the ``groups`` pruned, ``macs``
    and ``params`` ``[before, after]`` and the event's own plan (``PruningPlan.to_dict``)."""

    epoch: int
    target: float
    groups: int
    macs: List[float]
    params: List[float]
    plan: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "target": self.target, "groups": self.groups,
                "macs": list(self.macs), "params": list(self.params), "plan": self.plan}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruningEvent":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})
