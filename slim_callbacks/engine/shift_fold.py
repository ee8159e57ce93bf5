"""BN-shift folding: what a removed channel still sent downstream goes into a bias.

A channel whose BatchNorm scale is exactly 0 outputs its shift ``beta`` whatever the
input; after the activation its consumers still receive the constant ``act(beta)``.
Removing the channel removes that constant, so the consumers' outputs move. Folding
puts ``sum_i W[:, i] * act(beta_i)`` into the consumer's bias first:

- the value each consumer really receives is measured, not derived: one probe forward
  pass (eval mode, random input, nothing changed) reads the consumer's input at the
  removed positions, so any elementwise activation, pooling or residual add in between
  is accounted for;
- only channels whose value does not depend on the input are folded: some BatchNorm of
  the unit has ``gamma == 0`` exactly, or every producer row is zero; and the probed
  input must be constant over batch and space. Channels with ``gamma != 0`` vary with
  the input and are never folded (their mean would be an approximation);
- consumers: Linear and Conv (``groups == 1``, not transposed). The constant goes into
  the consumer's bias, or, if it has none, into the running mean of the BatchNorm that
  directly follows it (``mean -= delta``: exact in eval mode, and in train mode the
  batch mean absorbs a constant anyway). A consumer without either is skipped (no bias
  is created: the optimizer and resumed checkpoints would not know the new parameter);
- exact for Linear and 1x1 convs, and for k x k convs without zero padding. A k x k
  conv with zero padding sees fewer taps of the constant at its borders: there the
  fold over-corrects by the missing taps (see :func:`fold_shifts`' ``exact`` flag);
- grouped convs, transposed convs and other consumers are skipped with the reason.

    >>> import paddle
    >>> nn = paddle.nn
    >>> net = nn.Sequential(nn.Conv2D(3, 4, 3, bias_attr=False), nn.BatchNorm2D(4), nn.ReLU(),
    ...                     nn.Conv2D(4, 2, 1))
    >>> net[1].weight.set_value(paddle.to_tensor([0.0, 1.0, 1.0, 1.0]))
    >>> net[1].bias.set_value(paddle.to_tensor([0.5, 0.0, 0.0, 0.0]))
    >>> from slim_callbacks.engine.planner import prune
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

from slim_callbacks.core.paddle_utils import (
    is_batch_norm,
    is_conv,
    is_linear,
    is_transposed_conv,
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

    def summary(self) -> dict:
        return {"consumer": self.consumer, "into": f"{self.target}.{self.attr}",
                "channels": self.channels, "exact": self.exact}


def removed_units(group: ChannelGroup, plan) -> np.ndarray:
    """The units of ``group`` the plan removes (read from a member's kept indices)."""
    for m in group.members:
        cut = plan.params.get((m.layer, m.attr))
        if cut is not None and m.axis in cut.kept:
            return np.unique(m.units[~np.isin(m.indices, cut.kept[m.axis])])
    return np.zeros(0, dtype=np.int64)


def input_free_units(group: ChannelGroup, layers, layer_types) -> np.ndarray:
    """Per unit: True if its value cannot depend on the input (a BatchNorm scale of
    exactly 0, or all producer rows zero)."""
    zero_gamma = np.zeros(group.num_units, dtype=bool)
    rows_zero = np.ones(group.num_units, dtype=bool)
    for m in group.members:
        if m.attr != "weight" or m.role not in (CHANNEL, OUT):
            continue
        values = np.moveaxis(layers[m.layer]._parameters["weight"].numpy(), m.axis, 0)[m.indices]
        is_zero = np.all(values.reshape(len(m.indices), -1) == 0, axis=1)
        if m.role == CHANNEL and "BatchNorm" in layer_types.get(m.layer, ""):
            zero_gamma[m.units[is_zero]] = True
        elif m.role == OUT:
            rows_zero[m.units[~is_zero]] = False
    return zero_gamma | rows_zero


def skip_reason(layer) -> str:
    """Why a consumer cannot take a fold ("" if it can)."""
    if is_linear(layer):
        return ""
    if not is_conv(layer) or is_transposed_conv(layer):
        return f"{type(layer).__name__} consumers are not folded"
    if layer._groups != 1:
        return "grouped convs are not folded"
    return ""


def conv_fold_is_exact(layer) -> bool:
    """A constant input channel gives a constant contribution everywhere unless the
    conv is k x k with zero padding (fewer taps at the borders)."""
    if int(np.prod(layer.weight.shape[2:])) == 1 or layer._padding_mode != "zeros":
        return True
    padding = layer._padding
    if isinstance(padding, str):
        return padding.upper() == "VALID"
    return not np.any(np.asarray(padding, dtype=object) != 0)


@contextlib.contextmanager
def probe(net: paddle.nn.Layer, consumers: Sequence[str]) -> Iterator[Tuple[dict, dict]]:
    """Records each consumer's input (numpy) and which BatchNorm takes its output directly.

    Yields ``(inputs, next_bn)``: consumer -> input array, consumer -> BN layer name.
    """
    layers = dict(net.named_sublayers())
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


def probe_consumers(net, consumers: Sequence[str], input_shape: Sequence[int]):
    """Runs the probe pass: two random inputs, eval mode, state restored."""
    shape = [2] + [int(d) for d in input_shape[1:]]
    with preserved_state(net), paddle.no_grad(), probe(net, consumers) as (inputs, next_bn):
        net.eval()
        paddle.seed(20260)
        net(paddle.randn(shape))
    return inputs, next_bn


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
    layers = dict(net.named_sublayers())
    pruned = {g["name"] for g in plan.groups}
    work = []  # (group, consumer member, removed positions, input-free mask)
    for group in graph.groups:
        if group.name not in pruned:
            continue
        gone = removed_units(group, plan)
        free = input_free_units(group, layers, graph.layer_types)
        for m in group.members:
            if m.role == IN and m.attr == "weight":
                hit = np.isin(m.units, gone)
                if hit.any():
                    work.append((m, m.indices[hit], free[m.units[hit]]))
    skipped: List[dict] = []
    candidates = []
    for m, positions, free in work:
        reason = skip_reason(layers[m.layer])
        if not free.any():
            reason = reason or "the removed channels vary with the input (BatchNorm scale != 0)"
        if reason:
            skipped.append({"consumer": m.layer, "channels": int(len(positions)), "reason": reason})
            continue
        if not free.all():
            skipped.append({"consumer": m.layer, "channels": int((~free).sum()),
                            "reason": "the removed channels vary with the input (BatchNorm scale != 0)"})
        candidates.append((m, positions[free]))
    if not candidates:
        return [], skipped
    inputs, next_bn = probe_consumers(net, sorted({m.layer for m, _ in candidates}), input_shape)
    folds: Dict[Tuple[str, str], Fold] = {}
    for m, positions in candidates:
        layer = layers[m.layer]
        if m.layer not in inputs:
            skipped.append({"consumer": m.layer, "channels": int(len(positions)),
                            "reason": "the layer did not run in the probe pass"})
            continue
        linear = is_linear(layer)
        constant, values = constant_values(inputs[m.layer], positions, linear)
        if not constant.all():
            skipped.append({"consumer": m.layer, "channels": int((~constant).sum()),
                            "reason": "not constant at the consumer's input (a padded depthwise "
                                      "conv or another branch in between)"})
        positions, values = positions[constant], values[constant].astype(np.float64)
        if len(positions) == 0:
            continue
        weight = layer.weight.numpy().astype(np.float64)
        if linear:
            delta = values @ weight[positions]
        else:
            delta = weight[:, positions].reshape(weight.shape[0], len(positions), -1).sum(-1) @ values
        if getattr(layer, "bias", None) is not None:
            target, attr, sign = m.layer, "bias", 1.0
        elif m.layer in next_bn:
            target, attr, sign = next_bn[m.layer], "_mean", -1.0
        else:
            skipped.append({"consumer": m.layer, "channels": int(len(positions)),
                            "reason": "the consumer has no bias and no BatchNorm right after it"})
            continue
        exact = linear or conv_fold_is_exact(layer)
        key = (target, attr)
        if key in folds:
            folds[key].delta = folds[key].delta + delta
            folds[key].channels += len(positions)
            folds[key].exact = folds[key].exact and exact
        else:
            folds[key] = Fold(m.layer, target, attr, delta, sign, int(len(positions)), exact)
    return list(folds.values()), skipped


@contextlib.contextmanager
def folded(network: paddle.nn.Layer, folds: Sequence[Fold]) -> Iterator[None]:
    """Adds the folds to their tensors; undoes them if the block raises."""
    layers = dict(unwrap(network).named_sublayers())
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
        plan.apply(network, optimizer, input_shape=input_shape)
    plan.folds = [f.summary() for f in folds]
    plan.fold_skipped = skipped
    for f in folds:
        logger.info("folded %d removed constant channel(s) into %s.%s%s", f.channels, f.target,
                    f.attr, "" if f.exact else " (approximate at the borders: zero-padded k x k conv)")
    for s in skipped:
        logger.debug("not folded: %d channel(s) into %s: %s", s["channels"], s["consumer"], s["reason"])
    return plan
