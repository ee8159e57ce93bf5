"""What each known layer does to channel labels: Conv, Linear, Embedding, BatchNorm,
PReLU, LayerNorm, and layers whose channels pass through with per-channel parameters
(:func:`passthrough`).

A handler ``(tracer, name, layer, x, y)`` runs when a known layer returns (see
:mod:`~slim_callbacks.tracing.kinds`, which says which handler a layer gets): it records
the parameter slices the layer owns and labels its output. Ops run inside a known
layer are not traced one by one: the handler says what the layer does as a whole.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import is_transposed_conv
from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.grouped import GroupedConv, group_positions, grouped_mode
from slim_callbacks.tracing.groups import CHANNEL, IN, OUT


def on_conv(tr, name: str, layer, x, y) -> None:
    """Conv1D/2D/3D, transposed or not. ``groups == 1``: a producer. Depthwise
    (``groups == C_in``): its output follows its input. Grouped (``1 < groups < C_in``):
    a producer whose input and output channels are each coupled by position within
    their group (see :func:`~slim_callbacks.tracing.grouped.group_positions`), or as
    the ``grouped_conv`` structure says (see :mod:`~slim_callbacks.tracing.grouped`)."""
    axis = getattr(layer, "_channel_dim", 1)
    c_in, c_out, groups = x.shape[axis], y.shape[axis], layer._groups
    out_axis, in_axis = (1, 0) if is_transposed_conv(layer) else (0, 1)
    vector = L.channel_vector(tr.labels_of(x), axis, c_in)
    if vector is None:
        tr.block(tr.labels_of(x), f"input of {name} mixes channels across positions")
        vector = np.zeros(c_in, dtype=np.int64)
    if groups > 1 and groups == c_in and c_out % c_in == 0:  # depthwise: output follows input
        out = np.repeat(vector, c_out // c_in)
        # weight axis 0 is C_out (c_in x multiplier filters), or C_in if transposed
        tr.record(name, "weight", 0, CHANNEL, vector if in_axis == 0 else out)
        tr.record(name, "bias", 0, CHANNEL, out)
        tr.set_labels(y, L.along(out, axis, y.ndim))
        return
    out = tr.producer_atoms(name, c_out)
    weight_in, weight_out = vector, out
    if groups > 1 and grouped_mode(tr):  # axis 1 (C / groups per group) once settled
        tr.grouped.append(GroupedConv(name, groups, vector, out, in_axis == 0, grouped_mode(tr)))
        tr.record(name, "weight", 0, *((IN, vector) if in_axis == 0 else (OUT, out)))
        tr.record(name, "bias", 0, OUT, out)
        tr.set_labels(y, L.along(out, axis, y.ndim))
        return
    if groups > 1:  # weight axis 1 holds C / groups per group: one entry per position
        in_positions = group_positions(tr, name, groups, vector)
        out_positions = group_positions(tr, name, groups, out)
        weight_in, weight_out = (in_positions, out) if in_axis == 1 else (vector, out_positions)
    tr.record(name, "weight", in_axis, IN, weight_in)
    tr.record(name, "weight", out_axis, OUT, weight_out)
    tr.record(name, "bias", 0, OUT, out)
    tr.set_labels(y, L.along(out, axis, y.ndim))


def on_linear(tr, name: str, layer, x, y) -> None:
    vector = L.channel_vector(tr.labels_of(x), -1, x.shape[-1])
    if vector is None:
        tr.block(tr.labels_of(x), f"input of {name} mixes features across rows")
        vector = np.zeros(x.shape[-1], dtype=np.int64)
    tr.record(name, "weight", 0, IN, vector)
    out = tr.producer_atoms(name, y.shape[-1])
    tr.record(name, "weight", 1, OUT, out)
    tr.record(name, "bias", 0, OUT, out)
    tr.set_labels(y, L.along(out, -1, y.ndim))


def on_embedding(tr, name: str, layer, x, y) -> None:
    """A producer: the looked-up rows carry new channels on the last axis, one per
    column of ``weight`` (``[num_embeddings, embedding_dim]``), so the hidden size of a
    token model starts here (word, position and token-type tables added together are
    coupled by the ``add``)."""
    out = tr.producer_atoms(name, y.shape[-1])
    tr.record(name, "weight", 1, OUT, out)
    tr.set_labels(y, L.along(out, -1, y.ndim))


def _channels_or_block(tr, name: str, x, y, axis: int):
    """The channel vector of ``x`` along ``axis``; None (channels blocked, ``y``
    unlabelled) if a position there mixes channels."""
    vector = L.channel_vector(tr.labels_of(x), axis, x.shape[axis])
    if vector is None:
        tr.block(tr.labels_of(x), f"input of {name} mixes channels across positions")
        tr.set_labels(y, L.zeros(y.ndim))
    return vector


def on_batch_norm(tr, name: str, layer, x, y) -> None:
    fmt = getattr(layer, "_data_format", None) or getattr(layer, "_data_layout", "NCHW")
    axis = L.DATA_FORMATS.get(fmt, 1)
    vector = _channels_or_block(tr, name, x, y, axis)
    if vector is None:
        return
    for attr in ("weight", "bias", "_mean", "_variance"):
        tr.record(name, attr, 0, CHANNEL, vector)
    tr.set_labels(y, L.along(vector, axis, y.ndim))


def on_prelu(tr, name: str, layer, x, y) -> None:
    """Channels pass through; a per-channel slope (``_weight``, one per channel) is sliced
    with them. A single shared slope is elementwise."""
    if layer._num_parameters == 1:
        tr.set_labels(y, tr.labels_of(x))
        return
    axis = L.DATA_FORMATS.get(layer._data_format, 1)
    vector = _channels_or_block(tr, name, x, y, axis)
    if vector is None:
        return
    tr.record(name, "_weight", 0, CHANNEL, vector)
    tr.set_labels(y, L.along(vector, axis, y.ndim))


def on_layer_norm(tr, name: str, layer, x, y) -> None:
    """Channels of the last axis keep their place; ``weight`` and ``bias`` are sliced
    with them. Pruning is *approximate* here: the mean and variance are then taken
    over the kept channels only, so even an all-zero channel changes them when it is
    removed (the group is marked, see :attr:`ChannelGroup.approximate`)."""
    if len(layer._normalized_shape) != 1:
        tr.block(tr.labels_of(x), f"is normalized over several axes by {name}")
        tr.set_labels(y, L.zeros(y.ndim))
        return
    vector = _channels_or_block(tr, name, x, y, -1)
    if vector is None:
        return
    for attr in ("weight", "bias"):
        tr.record(name, attr, 0, CHANNEL, vector)
    tr.approximate(vector, f"{name} normalizes over these channels: its mean and "
                           f"variance change when channels are removed")
    tr.set_labels(y, L.along(vector, -1, y.ndim))


def on_group_norm(tr, name: str, layer, x, y) -> None:
    """GroupNorm keeps ``_num_groups`` groups of equal width, so a unit is one position
    of every group (like a grouped conv's); ``weight`` and ``bias`` are sliced with the
    channels. Approximate like LayerNorm: each group's statistics are then taken over
    fewer channels."""
    axis = L.DATA_FORMATS.get(layer._data_format, 1)
    vector = _channels_or_block(tr, name, x, y, axis)
    if vector is None:
        return
    group_positions(tr, name, layer._num_groups, vector)
    for attr in ("weight", "bias"):
        tr.record(name, attr, 0, CHANNEL, vector)
    tr.approximate(vector, f"{name} normalizes groups of these channels: their mean and "
                           f"variance change when channels are removed")
    tr.set_labels(y, L.along(vector, axis, y.ndim))


def passthrough(params: Dict[str, int], channel_axis: int = 1, origin: str = "passthrough"):
    """A handler for a layer whose output has its input's channels on
    ``channel_axis``, with ``params`` (attribute -> axis) sliced along them; ``origin``
    (e.g. ``"register_layer(ChannelScale)"``) is named if they do not fit the layer."""
    def on_layer(tr, name: str, layer, x, y) -> None:
        _check_passthrough(origin, params, channel_axis, name, layer, x)
        vector = L.channel_vector(tr.labels_of(x), channel_axis, x.shape[channel_axis])
        same = list(y.shape) == list(x.shape)
        if vector is None or not same:
            why = "mixes channels across positions" if same else "changes shape in " + name
            tr.block(tr.labels_of(x), f"input of {name} {why}")
            tr.set_labels(y, L.zeros(y.ndim))
            return
        for attr, axis in params.items():
            tr.record(name, attr, axis, CHANNEL, vector)
        tr.set_labels(y, L.along(vector, channel_axis, y.ndim))
    return on_layer


def _check_passthrough(origin: str, params: Dict[str, int], channel_axis: int, name: str,
                       layer, x) -> None:
    """ConfigError naming ``origin`` if a parameter is missing or an axis out of range."""
    if not -x.ndim <= channel_axis < x.ndim:
        raise ConfigError(f"{origin} channel_axis", channel_axis, f"an axis of the "
                          f"{x.ndim}-d input of layer {name!r}: -{x.ndim}..{x.ndim - 1}")
    for attr, axis in params.items():
        param = layer._parameters.get(attr)
        if param is None:
            raise ConfigError(f"{origin} params", attr, f"a parameter of layer {name!r} "
                              f"({', '.join(layer._parameters) or 'it has none'}); fix the "
                              f"registration")
        if not -param.ndim <= axis < param.ndim:
            raise ConfigError(f"{origin} params[{attr!r}]", axis, f"an axis of the "
                              f"{param.ndim}-d parameter {name}.{attr}: "
                              f"-{param.ndim}..{param.ndim - 1}")
