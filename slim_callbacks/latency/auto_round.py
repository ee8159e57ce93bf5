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
latency strategy's (:class:`~slim_callbacks.latency.table.LatencyTable`).

The probes time layers alone, and a layer alone misses what a multiple does inside
the network (oneDNN's reorders between blocked layouts, a depthwise conv padded to 16
channels). So :func:`network_check` then decides: the whole network pruned with each
multiple of :data:`NETWORK_CANDIDATES` is exported and timed side by side in Paddle
Inference (interleaved rounds, :func:`~slim_callbacks.latency.measure.measure_latency`
through :meth:`~slim_callbacks.latency.table.LatencyTable.networks_ms`, cached
per structure fingerprint, widths and runtime). Its rule: among the multiples whose
pruned network's MACs are within ``MACS_POINTS`` (2 points of the unpruned MACs) of
round 1's, the fastest per MACs kept - a multiple that removes more MACs than round 1
is charged as if latency fell with MACs (its ms times round 1's MACs over its own),
one that keeps more gets no credit - if it is at least ``MIN_GAIN`` faster than round 1
(the smallest multiple within ``TIE`` of it); else 1. The network is pruned at the ratios
the caller asks for (:class:`~slim_callbacks.pruning.Pruner` passes a spec's explicit
``ratios``), or, when there are none (a MACs or latency target: the ratios come later,
from a strategy that needs the multiple first), at a representative uniform cut: each
multiple at its own uniform ratio for ``-REPRESENTATIVE_MACS`` (50%) of the MACs.

The engine takes only an int: :func:`resolve_round_to` turns ``"auto"`` into one here,
above the engine; the :class:`~slim_callbacks.pruning.Pruner` calls it once per run and
logs what the multiple costs in MACs (:func:`rounding_cost`).

    >>> resolve_round_to(8, None, None)
    8
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import check_round_to, resolve_ratios
from slim_callbacks.latency.model import LatencyModel, fingerprint, fingerprint_widths
from slim_callbacks.latency.table import LatencyTable, LayerSpec
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger("slim_callbacks.analysis.strategies")

AUTO = "auto"
CANDIDATES = (1, 4, 8, 16)
MIN_GAIN = 0.03
TIE = 0.02  # a smaller multiple within this of the best gain wins (fewer MACs moved)
SPAN = 24
NETWORK_CANDIDATES = (1, 8, 16, 32)
MACS_POINTS = 0.02   # candidates whose MACs differ from round 1's by more are not compared
REPRESENTATIVE_MACS = 0.5  # without ratios: uniform pruning to -50% MACs per multiple


@dataclass
class RoundingChoice:
    """The multiple chosen, each candidate's gain in the probes (share of latency below
    the trend at its multiples, averaged over the probed blocks), the probed groups, and
    the whole-network check (:class:`NetworkTiming`, None when it was not run)."""
    multiple: int
    gains: Dict[int, float] = field(default_factory=dict)
    groups: List[str] = field(default_factory=list)
    network: Optional["NetworkTiming"] = None


@dataclass
class NetworkTiming:
    """The whole network pruned with each multiple: median ms and MACs reduction per
    multiple, on what ratios (``basis``), and the multiple the rule picked."""
    ms: Dict[int, float]
    macs_reduction: Dict[int, float]
    basis: str
    multiple: int = 1

    def compared(self) -> List[int]:
        """The multiples within ``MACS_POINTS`` of round 1's MACs reduction."""
        base = self.macs_reduction[1]
        return [m for m in self.ms if abs(self.macs_reduction[m] - base) <= MACS_POINTS + 1e-12]

    def charged_ms(self, multiple: int) -> float:
        """ms of ``multiple``, scaled up by round 1's MACs over its own when it keeps fewer."""
        kept, base = 1 - self.macs_reduction[multiple], 1 - self.macs_reduction[1]
        return self.ms[multiple] * max(1.0, base / max(kept, 1e-12))


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


def probe_widths(model: LatencyModel, group: str) -> List[int]:
    """The widths a probe times: ``SPAN`` either side of half the group's width."""
    width = model.groups[group]
    center = max(1, width // 2)
    return list(range(max(1, center - SPAN), min(width, center + SPAN) + 1))


def block_specs(model: LatencyModel, group: str, widths: Sequence[int]) -> List[LayerSpec]:
    """The run overhead, then the layers ``group`` sets at each width."""
    specs = [LayerSpec("linear", 1, 1)]
    for w in widths:
        for n in model.touching(group):
            info = model.layers[n]
            cin, cout = model.layer_sides(info, {group: w})
            specs.append(info.at(int(round(cin)), int(round(cout))))
    return specs


def block_latency(model: LatencyModel, group: str, widths: Sequence[int]) -> np.ndarray:
    """Summed ms of the layers ``group`` sets, at each width (overhead subtracted)."""
    names = model.touching(group)
    ms = np.asarray(model.table.lookup(block_specs(model, group, widths)))
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


def choose_multiple(timing: NetworkTiming) -> int:
    """The rule of the whole-network check (see the module).

    >>> t = NetworkTiming({1: 10.0, 8: 9.3, 16: 9.0, 32: 8.0},
    ...                   {1: 0.50, 8: 0.51, 16: 0.495, 32: 0.53}, "test")
    >>> t.compared(), round(t.charged_ms(8), 3), choose_multiple(t)  # 32: 3 points more cut
    ([1, 8, 16], 9.49, 16)
    >>> choose_multiple(NetworkTiming({1: 10.0, 8: 9.8}, {1: 0.5, 8: 0.5}, "test"))  # < 3%
    1
    """
    ms = {m: timing.charged_ms(m) for m in timing.compared()}
    fastest = min(ms.values())
    if fastest > ms[1] * (1 - MIN_GAIN):
        return 1
    return min(m for m in ms if ms[m] <= fastest * (1 + TIE) and ms[m] <= ms[1] * (1 - MIN_GAIN))


def _candidate_ratios(network, input_shape, graph, ratios, skip, multiple) -> Dict[str, float]:
    if ratios is not None:
        return resolve_ratios(graph, ratios, skip)
    level = logger.level
    logger.setLevel(logging.ERROR)   # the bisection's tries and misses are not the user's
    try:
        ratio = uniform_ratio(network, input_shape, REPRESENTATIVE_MACS, skip=skip,
                              round_to=multiple, graph=graph)
    finally:
        logger.setLevel(level)
    return resolve_ratios(graph, ratio, skip)


@dataclass
class Candidates:
    """The networks the whole-network check times: per multiple, its table name and
    MACs reduction; per name, a factory of the pruned copy (equal widths share one)."""
    names: Dict[int, str]
    macs_reduction: Dict[int, float]
    factories: Dict[str, object]
    basis: str


def candidate_networks(network: paddle.nn.Layer, input_shape: Sequence[int], *, ratios=None,
                       skip: Sequence[str] = (), graph: Optional[DependencyGraph] = None,
                       candidates: Sequence[int] = NETWORK_CANDIDATES) -> Candidates:
    """The pruned copies :func:`network_check` times (nothing is pruned or timed yet);
    multiples not below the widest group, or (without ``ratios``) that cannot reach the
    representative cut, are left out."""
    try:
        candidates = sorted({1, *(check_round_to(m) for m in candidates)})
    except (ConfigError, TypeError):
        raise ConfigError("candidates", candidates, "ints >= 1 (channel multiples)") from None
    network, shape = unwrap(network), as_inputs(input_shape)
    graph = graph if graph is not None else trace(network, shape)
    flops = FlopsModel(network, shape, graph=graph)
    criterion = get_criterion("l1_norm")
    full = {g.name: g.num_units for g in graph.groups}
    base_key = fingerprint(network, shape)
    widest = max(full.values(), default=1)
    basis = "the requested ratios" if ratios is not None else (
        f"uniform -{REPRESENTATIVE_MACS:.0%} MACs per multiple")
    out = Candidates({}, {}, {}, basis)
    for m in (m for m in candidates if m == 1 or m < widest):   # else nothing is rounded
        try:
            group_ratios = _candidate_ratios(network, shape, graph, ratios, skip, m)
        except SlimError as err:   # a small network: the representative cut is out of reach
            if m == 1 or ratios is not None:
                raise
            logger.info("round_to auto: round %d left out (%s)", m, err)
            continue
        plan = plan_pruning(network, graph, group_ratios, criterion, m)
        out.macs_reduction[m] = 1 - flops.count(plan) / flops.base
        widths = dict(full, **{g["name"]: g["after"] for g in plan.groups})
        out.names[m] = f"round {base_key} {fingerprint_widths(widths)}"

        def make(group_ratios=group_ratios, m=m):
            pruned = copy.deepcopy(network)
            plan_pruning(pruned, graph, group_ratios, criterion, m).apply(pruned)
            return pruned
        out.factories.setdefault(out.names[m], make)
    return out


def network_check(network: paddle.nn.Layer, input_shape: Sequence[int], table: LatencyTable, *,
                  ratios=None, skip: Sequence[str] = (), graph: Optional[DependencyGraph] = None,
                  candidates: Sequence[int] = NETWORK_CANDIDATES) -> NetworkTiming:
    """Times the whole ``network`` pruned with each multiple of ``candidates`` side by
    side (cached in ``table``) and picks one with :func:`choose_multiple`; ``ratios``
    None: a uniform cut to ``-REPRESENTATIVE_MACS`` of the MACs for each multiple."""
    found = candidate_networks(network, input_shape, ratios=ratios, skip=skip, graph=graph,
                               candidates=candidates)
    multiples = list(found.names)
    logger.info("round_to auto: timing the whole network pruned with multiples %s (%s) in "
                "Paddle Inference, %d thread(s), oneDNN %s (%d networks; cached)",
                ", ".join(map(str, multiples)), found.basis, table.threads,
                "on" if table.onednn else "off", len(found.factories))
    ms = table.networks_ms(found.factories, as_inputs(input_shape))
    macs = found.macs_reduction
    timing = NetworkTiming({m: ms[found.names[m]] for m in multiples}, macs, found.basis)
    timing.multiple = choose_multiple(timing)
    logger.info("round_to auto, whole network: %s -> %d", ", ".join(
        f"round {m} {timing.ms[m]:.3f} ms (MACs -{100 * macs[m]:.1f}%"
        + ("" if m in timing.compared() else ", not compared") + ")" for m in multiples),
        timing.multiple)
    return timing


def auto_round_to(network: paddle.nn.Layer, input_shape: Sequence[int], *,
                  layers: Optional[List[str]] = None, skip: Sequence[str] = (),
                  threads: int = 1, onednn: bool = True, cache_dir: Optional[str] = None,
                  graph: Optional[DependencyGraph] = None,
                  table: Optional[LatencyTable] = None, ratios=None,
                  check_network: bool = True) -> RoundingChoice:
    """Measures (or reads from the cache) which multiple buys speed; see the module.

    ``ratios`` (as :func:`slim_callbacks.prune` takes them; None: a representative uniform cut) is
    what the whole-network check prunes at; ``check_network=False`` decides on the
    per-layer probes alone."""
    input_shape = as_inputs(input_shape)
    table = table or LatencyTable(threads=threads, onednn=onednn, directory=cache_dir)
    model = LatencyModel(network, input_shape, table, layers, skip, graph, measure=False)
    if ratios is not None:
        resolve_ratios(model.graph, ratios, skip)   # a bad ratio fails before any timing
    groups = probe_groups(model)
    if not groups:
        return RoundingChoice(1, {1: 0.0}, [])
    per_group = []
    for group in groups:
        widths = probe_widths(model, group)
        per_group.append(rounding_gains(widths, block_latency(model, group, widths)))
    gains = {m: float(np.mean([g[m] for g in per_group])) for m in CANDIDATES}
    best = max(gains.values())
    multiple = min((m for m in CANDIDATES if gains[m] >= max(MIN_GAIN, best - TIE)), default=1)
    logger.info("round_to auto, layer probes: %d (widths divisible by %s run %s below the trend; "
                "blocks of %s)", multiple, ", ".join(map(str, CANDIDATES[1:])),
                ", ".join(f"{100 * gains[m]:.1f}%" for m in CANDIDATES[1:]), ", ".join(groups))
    if not check_network:
        return RoundingChoice(multiple, gains, groups)
    timing = network_check(network, input_shape, table, ratios=ratios, skip=skip,
                           graph=model.graph)
    return RoundingChoice(timing.multiple, gains, groups, timing)


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
    flops = FlopsModel(network, input_shape, graph=graph)
    exact, rounded = (flops.count(plan_pruning(network, graph, group_ratios, criterion, r))
                      for r in (1, round_to))
    return (rounded - exact) / flops.base
