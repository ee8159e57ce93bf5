"""Sensitivity analysis: how much the metric drops when one group alone is pruned.

For every chosen group and every ratio, the units that :func:`~slim_callbacks.engine.planner.plan_pruning`
would remove are taken out, the network is evaluated, and

    loss = (base - metric) / |base|

is recorded (``base`` = the unpruned metric; higher metrics are better, so a positive
loss is a drop; ``|base|`` keeps the sign right for metrics such as a negative loss).
Results are saved after every evaluation and an interrupted run resumes from its file.

    >>> import paddle
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> x = paddle.randn([4, 3, 32, 32])
    >>> def eval_fn(network):
    ...     network.eval()
    ...     with paddle.no_grad():
    ...         return -float(network(x).square().mean())
    >>> sens = sensitivity(net, eval_fn, [1, 3, 32, 32], layers=["conv1"],
    ...                    ratios=[0.25, 0.5], progress=False)
    >>> list(sens), list(sens["conv1.0"])
    (['conv1.0'], [0.25, 0.5])

How it is fast without changing the answer (``method="mask"``, the default):

- No copy and no surgery per evaluation. The selected units are removed by zeroing
  the consumer input slices (``in``-role members: the input columns of the convs and
  Linears that read the group). Every path of a prunable group's channels ends in such
  a slice: the tracer blocks any channel that reaches an op it cannot map or a
  network output, and BatchNorms, depthwise convs, activations, pooling, residual adds
  and squeeze-excitation multiplies only carry the channel on to a consumer. So the
  consumers compute exactly what they compute after physical pruning (up to float
  summation order; a masked channel holding inf or NaN would give NaN), and
  ``tests/test_sensitivity.py`` checks it layer by layer against physical pruning on
  MobileNetV2, ResNet-18, a squeeze-excitation and a concat network. The zeroed
  slices are restored from saved copies after each evaluation.
- The network is traced once, and each group is scored once (the scores do not change
  between ratios).
- A ratio that removes no unit is recorded as loss 0 without evaluating, and ratios
  that select the same units (narrow layers) are evaluated once (both exact for a
  deterministic ``eval_fn``).
- Prefix caching (``cache=True``, the default; :class:`PrefixCache`): everything that
  runs before the group's first changed layer (for masking: the first consumer, so the
  producer conv, its BatchNorm and a depthwise conv are in the prefix) gives the same
  outputs for every ratio. The first evaluation of a group records the outputs of the
  top-most sublayers that finish before it; later evaluations return them instead of
  computing, but only while each layer's input is exactly the recorded one (otherwise
  the cache is switched off for the group, logged at debug level), so the answer is
  the uncached one even for an ``eval_fn`` that draws new data on every call. The
  first evaluation of a group replays the previous group's cache the same way. Cost:
  the prefix activations of the whole eval set for one group (two during a group's
  first evaluation); ``cache=False`` turns it off. Deep groups gain most.

Worker processes (``workers=N``): groups are handed out in network order to ``N``
processes forked from this one, each with its own prefix cache; losses come back to
this process, which writes the file after each. Paddle's CPU kernels gain little from
more threads (a MobileNetV1 forward at 224: 1.12x with two OpenMP threads), so on a
machine with ``N`` free cores this divides the time by almost ``N`` (1.8x measured
with two) and the losses are bit-identical to ``workers=1``.

``method="prune"`` removes the units physically but in place, and puts parameters and
layer attributes back after each evaluation (no deep copy). It evaluates the smaller
network, so it wins when evaluations are long; masking never changes a shape, which
evaluation code that captured shapes (``paddle.jit.to_static``) needs.

What that buys, measured by ``benchmarks/bench_sensitivity.py`` side by side with
PaddleSlim 2.6.0's own ``L1NormFilterPruner.sensitive()`` (in its venv, same weights,
eval batches, 13 pointwise layers x 9 ratios; MobileNetV1 x1.0 at 224x224, 2 batches of
8, median of 2 interleaved rounds; BENCHMARKS.md): PaddleSlim 45.7 s (39.3 s with two
threads); ours, mask with the prefix cache, 16.4 s on one core (2.79x) and 9.1 s with
``workers=2`` (5.0x; 4.3x against PaddleSlim's two threads). Largest loss difference
to PaddleSlim: 2.9e-07 (mask) / 2.8e-17 (prune). The evaluation dominates: limit its
data (a few hundred samples) to make the analysis fast.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
import sys
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.analysis.workers import fork_available, run_forked
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.engine.criteria import Criterion, get_criterion, group_scores
from slim_callbacks.engine.planner import select_units
from slim_callbacks.engine.ratios import check_round_to, matches, resolve_ratios
from slim_callbacks.engine.surgery import apply_cuts, set_storage
from slim_callbacks.tracing.groups import IN, ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FORMAT = "slim_callbacks.analysis.sensitivity/1"
METHODS = ("mask", "prune")
BASE_RTOL = 1e-5  # how close a resumed run's base metric must be to the file's
DEFAULT_CACHE_BYTES = 2 ** 30  # prefix cache limit per group with cache=True

Sensitivities = Dict[str, Dict[float, float]]


# --------------------------------------------------------------------------- checks
def check_ratio_list(ratios) -> List[float]:
    """Distinct numbers in (0, 1), in the order given."""
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise ConfigError("ratios", ratios, "a non-empty list of numbers in (0, 1)")
    out = []
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r < 1:
            raise ConfigError("ratios", r, "numbers in (0, 1), e.g. [0.1, 0.2, ..., 0.9]")
        out.append(float(r))
    if len(set(out)) != len(out):
        raise ConfigError("ratios", list(ratios), "distinct ratios")
    return out


def check_patterns(key: str, layers) -> Optional[List[str]]:
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not layers or not all(isinstance(p, str) for p in layers):
        raise ConfigError(key, layers, "None (every prunable group) or a non-empty list of "
                                       "layer name patterns, e.g. ['conv*._pointwise_conv*']")
    return list(layers)


def check_workers(workers) -> int:
    """``workers`` is an int >= 1, and > 1 only where forking a CPU process is safe."""
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ConfigError("workers", workers, "an int >= 1 (processes evaluating side by side)")
    if workers > 1:
        if not fork_available():
            raise ConfigError("workers", workers, "1 on this platform (worker processes need os.fork)")
        if not paddle.device.get_device().startswith("cpu"):
            raise ConfigError("workers", workers, f"1 on {paddle.device.get_device()} "
                                                  f"(forked processes cannot use the device)")
        if paddle.distributed.get_world_size() > 1:
            raise ConfigError("workers", workers, "1 under data parallel (each rank is one process)")
    return int(workers)


def chosen_groups(graph: DependencyGraph, layers: Optional[List[str]],
                  skip: Sequence[str] = ()) -> List[ChannelGroup]:
    """The prunable groups matched by ``layers`` (all if None) less ``skip``, in network order.

    Raises:
        ConfigError: a pattern that matches no conv/linear layer.
        SlimError: nothing prunable is left.
    """
    producers = [p for g in graph.groups for p in g.producers]
    for key, patterns in (("layers", layers or []), ("skip", [skip] if isinstance(skip, str) else skip)):
        for pattern in patterns:
            if not any(matches(p, pattern, graph.param_names) for p in producers):
                raise ConfigError(f"{key} pattern", pattern, f"a pattern matching a Conv2D/Linear "
                                                             f"layer, e.g. one of {', '.join(producers[:5])}")
    patterns = {p: 0.5 for p in layers} if layers is not None else 0.5
    names = resolve_ratios(graph, patterns, skip)
    groups = [g for g in graph.groups if g.name in names]
    if not groups:
        raise SlimError(f"no prunable group matches layers={layers} (skip={list(skip)}); "
                        f"prunable groups: {[g.name for g in graph.prunable_groups()][:8]}")
    return groups


def as_metric(value) -> float:
    """One finite number from what ``eval_fn`` returned (a float, 0-d array or tensor,
    or a one-element list such as ``paddle.Model.evaluate``'s ``[loss]``)."""
    try:
        if isinstance(value, paddle.Tensor):
            value = value.numpy()
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.size != 1 or not np.isfinite(array).all():
        raise SlimError(f"eval_fn must return one finite number (higher is better), "
                        f"got {value!r}")
    return float(array.reshape(()))


# ----------------------------------------------------------------------- the file
class Record:
    """What a sensitivity file holds: settings, base metric and losses so far."""

    def __init__(self, criterion: str, ratios: List[float], round_to: int):
        self.criterion, self.ratios, self.round_to = criterion, ratios, round_to
        self.base: Optional[float] = None
        self.widths: Dict[str, int] = {}
        self.losses: Dict[str, Dict[float, float]] = {}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "criterion": self.criterion, "ratios": self.ratios,
            "round_to": self.round_to, "base": self.base, "widths": self.widths,
            "sensitivities": {name: {repr(r): self.losses[name][r] for r in self.ratios
                                     if r in self.losses[name]}
                              for name in self.network_order() if self.losses.get(name)},
        }

    def network_order(self) -> List[str]:
        """Group names in network order (``widths`` is written in it before any loss),
        so results that arrive out of order from workers are saved in one order."""
        return list(self.widths) + [name for name in self.losses if name not in self.widths]

    def save(self, path: Optional[str]) -> None:
        """Writes the file atomically (a temporary file, then ``os.replace``)."""
        if path is None:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Record":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            record = cls(str(data["criterion"]), [float(r) for r in data["ratios"]],
                         int(data["round_to"]))
            record.base = None if data["base"] is None else float(data["base"])
            record.widths = {str(k): int(v) for k, v in data["widths"].items()}
            record.losses = {str(name): {float(r): float(v) for r, v in losses.items()}
                             for name, losses in data["sensitivities"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise SlimError(f"{path} is not a sensitivity file: {type(err).__name__}: {err}") from err
        return record

    def check_settings(self, path: str, criterion: str, ratios: List[float], round_to: int) -> None:
        for key, mine, asked in (("criterion", self.criterion, criterion),
                                 ("ratios", self.ratios, ratios), ("round_to", self.round_to, round_to)):
            if mine != asked:
                raise SlimError(f"{path} was made with {key}={mine!r}, this run asks for "
                                f"{key}={asked!r}: pass the same {key}, another file, or "
                                f"delete the file to start over")

    def check_widths(self, path: str, groups: Sequence[ChannelGroup]) -> None:
        for group in groups:
            width = self.widths.get(group.name)
            if width is not None and width != group.num_units:
                raise SlimError(f"{path} has group {group.name} with {width} channels, the "
                                f"network has {group.num_units}: it was made for another network")

    def check_base(self, path: str, base: float) -> None:
        if self.base is not None and not math.isclose(self.base, base, rel_tol=BASE_RTOL, abs_tol=1e-12):
            raise SlimError(f"{path} was made with base metric {self.base!r}, eval_fn now gives "
                            f"{base!r}: the network's weights or the evaluation changed; "
                            f"delete the file to start over")


def load_sensitivities(path: str) -> Sensitivities:
    """``{group: {ratio: loss}}`` from a file written by :func:`sensitivity`."""
    return {name: dict(losses) for name, losses in Record.load(path).losses.items()}


# ------------------------------------------------------------------- network state
class NetworkState:
    """Train/eval flags and every state tensor of a network, to put back later."""

    def __init__(self, network: paddle.nn.Layer):
        self.modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
        self.tensors = [(name, t, np.array(t.numpy(), copy=True))
                        for name, t in network.state_dict().items()]

    def restore_modes(self) -> None:
        for layer, training in self.modes:
            layer.training = training

    def changed(self) -> List[str]:
        return [name for name, t, saved in self.tensors
                if list(t.shape) != list(saved.shape) or not np.array_equal(t.numpy(), saved)]

    def restore(self) -> List[str]:
        """Puts back every tensor that differs; returns their names."""
        changed = self.changed()
        for name, t, saved in self.tensors:
            if name in changed:
                set_storage(t, saved)
        self.restore_modes()
        return changed


def evaluate(eval_fn: Callable, network, state: NetworkState) -> float:
    """``eval_fn(network)`` as a float; every sublayer's train/eval flag is put back."""
    try:
        return as_metric(eval_fn(network))
    finally:
        state.restore_modes()


# ------------------------------------------------------------- removing one group
class GroupMask:
    """Zeroes the consumer input slices of chosen units of one group, and undoes it."""

    def __init__(self, group: ChannelGroup, layers: Mapping[str, paddle.nn.Layer]):
        self.members = [m for m in group.members if m.role == IN]
        self.params = {}
        for m in self.members:
            param = layers[m.layer]._parameters[m.attr]
            self.params.setdefault((m.layer, m.attr), (param, np.array(param.numpy(), copy=True)))

    def slices(self, units: np.ndarray) -> Dict[Tuple[str, str], List[Tuple[int, np.ndarray]]]:
        """(layer, attr) -> [(axis, indices)] zeroed for ``units``."""
        out: Dict[Tuple[str, str], List[Tuple[int, np.ndarray]]] = {}
        for m in self.members:
            hit = m.indices[np.isin(m.units, units)]
            if hit.size:
                out.setdefault((m.layer, m.attr), []).append((m.axis, hit))
        return out

    @contextlib.contextmanager
    def applied(self, units: np.ndarray) -> Iterator[None]:
        touched = []
        try:
            for key, cuts in self.slices(units).items():
                param, saved = self.params[key]
                array = saved.copy()
                for axis, hit in cuts:
                    index = [slice(None)] * array.ndim
                    index[axis] = hit
                    array[tuple(index)] = 0
                touched.append(key)
                set_storage(param, array)
            yield
        finally:
            for key in touched:
                param, saved = self.params[key]
                set_storage(param, saved)


class GroupPrune:
    """Removes chosen units of one group physically, in place, and puts them back."""

    def __init__(self, group: ChannelGroup, layers: Mapping[str, paddle.nn.Layer]):
        self.group, self.layers = group, layers
        self.saved = {}
        for m in group.members:
            param = layers[m.layer]._parameters[m.attr]
            self.saved.setdefault((m.layer, m.attr), (param, np.array(param.numpy(), copy=True)))
        self.attrs = {name: {k: v for k, v in vars(layers[name]).items()
                             if k in ("_in_channels", "_out_channels", "_groups", "_num_features")}
                      for name in group.layers()}

    def cuts(self, units: np.ndarray) -> Dict[Tuple[str, str], Dict[int, np.ndarray]]:
        """The same kept indices :func:`plan_pruning` gives for these units."""
        gone: Dict[Tuple[str, str], Dict[int, set]] = {}
        for m in self.group.members:
            hit = m.indices[np.isin(m.units, units)]
            gone.setdefault((m.layer, m.attr), {}).setdefault(m.axis, set()).update(hit.tolist())
        cuts = {}
        for key, axes in gone.items():
            shape = self.saved[key][1].shape
            cuts[key] = {axis: np.array([i for i in range(shape[axis]) if i not in g], dtype=np.int64)
                         for axis, g in axes.items()}
        return cuts

    @contextlib.contextmanager
    def applied(self, units: np.ndarray) -> Iterator[None]:
        try:
            apply_cuts(dict(self.layers), self.cuts(units))
            yield
        finally:
            for param, saved in self.saved.values():
                set_storage(param, saved)
            for name, attrs in self.attrs.items():
                for key, value in attrs.items():
                    setattr(self.layers[name], key, value)


# ------------------------------------------------------------------ prefix caching
def _versions(value) -> Optional[list]:
    """In-place versions of the tensors in ``value`` (a tensor or a flat tuple/list of
    tensors and plain constants); None if it holds anything else."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    out = []
    for item in items:
        if isinstance(item, paddle.Tensor):
            out.append(item._inplace_version())
        elif item is None or isinstance(item, (bool, int, float, str)):
            out.append(None)
        else:
            return None
    return out


def _same(now, cached, versions) -> bool:
    """``now`` equals what ``cached`` held when it was recorded (in-place versions
    unchanged, then identity or an exact element-wise comparison)."""
    now_items = now if isinstance(now, (tuple, list)) else (now,)
    cached_items = cached if isinstance(cached, (tuple, list)) else (cached,)
    if len(now_items) != len(cached_items) or type(now) is not type(cached):
        return False
    for a, b, version in zip(now_items, cached_items, versions):
        if not isinstance(b, paddle.Tensor):
            if isinstance(a, paddle.Tensor) or type(a) is not type(b) or a != b:
                return False
            continue
        if not isinstance(a, paddle.Tensor) or b._inplace_version() != version:
            return False
        if a is b:
            continue
        if (list(a.shape) != list(b.shape) or a.dtype != b.dtype or str(a.place) != str(b.place)
                or not bool(paddle.equal_all(a, b))):
            return False
    return True


class PrefixCache:
    """Computes the part of an evaluation that comes before a group's changed layers
    once, and replays it for the group's other ratios.

    ``changed`` are the layers whose parameters or attributes the remover touches
    (``in`` consumers for masking, every member for in-place pruning). A sublayer is
    *cacheable* when neither it nor any of its descendants is changed. During the
    first evaluation, every forward of the network is wrapped: the top-most cacheable
    sublayers called, in eval mode, before a changed layer starts within the current
    call of the network record their inputs and output, keyed by their call index
    within that ``eval_fn`` run. Later evaluations replace only those sublayers'
    ``forward`` with one that returns the recorded output for that call index if the
    input equals the recorded input exactly (same tensor object with an unchanged
    in-place version, or an element-wise comparison); on any mismatch the layer is
    computed and the cache is switched off for the group, so the answer is the one
    without caching even for an ``eval_fn`` that draws different data each time.
    Every replaced ``forward`` is put back in ``finally``.

    Memory: the recorded outputs of one group's prefix over the whole eval set
    (about the activations of the first half of the network for all eval batches,
    for an average group), freed when the next group starts.
    """

    def __init__(self, net: paddle.nn.Layer, changed: Sequence[str], name: str = "",
                 max_bytes: int = DEFAULT_CACHE_BYTES):
        layers = dict(net.named_sublayers())
        self.net, self.name = net, name
        changed_ids = {id(layers[n]) for n in changed if n in layers}
        unique = {id(layer): layer for layer in layers.values()}
        self.changed = [unique[i] for i in changed_ids]
        self.candidates = [layer for layer in unique.values()
                           if not any(id(s) in changed_ids for s in layer.sublayers(include_self=True))]
        self.records: Dict[int, Dict[int, tuple]] = {}
        self.recorded = False
        self.enabled = True
        self.hits = 0
        self.max_bytes, self.nbytes, self.full = max_bytes, 0, False

    @contextlib.contextmanager
    def _patched(self, wrappers: Mapping[int, Tuple[paddle.nn.Layer, Callable]]) -> Iterator[None]:
        saved = []
        try:
            for layer, make in wrappers.values():
                had = "forward" in vars(layer)
                original = layer.forward
                saved.append((layer, had, vars(layer).get("forward")))
                object.__setattr__(layer, "forward", make(original))
            yield
        finally:
            for layer, had, value in reversed(saved):
                if had:
                    object.__setattr__(layer, "forward", value)
                else:
                    object.__delattr__(layer, "forward")

    def _record_wrappers(self):
        status = {"dirty": False, "active": 0}
        counts: Dict[int, int] = {}

        def root(original):
            def forward(*args, **kwargs):
                status["dirty"] = False  # a new call of the network: its prefix runs again
                return original(*args, **kwargs)
            return forward

        def changed(original):
            def forward(*args, **kwargs):
                status["dirty"] = True
                return original(*args, **kwargs)
            return forward

        def candidate(layer):
            def make(original):
                def forward(*args, **kwargs):
                    index = counts[id(layer)] = counts.get(id(layer), -1) + 1
                    top = status["active"] == 0 and not status["dirty"]
                    inputs = (args, tuple(sorted(kwargs.items())))
                    flat = list(args) + [v for _, v in inputs[1]]
                    versions = _versions(flat) if top else None
                    status["active"] += 1
                    try:
                        output = original(*args, **kwargs)
                    finally:
                        status["active"] -= 1
                    if (versions is not None and not status["dirty"]
                            and not any(s.training for s in layer.sublayers(include_self=True))):
                        out_versions = _versions(output)
                        tensors = [output] if isinstance(output, paddle.Tensor) else list(output or ())
                        size = sum(int(np.prod(t.shape)) * t.element_size() for t in tensors
                                   if isinstance(t, paddle.Tensor))
                        if out_versions is None or not tensors or not all(
                                isinstance(t, paddle.Tensor) for t in tensors):
                            pass
                        elif self.nbytes + size > self.max_bytes:
                            if not self.full:
                                logger.debug("prefix cache of %s: %.0f MB limit reached; later "
                                             "calls are computed", self.name, self.max_bytes / 2**20)
                            self.full = True
                        elif not self.full:
                            self.nbytes += size
                            self.records.setdefault(id(layer), {})[index] = (
                                layer, tuple(flat), list(kwargs), versions, output, out_versions)
                    return output
                return forward
            return make

        wrappers = {id(layer): (layer, candidate(layer)) for layer in self.candidates}
        wrappers.update({id(layer): (layer, changed) for layer in self.changed})
        wrappers[id(self.net)] = (self.net, root)
        return wrappers

    def _replay_wrappers(self, keep: Optional[set] = None):
        counts: Dict[int, int] = {}

        def replay(layer, records):
            def make(original):
                def forward(*args, **kwargs):
                    index = counts[id(layer)] = counts.get(id(layer), -1) + 1
                    record = records.get(index)
                    if record is None or not self.enabled:
                        return original(*args, **kwargs)
                    _, flat, keys, versions, output, out_versions = record
                    now = list(args) + [kwargs[k] for k in sorted(kwargs)]
                    if (sorted(kwargs) == sorted(keys) and _same(tuple(now), flat, versions)
                            and _same(output, output, out_versions)):
                        self.hits += 1
                        return output
                    self.enabled = False
                    logger.debug("prefix cache of %s: call %d of %s has another input than in "
                                 "the first evaluation; computing the whole network for this group",
                                 self.name, index, type(layer).__name__)
                    return original(*args, **kwargs)
                return forward
            return make

        return {key: (records[next(iter(records))][0], replay(records[next(iter(records))][0], records))
                for key, records in self.records.items() if keep is None or key in keep}

    def evaluate(self, run: Callable[[], float], previous: Optional["PrefixCache"] = None) -> float:
        """``run()`` (one evaluation), recording the prefix the first time and replaying
        it afterwards while it matches. During the recording evaluation, ``previous``
        (the cache of the group analysed before) replays its layers that are cacheable
        for this group too, so a group's first evaluation need not recompute what the
        group before already had (same input check, so equally exact)."""
        if not self.recorded:
            try:
                with contextlib.ExitStack() as stack:
                    if previous is not None and previous.enabled and previous.records:
                        keep = {id(layer) for layer in self.candidates}
                        stack.enter_context(previous._patched(previous._replay_wrappers(keep)))
                    stack.enter_context(self._patched(self._record_wrappers()))
                    return run()
            finally:
                self.recorded = True
        if not self.enabled or not self.records:
            return run()
        with self._patched(self._replay_wrappers()):
            return run()


# ----------------------------------------------------------------------- the run
def sensitivity(network: paddle.nn.Layer, eval_fn: Callable, input_shape: Sequence[int],
                layers: Optional[Sequence[str]] = None, ratios: Sequence[float] = DEFAULT_RATIOS,
                criterion="l1_norm", *, file: Optional[str] = None, skip: Sequence[str] = (),
                round_to: int = 1, method: str = "mask", cache=True, workers: int = 1,
                progress: Optional[bool] = None) -> Sensitivities:
    """Loss of the metric when each group alone is pruned at each ratio.

    Args:
        network: a dygraph ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        eval_fn: ``eval_fn(network) -> metric``, higher is better (accuracy, or a
            negative loss). Limit its data to save time: every (group, ratio) pair
            runs it once.
        input_shape: shape of one example input, e.g. ``[1, 3, 224, 224]``.
        layers: patterns of the layers to analyse (see :mod:`slim_callbacks.engine.ratios`);
            None analyses every prunable group.
        ratios: shares of channels to remove, each in (0, 1).
        criterion: which channels a ratio removes, as in :func:`~slim_callbacks.prune`.
        file: JSON file to save after every evaluation and to resume from. It records
            criterion, ratios, round_to, the base metric and group widths; a file made
            with other settings or for another network is refused.
        skip: patterns of layers to leave out.
        round_to: as in :func:`~slim_callbacks.prune`, so the analysis removes what a
            later prune would.
        method: ``"mask"`` (default) or ``"prune"``; see the module docstring. Both
            give the physical-pruning answer.
        cache: compute the part of the network that runs before a group's first
            changed layer once per group and replay it for the group's other ratios
            (see :class:`PrefixCache`; exact, replayed only while its input is the
            same). Holds that prefix's outputs over the eval set for one group at a
            time, at most 1 GiB (True) or the number of bytes given (an int): calls
            beyond the limit are computed. ``False`` turns it off. MobileNetV1 at
            224x224 needs about 13 MB per eval image for its deepest group.
        workers: processes that evaluate groups side by side (forked from this one, so
            ``eval_fn`` and its data need not be picklable; each holds its own prefix
            cache). Paddle computes on one core per process, so ``workers`` up to the
            number of cores divides the time almost by ``workers``. The answer is the
            same; this process writes the file. CPU only, where ``os.fork`` exists.
        progress: show a tqdm bar (layers x ratios, with ETA); None shows it only when
            stderr is a terminal.

    Returns:
        ``{group name: {ratio: loss}}`` for the chosen groups, in network order. A
        group's name is its first producer's structural name, e.g.
        ``"conv2_1._pointwise_conv.0"``.

    Raises:
        ConfigError: a bad argument; nothing is evaluated.
        SlimError: the network rejects ``input_shape``, eval_fn returns no finite
            number or a zero base metric, or ``file`` does not fit this run.
        Whatever ``eval_fn`` raises, after the network is put back exactly as it was
        (weights, buffers, shapes, train/eval flags).
    """
    if not callable(eval_fn):
        raise ConfigError("eval_fn", eval_fn, "a callable: eval_fn(network) -> metric")
    ratios = check_ratio_list(ratios)
    criterion = get_criterion(criterion)
    round_to = check_round_to(round_to)
    layers = check_patterns("layers", layers)
    if method not in METHODS:
        raise ConfigError("method", method, f"one of {', '.join(METHODS)}")
    if isinstance(cache, bool):
        cache = DEFAULT_CACHE_BYTES if cache else 0
    elif not isinstance(cache, numbers.Integral) or cache < 0:
        raise ConfigError("cache", cache, "True, False or a limit in bytes, e.g. 2**30")
    check_workers(workers)
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError("progress", progress, "True, False or None (only on a terminal)")
    if file is not None and not isinstance(file, (str, os.PathLike)):
        raise ConfigError("file", file, "a path or None")
    file = None if file is None else os.fspath(file)

    graph = trace(network, input_shape)
    groups = chosen_groups(graph, layers, skip)
    record = Record(criterion.name, ratios, round_to)
    if file is not None and os.path.exists(file):
        record = Record.load(file)
        record.check_settings(file, criterion.name, ratios, round_to)
        record.check_widths(file, groups)
    record.widths.update({g.name: g.num_units for g in groups})

    state = NetworkState(network)
    try:
        base = evaluate(eval_fn, network, state)
        if file is not None:
            record.check_base(file, base)
        if base == 0:
            raise SlimError("eval_fn returned 0 for the unpruned network: the relative loss "
                            "(base - metric) / |base| is undefined; use a metric that is not 0")
        changed = state.restore()
        if changed:
            logger.warning("eval_fn changed %d tensors of the network (%s...); they are put "
                           "back after every run, but evaluations that update BatchNorm "
                           "statistics (train mode) make sensitivities noisy",
                           len(changed), ", ".join(changed[:3]))
        record.base = base
        record.save(file)
        analysis = GroupAnalysis(network, eval_fn, graph, record, criterion, state, method, cache)
        run_groups(analysis, groups, file, progress, workers)
    finally:
        changed = state.restore()
        if changed:
            logger.warning("put back %d tensors that eval_fn changed: %s", len(changed),
                           ", ".join(changed[:5]))
    return {g.name: {r: record.losses[g.name][r] for r in ratios} for g in groups}


class GroupAnalysis:
    """Evaluates the ratios of one group at a time; the serial loop and every worker
    process each hold one (with the prefix cache of the last group they analysed)."""

    def __init__(self, network, eval_fn: Callable, graph: DependencyGraph, record: Record,
                 criterion: Criterion, state: NetworkState, method: str,
                 cache: int = DEFAULT_CACHE_BYTES):
        self.network, self.eval_fn, self.graph, self.record = network, eval_fn, graph, record
        self.criterion, self.state, self.method, self.cache = criterion, state, method, int(cache)
        self.by_name = dict(unwrap(network).named_sublayers())
        self.previous: Optional[PrefixCache] = None

    def pending(self, group: ChannelGroup) -> List[float]:
        losses = self.record.losses.get(group.name, {})
        return [r for r in self.record.ratios if r not in losses]

    def losses(self, group: ChannelGroup) -> Iterator[Tuple[str, float, float]]:
        """``(group name, ratio, loss)`` for each ratio the record lacks."""
        scores = group_scores(group, self.by_name, self.criterion, self.graph.layer_types)
        remover = (GroupMask if self.method == "mask" else GroupPrune)(group, self.by_name)
        changed = ([m.layer for m in group.members if m.role == IN] if self.method == "mask"
                   else list(group.layers()))
        prefix = (PrefixCache(unwrap(self.network), changed, group.name, self.cache)
                  if self.cache else None)
        run = lambda: evaluate(self.eval_fn, self.network, self.state)  # noqa: E731
        seen: Dict[bytes, float] = {}
        base = self.record.base
        for ratio in self.pending(group):
            units = select_units(group, scores, ratio, self.criterion, self.record.round_to)
            key = np.asarray(units, dtype=np.int64).tobytes()
            if len(units) == 0:
                loss = 0.0
            elif key in seen:
                loss = seen[key]
            else:
                with remover.applied(units):
                    metric = prefix.evaluate(run, self.previous) if prefix is not None else run()
                if prefix is not None and prefix.recorded:
                    self.previous = None  # one group's cache at a time once this one is recorded
                loss = (base - metric) / abs(base)
                seen[key] = loss
            yield group.name, ratio, loss
        if prefix is not None:
            logger.debug("prefix cache of %s: %d cached layer calls, %d replayed%s", group.name,
                         sum(map(len, prefix.records.values())), prefix.hits,
                         "" if prefix.enabled else " (switched off: input changed)")
            if prefix.recorded and prefix.enabled:
                self.previous = prefix  # the next group's first evaluation starts from it


def run_groups(analysis: GroupAnalysis, groups: List[ChannelGroup], file: Optional[str],
               progress: Optional[bool], workers: int = 1) -> None:
    """Evaluates every (group, ratio) pair not yet in the record, in this process or in
    ``workers`` forked ones; saves the file after every loss either way."""
    from tqdm import tqdm

    record = analysis.record
    total = len(groups) * len(record.ratios)
    todo = [g for g in groups if analysis.pending(g)]
    done = total - sum(len(analysis.pending(g)) for g in groups)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, initial=done, disable=not show, desc="sensitivity",
              unit="eval", dynamic_ncols=True) as bar:
        def store(name: str, ratio: float, loss: float) -> None:
            record.losses.setdefault(name, {})[ratio] = loss
            record.save(file)
            bar.set_postfix_str(name)
            bar.update(1)

        if workers > 1 and len(todo) > 1:
            run_forked(todo, analysis.losses, workers, lambda group, result: store(*result))
        else:
            for group in todo:
                for result in analysis.losses(group):
                    store(*result)
    for group in groups:
        losses = record.losses.get(group.name, {})
        logger.debug("sensitivity of %s: %s", group.name,
                     ", ".join(f"{r:g}: {losses[r]:.4f}" for r in record.ratios if r in losses))
