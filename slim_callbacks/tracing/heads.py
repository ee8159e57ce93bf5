"""Attention pruned by whole heads: ``structure={"attention": "heads"}``.

By default a reshape that splits channels into ``[..., self.num_heads, self.head_dim]``
couples the same head-dim position of every head, and ``head_dim`` follows pruning.
In heads mode the axis sized by an ``int`` attribute whose name holds ``head``
(``num_heads``, ``heads``, ``n_head``) is the head axis instead: all the channels of
one head (its q, k and v columns; the output projection's input rows follow) are one
unit, that attribute is set to the number of heads kept and ``head_dim`` stays (so
``self.head_dim ** -0.5`` stays right). In the attention matmuls each batch position of
the head axis then holds one unit: the heads of q, k and v are coupled there, and the
scores ``q @ k^T`` carry their head's unit along the head axis, so a free parameter
added to them per head (Swin's relative position bias) is sliced with the heads.

A head dim read from another tensor (PaddleClas' ``C // self.num_heads`` with ``C``
the embedding width) ties head ``h`` to the ``h``-th ``C // num_heads`` channels of
that tensor: the embedding then loses ``head_dim`` channels with each head, so the
quotient keeps its value. Attention whose heads cannot be told apart (no reshape by
such an attribute) is pruned by head dim, with one warning.

    >>> is_head_count(AttrSize(4, ("blocks.0.attn", "num_heads"))), is_head_count(4)
    (True, False)
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.sizes import AttrSize, RuntimeSize


def is_head_count(size) -> bool:
    """True for an ``int`` attribute of a layer whose name holds ``head``."""
    return isinstance(size, AttrSize) and "head" in size.owner[1].lower()


def by_heads(tr) -> bool:
    return tr.structure.attention == "heads"


def split_heads(tr, shape, x, lab, y) -> set:
    """Heads mode: for each axis of ``x`` that a reshape to ``shape`` splits into
    ``[..., heads, head_dim]`` with ``heads`` a head count (:func:`is_head_count`),
    couples each head's channels into one unit and makes the head count follow them.

    Returns:
        The indices (into :func:`~slim_callbacks.tracing.labels.reshape_groups`) of the
        axis groups handled, which the default coupling leaves alone.
    """
    if not by_heads(tr) or not isinstance(shape, (list, tuple)) or len(shape) != y.ndim:
        return set()
    handled = set()
    for i, (in_axes, out_axes) in enumerate(L.reshape_groups(list(x.shape), list(y.shape))):
        sized = [a for a in out_axes if y.shape[a] > 1]
        if (len(in_axes) != 1 or len(sized) < 2 or not L.varies_along(lab, in_axes)
                or not is_head_count(shape[sized[-2]])):
            continue
        count = shape[sized[-2]]
        blocks = _head_blocks(lab, list(x.shape), in_axes[0], int(count), y.shape[sized[-1]])
        if not all((block > 0).all() for block in blocks):
            continue  # fixed channels in a head: the default rules decide
        for block in blocks:
            tr.union_all(block)
        _tie_head_dim(tr, shape[sized[-1]], blocks, lab, shape)
        tr.size_follows(count.owner, L.atoms(lab), int(count))
        handled.add(i)
    return handled


def _head_blocks(lab, in_shape, axis: int, heads: int, head_dim: int) -> List[np.ndarray]:
    """The atoms of each head along ``axis`` laid out as ``[..., heads, head_dim]``."""
    vector = np.moveaxis(np.broadcast_to(lab, in_shape), axis, -1).reshape(-1, in_shape[axis])[0]
    grid = vector.reshape(-1, heads, head_dim)
    return [grid[:, h, :].ravel() for h in range(heads)]


def _tie_head_dim(tr, size, blocks, lab, shape) -> None:
    """A head dim read from another tensor's width (``C // self.num_heads``): head
    ``h`` joins the ``h``-th of ``heads`` equal parts of that tensor's channels; if
    its layout is not known, both are blocked."""
    if not isinstance(size, RuntimeSize) or not size.source.size:
        return
    if np.isin(size.source, L.atoms(lab)).all():
        return  # the split tensor's own width
    order = size.order
    if order is None or len(order) % len(blocks) or (order == 0).any():
        tr.refuse(np.concatenate([size.source, L.atoms(lab)]),
                  f"sizes another tensor by reshape {list(shape)} in {tr.where()}")
        return
    for block, part in zip(blocks, order.reshape(len(blocks), -1)):
        tr.union_all(np.concatenate([block[:1], part]))


def head_labels(tr, lab: np.ndarray, batch: int) -> Optional[np.ndarray]:
    """One atom per position of the first ``batch`` axes of ``lab`` (``[..., 1, 1]``),
    or None if a position holds channels of more than one unit."""
    lead = lab.shape[:batch]
    rows = lab.reshape(int(np.prod(lead)), -1)
    reps = np.zeros(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        atoms = np.unique(row[row > 0])
        if atoms.size and len(tr.units_of(atoms)) > 1:
            return None
        reps[i] = atoms[0] if atoms.size else 0
    return reps.reshape(lead + (1, 1))


def matmul_heads(tr, op, shapes: Sequence[list], a: np.ndarray, b: np.ndarray, out) -> bool:
    """Heads mode: a matmul whose operands (canonical labels ``a`` ``[..., M, K]`` and
    ``b`` ``[..., K, N]``, tensor ``shapes`` alike) hold one head per batch position.
    Each position's units are coupled, the output carries them (the labels of ``a``'s
    rows or ``b``'s columns, else the head's unit), and an operand without channels
    must be shared by all heads. Returns False (nothing done) for any other matmul."""
    batch = out.ndim - 2
    if not by_heads(tr) or batch < 1:
        return False
    reps = [head_labels(tr, lab, batch) if L.atoms(lab).size else L.zeros(out.ndim)
            for lab in (a, b)]
    if not any(r is not None and len(tr.units_of(L.atoms(r))) > 1 for r in reps):
        if any(out.shape[ax] > 1 for ax in range(batch)) and (a.shape[-1] > 1 or b.shape[-2] > 1):
            tr.warn_once(f"attention in {tr.where()} is pruned by head dim: its heads cannot be "
                         f"told apart (heads mode needs a reshape to [..., self.num_heads, "
                         f"head_dim] with an int attribute named like num_heads)")
        return False
    labelled = [lab for lab in (a, b) if L.atoms(lab).size]
    varying = [ax for ax in range(batch) if any(r is not None and r.shape[ax] > 1 for r in reps)]
    fixed = [k for k, lab in enumerate((a, b)) if not L.atoms(lab).size
             and any(shapes[k][ax] > 1 for ax in varying)]
    if any(r is None for r in reps) or fixed:
        for lab in labelled:
            tr.refuse(lab, f"is mixed across heads by {op} in {tr.where()}")
        tr.set_labels(out, L.zeros(out.ndim))
        return True
    left, right = L.broadcast_pair(reps[0], reps[1], out.ndim)
    tr.union_pairs(L.label_pairs(left, right))
    heads = np.where(left > 0, left, right)
    if a.shape[-2] > 1 and L.atoms(a).size:
        rows = a.max(axis=-1, keepdims=True)
    elif b.shape[-1] > 1 and L.atoms(b).size:
        rows = b.max(axis=-2, keepdims=True)
    else:
        rows = heads
    rows, heads = L.broadcast_pair(rows, heads, out.ndim)
    tr.set_labels(out, np.where(rows > 0, rows, heads))
    return True
