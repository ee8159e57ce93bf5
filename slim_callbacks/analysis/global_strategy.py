"""The ``global`` strategy: one score threshold across every chosen group (Network
Slimming's global |gamma| threshold), with a per-group maximum ratio.

Owns :func:`global_ratios` and the cross-group score normalization
(:func:`normalized_scores`).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops_model import check_convention
from slim_callbacks.analysis.search import Search, check_one_target, check_tolerance
from slim_callbacks.core.checks import check_choice, check_fraction
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.ratios import check_patterns, check_round_to, chosen_groups
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph

# the records belong to the strategies: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.strategies")

NORMALIZATIONS = ("auto", "none", "mean", "max")


def normalized_scores(group: ChannelGroup, layers, criterion, layer_types, normalize: str) -> np.ndarray:
    """Scores of a group's units, comparable across groups.

    Scores are first divided by how many rows were summed per unit (a residual group's
    |gamma| is the sum over its BatchNorms), then by the group's mean (``mean``) or
    maximum (``max``), or not at all (``none``: raw |gamma| as in Network Slimming).
    """
    scores = criterion(group, layers, layer_types)
    members = criterion.members(group, layer_types)
    rows = sum(len(m.units) for m in members) / max(1, group.num_units)
    scores = scores / max(rows, 1.0)
    if normalize == "mean":
        scores = scores / max(scores.mean(), 1e-30)
    elif normalize == "max":
        scores = scores / max(scores.max(), 1e-30)
    return scores


def global_ratios(network: paddle.nn.Layer, input_shape: Sequence[int],
                  target_flops_reduction: Optional[float] = None, *,
                  channel_ratio: Optional[float] = None, layers: Optional[Sequence[str]] = None,
                  skip: Sequence[str] = (), criterion="slim", max_ratio: float = 0.9,
                  normalize: str = "auto", round_to: int = 1, tolerance: float = 0.01,
                  convention: str = "macs", graph: Optional[DependencyGraph] = None) -> Dict[str, float]:
    """Per-group ratios from one score threshold across every chosen group.

    Network Slimming's rule (arXiv 1708.06519): the channels whose (normalized) score
    is below one global threshold go, wherever they are; no group loses more than
    ``max_ratio`` of its channels. Give exactly one target: ``channel_ratio`` (share of
    all chosen channels, Network Slimming's "percent") or ``target_flops_reduction``.

    Args:
        network: the network (left unchanged).
        input_shape: its input shape.
        target_flops_reduction: share of the FLOPs to remove, in (0, 1).
        channel_ratio: share of the chosen groups' channels to remove, in (0, 1).
        layers: patterns of the layers to prune (default: all).
        skip: patterns of the layers to leave whole.
        criterion: ``slim`` (|gamma|, default) or any criterion with the ``lowest``
            selector.
        max_ratio: largest ratio of any one group, in (0, 1).
        normalize: ``none`` (raw scores), ``mean`` or ``max`` (divide by the group's
            mean or maximum); ``auto`` is ``none`` for BatchNorm-scale criteria and
            ``mean`` for weight norms, whose scale differs from layer to layer.
        round_to: as in :func:`~slim_callbacks.analysis.uniform_strategy.uniform_ratio`.
        tolerance: as in :func:`~slim_callbacks.analysis.uniform_strategy.uniform_ratio`.
        convention: as in :func:`~slim_callbacks.analysis.uniform_strategy.uniform_ratio`.
        graph: as in :func:`~slim_callbacks.analysis.uniform_strategy.uniform_ratio`.

    Returns:
        ``{group: ratio}`` for the groups that lose channels.

    Examples:
        >>> import paddle
        >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
        >>> ratios = global_ratios(net, [1, 3, 32, 32], channel_ratio=0.3, criterion="l1_norm")
        >>> 0 < max(ratios.values()) <= 0.9
        True
    """
    check_one_target({"target_flops_reduction": target_flops_reduction, "channel_ratio": channel_ratio})
    if target_flops_reduction is not None:
        target = check_fraction("target_flops_reduction", target_flops_reduction)
    else:
        target = check_fraction("channel_ratio", channel_ratio)
    max_ratio = check_fraction("max_ratio", max_ratio)
    tolerance, round_to = check_tolerance(tolerance), check_round_to(round_to)
    check_choice("normalize", normalize, NORMALIZATIONS)
    criterion = get_criterion(criterion)
    if criterion.selector != "lowest":
        raise ConfigError("criterion", criterion.name, "a criterion with the 'lowest' selector "
                          "(opt_slim's ratio is a share of gamma^2, which a global threshold "
                          "replaces: use 'slim')")
    if normalize == "auto":
        normalize = "none" if criterion.needs == "bn_scales" else "mean"
    patterns = check_patterns("layers", layers)
    search = Search(network, input_shape, criterion, round_to, check_convention(convention), graph)
    groups = chosen_groups(search.graph, patterns, skip)
    net_layers = layer_table(network)
    scores = {g.name: np.sort(normalized_scores(g, net_layers, criterion, search.graph.layer_types,
                                                normalize)) for g in groups}
    caps = {g.name: g.num_units - keep_count(g.num_units, max_ratio, round_to) for g in groups}
    widths = {g.name: g.num_units for g in groups}
    thresholds = np.append(np.unique(np.concatenate(list(scores.values()))), np.inf)

    def ratios_at(i: int) -> Dict[str, float]:
        """Ratios when every score below ``thresholds[i]`` goes (capped)."""
        t = thresholds[i]
        return {name: min(int(np.searchsorted(s, t, side="left")), caps[name]) / widths[name]
                for name, s in scores.items()}

    def measure(i: int) -> float:
        if channel_ratio is not None:
            ratios = ratios_at(i)
            return sum(ratios[n] * widths[n] for n in widths) / sum(widths.values())
        return search.reduction(ratios_at(i))

    top = len(thresholds) - 1
    reach = measure(top)
    if reach < target - tolerance:
        what = "channel" if channel_ratio is not None else search.convention
        raise SlimError(f"a {what} reduction of {target:.2%} is out of reach with "
                        f"max_ratio={max_ratio}: at most {reach:.2%}")
    low, high = 0, top  # measure(low) = 0 <= target <= measure(high) (or the best possible)
    while high - low > 1:
        mid = (low + high) // 2
        if measure(mid) >= target:
            high = mid
        else:
            low = mid
    pick = min((low, high), key=lambda i: abs(measure(i) - target))
    achieved = measure(pick)
    logger.info("global threshold %.6g (%s scores): -%.2f%% %s", thresholds[pick], normalize,
                100 * achieved, "channels" if channel_ratio is not None else search.convention)
    if abs(achieved - target) > tolerance:
        logger.warning("global threshold gives -%.2f%%, the closest to the target -%.2f%%",
                       100 * achieved, 100 * target)
    return {name: r for name, r in ratios_at(pick).items() if r > 0}
