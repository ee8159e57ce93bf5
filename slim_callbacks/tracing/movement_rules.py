"""Rules for movement ops (reshape, transpose, concat, split, slicing, ...): the op is
applied to the labels themselves (:func:`movement`); a reshape couples the channels it
merges or splits and its sizes must follow pruning (:func:`block_literal_sizes`),
split sections must follow their channels, and a concat couples its operands along
the other axes (:func:`concat`).
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.heads import split_heads
from slim_callbacks.tracing.op_args import swap_tensors, tensors_in
from slim_callbacks.tracing.param_views import adopt_along
from slim_callbacks.tracing.sizes import AttrSize, RuntimeSize, cancels, is_decoding_size


def movement(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Applies the op itself to label tensors, then checks what pruning allows."""
    label_args = swap_tensors(args, inputs, in_labels)
    label_kwargs = swap_tensors(kwargs, inputs, in_labels)
    moved = list(tensors_in(func(*label_args, **label_kwargs)))
    out_labels = [np.rint(m.numpy()).astype(np.int64) for m in moved]
    lost = set(np.concatenate([L.atoms(lab) for lab in in_labels]).tolist()) - set(
        np.concatenate([L.atoms(lab) for lab in out_labels] + [np.zeros(0, np.int64)]).tolist())
    if lost and op not in ("split", "split_with_num", "unbind") and not _selects_whole_units(
            tr, func, args, kwargs, inputs, in_labels):
        # e.g. x[:, :16]: hard-coded bounds select other channels once x is pruned
        for lab in in_labels:
            tr.block(lab, f"is partly selected by {op} in {tr.where()}")
    heads = set()
    if op == "reshape":
        shape = args[1] if len(args) > 1 else kwargs.get("shape")
        heads = split_heads(tr, shape, inputs[0], in_labels[0], outputs[0])
        block_literal_sizes(tr, shape, inputs[0], in_labels[0], outputs[0], skip=heads)
    if op in ("reshape", "flatten", "squeeze", "unsqueeze"):
        _couple_reshape(tr, op, inputs[0], in_labels[0], outputs[0], skip=heads)
    if op in ("split", "split_with_num", "unbind"):
        _couple_split(tr, op, inputs[0], in_labels[0], outputs, out_labels,
                      args[1] if op == "split" and len(args) > 1 else None,
                      _unbind_axis(args, kwargs, inputs[0]) if op == "unbind" else None)
    for t, lab in zip(outputs, out_labels):
        tr.set_labels(t, lab)


def _selects_whole_units(tr, func, args, kwargs, inputs, in_labels) -> bool:
    """True if a selection (``qkv[0]`` of a ``[3, B, heads, N, head_dim]`` tensor) only
    picks along axes where every position holds the same units: pruning then never
    changes those axes' sizes, so fixed bounds stay right."""
    if len(inputs) != 1:
        return False
    x, lab = inputs[0], in_labels[0]
    lab = lab.reshape((1,) * (x.ndim - lab.ndim) + lab.shape)
    picked_axes = []
    for axis in range(x.ndim):
        if lab.shape[axis] == 1:
            continue
        index = L.along(np.arange(1, x.shape[axis] + 1), axis, x.ndim)
        picked = list(tensors_in(func(*swap_tensors(args, [x], [index]),
                                      **swap_tensors(kwargs, [x], [index]))))
        if np.unique(np.rint(picked[0].numpy())).size < x.shape[axis]:
            picked_axes.append(axis)  # some positions along this axis are gone
    return same_units_along(tr, lab, picked_axes)


def same_units_along(tr, lab, axes) -> bool:
    """True if every position along each of ``axes`` of ``lab`` holds the same units
    (so removing units never changes those axes' sizes)."""
    atoms = np.unique(lab)
    roots = tr.roots_of(atoms)[np.searchsorted(atoms, lab)]
    for axis in axes:
        slices = [set(np.unique(roots.take(i, axis=axis))) - {0} for i in range(lab.shape[axis])]
        if any(s != slices[0] for s in slices[1:]):
            return False
    return True


def concat(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Concatenation along an axis: along every other axis the operands meet element
    for element, so their channels there are one (a class token joins the patch tokens
    along the token axis and must lose the same embedding channels)."""
    axis = kwargs.get("axis", args[1] if len(args) > 1 else 0)
    axis = int(axis.item() if isinstance(axis, paddle.Tensor) else axis) % outputs[0].ndim
    ndim = outputs[0].ndim
    for ax in range(ndim):
        if ax == axis or not any(lab.ndim == ndim and lab.shape[ax] > 1 for lab in in_labels):
            continue
        vectors = [L.channel_vector(lab, ax, t.shape[ax]) if L.atoms(lab).size else None
                   for t, lab in zip(inputs, in_labels)]
        known = [v for v in vectors if v is not None]
        if len(known) < sum(1 for lab in in_labels if L.atoms(lab).size):
            for lab in in_labels:
                tr.block(lab, f"is concatenated by {op} in {tr.where()} across positions "
                              f"that mix channels")
            break
        for vector in known[1:]:
            tr.union_pairs(L.label_pairs(known[0], vector))
        for t, lab, vector in zip(inputs, in_labels, vectors):
            if vector is None and L.atoms(lab).size == 0:
                origin = tr.origin_of(t)
                adopted = origin is not None and adopt_along(
                    tr, origin, ax, L.along(known[0], ax, ndim), ax, t.shape[ax]) is not None
                if not adopted:
                    tr.refuse(np.concatenate([k.ravel() for k in known]),
                              f"is concatenated with a tensor of fixed size {list(t.shape)} "
                              f"by {op} in {tr.where()}")
    labels = [np.broadcast_to(lab, t.shape) if L.atoms(lab).size == 0 and tr.origin_of(t)
              else lab for t, lab in zip(inputs, in_labels)]
    movement(tr, op, func, args, kwargs, inputs, labels, outputs)
    if any(tr.origin_of(t) is not None for t in inputs):
        _fill_adopted(tr, outputs[0], axis)


def _fill_adopted(tr, out, axis):
    """After a concat with a free parameter, the rows it filled carry the channel labels
    of the first labelled axis besides ``axis`` (they were zeros in the moved labels)."""
    lab = tr.labels_of(out)
    ax = next((a for a in range(out.ndim) if a != axis and lab.shape[a] > 1), None)
    vector = None if ax is None else L.channel_vector(lab, ax, out.shape[ax])
    if vector is not None:
        tr.set_labels(out, np.maximum(np.broadcast_to(lab, out.shape), L.along(vector, ax, out.ndim)))


def block_literal_sizes(tr, shape, x, lab, y, skip=()):
    """``reshape(x, [B, 64, H, W])`` or ``[-1, 2048]``: the size on the axis that takes
    a labelled axis's channel count must follow pruning, or those channels stay. That
    axis is the last non-trivial one of its group (a channel shuffle
    ``[B, g, C // g, H, W]`` keeps ``g``). -1 and 0 follow; a size read from a shape
    follows the channels it was read from, so it must be these (a size read from
    another tensor blocks both); a tagged layer attribute (``self.head_dim``) is made
    to follow (see :mod:`~slim_callbacks.tracing.sizes`) unless it counts what a
    detector decodes (``self.num_classes``, ``self.reg_max``: those channels stay); a
    literal does not follow. An axis whose every position holds the same units (batch
    times heads of head_dim units, merged for ``bmm``) never changes size: any size
    does there."""
    if not isinstance(shape, (list, tuple)) or len(shape) != y.ndim:
        return
    for i, (in_axes, out_axes) in enumerate(L.reshape_groups(list(x.shape), list(y.shape))):
        sized = [a for a in out_axes if y.shape[a] > 1]
        if not sized or i in skip:
            continue
        size, labelled = shape[sized[-1]], L.varies_along(lab, in_axes)
        if isinstance(size, RuntimeSize) and size.source.size:
            if not labelled and cancels(size.dims):  # PVT: a token count made of widths
                tr.size_keeps_ratio(size.dims, f"sizes another axis by reshape {list(shape)} "
                                               f"in {tr.where()} from widths that do not "
                                               f"shrink in proportion")
                continue
            if not labelled or not (tr.same_units(size.source, L.atoms(lab))
                                    or _tie_to_source(tr, size, lab, in_axes, x)):
                tr.refuse(np.concatenate([size.source, L.atoms(lab) if labelled else []]),
                          f"sizes another tensor by reshape {list(shape)} in {tr.where()}")
            continue
        if not labelled or size in (-1, 0) or same_units_along(tr, lab, in_axes):
            continue
        if is_decoding_size(size):
            tr.refuse(lab, _decodes(size, shape, tr))
            return
        if isinstance(size, AttrSize):
            tr.size_follows(size.owner, L.atoms(lab), int(size))
        elif isinstance(size, int):
            tr.refuse(lab, f"is reshaped to the literal size {list(shape)} in {tr.where()}")
            return


def _decodes(size, shape, tr) -> str:
    """Why channels sized by a decoding attribute (``self.num_classes``) stay."""
    layer, attr = size.owner
    return (f"feeds decoding: sized by {layer + '.' if layer else ''}{attr} = {int(size)} in {list(shape)} "
            f"in {tr.where()} (class, box and anchor counts stay whole)")


def _tie_to_source(tr, size, lab, in_axes, x) -> bool:
    """A reshape sized by another tensor's channel count (PaddleClas' attention:
    ``qkv.reshape([-1, N, 3, self.num_heads, C // self.num_heads])`` with ``C`` the
    block input's width) stays valid if both lose channels in step. Both are laid out
    in columns of ``size`` (the input's positions along ``in_axes``, the source's
    positions along its axis) and column k of one is coupled with column k of the
    other: removing a unit then removes one column of each, and the two counts stay
    ``size`` times their number of rows. False if either layout is not known."""
    if size.order is None or len(size.order) % int(size) or int(size) < 1:
        return False
    moved = np.moveaxis(np.broadcast_to(lab, x.shape), in_axes, list(range(-len(in_axes), 0)))
    rows = moved.reshape(-1, int(np.prod([x.shape[a] for a in in_axes])))
    if (rows != rows[:1]).any() or rows.shape[1] % int(size):
        return False
    columns = np.concatenate([rows[0].reshape(-1, int(size)), size.order.reshape(-1, int(size))])
    if (columns == 0).any():
        return False
    for column in columns.T:
        tr.union_all(column)
    return True


def _couple_reshape(tr, op, x, lab, y, skip=()):
    in_shape, out_shape = list(x.shape), list(y.shape)
    if not L.is_merge_or_split(lab, in_shape, out_shape):
        tr.block(lab, f"is reshaped by {op} in {tr.where()} in a way pruning cannot follow")
        return
    for column in L.factorized_columns(lab, in_shape, out_shape, skip):
        tr.union_all(column[column > 0])


def _unbind_axis(args, kwargs, x) -> int:
    """The axis ``unbind`` removes, counted from the front of ``x``."""
    axis = kwargs.get("axis", args[1] if len(args) > 1 else 0)
    return int(axis.item() if isinstance(axis, paddle.Tensor) else axis) % x.ndim


def _couple_split(tr, op, x, lab, outputs, out_labels, sections=None, removed=None):
    """Equal sections stay equal only if each loses the same positions. Each section
    size along a channel axis must follow its own channels (see
    :func:`_section_follows`): a literal section (``split(x, [8, 8])``) keeps its
    channels; ``split(x, [self.c1, self.c2])`` sets each attribute to the new count.
    ``unbind`` (``q, k, v = qkv.unbind(0)``) is a split into sections of one along
    the ``removed`` axis, which its outputs no longer have."""
    shapes = [list(t.shape) for t in outputs]
    if removed is not None:
        shapes = [s[:removed] + [1] + s[removed:] for s in shapes]
        out_labels = [np.expand_dims(o, removed) for o in out_labels]
    differing = [ax for ax in range(len(shapes[0])) if len({s[ax] for s in shapes}) > 1]
    split_axes = [ax for ax in range(x.ndim) if shapes[0][ax] != x.shape[ax]]
    if not L.varies_along(lab, differing or split_axes):
        return
    if not differing:
        full = [np.broadcast_to(o, shapes[0]) for o in out_labels]
        for other in full[1:]:
            tr.union_pairs(L.label_pairs(full[0], other))
    if isinstance(sections, (list, tuple)) and len(sections) == len(outputs):
        for size, section in zip(sections, out_labels):
            _section_follows(tr, op, size, L.atoms(section), sections)
    elif differing:
        tr.block(lab, f"is split into unequal sections by {op} in {tr.where()}")


def _section_follows(tr, op, size, atoms, sections) -> None:
    """One section of a split: -1 takes what is left; a tagged layer attribute is set
    to the section's new count; a size read from a shape must come from these channels;
    a literal keeps them."""
    if not atoms.size or (isinstance(size, int) and size in (-1, 0)):
        return
    if is_decoding_size(size):
        tr.refuse(atoms, _decodes(size, sections, tr))
    elif isinstance(size, AttrSize):
        tr.size_follows(size.owner, atoms, int(size))
    elif isinstance(size, RuntimeSize) and size.source.size:
        if not tr.same_units(size.source, atoms):
            tr.refuse(np.concatenate([size.source, atoms]),
                      f"is split by {op} into sections sized by another tensor in {tr.where()}")
    else:
        tr.refuse(atoms, f"is split into the literal sections {list(sections)} by {op} "
                         f"in {tr.where()}")
