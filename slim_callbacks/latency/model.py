"""The latency model of a pruning plan: a network's batch-1 latency after a plan,
predicted from per-layer measurements on this machine, without changing the network.

Each Conv2D and Linear layer is timed on its own (its input size, random weights) at
a grid of channel counts, in Paddle Inference (:class:`~slim_callbacks.latency.table.LatencyTable`,
cached as JSON per runtime, threads and machine): a layer whose input and output
channels are both pruned gets a 2-D grid (``GRID`` x ``GRID`` kept fractions), a
depthwise conv or a layer with one pruned side a 1-D one. Between grid points the
latency is interpolated (bilinearly). A run's fixed cost (a 1-channel Linear, the
same predictor overhead every isolated layer pays) is subtracted from every point.

The whole network is timed once too (``base_ms``). An isolated layer saves a
different time than it does inside the network (it pays its own layout reorders; the
network has fixed costs), so each layer's timings are scaled:
``predicted = base_ms - sum(scale * (before - after))``. Without calibration every
scale is ``base_ms / sum(before)`` (the network shrinks like its layers);
:meth:`LatencyModel.calibrate` times, per group, the whole network with that group
alone at half width next to the unpruned one, and scales the group's layers so their
saving matches.

Examples:
    >>> import paddle, tempfile
    >>> from slim_callbacks.latency.table import LatencyTable
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 16, 3), paddle.nn.ReLU(),
    ...                            paddle.nn.Conv2D(16, 8, 1))
    >>> table = LatencyTable(directory=tempfile.mkdtemp(), rounds=1, runs_per_round=1, warmup=0)
    >>> model = LatencyModel(net, [1, 3, 16, 16], table, grid=(1.0, 0.5))
    >>> sorted(model.groups), model.layers["0"].out_group, model.layers["2"].in_group
    (['0'], '0', '0')
    >>> model.base_ms > 0 and model.predict({"0": 16}) == model.base_ms
    True
    >>> sorted(model.calibrate()), sorted(model.reference)
    (['0'], ['measured_ms', 'predicted_ms', 'widths_kept'])
"""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.analysis.flops_model import forward_with_hooks
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import is_linear, unwrap
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import chosen_groups
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.latency.table import LatencyTable, LayerSpec
from slim_callbacks.tracing.tracer import DependencyGraph, trace

GRID = (1.0, 0.75, 0.5, 0.35, 0.2, 0.1)  # kept fractions each pruned side is timed at
OVERHEAD_SPEC = LayerSpec("linear", 1, 1)


@dataclass
class LayerInfo:
    """One timed layer: its spec unpruned, which group sets its input / output
    channels (None: fixed), whether it is depthwise, and how often it runs."""
    spec: LayerSpec
    in_group: Optional[str] = None
    out_group: Optional[str] = None
    depthwise: bool = False
    calls: int = 1
    grid_in: Tuple[int, ...] = ()
    grid_out: Tuple[int, ...] = ()
    ms: Optional[np.ndarray] = None  # [len(grid_in), len(grid_out)], overhead subtracted

    def at(self, cin: int, cout: int) -> LayerSpec:
        """The spec with ``cin`` input and ``cout`` output channels."""
        if self.depthwise:
            return replace(self.spec, in_ch=cout, out_ch=cout, groups=cout)
        return replace(self.spec, in_ch=cin, out_ch=cout)


def layer_calls(network: paddle.nn.Layer, input_shape: Sequence[int]) -> Dict[str, Tuple[paddle.nn.Layer, list, int]]:
    """Structural name -> (layer, input shape of its first call, number of calls) for
    every Conv2D and Linear leaf layer, from one forward pass."""
    calls: Dict[str, list] = {}
    names = {id(layer): name for name, layer in network.named_sublayers()}

    def hook(layer, inputs):
        entry = calls.setdefault(names[id(layer)], [layer, list(inputs[0].shape), 0])
        entry[2] += 1

    forward_with_hooks(network, input_shape,
                       lambda layer: isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Linear)), hook,
                       pre=True)
    return {name: tuple(entry) for name, entry in calls.items()}


def layer_spec(layer: paddle.nn.Layer, shape: list) -> LayerSpec:
    """The :class:`LayerSpec` of a Conv2D or Linear called on an input of ``shape``."""
    if is_linear(layer):
        fan_in, fan_out = layer.weight.shape
        return LayerSpec("linear", fan_in, fan_out, positions=max(1, math.prod(shape[1:-1])))
    kh, kw = layer._kernel_size
    return LayerSpec("conv", layer._in_channels, layer._out_channels, (kh, kw),
                     stride=_one(layer._stride), padding=_one(layer._padding),
                     dilation=_one(layer._dilation), groups=layer._groups,
                     hw=(int(shape[2]), int(shape[3])))


def _one(value):
    """An int for one value or equal values, else the values as a tuple (a padding
    string such as ``"SAME"`` as it is).

    >>> _one([1, 1]), _one((2, 1)), _one("SAME")
    (1, (2, 1), 'SAME')
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    values = tuple(int(v) for v in value)
    return values[0] if len(set(values)) == 1 else values


def grid_widths(width: int, grid: Sequence[float], round_to: int = 1) -> Tuple[int, ...]:
    """The channel counts a side of ``width`` channels is timed at (ascending), on the
    ``round_to`` lattice (the widths a plan with that rounding can have).

    >>> grid_widths(64, GRID), grid_widths(64, GRID, 16)
    ((6, 13, 22, 32, 48, 64), (16, 32, 48, 64))
    """
    step = max(1, min(round_to, width))
    return tuple(sorted({max(step, int(round(width * f / step)) * step) for f in grid} | {width}))


def fingerprint_widths(widths: Mapping[str, int], round_to: int = 1) -> str:
    """A short hash of group widths (and rounding).

    >>> len(fingerprint_widths({"conv1": 8}))
    12
    """
    text = "|".join(f"{g}={w}" for g, w in sorted(widths.items())) + f"|r{round_to}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def fingerprint(network: paddle.nn.Layer, input_shape: Sequence[int]) -> str:
    """A short hash of a network's layers, parameter shapes and input shape."""
    parts = [f"{name}:{type(layer).__name__}:" + ",".join(
        str(list(p.shape)) for p in layer.parameters(include_sublayers=False))
        for name, layer in network.named_sublayers()]
    text = "|".join(parts) + f"|{as_inputs(input_shape).describe()}"
    return f"{type(network).__name__}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


class LatencyModel:
    """Predicted batch-1 latency of ``network`` after a plan or a set of group widths.

    ``groups`` are the chosen prunable groups (``layers``/``skip`` patterns as in the
    strategies); ``widths`` maps each to its channel count. Every timing goes through
    ``table`` (a :class:`~slim_callbacks.latency.table.LatencyTable`).
    """

    def __init__(self, network: paddle.nn.Layer, input_shape: Sequence[int], table: LatencyTable,
                 layers: Optional[List[str]] = None, skip: Sequence[str] = (),
                 graph: Optional[DependencyGraph] = None, grid: Sequence[float] = GRID,
                 measure: bool = True, round_to: int = 1):
        self.network = unwrap(network)
        self.input_shape = as_inputs(input_shape)  # example inputs of any structure
        self.table = table
        self.graph = graph if graph is not None else trace(self.network, self.input_shape)
        self.groups = {g.name: g.num_units for g in chosen_groups(self.graph, layers, skip)}
        self.layers: Dict[str, LayerInfo] = {}
        for name, (layer, shape, count) in layer_calls(self.network, self.input_shape).items():
            spec = layer_spec(layer, shape)
            dw = spec.kind == "conv" and spec.groups > 1 and spec.groups == spec.in_ch == spec.out_ch
            self.layers[name] = LayerInfo(spec, depthwise=dw, calls=count)
        self.round_to = round_to
        self.base_key = fingerprint(self.network, self.input_shape)
        self._map_groups()
        if measure:
            self._measure(tuple(grid))

    def _map_groups(self) -> None:
        """Which group sets each layer's input and output channels (one plan per group)."""
        criterion = get_criterion("l1_norm")
        for group, width in self.groups.items():
            if width < 2:
                continue
            plan = plan_pruning(self.network, self.graph, {group: 0.5}, criterion, 1)
            for (name, attr), cut in plan.params.items():
                info = self.layers.get(name)
                if attr != "weight" or info is None:
                    continue
                out_axis, in_axis = (1, 0) if info.spec.kind == "linear" else (0, 1)
                if out_axis in cut.kept:
                    info.out_group = group
                if in_axis in cut.kept and not info.depthwise:
                    info.in_group = group
        for name, info in list(self.layers.items()):
            grouped = info.spec.groups > 1 and not info.depthwise
            if grouped and (info.in_group or info.out_group):  # grouped convs: kept fixed
                info.in_group = info.out_group = None

    def grid_specs(self, grid: Sequence[float] = GRID) -> List[LayerSpec]:
        """Every layer spec the model times (the run overhead first), setting each
        layer's grid of widths."""
        specs: List[LayerSpec] = [OVERHEAD_SPEC]
        for info in self.layers.values():
            r = self.round_to
            info.grid_in = grid_widths(info.spec.in_ch, grid, r) if info.in_group else (info.spec.in_ch,)
            info.grid_out = grid_widths(info.spec.out_ch, grid, r) if info.out_group else (info.spec.out_ch,)
            specs += [info.at(i, o) for i in info.grid_in for o in info.grid_out]
        return specs

    def calibration_widths(self, round_to: int = 1, keep: float = 0.5) -> Dict[str, Dict[str, int]]:
        """The copies :meth:`calibrate` times: each group alone at ``keep`` of its width,
        and (``"*"``) all of them."""
        half = {g: keep_count(w, 1 - keep, round_to) for g, w in self.groups.items()}
        wanted = {g: {g: half[g]} for g in self.groups if half[g] < self.groups[g]}
        wanted["*"] = {g: w for g, w in half.items() if w < self.groups[g]}
        return wanted

    def _measure(self, grid: Tuple[float, ...]) -> None:
        ms = self.table.lookup(self.grid_specs(grid))
        self.overhead_ms = ms[0]
        position = 1
        for info in self.layers.values():
            n = len(info.grid_in) * len(info.grid_out)
            values = np.maximum(np.asarray(ms[position:position + n]) - self.overhead_ms, 0.0)
            info.ms = values.reshape(len(info.grid_in), len(info.grid_out)) * info.calls
            position += n
        self.base_ms = self.table.networks_ms({self.base_key: self._copy({})}, self.input_shape)[self.base_key]
        self.scale = {name: 1.0 for name in self.layers}
        alpha = self.base_ms / max(self.layers_ms({}), 1e-12)
        self.scale = {name: alpha for name in self.layers}
        self.full_sum = self.layers_ms({})
        self.reference: Optional[Dict[str, float]] = None

    def _copy(self, widths: Mapping[str, int], round_to: int = 1):
        """A factory of the network pruned to ``widths`` (made when it is exported)."""
        def make():
            ratios = {g: (self.groups[g] - w) / self.groups[g] for g, w in widths.items()
                      if w < self.groups[g]}
            pruned = copy.deepcopy(self.network)
            if ratios:
                plan_pruning(pruned, self.graph, ratios, get_criterion("l1_norm"), round_to).apply(pruned)
            return pruned
        return make

    def calibrate(self, round_to: int = 1, keep: float = 0.5, batch: int = 6) -> Dict[str, float]:
        """Scales the isolated layers' savings to what they save inside the network.

        Each chosen group alone at ``keep`` of its width (rounded to ``round_to``) is
        timed as a whole network next to the unpruned one (``batch`` copies per side by
        side measurement, each with its own unpruned baseline; cached as the ratio
        pruned/unpruned). A group's ``alpha`` is its measured saving over its layers'
        isolated saving; a layer's scale is the mean ``alpha`` of the groups setting its
        channels. A copy with every group at ``keep`` is timed too, as a check
        (``reference``: its measured and predicted ms). Returns ``{group: alpha}``.
        """
        wanted = self.calibration_widths(round_to, keep)
        ratios = self._ratios(wanted, round_to, batch)
        raw = {name: 1.0 for name in self.layers}
        alphas = {}
        for group, widths in wanted.items():
            if group == "*":
                continue
            self.scale = raw
            saving = sum(self.layer_ms(n, {}) - self.layer_ms(n, widths) for n in self.touching(group))
            alphas[group] = float(np.clip((1 - ratios[group]) * self.base_ms / saving, 0.0, 4.0)) \
                if saving > 1e-9 else 0.0
        default = float(np.median(list(alphas.values()))) if alphas else 1.0
        self.scale = {}
        for name, info in self.layers.items():
            own = [alphas[g] for g in (info.in_group, info.out_group) if g in alphas]
            self.scale[name] = float(np.mean(own)) if own else default
        self.full_sum = self.layers_ms({})
        self.reference = {"widths_kept": keep, "measured_ms": ratios["*"] * self.base_ms,
                          "predicted_ms": self.predict(wanted["*"])}
        return alphas

    def measured_reduction(self, widths: Mapping[str, int], round_to: int = 1) -> float:
        """The latency reduction of the network at ``widths``, timed whole next to the
        unpruned one (cached)."""
        return 1 - self._ratios({"x": dict(widths)}, round_to, 1)["x"]

    def cached_reduction(self, widths: Mapping[str, int], round_to: int = 1) -> Optional[float]:
        """:meth:`measured_reduction` if the table has it, else None."""
        key = self.ratio_key(widths, round_to)
        return None if key not in self.table.entries else 1 - self.table.entries[key]

    def ratio_key(self, widths: Mapping[str, int], round_to: int) -> str:
        """The table key of a pruned copy's measured ratio to the unpruned network."""
        full = {g: int(widths.get(g, w)) for g, w in self.groups.items()}
        return f"ratio {self.base_key} {fingerprint_widths(full, round_to)}"

    def _ratios(self, wanted: Mapping[str, Mapping[str, int]], round_to: int, batch: int) -> Dict[str, float]:
        """Measured ms of each pruned copy over the unpruned network's, timed side by
        side in batches with the unpruned one; cached in the table."""
        keys = {name: self.ratio_key(widths, round_to) for name, widths in wanted.items()}
        todo = [name for name in wanted if keys[name] not in self.table.entries]
        for i in range(0, len(todo), batch):
            names = todo[i:i + batch]
            nets = {f"{self.base_key}-base": self._copy({})}
            nets.update({keys[n]: self._copy(wanted[n], round_to) for n in names})
            ms = self.table.networks_ms(nets, self.input_shape, refresh=True)
            for n in names:
                self.table.entries[keys[n]] = ms[keys[n]] / ms[f"{self.base_key}-base"]
            self.table.save()
        return {name: self.table.entries[keys[name]] for name in wanted}

    @staticmethod
    def _interp(info: LayerInfo, cin: float, cout: float) -> float:
        rows = [np.interp(cout, info.grid_out, row) for row in info.ms]
        return float(np.interp(cin, info.grid_in, rows))

    def layer_sides(self, info: LayerInfo, widths: Mapping[str, float]) -> Tuple[float, float]:
        """Input and output channels of a layer when the groups have ``widths``."""
        def side(group, full):
            if group is None or group not in widths:
                return full
            return full * widths[group] / self.groups[group]
        cout = side(info.out_group, info.spec.out_ch)
        return (cout if info.depthwise else side(info.in_group, info.spec.in_ch)), cout

    def layer_ms(self, name: str, widths: Mapping[str, float]) -> float:
        """Interpolated ms of one layer (all its calls) at the group ``widths``, scaled
        to the network (:meth:`calibrate`)."""
        info = self.layers[name]
        return self.scale[name] * self._interp(info, *self.layer_sides(info, widths))

    def layers_ms(self, widths: Mapping[str, float], names: Optional[Sequence[str]] = None) -> float:
        """Summed ms of the timed layers (or of ``names``) at the group ``widths``."""
        return sum(self.layer_ms(n, widths) for n in (names if names is not None else self.layers))

    def touching(self, group: str) -> List[str]:
        """The layers whose channels ``group`` sets."""
        return [n for n, info in self.layers.items() if group in (info.in_group, info.out_group)]

    def predict(self, widths: Mapping[str, float]) -> float:
        """Predicted ms of the network with the chosen groups at ``widths``."""
        return self.base_ms - (self.full_sum - self.layers_ms(widths))

    def plan_widths(self, plan: PruningPlan) -> Dict[str, int]:
        """Each chosen group's channel count after ``plan``."""
        widths = {g["name"]: g["after"] for g in plan.groups}
        return {g: widths.get(g, w) for g, w in self.groups.items()}

    def predict_plan(self, plan: PruningPlan) -> float:
        """Predicted ms of the network after ``plan``."""
        return self.predict(self.plan_widths(plan))

    def reduction(self, widths: Mapping[str, float]) -> float:
        """Predicted share of the latency that ``widths`` remove."""
        return 1 - self.predict(widths) / self.base_ms
