"""One record per layer kind: how channels flow through it, which int attributes follow
its pruned shapes, and how its MACs count.

Every part of the engine that asks "what does this layer do?" looks the layer up here
with :func:`kind_of`: the tracer (its channel handler), surgery (its channel attributes,
e.g. a conv's ``_in_channels``/``_out_channels``/``_groups``, set again from the new
weight shapes), the MACs counter and the FLOPs model, ``layer_widths`` and the
VisualDL widths, the Taylor hooks and the pruning-budget snapshot.
:func:`register_layer` adds a kind, so a custom layer is pruned without editing the
engine (the most recent registration for a type wins over earlier and built-in ones).

Example: a layer with a learnable per-channel scale. Unregistered, the tracer sees
its ops one by one and keeps its channels (the reshaped parameter has a fixed size);
registered, the scale is sliced with the channels it multiplies.

    >>> import paddle
    >>> class ChannelScale(paddle.nn.Layer):
    ...     def __init__(self, channels):
    ...         super().__init__()
    ...         self.channels = channels
    ...         self.scale = self.create_parameter([channels], default_initializer=paddle.nn.initializer.Constant(1.0))
    ...     def forward(self, x):
    ...         return x * self.scale.reshape([1, self.channels, 1, 1])
    >>> kind = register_layer(ChannelScale, params={"scale": 0},
    ...                       attributes={"channels": lambda layer: layer.scale.shape[0]})
    >>> kind_of(ChannelScale(4)).name, kind_of(paddle.nn.Conv1D(2, 4, 3)).name
    ('ChannelScale', 'conv')
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import paddle

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import (
    is_batch_norm,
    is_conv,
    is_embedding,
    is_group_norm,
    is_layer_norm,
    is_linear,
    is_prelu,
    is_transposed_conv,
)
from slim_callbacks.tracing import layer_rules as R

Handler = Callable[..., None]  # (tracer, name, layer, x, y) -> None


@dataclasses.dataclass(frozen=True)
class LayerKind:
    """What the engine knows about one kind of layer.

    Attributes:
        name: short name used in messages (``"conv"``, or the registered class name).
        match: is a layer of this kind?
        trace: ``(tracer, name, layer, x, y)``: records the parameter slices that follow
            the input's and output's channels and labels ``y`` (see
            :mod:`~slim_callbacks.tracing.layer_rules`).
        attributes: int attributes that describe the layer's channel counts; surgery
            saves them (to undo an error) and sets them again with ``sync``.
        sync: ``(layer, before)`` sets ``attributes`` from the pruned parameter shapes;
            ``before`` holds their values before the cut.
        positions: ``(layer, inputs, output)`` -> positions the ``weight`` is applied
            at, so MACs = positions x ``weight`` elements (the analytic FLOPs model of
            a plan relies on that).
        macs: ``(layer, inputs, output)`` -> MACs, if not positions x weight.
        legacy_flops: ``(layer, inputs, output)`` -> PaddleSlim legacy FLOPs.
        width: ``layer`` -> its output channels (``layer_widths``, VisualDL).
        out_axis: axis of ``weight`` along the output channels (Taylor scores).
        layer_type: the type :func:`register_layer` was given (None for a built-in
            kind); registering it again replaces the record.
    """

    name: str
    match: Callable[[paddle.nn.Layer], bool]
    trace: Handler
    attributes: Tuple[str, ...] = ()
    sync: Optional[Callable[[paddle.nn.Layer, dict], None]] = None
    positions: Optional[Callable] = None
    macs: Optional[Callable] = None
    legacy_flops: Optional[Callable] = None
    width: Optional[Callable[[paddle.nn.Layer], int]] = None
    out_axis: Optional[int] = None
    layer_type: Optional[type] = None  # the registered type (None: built in)

    def counts_macs(self) -> bool:
        return self.macs is not None or self.positions is not None

    def count_macs(self, layer, inputs, output) -> int:
        """MACs of one call (0 for a kind that does none)."""
        if self.macs is not None:
            return int(self.macs(layer, inputs, output))
        if self.positions is not None:
            return self.positions(layer, inputs, output) * math.prod(layer.weight.shape)
        return 0


# ------------------------------------------------------------------ built-in kinds


def _numel(tensor) -> int:
    return math.prod(tensor.shape)


def _conv_positions(layer, inputs, output) -> int:
    """Output elements per output channel (weight ``[C_out, C_in / groups, k...]``)."""
    return _numel(output) // layer.weight.shape[0]


def _transposed_positions(layer, inputs, output) -> int:
    """Input elements per input channel (weight ``[C_in, C_out / groups, k...]``)."""
    return _numel(inputs[0]) // layer.weight.shape[0]


def _linear_positions(layer, inputs, output) -> int:
    """Rows (weight ``[in, out]``)."""
    return _numel(output) // layer.weight.shape[1]


def _conv_legacy(layer, inputs, output) -> int:
    """PaddleSlim's legacy count divides by ``groups`` once more (an integer: groups
    divides C_out)."""
    return 2 * (_numel(output) // layer._groups) * math.prod(layer.weight.shape[1:])


def _twice_macs(positions):
    return lambda layer, inputs, output: 2 * positions(layer, inputs, output) * math.prod(layer.weight.shape)


def _twice(macs):
    return lambda layer, inputs, output: 2 * int(macs(layer, inputs, output))


def _per_input_element(layer, inputs, output) -> int:
    return _numel(inputs[0])


CONV_ATTRIBUTES = ("_in_channels", "_out_channels", "_groups")


def _sync_conv(layer, before: dict) -> None:
    """A conv weight is ``[C_out, C_in / groups, k...]``, a transposed conv's
    ``[C_in, C_out / groups, k...]``; a depthwise conv keeps ``groups == C_in``, a
    grouped conv keeps its ``groups``."""
    depthwise = before["_groups"] > 1 and before["_groups"] == before["_in_channels"]
    shape = layer.weight.shape
    if is_transposed_conv(layer):
        groups = shape[0] if depthwise else layer._groups
        in_channels, out_channels = shape[0], shape[1] * groups
    else:
        multiplier = before["_out_channels"] // before["_in_channels"]
        groups = shape[0] // multiplier if depthwise else layer._groups
        in_channels, out_channels = shape[1] * groups, shape[0]
    layer._in_channels, layer._out_channels, layer._groups = in_channels, out_channels, groups


def _sync_from(attribute: str, param: str) -> Callable:
    def sync(layer, before) -> None:
        if hasattr(layer, attribute) and getattr(layer, param, None) is not None:
            setattr(layer, attribute, getattr(layer, param).shape[0])
    return sync


def _sync_embedding(layer, before) -> None:
    layer._embedding_dim = layer.weight.shape[1]
    layer._size = list(layer.weight.shape)


def _sync_normalized_shape(layer, before) -> None:
    if layer.weight is not None:
        layer._normalized_shape = [layer.weight.shape[0]]


BUILT_IN = (
    LayerKind("transposed conv", is_transposed_conv, R.on_conv, CONV_ATTRIBUTES, _sync_conv,
              positions=_transposed_positions, legacy_flops=_twice_macs(_transposed_positions),
              width=lambda layer: layer.weight.shape[1] * layer._groups, out_axis=1),
    LayerKind("conv", is_conv, R.on_conv, CONV_ATTRIBUTES, _sync_conv,
              positions=_conv_positions, legacy_flops=_conv_legacy,
              width=lambda layer: layer.weight.shape[0], out_axis=0),
    LayerKind("linear", is_linear, R.on_linear, positions=_linear_positions,
              legacy_flops=_twice_macs(_linear_positions),
              width=lambda layer: layer.weight.shape[1], out_axis=1),
    LayerKind("embedding", is_embedding, R.on_embedding, ("_embedding_dim",), _sync_embedding,
              width=lambda layer: layer.weight.shape[1], out_axis=1),
    LayerKind("batch norm", is_batch_norm, R.on_batch_norm, ("_num_features",),
              _sync_from("_num_features", "_mean"), legacy_flops=_per_input_element, out_axis=0),
    LayerKind("prelu", is_prelu, R.on_prelu, ("_num_parameters",),
              _sync_from("_num_parameters", "_weight")),
    LayerKind("layer norm", is_layer_norm, R.on_layer_norm, ("_normalized_shape",),
              _sync_normalized_shape),
    LayerKind("group norm", is_group_norm, R.on_group_norm, ("_num_channels",),
              _sync_from("_num_channels", "weight")),
)

_REGISTERED: List[LayerKind] = []  # newest first; looked up before the built-in kinds


def kinds() -> List[LayerKind]:
    """Every kind, in lookup order: registered ones (newest first), then built-in."""
    return _REGISTERED + list(BUILT_IN)


def kind_of(layer) -> Optional[LayerKind]:
    """The kind of ``layer``, or None for a layer the engine traces op by op."""
    for kind in _REGISTERED:
        if kind.match(layer):
            return kind
    for kind in BUILT_IN:
        if kind.match(layer):
            return kind
    return None


def is_known_layer(layer) -> bool:
    """A layer handled as a whole (its ops are not traced one by one)."""
    return kind_of(layer) is not None


def channel_attributes(layer) -> Dict[str, int]:
    """The current values of a layer's channel attributes (see :attr:`LayerKind.attributes`)."""
    kind = kind_of(layer)
    names = kind.attributes if kind is not None else ()
    return {k: getattr(layer, k) for k in names if hasattr(layer, k)}


def sync_attributes(layer, before: Optional[dict]) -> None:
    """Makes a layer's channel attributes match its (new) parameter shapes."""
    kind = kind_of(layer)
    if kind is not None and kind.sync is not None:
        kind.sync(layer, before or channel_attributes(layer))


# ------------------------------------------------------------------ registration


def register_layer(layer_type: type, *, params: Optional[Mapping[str, int]] = None,
                   channel_axis: int = 1, trace: Optional[Handler] = None,
                   attributes: Optional[Mapping[str, Callable]] = None,
                   macs: Optional[Callable] = None, replace: bool = False) -> LayerKind:
    """Teaches the engine a layer type (and its subclasses); returns its record.

    Args:
        layer_type: a ``paddle.nn.Layer`` subclass.
        params: for a layer whose channels pass through it (the output has the
            input's channels on ``channel_axis``): parameter attribute -> axis sliced
            with those channels, e.g. ``{"scale": 0}``. ``{}``: channels pass, nothing
            is sliced.
        channel_axis: the channel axis of the input and output (1 for NCHW, -1 for NHWC).
        trace: instead of ``params``, a handler ``(tracer, name, layer, x, y)`` for any
            other channel flow (see the built-in ones in
            :mod:`~slim_callbacks.tracing.layer_rules`).
        attributes: int attribute -> ``layer -> value`` after pruning, e.g.
            ``{"channels": lambda layer: layer.scale.shape[0]}``.
        macs: ``(layer, inputs, output) -> MACs`` of one call (whole batch), counted
            by ``count_flops``/``profile`` (legacy FLOPs: twice that) if the layer has
            no sublayers (default: not counted).
        replace: needed to register one of Paddle's own layer types that a built-in
            kind handles (e.g. ``nn.Conv2D``): the record replaces the built-in
            handling for every network in the process.

    ``params`` are checked against each layer when it is traced: a missing
    parameter or an axis out of its range is a ConfigError naming the registration.

    Raises:
        ConfigError: naming the argument, if one is not of the kind described.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, paddle.nn.Layer)):
        raise ConfigError("layer_type", layer_type, "a paddle.nn.Layer subclass")
    if trace is not None and params is not None:
        raise ConfigError("params", params, "None when trace is given (one of the two)")
    if trace is not None and not callable(trace):
        raise ConfigError("trace", trace, "a callable (tracer, name, layer, x, y)")
    if params is not None and not (isinstance(params, Mapping) and all(
            isinstance(k, str) and isinstance(v, int) for k, v in params.items())):
        raise ConfigError("params", params, "a dict of parameter attribute -> int axis")
    if not isinstance(channel_axis, int) or isinstance(channel_axis, bool):
        raise ConfigError("channel_axis", channel_axis, "an int, e.g. 1 (NCHW) or -1 (NHWC)")
    attributes = dict(attributes or {})
    if not all(isinstance(k, str) and callable(v) for k, v in attributes.items()):
        raise ConfigError("attributes", attributes, "a dict of attribute name -> callable(layer)")
    if macs is not None and not callable(macs):
        raise ConfigError("macs", macs, "a callable (layer, inputs, output) -> int")
    _check_replace(layer_type, replace)

    def sync(layer, before) -> None:
        for key, value in attributes.items():
            setattr(layer, key, int(value(layer)))

    handler = trace or R.passthrough(dict(params or {}), channel_axis,
                                     f"register_layer({layer_type.__name__})")
    kind = LayerKind(layer_type.__name__, lambda layer: isinstance(layer, layer_type), handler,
                     tuple(attributes), sync if attributes else None, macs=macs,
                     legacy_flops=None if macs is None else _twice(macs), layer_type=layer_type)
    _REGISTERED[:] = [kind] + [k for k in _REGISTERED if k.layer_type is not layer_type]
    return kind


def _check_replace(layer_type: type, replace) -> None:
    """ConfigError unless ``replace=True`` when ``layer_type`` is Paddle's own and a
    built-in kind handles it."""
    if not isinstance(replace, bool):
        raise ConfigError("replace", replace, "True or False")
    if replace or not layer_type.__module__.startswith("paddle."):
        return
    probe = object.__new__(layer_type)  # the kinds match by isinstance
    builtin = next((k.name for k in BUILT_IN if k.match(probe)), None)
    if builtin is not None:
        raise ConfigError("layer_type", layer_type.__name__, f"a layer type without built-in "
                          f"handling ({layer_type.__name__} is handled as {builtin!r}); pass "
                          f"replace=True to replace that for every network in this process, "
                          f"or register a subclass of it")
