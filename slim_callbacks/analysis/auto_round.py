"""``round_to="auto"``: the channel multiple that this runtime's kernels are fastest at.

Blocked layouts (oneDNN's ``nChw8c`` / ``nChw16c``) pad channels to a block, so a
layer can cost about the same at 49 channels as at 64. :func:`auto_round_to` times two
blocks of the network - the group with the most MACs behind a 1x1 conv and the one
behind a kxk conv: its producer, consumers and depthwise convs, each alone in Paddle
Inference - at every width from ``center - SPAN`` to ``center + SPAN`` (``center``:
half the group's width, where a -50% cut lands), fits a line to each block's latency
and measures how far below that line the widths divisible by each of
:data:`CANDIDATES` lie. The smallest multiple whose gain is within ``TIE`` of the
largest wins if it is at least ``MIN_GAIN``; otherwise rounding buys nothing and the
answer is 1. Timings are cached like the
latency strategy's (:class:`~slim_callbacks.deploy.latency_table.LatencyTable`).

The engine takes only an int: :func:`resolve_round_to` turns ``"auto"`` into one here,
above the engine, and :func:`prune` (``slim_callbacks.prune``) is the engine's
:func:`~slim_callbacks.engine.planner.prune` with ``round_to="auto"`` resolved and its
MACs cost logged.

    >>> resolve_round_to(8, None, None)
    8
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.analysis.latency_model import LatencyModel
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.deploy.latency_table import LatencyTable, LayerSpec
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.planner import prune as engine_prune
from slim_callbacks.engine.ratios import check_input_shape, check_round_to, resolve_ratios
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger("slim_callbacks.analysis.strategies")

AUTO = "auto"
CANDIDATES = (1, 4, 8, 16)
MIN_GAIN = 0.03
TIE = 0.02  # a smaller multiple within this of the best gain wins (fewer MACs moved)
SPAN = 24


@dataclass
class RoundingChoice:
    """The multiple chosen, each candidate's gain (share of latency below the trend
    at its multiples, averaged over the probed blocks), and the probed groups."""
    multiple: int
    gains: Dict[int, float] = field(default_factory=dict)
    groups: List[str] = field(default_factory=list)


def check_round_to_option(value):
    """An int >= 1 or ``"auto"``."""
    if value == AUTO:
        return AUTO
    try:
        return check_round_to(value)
    except ConfigError:
        raise ConfigError("round_to", value, "an int >= 1 or 'auto' (measured on this "
                          "machine)") from None


def _macs(spec: LayerSpec) -> float:
    if spec.kind == "linear":
        return spec.in_ch * spec.out_ch * spec.positions
    sh, sw = (spec.stride, spec.stride) if isinstance(spec.stride, int) else spec.stride
    hw = (spec.hw[0] / sh) * (spec.hw[1] / sw)
    return spec.in_ch * spec.out_ch / spec.groups * spec.kernel[0] * spec.kernel[1] * hw


def probe_groups(model: LatencyModel) -> List[str]:
    """The group with the most MACs behind a 1x1 producer, and behind a kxk one."""
    best: Dict[bool, tuple] = {}
    for group in model.groups:
        names = model.touching(group)
        producers = [model.layers[n].spec for n in names if model.layers[n].out_group == group
                     and not model.layers[n].depthwise]
        if not producers or model.groups[group] < 4:
            continue
        wide = any(s.kind == "conv" and s.kernel != (1, 1) for s in producers)
        macs = sum(_macs(model.layers[n].spec) for n in names)
        if macs > best.get(wide, (None, -1.0))[1]:
            best[wide] = (group, macs)
    return [g for g, _ in best.values()]


def block_latency(model: LatencyModel, group: str, widths: Sequence[int]) -> np.ndarray:
    """Summed ms of the layers ``group`` sets, at each width (overhead subtracted)."""
    names = model.touching(group)
    specs = [LayerSpec("linear", 1, 1)]
    for w in widths:
        for n in names:
            info = model.layers[n]
            cin, cout = model.layer_sides(info, {group: w})
            specs.append(info.at(int(round(cin)), int(round(cout))))
    ms = np.asarray(model.table.lookup(specs))
    per = (ms[1:] - ms[0]).reshape(len(widths), len(names))
    return per.sum(axis=1)


def rounding_gains(widths: Sequence[int], ms: np.ndarray) -> Dict[int, float]:
    """Per candidate multiple, how far (share) below a fitted line its widths run.

    >>> w = np.arange(40, 73)
    >>> ms = 0.01 * w * np.where(w % 8 == 0, 0.8, 1.0)
    >>> g = rounding_gains(w, ms); g[8] > 0.15 and g[8] > g[4] and g[1] == 0
    True
    """
    w = np.asarray(widths, dtype=float)
    slope, intercept = np.polyfit(w, ms, 1)
    residual = ms / np.maximum(slope * w + intercept, 1e-12) - 1
    gains = {1: 0.0}
    for m in CANDIDATES[1:]:
        on = (np.asarray(widths) % m) == 0
        gains[m] = float(-residual[on].mean()) if on.any() else 0.0
    return gains


def auto_round_to(network: paddle.nn.Layer, input_shape: Sequence[int], *,
                  layers: Optional[List[str]] = None, skip: Sequence[str] = (),
                  threads: int = 1, onednn: bool = True, cache_dir: Optional[str] = None,
                  graph: Optional[DependencyGraph] = None,
                  table: Optional[LatencyTable] = None) -> RoundingChoice:
    """Measures (or reads from the cache) which multiple buys speed; see the module."""
    input_shape = check_input_shape(input_shape)
    table = table or LatencyTable(threads=threads, onednn=onednn, directory=cache_dir)
    model = LatencyModel(network, input_shape, table, layers, skip, graph, measure=False)
    groups = probe_groups(model)
    if not groups:
        return RoundingChoice(1, {1: 0.0}, [])
    per_group = []
    for group in groups:
        width = model.groups[group]
        center = max(1, width // 2)
        widths = list(range(max(1, center - SPAN), min(width, center + SPAN) + 1))
        per_group.append(rounding_gains(widths, block_latency(model, group, widths)))
    gains = {m: float(np.mean([g[m] for g in per_group])) for m in CANDIDATES}
    best = max(gains.values())
    multiple = min((m for m in CANDIDATES if gains[m] >= max(MIN_GAIN, best - TIE)), default=1)
    logger.info("round_to auto: %d (widths divisible by %s run %s below the trend; blocks of %s)",
                multiple, ", ".join(map(str, CANDIDATES[1:])),
                ", ".join(f"{100 * gains[m]:.1f}%" for m in CANDIDATES[1:]), ", ".join(groups))
    return RoundingChoice(multiple, gains, groups)


def resolve_round_to(round_to, network, input_shape, **options) -> int:
    """``round_to`` as an int: ``"auto"`` is measured (:func:`auto_round_to`)."""
    if check_round_to_option(round_to) != AUTO:
        return round_to
    return auto_round_to(network, input_shape, **options).multiple


def rounding_cost(network: paddle.nn.Layer, input_shape: Sequence[int], ratios, criterion,
                  skip: Sequence[str], round_to: int, graph: Optional[DependencyGraph] = None) -> float:
    """Share of the unpruned MACs that rounding to ``round_to`` keeps on top of (or, if
    negative, removes beyond) what ``round_to=1`` keeps for the same ratios."""
    graph = graph if graph is not None else trace(network, input_shape)
    group_ratios = resolve_ratios(graph, ratios, skip)
    flops = FlopsModel(network, input_shape)
    exact, rounded = (flops.count(plan_pruning(network, graph, group_ratios, criterion, r))
                      for r in (1, round_to))
    return (rounded - exact) / flops.base


def prune(network: paddle.nn.Layer, input_shape: Sequence[int], ratios, criterion="l1_norm", *,
          skip: Sequence[str] = (), optimizer=None, round_to=1,
          fold_bn_shift: Optional[bool] = None, structure=None):
    """:func:`slim_callbacks.engine.planner.prune` (same arguments), where ``round_to``
    may also be ``"auto"``: the multiple measured for this machine (:func:`auto_round_to`,
    1 thread, oneDNN), whose MACs cost against ``round_to=1`` is logged."""
    if check_round_to_option(round_to) == AUTO:
        shape = check_input_shape(input_shape)
        graph = trace(network, shape, structure)
        round_to = auto_round_to(network, shape, skip=skip, graph=graph).multiple
        if round_to > 1:
            cost = rounding_cost(network, shape, ratios, get_criterion(criterion), skip, round_to, graph)
            logger.info("round_to auto = %d costs %+.2f%% of the MACs against round_to=1",
                        round_to, 100 * cost)
    return engine_prune(network, input_shape, ratios, criterion, skip=skip, optimizer=optimizer,
                        round_to=round_to, fold_bn_shift=fold_bn_shift, structure=structure)
