"""The search helper of the FLOPs-target strategies: plans candidate ratios on one
trace and measures their FLOPs reduction (:class:`Search`, with the criterion
:func:`width_criterion` gives it), and splits a target that falls inside a jump between
groups (:func:`share_the_jump`); the ``tolerance`` and one-target checks.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Mapping, Optional, Sequence

from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.core.checks import check_fraction
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.engine.criteria import Criterion, TaylorCriterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.tracing.tracer import trace

# the records belong to the strategies: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.strategies")


def check_tolerance(value) -> float:
    """Accepted distance to a target: a number in (0, 1)."""
    return check_fraction("tolerance", value, "0.01 for one point")


def check_one_target(targets: Mapping[str, object], note: str = "") -> None:
    """Exactly one of ``targets`` (name -> value) is set (not None)."""
    if sum(value is not None for value in targets.values()) != 1:
        raise ConfigError("target", dict(targets), f"exactly one of {' and '.join(targets)}{note}")


def width_criterion(criterion: Criterion) -> Criterion:
    """``criterion``, or for a gradient-scored (``taylor``) one with the ``lowest``
    selector a weight-scored stand-in: the widths it plans are the same, and it needs
    no training batches.

    Examples:
        >>> from slim_callbacks.engine.criteria import get_criterion
        >>> width_criterion(get_criterion("taylor")).needs
        'weights'
    """
    if isinstance(criterion, TaylorCriterion) and criterion.selector == "lowest":
        return criterion.stand_in()
    return criterion


class Search:
    """Plans candidate ratios on one trace and measures their FLOPs reduction."""

    def __init__(self, network, input_shape, criterion, round_to, convention, graph):
        self.network = network
        self.graph = graph if graph is not None else trace(network, input_shape)
        self.input_shape = input_shape
        self.criterion, self.round_to, self.convention = criterion, round_to, convention
        self._flops: Optional[FlopsModel] = None

    @property
    def flops(self) -> FlopsModel:
        if self._flops is None:
            self._flops = FlopsModel(self.network, self.input_shape, self.convention, self.graph)
        return self._flops

    def plan(self, group_ratios: Mapping[str, float]) -> PruningPlan:
        ratios = {name: r for name, r in group_ratios.items() if r > 0}
        return plan_pruning(self.network, self.graph, ratios, self.criterion, self.round_to)

    def reduction(self, group_ratios: Mapping[str, float]) -> float:
        return self.flops.reduction(self.plan(group_ratios))

    def out_of_reach(self, names: Sequence[str], target: float, tolerance: float, reach: float) -> None:
        if reach < target - tolerance:
            raise SlimError(f"a {self.convention} reduction of {target:.2%} is out of reach: "
                            f"pruning the {len(names)} chosen groups as far as allowed "
                            f"removes {reach:.2%}")


def share_the_jump(search: Search, below: Dict[str, float], above: Dict[str, float],
                   target: float, tolerance: float, max_steps: int) -> Dict[str, float]:
    """When groups jump together at one loss level (equal losses, e.g. a plateau of
    zeros or an accuracy that moves in steps of 1/N), the target lies inside the jump:
    those groups share it, each moving the same fraction from ``below`` to ``above``."""
    jumping = [n for n in below if below[n] != above[n]]
    logger.info("groups %s jump together at one loss level; they share the rest of the target",
                ", ".join(jumping))
    low, high, best = 0.0, 1.0, (None, math.inf)
    for _ in range(max_steps):
        t = (low + high) / 2
        ratios = {n: below[n] + t * (above[n] - below[n]) for n in below}
        reduction = search.reduction(ratios)
        if abs(reduction - target) < best[1]:
            best = (ratios, abs(reduction - target))
        if best[1] <= tolerance:
            break
        low, high = (low, t) if reduction > target else (t, high)
    if best[1] > tolerance:
        logger.warning("the closest reduction found misses the target by %.2f points", 100 * best[1])
    return best[0]
