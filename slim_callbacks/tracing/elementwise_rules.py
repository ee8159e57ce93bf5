"""Rules for elementwise ops: one operand (:func:`elementwise`), broadcast operands whose
channels meet element for element and are coupled (:func:`binary`), and assignment
into part of a tensor (:func:`setitem`).
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.param_views import adopt_parameter


def elementwise(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Output element i from input element i: the labels pass through (two tensor
    operands: :func:`binary`)."""
    if len(inputs) > 1:  # e.g. pow(x, y) with a tensor exponent
        return binary(tr, op, func, args, kwargs, inputs, in_labels, outputs)
    for t in outputs:
        same = list(t.shape) == list(inputs[0].shape)
        tr.set_labels(t, in_labels[0] if same else L.zeros(t.ndim))


def binary(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Broadcast operands meet element for element: their channels are coupled."""
    out = outputs[0]
    ndim = out.ndim
    shapes = [[1] * (ndim - t.ndim) + list(t.shape) for t in inputs]
    labs = [lab.reshape((1,) * (ndim - lab.ndim) + lab.shape) for lab in in_labels]
    for k, t in enumerate(inputs):
        labs[k] = adopt_parameter(tr, t, k, shapes, labs)
    result = _combine_elementwise(tr, op, list(out.shape), shapes, labs)
    for t in outputs:
        tr.set_labels(t, result if t.ndim == ndim else L.zeros(t.ndim))


def _combine_elementwise(tr, op, out_shape, shapes, labs) -> np.ndarray:
    """Operands (``shapes``, ``labs``: aligned to one rank) meet element for element:
    the channels that meet are one group; returns the result's labels."""
    ndim = len(out_shape)
    # An operand broadcast along an axis where another one's channels vary would
    # spread its single channel over many: it must keep that channel.
    for k, (shape, lab) in enumerate(zip(shapes, labs)):
        spread = [ax for ax in range(ndim) if shape[ax] == 1 and out_shape[ax] > 1
                  and any(o.shape[ax] > 1 for j, o in enumerate(labs) if j != k)]
        if spread and L.atoms(lab).size:
            tr.block(lab, f"is broadcast across channels by {op} in {tr.where()}")
            labs[k] = np.zeros_like(lab)
    _block_fixed_operands(tr, op, shapes, labs)
    result = labs[0]
    for other in labs[1:]:
        a, b = L.broadcast_pair(result, other, ndim)
        tr.union_pairs(L.label_pairs(a, b))
        result = np.where(a > 0, a, b)
    return result


def setitem(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """``x[index] = value`` in place (TNT's ``patch_embed[:, 1:] = ...``): fine when the
    index takes every position of the axes that carry channels; a tensor ``value``
    then meets the selected part of ``x`` element for element. A selection of some
    channels (``x[:, :8] = 0``) blocks them."""
    x, index = args[0], args[1]
    value = args[2] if len(args) > 2 else kwargs.get("value")
    lab = tr.labels_of(x)
    lab = lab.reshape((1,) * (x.ndim - lab.ndim) + lab.shape)
    region = _labels_at(np.broadcast_to(lab, x.shape), index)
    if not _selects_whole_axes(x, lab, index):
        tr.block(lab, f"is partly assigned by {op} in {tr.where()}")
        if isinstance(value, paddle.Tensor):
            tr.block(tr.labels_of(value), f"is assigned to part of the channels by {op} in {tr.where()}")
        return
    if not isinstance(value, paddle.Tensor):
        return  # a number: every kept channel gets it, as before
    ndim = max(region.ndim, value.ndim)
    region = region.reshape((1,) * (ndim - region.ndim) + region.shape)
    value_lab = tr.labels_of(value)
    value_lab = value_lab.reshape((1,) * (ndim - value_lab.ndim) + value_lab.shape)
    value_shape = [1] * (ndim - value.ndim) + list(value.shape)
    _combine_elementwise(tr, op, list(region.shape), [list(region.shape), value_shape],
                         [region, value_lab])


def _labels_at(labels: np.ndarray, index) -> np.ndarray:
    """``labels[index]`` with Paddle's indexing rules (on a float64 copy)."""
    picked = paddle.to_tensor(labels.astype("float64"))[index]
    return np.rint(picked.numpy()).astype(np.int64)


def _selects_whole_axes(x, lab, index) -> bool:
    """True if ``x[index]`` keeps every position of each axis whose labels vary."""
    for axis in range(x.ndim):
        if lab.shape[axis] == 1:
            continue
        positions = np.broadcast_to(L.along(np.arange(1, x.shape[axis] + 1), axis, x.ndim), x.shape)
        if np.unique(_labels_at(positions, index)).size < x.shape[axis]:
            return False
    return True


def _block_fixed_operands(tr, op, shapes, labs):
    """Channels that meet, element for element, an operand without channel labels
    (the input, a constant, an untraced op's output, an unmapped parameter) must stay:
    that operand keeps its size along their axis."""
    for j, lab in enumerate(labs):
        varying = [ax for ax in range(lab.ndim) if lab.shape[ax] > 1]
        for k, (shape, other) in enumerate(zip(shapes, labs)):
            if k == j or not any(shape[ax] > 1 for ax in varying):
                continue
            a, b = L.broadcast_pair(lab, other, lab.ndim)
            pinned = a[(a > 0) & (b == 0)]
            if pinned.size:
                tr.refuse(pinned, f"is combined with a tensor of fixed size {shape} by "
                                  f"{op} in {tr.where()}")
