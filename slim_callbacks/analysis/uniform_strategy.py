"""The ``uniform`` strategy: one ratio for every chosen group, found by bisection on a
FLOPs target (PaddleSlim's uniform strategy: 0.5, 0.25, 0.375, 0.3125 for MobileNetV1's
13 pointwise convs at target 0.5).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import paddle

from slim_callbacks.analysis.flops_model import check_convention
from slim_callbacks.analysis.search import Search, check_tolerance, width_criterion
from slim_callbacks.core.checks import check_fraction
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.ratios import check_patterns, check_round_to, chosen_groups
from slim_callbacks.tracing.tracer import DependencyGraph

# the records belong to the strategies: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.strategies")

MAX_RATIO = 1 - 1e-9  # "everything but the channels that must stay"


def uniform_ratio(network: paddle.nn.Layer, input_shape: Sequence[int], target_flops_reduction: float,
                  layers: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                  criterion="l1_norm", *, round_to: int = 1, tolerance: float = 0.01,
                  convention: str = "macs", max_steps: int = 30,
                  graph: Optional[DependencyGraph] = None) -> float:
    """One ratio for every chosen group that removes ``target_flops_reduction`` of the FLOPs.

    Bisection on the ratio in (0, 1), starting at 0.5, until the reduction is within
    ``tolerance`` of the target (PaddleSlim's rule: 0.5, 0.25, 0.375, 0.3125 for
    MobileNetV1's pointwise convs at target 0.5). Each try is logged.

    Args:
        network: the network to prune (left unchanged).
        input_shape: input shape for FLOPs counting, e.g. ``[1, 3, 224, 224]``.
        target_flops_reduction: share of the FLOPs to remove, in (0, 1).
        layers: patterns of the layers to prune; None prunes every prunable group.
        skip: patterns of layers to leave whole.
        criterion: which channels go (matters for ``opt_slim`` and ``round_to``). A
            ``taylor`` criterion has no scores before training; its "lowest share"
            selection keeps the same widths whatever the scores, so the search plans
            with weight L1 scores and the same selector.
        round_to: channels kept are rounded to a multiple of this.
        tolerance: accepted distance to the target (0.01 = one point).
        convention: ``macs``, ``flops`` or ``paddleslim_legacy``.
        max_steps: bisection steps at most.
        graph: a trace of ``network`` to reuse.

    Returns:
        The ratio. If the tolerance cannot be met (a tiny network), the closest ratio
        found, with a warning.

    Raises:
        ConfigError: a bad argument. SlimError: the target is out of reach.
    """
    target = check_fraction("target_flops_reduction", target_flops_reduction)
    tolerance, round_to = check_tolerance(tolerance), check_round_to(round_to)
    patterns = check_patterns("layers", layers)
    search = Search(network, input_shape, width_criterion(get_criterion(criterion)), round_to,
                     check_convention(convention), graph)
    names = [g.name for g in chosen_groups(search.graph, patterns, skip)]
    low, high, best = 0.0, 1.0, None
    for _ in range(max_steps):
        ratio = (low + high) / 2
        reduction = search.reduction({name: ratio for name in names})
        logger.info("uniform ratio %.6g: -%.2f%% %s", ratio, 100 * reduction, search.convention)
        if best is None or abs(reduction - target) < abs(best[1] - target):
            best = (ratio, reduction)
        if abs(reduction - target) <= tolerance:
            return ratio
        low, high = (low, ratio) if reduction > target else (ratio, high)
    search.out_of_reach(names, target, tolerance, search.reduction({n: MAX_RATIO for n in names}))
    logger.warning("uniform ratio %.6g gives -%.2f%%, the closest to the target -%.2f%% "
                   "(tolerance %.2f points)", best[0], 100 * best[1], 100 * target, 100 * tolerance)
    return best[0]
