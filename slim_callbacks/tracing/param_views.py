"""Free parameters and their views while tracing: a parameter owned by a layer the
engine does not handle itself (a class token, LayerScale's ``gamma``, a position
embedding) is followed through the ops that view it (:func:`follow_origin`), and is
sliced with the channels it meets (:func:`adopt_parameter`, :func:`adopt_along`,
:func:`record_on_origin`).
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.axis_rules import AXIS_ARG
from slim_callbacks.tracing.groups import CHANNEL
from slim_callbacks.tracing.op_args import swap_tensors, tensors_in


def adopt_parameter(tr, tensor, k, shapes, labs) -> np.ndarray:
    """A free parameter (or a view of one) multiplied or added into channels
    (LayerScale's ``gamma``, a position embedding) is sliced with them: a CHANNEL
    member on it. Parameters of Conv/Linear/BatchNorm layers stay fixed (and block
    those channels)."""
    origin = tr.origin_of(tensor)
    if origin is None or L.atoms(labs[k]).size:
        return labs[k]
    others = [lab for j, lab in enumerate(labs) if j != k]
    combined = others[0]
    for lab in others[1:]:
        a, b = L.broadcast_pair(combined, lab, combined.ndim)
        combined = np.where(a > 0, a, b)
    lead = combined.ndim - tensor.ndim
    hits = [ax for ax in range(combined.ndim) if shapes[k][ax] > 1
            and L.channel_vector(combined, ax, combined.shape[ax]) is not None
            and L.atoms(combined).size > 1 and combined.shape[ax] > 1]
    if len(hits) != 1:
        return labs[k]
    vector = adopt_along(tr, origin, hits[0] - lead, combined, hits[0], shapes[k][hits[0]])
    if vector is None:
        return labs[k]
    return L.along(vector, hits[0], combined.ndim)


def adopt_along(tr, origin, tensor_axis: int, labels, axis: int, size: int):
    """Records the free parameter behind ``origin`` as sliced along ``tensor_axis``
    (of its view) with the channels of ``labels`` along ``axis``; the channel vector, or
    None if the view does not hold a parameter axis there."""
    vector = L.channel_vector(labels, axis, size)
    return None if vector is None else record_on_origin(tr, origin, tensor_axis, vector, CHANNEL)


def record_on_origin(tr, origin, tensor_axis: int, vector, role: str):
    """A member on the parameter behind ``origin``, along the parameter axis that its
    view holds at ``tensor_axis``; ``vector``, or None if the view holds none there."""
    layer, attr, axes = origin
    if tensor_axis not in axes:
        return None
    tr.record(layer, attr, axes.index(tensor_axis), role, vector)
    tr.layer_types.setdefault(layer, type(tr.layers[layer]).__name__)
    return vector


VIEW_OPS = frozenset("expand cast assign scale clone detach reshape unsqueeze squeeze "
                     "getitem flatten transpose index_select gather".split())


def follow_origin(tr, op, func, args, kwargs, inputs, in_labels, outputs) -> None:
    """Keeps track of views of a free parameter (``self.cls_token.expand(...)``, Swin's
    ``index_select(table, index).reshape([N, N, -1]).transpose([2, 0, 1])``), so an op
    further on can slice the parameter itself."""
    picks = op in ("index_select", "gather")
    if op == "expand" and len(inputs) == 2 and "int" in str(inputs[1].dtype):
        inputs, in_labels = inputs[:1], in_labels[:1]  # the sizes as a tensor (an export's)
    if (op not in VIEW_OPS or len(inputs) != 1 + picks or len(outputs) != 1
            or any(L.atoms(lab).size for lab in in_labels)):
        return
    origin = tr.origin_of(inputs[0])
    if origin is None:
        return
    layer, attr, axes = origin
    x, y = list(inputs[0].shape), list(outputs[0].shape)
    if op == "transpose" or picks:
        moved = _moved_by(op, args, kwargs, len(x))
    elif op == "reshape" and not _sizes_follow(args[1] if len(args) > 1 else kwargs.get("shape"), x):
        moved = _moved_by_reshape(args[1] if len(args) > 1 else kwargs.get("shape"), x, y, axes)
        if moved is None:
            return  # w.reshape([1, self.channels, 1, 1]): the view keeps a fixed size
    elif len(x) == len(y) and op != "reshape":  # an axis that keeps its positions stays
        unchanged = _unchanged_axes(op, func, args, kwargs, inputs[0])
        moved = [a if a in unchanged and x[a] == y[a] else None for a in range(len(x))]
    else:  # the non-trivial axes of x, in order, at the first output axes of equal size
        moved, j = [], 0
        for size in x:
            while size > 1 and j < len(y) and y[j] != size:
                j += 1
            moved.append(j if size > 1 and j < len(y) else None)
            j += size > 1
    tr.set_origin(outputs[0], layer, attr, [moved[a] if a is not None else None for a in axes])


def _moved_by(op, args, kwargs, ndim) -> list:
    """Where each axis goes: permuted by a transpose; kept by ``index_select`` or
    ``gather``, except the picked axis (no longer the parameter's)."""
    if op == "transpose":
        perm = [int(p) % ndim for p in kwargs.get("perm", args[1] if len(args) > 1 else [])]
        return [perm.index(a) if a in perm else None for a in range(ndim)]
    axis = kwargs.get("axis", args[AXIS_ARG[op]] if len(args) > AXIS_ARG[op] else 0)
    axis = int(axis.item() if isinstance(axis, paddle.Tensor) else axis) % ndim
    return [None if a == axis else a for a in range(ndim)]


def _moved_by_reshape(shape, x, y, axes):
    """Where a reshape puts the parameter axes of a view: each must stay one axis of its
    own, sized -1 or 0 (``[N, N, -1]``); None if one does not."""
    if not isinstance(shape, (list, tuple)) or len(shape) != len(y):
        return None
    moved = [None] * len(x)
    for in_axes, out_axes in L.reshape_groups(x, y):
        held = [a for a in in_axes if a in axes]
        sized = [a for a in out_axes if y[a] > 1]
        if not held:
            continue
        if len(in_axes) != 1 or len(sized) != 1 or shape[sized[0]] not in (-1, 0):
            return None
        moved[in_axes[0]] = sized[0]
    return moved


def _unchanged_axes(op, func, args, kwargs, x) -> set:
    """Axes along which the view keeps every position in place (``w[:8]`` and ``w[::-1]``
    do not)."""
    if op != "getitem":
        return set(range(x.ndim))
    kept = set()
    for axis in range(x.ndim):
        positions = np.broadcast_to(L.along(np.arange(1, x.shape[axis] + 1), axis, x.ndim), x.shape)
        picked = list(tensors_in(func(*swap_tensors(args, [x], [positions]),
                                      **swap_tensors(kwargs, [x], [positions]))))[0].numpy()
        if picked.shape == positions.shape and np.array_equal(np.rint(picked), positions):
            kept.add(axis)
    return kept


def _sizes_follow(shape, in_shape) -> bool:
    """True if a reshape of a free parameter gives its non-trivial axes -1 (or 0) only,
    so the view follows when the parameter is sliced."""
    if not isinstance(shape, (list, tuple)):
        return False
    sized = [d for d in shape if not (isinstance(d, int) and d in (-1, 0, 1))]
    return not sized and sum(1 for d in in_shape if d > 1) <= 1
