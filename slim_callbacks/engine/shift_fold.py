"""BN-shift folding: what a removed channel still sent downstream goes into a bias.

A channel whose BatchNorm scale is exactly 0 outputs its shift ``beta`` whatever the
input; after the activation its consumers still receive the constant ``act(beta)``.
Removing the channel removes that constant, so the consumers' outputs move. Folding
puts ``sum_i W[:, i] * act(beta_i)`` into the consumer's bias first:

- the value each consumer really receives is measured, not derived: one probe forward
  pass (eval mode, random input, nothing changed) reads the consumer's input at the
  removed positions, so any elementwise activation, pooling or residual add in between
  is accounted for. During the probe the scales of the BatchNorm right after the
  producer are set to 0 for the removed channels (and restored), so the probe sees what
  they send when that scale is treated as 0: ``act(beta)``, carried through whatever
  follows (a later depthwise conv and BatchNorm keep their real weights);
- exact when the removed channels' value does not depend on the input (some BatchNorm
  of the unit has ``gamma == 0`` exactly, or every producer row is zero). Network
  Slimming removes channels whose ``gamma`` is small but not 0: there the fold is the
  approximation ``gamma ~ 0``, made only where ``|gamma|`` is at most ``NEAR_ZERO``
  (0.1) times the median ``|gamma|`` of its BatchNorm (each fold records ``max_gamma``,
  the largest ``|gamma|`` it treated as 0). A removed channel with a larger scale, or
  with no BatchNorm and nonzero rows, varies with the input and is not folded; neither
  is one whose probed value is not constant over batch and space (e.g. a zero-padded
  depthwise conv, or a residual sum with channels of other scales, in between);
- consumers: Linear and Conv (``groups == 1``, not transposed). The constant goes into
  the consumer's bias, or, if it has none, into the running mean of the BatchNorm that
  directly follows it (``mean -= delta``: exact in eval mode, and in train mode the
  batch mean absorbs a constant anyway). A consumer without either is skipped (no bias
  is created: the optimizer and resumed checkpoints would not know the new parameter);
- exact for Linear and 1x1 convs, and for k x k convs without zero padding. A k x k
  conv with zero padding sees fewer taps of the constant at its borders: the fold then
  adds the contribution's mean over the output positions (see
  :func:`conv_contribution`), exact inside, off by the missing taps' share at the
  borders, and the fold is flagged ``exact: False``;
- grouped convs, transposed convs and other consumers are skipped with the reason.

    >>> import paddle
    >>> nn = paddle.nn
    >>> net = nn.Sequential(nn.Conv2D(3, 4, 3, bias_attr=False), nn.BatchNorm2D(4), nn.ReLU(),
    ...                     nn.Conv2D(4, 2, 1))
    >>> net[1].weight.set_value(paddle.to_tensor([0.0, 1.0, 1.0, 1.0]))
    >>> net[1].bias.set_value(paddle.to_tensor([0.5, 0.0, 0.0, 0.0]))
    >>> from slim_callbacks import prune
    >>> plan = prune(net, [1, 3, 8, 8], {"0": 0.25}, criterion="slim", fold_bn_shift=True)
    >>> [(f["consumer"], f["channels"], f["exact"]) for f in plan.folds]
    [('3', 1, True)]
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import (
    is_batch_norm,
    is_conv,
    is_linear,
    is_transposed_conv,
    layer_table,
    preserved_state,
    unwrap,
)
from slim_callbacks.tracing.groups import CHANNEL, IN, OUT, ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Fold:
    """One constant folded into a tensor: ``target[attr] += sign * delta``."""

    consumer: str
    target: str
    attr: str
    delta: np.ndarray
    sign: float
    channels: int
    exact: bool
    max_gamma: float = 0.0

    def summary(self) -> dict:
        return {"consumer": self.consumer, "into": f"{self.target}.{self.attr}",
                "channels": self.channels, "exact": self.exact,
                "max_gamma": round(self.max_gamma, 8)}


def removed_units(group: ChannelGroup, plan) -> np.ndarray:
    """The units of ``group`` the plan removes (read from a member's kept indices)."""
    for m in group.members:
        cut = plan.params.get((m.layer, m.attr))
        if cut is not None and m.axis in cut.kept and not m.blocks:
            return np.unique(m.units[~np.isin(m.indices, cut.kept[m.axis])])
    return np.zeros(0, dtype=np.int64)


NEAR_ZERO = 0.1  # |gamma| <= this x the median |gamma| of its BatchNorm: treated as 0


@dataclasses.dataclass
class UnitState:
    """Per unit of a group: can its value depend on the input, and its BatchNorm scales."""

    input_free: np.ndarray  # some BN scale is exactly 0, or every producer row is zero
    has_bn: np.ndarray  # its first BatchNorm's scale is near 0 (see NEAR_ZERO)
    max_gamma: np.ndarray  # |gamma| of the unit's first BatchNorm (0 without one)
    bn_entries: List[Tuple[str, np.ndarray, np.ndarray]]  # first BNs: (layer, units, indices)


def unit_state(group: ChannelGroup, layers, layer_types) -> UnitState:
    """What each unit of ``group`` sends when removed (see :class:`UnitState`)."""
    n = group.num_units
    zero_gamma, has_bn = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    rows_zero, max_gamma = np.ones(n, dtype=bool), np.zeros(n)
    near_zero = np.zeros(n, dtype=bool)
    bn_entries = []
    for m in group.members:
        if m.attr != "weight" or m.role not in (CHANNEL, OUT):
            continue
        values = np.moveaxis(layers[m.layer]._parameters["weight"].numpy(), m.axis, 0)[m.indices]
        values = values.reshape(len(m.indices), -1)
        is_zero = np.all(values == 0, axis=1)
        if m.role == CHANNEL and "BatchNorm" in layer_types.get(m.layer, ""):
            zero_gamma[m.units[is_zero]] = True
            first = ~has_bn[m.units]  # members come in trace order: the BN after the producer
            has_bn[m.units[first]] = True
            gammas = np.abs(values[first, 0])
            max_gamma[m.units[first]] = gammas
            layer_median = float(np.median(np.abs(layers[m.layer]._parameters["weight"].numpy())))
            near_zero[m.units[first]] = gammas <= NEAR_ZERO * layer_median
            bn_entries.append((m.layer, m.units[first], m.indices[first]))
        elif m.role == OUT:
            rows_zero[m.units[~is_zero]] = False
    return UnitState(zero_gamma | rows_zero, has_bn & near_zero, max_gamma, bn_entries)


def skip_reason(layer) -> str:
    """Why a consumer cannot take a fold ("" if it can)."""
    if is_linear(layer):
        return ""
    if not is_conv(layer) or is_transposed_conv(layer):
        return f"{type(layer).__name__} consumers are not folded"
    if layer._groups != 1:
        return "grouped convs are not folded"
    return ""


def conv_contribution(layer, input_shape, positions: np.ndarray, values: np.ndarray):
    """What constant input channels add to a conv's output: ``(delta, uniform)``.

    The conv runs on an input holding ``values`` at channel ``positions`` (zeros
    elsewhere) minus its output on zeros (the bias), so strides, dilation and every
    padding mode count as the layer does them. ``delta`` is the mean over output
    positions (the bias that best replaces the contribution); ``uniform`` says the
    contribution is the same everywhere, i.e. the fold is exact. A zero-padded k x k conv
    sees fewer taps of the constant at its borders: not uniform, and on small feature
    maps the mean is far closer than the full-kernel sum.
    """
    channel_axis = 1 if getattr(layer, "_data_format", "NCHW").startswith("NC") else -1
    shape = [1] + list(input_shape[1:])
    x = np.zeros(shape, dtype="float32")
    index = [slice(None)] * len(shape)
    index[channel_axis] = positions
    x[tuple(index)] = np.expand_dims(values, tuple(range(1, len(shape) - 1))) if channel_axis == -1 \
        else values.reshape([len(values)] + [1] * (len(shape) - 2))
    with paddle.no_grad():
        out = (layer(paddle.to_tensor(x)) - layer(paddle.zeros(shape, dtype="float32"))).numpy()
    out = np.moveaxis(out[0].astype(np.float64), channel_axis if channel_axis == -1 else 0, 0)
    flat = out.reshape(out.shape[0], -1)
    scale = max(float(np.abs(flat).max()), 1e-12)
    return flat.mean(axis=1), bool(np.ptp(flat, axis=1).max() <= 1e-6 * scale)


@contextlib.contextmanager
def probe(net: paddle.nn.Layer, consumers: Sequence[str]) -> Iterator[Tuple[dict, dict]]:
    """Records each consumer's input (numpy) and which BatchNorm takes its output directly.

    Yields ``(inputs, next_bn)``: consumer -> input array, consumer -> BN layer name.
    """
    layers = layer_table(net)
    inputs: Dict[str, np.ndarray] = {}
    outputs: Dict[int, str] = {}
    keep: List[paddle.Tensor] = []  # keeps ids unique during the pass
    next_bn: Dict[str, str] = {}
    handles = []

    def before(name):
        def hook(layer, args):
            if name in consumers and name not in inputs:
                inputs[name] = args[0].numpy()
            if is_batch_norm(layer) and id(args[0]) in outputs:
                next_bn.setdefault(outputs[id(args[0])], name)
        return hook

    def after(name):
        def hook(layer, args, out):
            keep.append(out)
            outputs[id(out)] = name
        return hook

    for name, layer in layers.items():
        if name in consumers or is_batch_norm(layer):
            handles.append(layer.register_forward_pre_hook(before(name)))
        if name in consumers:
            handles.append(layer.register_forward_post_hook(after(name)))
    try:
        yield inputs, next_bn
    finally:
        for h in handles:
            h.remove()


def probe_consumers(net, consumers: Sequence[str], input_shape,
                    zero_scales: Sequence[Tuple[str, np.ndarray]] = ()):
    """Runs the probe pass: two random inputs (``input_shape``: example inputs of any
    structure, at batch 2), eval mode, with the BatchNorm scales at
    ``zero_scales`` (layer, indices) set to 0; every tensor and the RNG are restored."""
    layers = layer_table(net)
    inputs = as_inputs(input_shape).with_batch(2)
    saved = []
    try:
        for name, indices in zero_scales:
            weight = layers[name].weight
            array = weight.numpy()
            saved.append((weight, array.copy()))
            array[indices] = 0
            weight.set_value(array)
        with preserved_state(net), paddle.no_grad(), probe(net, consumers) as (seen, next_bn):
            net.eval()
            paddle.seed(20260)
            inputs.call(net, fill="randn")
    finally:
        for weight, array in reversed(saved):
            weight.set_value(array)
    return seen, next_bn


def constant_values(x: np.ndarray, positions: np.ndarray, linear: bool):
    """(constant?, value) per position of the consumer input ``x`` (features last for
    Linear, channels on axis 1 for convs)."""
    values = x[..., positions] if linear else np.moveaxis(x[:, positions], 1, -1)
    values = values.reshape(-1, len(positions))
    return np.ptp(values, axis=0) == 0, values[0]


def fold_shifts(network: paddle.nn.Layer, graph: DependencyGraph, plan,
                input_shape: Sequence[int]) -> Tuple[List[Fold], List[dict]]:
    """The folds ``plan`` allows, computed on the network as it is (nothing changes).

    Returns:
        ``(folds, skipped)``: folds to apply before the plan, and one dict per consumer
        whose removed channels were not folded (``consumer``, ``channels``, ``reason``).
    """
    net = unwrap(network)
    layers = layer_table(net)
    pruned = {g["name"] for g in plan.groups}
    work = []  # (consumer member, removed positions, their units' exactness and max gamma)
    zero_scales = []  # (BN layer, indices) of removed units, zeroed during the probe
    for group in graph.groups:
        if group.name not in pruned:
            continue
        gone = removed_units(group, plan)
        state = unit_state(group, layers, graph.layer_types)
        for bn, units, indices in state.bn_entries:
            zero_scales.append((bn, indices[np.isin(units, gone)]))
        foldable = state.input_free | state.has_bn
        for m in group.members:
            if m.role == IN and m.attr == "weight":
                hit = np.isin(m.units, gone)
                if hit.any():
                    units = m.units[hit]
                    work.append((m, m.indices[hit], units, foldable[units], state.input_free[units],
                                 np.where(state.input_free[units], 0.0, state.max_gamma[units])))
    skipped: List[dict] = []
    candidates = []
    varying = ("the removed channels vary with the input (BatchNorm scale not near 0, or no "
               "BatchNorm and nonzero weights)")
    for m, positions, units, foldable, exact, gammas in work:
        reason = skip_reason(layers[m.layer]) or ("" if foldable.any() else varying)
        if reason:
            skipped.append({"consumer": m.layer, "channels": _count(units), "reason": reason})
            continue
        if not foldable.all():
            skipped.append({"consumer": m.layer, "channels": _count(units[~foldable]), "reason": varying})
        candidates.append((m, positions[foldable], units[foldable], exact[foldable], gammas[foldable]))
    if not candidates:
        return [], skipped
    inputs, next_bn = probe_consumers(net, sorted({m.layer for m, *_ in candidates}), input_shape,
                                      zero_scales)
    folds: Dict[Tuple[str, str], Fold] = {}
    for m, positions, units, exact_units, gammas in candidates:
        layer = layers[m.layer]
        if m.layer not in inputs:
            skipped.append({"consumer": m.layer, "channels": _count(units),
                            "reason": "the layer did not run in the probe pass"})
            continue
        linear = is_linear(layer)
        constant, values = constant_values(inputs[m.layer], positions, linear)
        if not constant.all():
            skipped.append({"consumer": m.layer, "channels": _count(units[~constant]),
                            "reason": "not constant at the consumer's input (a padded depthwise "
                                      "conv or another branch in between)"})
        positions, values = positions[constant], values[constant].astype(np.float64)
        exact_units, gammas, units = exact_units[constant], gammas[constant], units[constant]
        if len(positions) == 0:
            continue
        if linear:
            delta = values @ layer.weight.numpy().astype(np.float64)[positions]
            uniform = True
        else:
            delta, uniform = conv_contribution(layer, inputs[m.layer].shape, positions, values)
        if getattr(layer, "bias", None) is not None:
            target, attr, sign = m.layer, "bias", 1.0
        elif m.layer in next_bn:
            target, attr, sign = next_bn[m.layer], "_mean", -1.0
        else:
            skipped.append({"consumer": m.layer, "channels": _count(units),
                            "reason": "the consumer has no bias and no BatchNorm right after it"})
            continue
        exact = bool(exact_units.all()) and uniform
        max_gamma = float(gammas.max(initial=0.0))
        key = (target, attr)
        if key in folds:
            fold = folds[key]
            fold.delta = fold.delta + delta
            fold.channels += _count(units)
            fold.exact = fold.exact and exact
            fold.max_gamma = max(fold.max_gamma, max_gamma)
        else:
            folds[key] = Fold(m.layer, target, attr, delta, sign, _count(units), exact,
                              max_gamma)
    return list(folds.values()), skipped


def _count(units: np.ndarray) -> int:
    """Channels (distinct units) among consumer positions (a flatten-Linear has H*W per unit)."""
    return int(len(np.unique(units)))


@contextlib.contextmanager
def folded(network: paddle.nn.Layer, folds: Sequence[Fold]) -> Iterator[None]:
    """Adds the folds to their tensors; undoes them if the block raises."""
    layers = layer_table(network)
    saved = []
    for fold in folds:
        tensor = getattr(layers[fold.target], fold.attr)
        array = tensor.numpy()
        saved.append((tensor, array))
        tensor.set_value((array + fold.sign * fold.delta).astype(array.dtype))
    try:
        yield
    except BaseException:
        for tensor, array in saved:
            tensor.set_value(array)
        raise


def apply_with_folds(network: paddle.nn.Layer, graph: DependencyGraph, plan, input_shape,
                     optimizer=None):
    """Folds the removed constant channels into their consumers, then applies ``plan``
    (all or nothing). Records ``plan.folds`` and ``plan.fold_skipped`` and logs both."""
    folds, skipped = fold_shifts(network, graph, plan, input_shape)
    with folded(network, folds):
        plan.apply(network, optimizer, example_inputs=input_shape)
    plan.folds = [f.summary() for f in folds]
    plan.fold_skipped = skipped
    for f in folds:
        note = "" if f.exact else f" (approximate: |gamma| <= {f.max_gamma:.3g} treated as 0" \
            "; or a zero-padded k x k conv at its borders)"
        logger.info("folded %d removed channel(s) into %s.%s%s", f.channels, f.target, f.attr, note)
    for s in skipped:
        logger.debug("not folded: %d channel(s) into %s: %s", s["channels"], s["consumer"], s["reason"])
    return plan
