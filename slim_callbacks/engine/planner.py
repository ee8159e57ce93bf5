"""The pruning loop: trace, resolve ratios, score, select, and shrink.

    >>> import paddle
    >>> from slim_callbacks import prune, count_flops
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> plan = prune(net, [1, 3, 32, 32], {"conv*._pointwise_conv*": 0.5})
    >>> len(plan)
    13

:func:`plan_pruning` decides what to remove without changing anything, from the ratios
that :func:`~slim_callbacks.engine.ratios.resolve_ratios` gave each group (see
:mod:`slim_callbacks.engine.ratios` for the patterns); :func:`slim_callbacks.prune` does it all
(:mod:`slim_callbacks.pruning.pruner`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.core.checks import check_ratio
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.criteria import Criterion, get_criterion
from slim_callbacks.engine.plan import PruningPlan, add_removed, cuts_of
from slim_callbacks.engine.ratios import (
    check_network,
    check_round_to,
)
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.engine.shared import check_not_shared
from slim_callbacks.tracing.groups import OUT, ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph

logger = logging.getLogger(__name__)


def select_units(group: ChannelGroup, scores: np.ndarray, ratio: float, criterion: Criterion,
                 round_to: int = 1, original: Optional[int] = None) -> np.ndarray:
    """Unit indices of ``group`` to remove, as the criterion's selector picks them
    (in equal numbers from each segment if the group has segments, see
    :func:`select_per_segment`)."""
    if group.segments is not None:
        return select_per_segment(group.segments, scores, ratio, criterion, round_to, original)
    return criterion.select(scores, ratio, keep=keep_count(group.num_units, ratio, round_to, original),
                            min_keep=min(round_to, group.num_units))


def select_per_segment(segments: np.ndarray, scores: np.ndarray, ratio: float, criterion: Criterion,
                       round_to: int = 1, original: Optional[int] = None) -> np.ndarray:
    """The same number of units from every segment (the groups of a grouped conv), the
    lowest-scored of each.

    Each of the ``n`` segments keeps ``keep_count(size, ratio, step)`` units, ``step``
    being the least per-segment width whose total (``n`` times it) is a multiple of
    ``round_to``: ``round_to // gcd(round_to, n)``. How many go in all is the
    selector's (a threshold selector's count is shared out evenly).

    >>> from slim_callbacks.engine.criteria import get_criterion
    >>> select_per_segment(np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 3.0, 0.5]),
    ...                    0.5, get_criterion("l1_norm")).tolist()
    [0, 3]
    """
    count = int(segments.max()) + 1
    size = len(segments) // count
    step = round_to // math.gcd(round_to, count)
    keep = keep_count(size, ratio, step, None if original is None else original // count)
    total = len(criterion.select(scores, ratio, keep=keep * count, min_keep=min(round_to, len(scores))))
    gone = min(size - 1, int(round(total / count)))
    chosen = [np.flatnonzero(segments == s)[np.argsort(scores[segments == s], kind="stable")[:gone]]
              for s in range(count)]
    return np.sort(np.concatenate(chosen))


def scored_by(group: ChannelGroup, layers: Optional[Sequence[str]]) -> ChannelGroup:
    """``group`` with only the producer rows of ``layers`` left to score (all if None):
    PaddleSlim ranks a coupled group by the one parameter its ratios name."""
    if not layers:
        return group
    return dataclasses.replace(group, members=[m for m in group.members
                                               if m.role != OUT or m.layer in layers])


def plan_pruning(network: paddle.nn.Layer, graph: DependencyGraph, group_ratios: Mapping[str, float],
                 criterion="l1_norm", round_to: int = 1,
                 original_widths: Optional[Mapping[str, int]] = None,
                 scored_layers: Optional[Mapping[str, Sequence[str]]] = None) -> PruningPlan:
    """Decides what to remove without changing anything.

    Args:
        network: the traced network.
        graph: its trace.
        group_ratios: group name -> ratio, e.g. from :func:`resolve_ratios`.
        criterion: a registered name or a :class:`Criterion`.
        round_to: channels kept are rounded to a multiple of this.
        original_widths: group name -> width before any pruning. Ratios are then
            relative to these (so progressive steps never compound).
        scored_layers: group name -> the producers whose weights alone rank its
            channels (:func:`scored_by`); other groups sum every producer's scores.
    """
    check_network(network)
    if not isinstance(graph, DependencyGraph):
        raise ConfigError("graph", graph, "the DependencyGraph of trace(network, input_shape)")
    if not isinstance(group_ratios, Mapping):
        raise ConfigError("group_ratios", group_ratios, "a {group name: ratio} dict, e.g. "
                          "from resolve_ratios")
    group_ratios = {name: check_ratio(f"group_ratios[{name!r}]", r) for name, r in group_ratios.items()}
    criterion = get_criterion(criterion)
    round_to = check_round_to(round_to)
    check_not_shared(network, graph, group_ratios)
    layers = layer_table(network)
    removed: Dict[tuple, Dict[tuple, set]] = {}
    plan = PruningPlan()
    for group in graph.groups:
        if group.name not in group_ratios or not group.prunable:
            continue
        original = (original_widths or {}).get(group.name)
        scored = scored_by(group, (scored_layers or {}).get(group.name))
        scores = criterion(scored, layers, graph.layer_types)
        units = select_units(group, scores, group_ratios[group.name], criterion, round_to, original)
        if len(units) == 0:
            continue
        for size in group.sizes:
            before = getattr(layers[size.layer], size.attr)
            plan.attrs[(size.layer, size.attr)] = (before, before - int(np.isin(size.units, units).sum()))
        add_removed(removed, group.members, units)
        entry = {"name": group.name, "producers": list(group.producers),
                 "before": group.num_units, "after": group.num_units - len(units),
                 "criterion": criterion.name}
        if group.approximate:
            entry["approximate"] = group.approximate
        plan.groups.append(entry)
    plan.params.update(cuts_of(removed, lambda key: layers[key[0]]._parameters[key[1]].shape))
    return plan


def warn_approximate(plan: PruningPlan) -> None:
    """One warning naming the pruned groups whose removal is not exact (LayerNorm)."""
    approximate = [g for g in plan.groups if g.get("approximate")]
    if approximate:
        logger.warning("%d pruned group(s) are normalized by a LayerNorm, so outputs change "
                       "beyond what the removed channels carried (fine-tuning recovers it): "
                       "%s, e.g. %s", len(approximate), ", ".join(g["name"] for g in approximate),
                       approximate[0]["approximate"])


FOLD_BY_DEFAULT = ("slim", "opt_slim")


def check_fold_bn_shift(value, criterion: Criterion) -> bool:
    """``fold_bn_shift`` as a bool: ``None`` means on for :data:`FOLD_BY_DEFAULT` criteria.

    >>> check_fold_bn_shift(None, get_criterion("slim")), check_fold_bn_shift(None, get_criterion("fpgm"))
    (True, False)
    """
    if value is None:
        return criterion.name in FOLD_BY_DEFAULT
    if not isinstance(value, bool):
        raise ConfigError("fold_bn_shift", value, "True, False or None (on for slim and opt_slim)")
    return value
