"""Why channels are not pruned: the blocked groups of a network and what they cost.

Owns :func:`explain`, its result :class:`Explanation` and the text table. A group is
blocked when the tracer met an op or layer it cannot follow the channels through (an
unknown op, a reshape to a literal size, a network output, ...); such
groups are left whole, safely but wastefully. :func:`explain` lists them with the op and
the layer that block each one and the MACs at stake, largest first, so a user knows what
to change in the model or register.

*MACs at stake* of a group: the per-sample MACs of the Conv/Linear weight elements the
tracer maps to the group's channels (its producers' output rows, its consumers' input
columns, its depthwise filters), i.e. what removing every channel of the group would
remove. Layers behind the blocking op (whose inputs it could not map) are not counted,
so the figure is a lower bound.
Pruning a share ``r`` of the group removes about ``r`` times that. Each row counts its
group on its own (a layer whose inputs and outputs belong to two blocked groups appears
in both rows); the total counts every weight element once.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 1), paddle.nn.Conv2D(8, 4, 1))
    >>> report = explain(net, [1, 3, 2, 2])
    >>> [(row.op, row.channels, row.macs) for row in report.rows]  # 4 outputs x 8 x 4
    [('network output', 4, 128)]
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import paddle

from slim_callbacks.analysis.flops import count_flops
from slim_callbacks.analysis.flops_model import output_positions
from slim_callbacks.core.example_inputs import given_inputs
from slim_callbacks.core.paddle_utils import layer_table, unwrap
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.tracer import TOP_LEVEL, DependencyGraph, trace


@dataclasses.dataclass(frozen=True)
class BlockedGroup:
    """One group the tracer blocked.

    Attributes:
        group: the group's name (its first producer layer).
        channels: channels (units) in the group.
        op: the op or layer type that blocks it, e.g. ``matmul`` or ``Conv2D``.
        layer: the layer it ran in (``""`` for a network output).
        reason: the tracer's sentence.
        macs: MACs at stake (see the module docstring), per sample.
        share: ``macs`` as a share of the network's MACs.
    """

    group: str
    channels: int
    op: str
    layer: str
    reason: str
    macs: int
    share: float


@dataclasses.dataclass
class Explanation:
    """What :func:`explain` found.

    Attributes:
        total_macs: the network's MACs per sample.
        blocked_macs: MACs at stake in all blocked groups together (each weight
            element counted once).
        channels: channels in all groups; ``blocked_channels`` of them are blocked.
        rows: the blocked groups, largest ``macs`` first.
        op_macs: per blocking op, the MACs at stake in all its groups together.
    """

    total_macs: int
    blocked_macs: int
    channels: int
    blocked_channels: int
    rows: List[BlockedGroup]
    op_macs: Dict[str, int] = dataclasses.field(default_factory=dict)

    def by_op(self) -> List[Tuple[str, int, int]]:
        """(op, blocked groups, MACs at stake in them together) per blocking op, largest
        MACs first."""
        counts: Dict[str, int] = {}
        for row in self.rows:
            counts[row.op] = counts.get(row.op, 0) + 1
        return sorted(((op, n, self.op_macs.get(op, 0)) for op, n in counts.items()),
                      key=lambda item: (-item[2], item[0]))

    def table(self, limit: int = 20) -> str:
        """The rows as a text table (the ``limit`` largest) with a summary line."""
        return format_explanation(self, limit)


def explain(network: paddle.nn.Layer, example_inputs=None, *,
            input_shape: Optional[Sequence[int]] = None, forward_fn=None,
            graph: Optional[DependencyGraph] = None) -> Explanation:
    """Traces ``network`` and lists its blocked channel groups, largest MACs first.

    Args:
        network: a dygraph network (not changed).
        example_inputs: inputs of any structure (see :class:`~slim_callbacks.Pruner`),
            e.g. one input's shape ``[1, 3, 224, 224]``.
        input_shape: the shorthand for one float32 input of this shape.
        forward_fn: ``callable(network, inputs) -> outputs``, how to call the network.
        graph: the network's trace if the caller has one (a Pruner's ``graph``).
    """
    network = unwrap(network)
    inputs = given_inputs(example_inputs, input_shape, forward_fn)
    graph = graph if graph is not None else trace(network, inputs)
    positions = output_positions(network, inputs)
    layers = layer_table(network)
    batch = inputs.batch
    total = count_flops(network, inputs, "macs")

    def stake(groups: List[ChannelGroup]) -> int:
        return macs_at_stake(groups, layers, positions) // batch

    blocked = [group for group in graph.groups if group.blocked]
    rows = [_row(group, stake([group]), total) for group in blocked]
    rows.sort(key=lambda row: (-row.macs, row.group))
    ops = {row.op for row in rows}
    op_macs = {op: stake([g for g in blocked if (g.blocked_by[0] or "?") == op]) for op in ops}
    return Explanation(total, stake(blocked), sum(g.num_units for g in graph.groups),
                       sum(g.num_units for g in blocked), rows, op_macs)


def _row(group: ChannelGroup, macs: int, total: int) -> BlockedGroup:
    op, layer = group.blocked_by
    return BlockedGroup(group.name, group.num_units, op or "?", layer, group.blocked,
                        macs, macs / total if total else 0.0)


def macs_at_stake(groups: Sequence[ChannelGroup], layers: Dict[str, paddle.nn.Layer],
                  positions: Dict[str, int]) -> int:
    """MACs (whole batch) of the weight elements that involve the channels of
    ``groups``, each element counted once.

    ``positions`` maps a counted layer to the positions its weight is applied at
    (:func:`~slim_callbacks.analysis.flops_model.output_positions`)."""
    removed: Dict[str, Dict[tuple, set]] = {}
    for member in (m for group in groups for m in group.members):
        if member.attr == "weight" and member.layer in positions:
            axes = removed.setdefault(member.layer, {})
            axes.setdefault((member.axis, member.blocks), set()).update(int(i) for i in member.indices)
    macs = 0
    for name, axes in removed.items():
        shape = list(layers[name].weight.shape)
        kept = list(shape)
        for (axis, blocks), indices in axes.items():  # cut per block: the mean per block
            kept[axis] -= len(indices) / max(1, blocks)
        macs += positions[name] * int(math.prod(shape) - math.prod(kept))
    return macs


def format_explanation(report: Explanation, limit: int = 20) -> str:
    """A text table of the blocked groups, then what they add up to."""
    lines = [f"{'MACs at stake':>14} {'share':>6} {'ch':>5}  {'group':<24} {'blocked by':<18} in layer"]
    for row in report.rows[:limit]:
        layer = "(top level)" if row.layer == TOP_LEVEL else row.layer or "-"
        lines.append(f"{row.macs:>14,} {row.share:>6.1%} {row.channels:>5}  {row.group:<24} "
                     f"{row.op:<18} {layer}")
    if len(report.rows) > limit:
        lines.append(f"... {len(report.rows) - limit} more blocked groups")
    lines.append(f"{len(report.rows)} blocked groups with {report.blocked_channels:,} of "
                 f"{report.channels:,} channels ({_share(report.blocked_channels, report.channels)});"
                 f" {report.blocked_macs:,} of {report.total_macs:,} MACs at stake "
                 f"({_share(report.blocked_macs, report.total_macs)})")
    for op, count, macs in report.by_op():
        example = next(row for row in report.rows if row.op == op)
        lines.append(f"  {op}: {count} groups, {macs:,} MACs; e.g. {example.group} "
                     f"{example.reason}")
    return "\n".join(lines)


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


__all__ = ["BlockedGroup", "Explanation", "explain", "format_explanation", "macs_at_stake"]
