"""The rule for ``matmul`` (``x @ y``, batched over the leading axes): the contracted
axes of the two operands are coupled, whole attention heads are recognised
(:func:`~slim_callbacks.tracing.heads.matmul_heads`), and a free parameter operand is
sliced along its contracted axis.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.groups import IN
from slim_callbacks.tracing.heads import matmul_heads
from slim_callbacks.tracing.movement_rules import same_units_along
from slim_callbacks.tracing.param_views import record_on_origin
from slim_callbacks.tracing.products import canonical, canonical_shape


def _operands(args, kwargs):
    """``(x, y, transpose_x, transpose_y)`` of a matmul call, by position or name."""
    x, y = (args[0], args[1]) if len(args) > 1 else (kwargs.get("x"), kwargs.get("y"))
    flags = list(args[2:4]) + [kwargs.get("transpose_x", False), kwargs.get("transpose_y", False)]
    tx, ty = (bool(flags[0]), bool(flags[1])) if len(args) >= 4 else (bool(flags[-2]), bool(flags[-1]))
    return x, y, tx, ty


def record_product(tr, args, kwargs, outputs) -> None:
    """Keeps the labels of a product's operands for counting its MACs after a plan
    (see :mod:`~slim_callbacks.tracing.products`); one it cannot describe makes the
    table incomplete."""
    x, y, tx, ty = _operands(args, kwargs)
    out = outputs[0] if outputs else None
    if out is None or not all(isinstance(t, paddle.Tensor) and t.ndim >= 2 for t in (x, y, out)):
        tr.products_complete = False
        return
    tr.products.append((canonical(tr.labels_of(x), x.ndim, out.ndim, tx),
                        canonical(tr.labels_of(y), y.ndim, out.ndim, ty),
                        canonical_shape(x.shape, out.ndim, tx), canonical_shape(y.shape, out.ndim, ty),
                        tuple(int(d) for d in out.shape)))


def matmul(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """``x @ y`` over the last two axes (batched over the others): the contracted axis
    of ``x`` meets that of ``y`` element for element, so their channels are one
    (``q @ k^T`` couples q's and k's head dims). The output carries an operand's
    channels along its kept axes only if that operand has none along the contracted
    one; channels summed over drop out (removing a dead one leaves the sum as it was).
    A free parameter as ``y`` (``x @ self.w``) is sliced along its contracted axis."""
    x, y, tx, ty = _operands(args, kwargs)
    out = outputs[0]
    if not all(isinstance(t, paddle.Tensor) and t.ndim >= 2 for t in (x, y)) or out.ndim < 2:
        tr.unknown_op(op, in_labels)
        tr.set_labels(out, L.zeros(out.ndim))
        return
    a = canonical(tr.labels_of(x), x.ndim, out.ndim, tx)       # [..., M, K]
    b = canonical(tr.labels_of(y), y.ndim, out.ndim, ty)       # [..., K, N]
    shapes = [list(canonical_shape(t.shape, out.ndim, f)) for t, f in ((x, tx), (y, ty))]
    if matmul_heads(tr, op, shapes, a, b, out):
        return
    a = _matmul_operand(tr, op, x, a, b, -1, -2 if tx else -1)
    b = _matmul_operand(tr, op, y, b, a, -2, -1 if ty else -2)
    if a.shape[-1] > 1 and b.shape[-2] > 1:
        a_k, b_k = L.broadcast_pair(a.max(axis=-2), b.max(axis=-1), out.ndim - 1)
        tr.union_pairs(L.label_pairs(a_k, b_k))
    keep_a = a if a.shape[-1] == 1 else np.zeros_like(a[..., :, :1])
    keep_b = b if b.shape[-2] == 1 else np.zeros_like(b[..., :1, :])
    if L.atoms(keep_a).size and L.atoms(keep_b).size and (keep_a.shape[-2] > 1 or keep_b.shape[-1] > 1):
        tr.refuse(np.concatenate([keep_a.ravel(), keep_b.ravel()]),
                  f"meets other channels in each element of a {op} output in {tr.where()}")
        keep_a, keep_b = np.zeros_like(keep_a), np.zeros_like(keep_b)
    left, right = L.broadcast_pair(keep_a, keep_b, out.ndim)
    tr.union_pairs(L.label_pairs(left, right))
    tr.set_labels(out, np.where(left > 0, left, right))


def _matmul_operand(tr, op, tensor, lab, other, k_axis, param_k_axis):
    """Checks one operand (``lab`` in canonical layout, contracted axis ``k_axis``):
    channels along the contracted axis must not also vary along its other axes unless
    every position there holds the same units; a fixed other operand pins them."""
    if not L.atoms(lab).size:
        if L.varies_along(other, [k_axis + 1 if k_axis == -2 else -2]):
            origin = tr.origin_of(tensor)
            size = other.shape[-1] if k_axis == -2 else other.shape[-2]
            vector = L.channel_vector(other.max(axis=-2) if k_axis == -2 else other.max(axis=-1),
                                      -1, size)
            axis = tensor.ndim + param_k_axis
            if origin is None or vector is None or record_on_origin(tr, origin, axis, vector, IN) is None:
                tr.refuse(other, f"is multiplied by a tensor of fixed size {list(tensor.shape)} "
                                 f"by {op} in {tr.where()}")
        return lab
    if lab.shape[k_axis] == 1:
        return lab
    if L.varies_along(lab, [-2 if k_axis == -1 else -1]):
        tr.refuse(lab, f"varies along both axes of a {op} operand in {tr.where()}")
        return np.zeros_like(lab)
    batch = [ax for ax in range(lab.ndim - 2) if lab.shape[ax] > 1]
    if batch and not same_units_along(tr, lab, batch):
        tr.refuse(lab, f"is mixed across heads by {op} in {tr.where()}")
        return np.zeros_like(lab)
    return lab
