"""What each Paddle op does to channel labels, and the interception that sees every op.

:func:`intercept` routes every ``paddle._C_ops`` function and the Tensor operators
(``+``, ``*``, ``x[...]``, ...) through the tracer while it is active, and makes
``Tensor.shape`` return :class:`RuntimeSize` values. Each op's output labels then
come from one rule: elementwise and binary (broadcast) ops, movement ops (applied to
the labels themselves, with reshape and split coupling), spatial resampling and
reductions. An op without a rule blocks the channels that flow into it;
:func:`register_op` gives an op one of these rules (or a handler of its own).
"""
from __future__ import annotations

import contextlib

import numpy as np
import paddle
from paddle import _C_ops

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import op_aliases
from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing import sizes
from slim_callbacks.tracing.groups import CHANNEL, IN
from slim_callbacks.tracing.heads import matmul_heads, split_heads
from slim_callbacks.tracing.rule_errors import registered_rule
from slim_callbacks.tracing.sizes import AttrSize, RuntimeSize, cancels, source_of

BINARY_DUNDERS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                  "__truediv__", "__rtruediv__", "__floordiv__", "__mod__", "__pow__")
OTHER_DUNDERS = {"__neg__": "scale", "__abs__": "abs", "__getitem__": "getitem",
                 "__setitem__": "setitem", "__matmul__": "matmul", "__rmatmul__": "matmul",
                 # C-level methods that return a copy or a view of the same data
                 "_use_gpudnn": "assign", "clone": "assign", "detach": "assign",
                 "contiguous": "assign"}


def tensors_in(obj):
    """Every Tensor in ``obj`` (nested lists, tuples and dict values), depth first."""
    if isinstance(obj, paddle.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


@contextlib.contextmanager
def intercept(tracer):
    """Routes every ``_C_ops`` function and Tensor operator through the tracer, and
    makes ``Tensor.shape`` return :class:`RuntimeSize` values."""
    originals = {}
    aliases = op_aliases()  # paddle.tensor.matmul is _C_ops.matmul itself
    on_int = lambda source: _int_of_size(tracer, source)  # noqa: E731
    try:
        for name in dir(_C_ops):
            func = getattr(_C_ops, name)
            if not name.startswith("_") and type(func).__name__ == "builtin_function_or_method":
                originals[(_C_ops, name)] = func
                setattr(_C_ops, name, _wrap(tracer, name.rstrip("_") or name, func))
        wrapped = {id(func): getattr(_C_ops, name) for (_, name), func in originals.items()}
        for module, name, func in aliases:
            if id(func) in wrapped:
                originals[(module, name)] = func
                setattr(module, name, wrapped[id(func)])
        for dunder in BINARY_DUNDERS + tuple(OTHER_DUNDERS):
            func = getattr(paddle.Tensor, dunder, None)
            if func is not None:
                op = OTHER_DUNDERS.get(dunder, "add")
                originals[(paddle.Tensor, dunder)] = func
                setattr(paddle.Tensor, dunder, _wrap(tracer, op, func))
        shape = paddle.Tensor.__dict__["shape"]
        originals[(paddle.Tensor, "shape")] = shape
        paddle.Tensor.shape = property(lambda t: _runtime_shape(tracer, t, shape.__get__(t)))
        for owner in (paddle, paddle.Tensor):
            originals[(owner, "reshape")] = owner.reshape
            setattr(owner, "reshape", _wrap_reshape(tracer, owner.reshape))
        sizes.ON_INT.append(on_int)
        yield
    finally:
        if on_int in sizes.ON_INT:
            sizes.ON_INT.remove(on_int)
        for (owner, name), func in originals.items():
            setattr(owner, name, func)


def _int_of_size(tracer, source) -> None:
    """The network's code made a size with a source a plain ``int``: those channels
    stay (NextViT-style ``int(C // heads)`` sizing another tensor)."""
    if not tracer.quiet:
        tracer.refuse(source, f"has its size made a plain int by int() in {tracer.where()}")


def _wrap(tracer, op: str, func):
    def traced(*args, **kwargs):
        if tracer.quiet:
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        tracer.quiet += 1
        try:
            _propagate(tracer, op, func, args, kwargs, out)
        finally:
            tracer.quiet -= 1
        return out
    return traced


def _runtime_shape(tracer, tensor, shape):
    """``Tensor.shape`` while tracing: each size remembers the atoms of its axis (reads by
    the tracer itself and inside known layers get plain sizes)."""
    if tracer.quiet:
        return shape
    entry = tracer.tensor_labels.get(id(tensor))
    labels = entry[1] if entry is not None and entry[0] is tensor else L.zeros(len(shape))
    return type(shape)([RuntimeSize(d, *source_of(labels, ax)) for ax, d in enumerate(shape)])


def _wrap_reshape(tracer, func):
    """``paddle.reshape`` returns ``x`` itself, running no op, when the shape is
    unchanged; a literal channel count there still breaks once ``x`` is pruned."""
    def reshape(*args, **kwargs):  # (x, shape), (x, *sizes) or keywords, as Paddle's
        out = func(*args, **kwargs)
        x = kwargs.get("x", kwargs.get("input", args[0] if args else None))
        if out is x and not tracer.quiet:
            shape = kwargs.get("shape", args[1] if len(args) == 2 else list(args[1:]))
            tracer.site = ("reshape", tracer.where())
            try:
                _block_literal_sizes(tracer, shape, x, tracer.labels_of(x), x)
            finally:
                tracer.site = None
        return out
    return reshape


def _propagate(tr, op: str, func, args, kwargs, out) -> None:
    inputs = list(tensors_in(args)) + list(tensors_in(kwargs))
    outputs = list(tensors_in(out))
    in_labels = [tr.labels_of(t) for t in inputs]
    _follow_origin(tr, op, func, args, kwargs, inputs, in_labels, outputs)
    if op in L.NO_DATA or op in L.CREATION or not any(L.atoms(lab).size for lab in in_labels):
        for t in outputs:
            tr.set_labels(t, L.zeros(t.ndim))
        return
    handler = REGISTERED_OPS.get(op) or builtin_rule(op)
    tr.site = (op, tr.where())
    try:
        if handler is None:
            tr.unknown_op(op, in_labels)
            for t in outputs:
                tr.set_labels(t, L.zeros(t.ndim))
            return
        with registered_rule(op in REGISTERED_OPS, f"the rule register_op({op!r}, "
                             f"{getattr(handler, '__name__', handler)!s})", tr.where()):
            handler(tr, op, func, args, kwargs, inputs, in_labels, outputs)
    finally:
        tr.site = None


def _elementwise(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    if len(inputs) > 1:  # e.g. pow(x, y) with a tensor exponent
        return _binary(tr, op, func, args, kwargs, inputs, in_labels, outputs)
    for t in outputs:
        same = list(t.shape) == list(inputs[0].shape)
        tr.set_labels(t, in_labels[0] if same else L.zeros(t.ndim))


def _binary(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    out = outputs[0]
    ndim = out.ndim
    shapes = [[1] * (ndim - t.ndim) + list(t.shape) for t in inputs]
    labs = [lab.reshape((1,) * (ndim - lab.ndim) + lab.shape) for lab in in_labels]
    for k, t in enumerate(inputs):
        labs[k] = _adopt_parameter(tr, t, k, shapes, labs)
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


def _setitem(tr, op, func, args, kwargs, inputs, in_labels, outputs):
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


def _adopt_parameter(tr, tensor, k, shapes, labs) -> np.ndarray:
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
    vector = _adopt_along(tr, origin, hits[0] - lead, combined, hits[0], shapes[k][hits[0]])
    if vector is None:
        return labs[k]
    return L.along(vector, hits[0], combined.ndim)


def _adopt_along(tr, origin, tensor_axis: int, labels, axis: int, size: int):
    """Records the free parameter behind ``origin`` as sliced along ``tensor_axis``
    (of its view) with the channels of ``labels`` along ``axis``; the channel vector, or
    None if the view does not hold a parameter axis there."""
    vector = L.channel_vector(labels, axis, size)
    return None if vector is None else _record_on_origin(tr, origin, tensor_axis, vector, CHANNEL)


def _record_on_origin(tr, origin, tensor_axis: int, vector, role: str):
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


def _follow_origin(tr, op, func, args, kwargs, inputs, in_labels, outputs) -> None:
    """Keeps track of views of a free parameter (``self.cls_token.expand(...)``, Swin's
    ``index_select(table, index).reshape([N, N, -1]).transpose([2, 0, 1])``), so an op
    further on can slice the parameter itself."""
    picks = op in ("index_select", "gather")
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
    axis = kwargs.get("axis", args[_AXIS_ARG[op]] if len(args) > _AXIS_ARG[op] else 0)
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


def _movement(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Applies the op itself to label tensors, then checks what pruning allows."""
    label_args = _swap_tensors(args, inputs, in_labels)
    label_kwargs = _swap_tensors(kwargs, inputs, in_labels)
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
        _block_literal_sizes(tr, shape, inputs[0], in_labels[0], outputs[0], skip=heads)
    if op in ("reshape", "flatten", "squeeze", "unsqueeze"):
        _couple_reshape(tr, op, inputs[0], in_labels[0], outputs[0], skip=heads)
    if op in ("split", "split_with_num", "unbind"):
        _couple_split(tr, op, inputs[0], in_labels[0], outputs, out_labels,
                      args[1] if op == "split" and len(args) > 1 else None)
    for t, lab in zip(outputs, out_labels):
        tr.set_labels(t, lab)


def _unchanged_axes(op, func, args, kwargs, x) -> set:
    """Axes along which the view keeps every position in place (``w[:8]`` and ``w[::-1]``
    do not)."""
    if op != "getitem":
        return set(range(x.ndim))
    kept = set()
    for axis in range(x.ndim):
        positions = np.broadcast_to(L.along(np.arange(1, x.shape[axis] + 1), axis, x.ndim), x.shape)
        picked = list(tensors_in(func(*_swap_tensors(args, [x], [positions]),
                                      **_swap_tensors(kwargs, [x], [positions]))))[0].numpy()
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


def _concat(tr, op, func, args, kwargs, inputs, in_labels, outputs):
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
                adopted = origin is not None and _adopt_along(
                    tr, origin, ax, L.along(known[0], ax, ndim), ax, t.shape[ax]) is not None
                if not adopted:
                    tr.refuse(np.concatenate([k.ravel() for k in known]),
                              f"is concatenated with a tensor of fixed size {list(t.shape)} "
                              f"by {op} in {tr.where()}")
    labels = [np.broadcast_to(lab, t.shape) if L.atoms(lab).size == 0 and tr.origin_of(t)
              else lab for t, lab in zip(inputs, in_labels)]
    _movement(tr, op, func, args, kwargs, inputs, labels, outputs)
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
        picked = list(tensors_in(func(*_swap_tensors(args, [x], [index]),
                                      **_swap_tensors(kwargs, [x], [index]))))
        if np.unique(np.rint(picked[0].numpy())).size < x.shape[axis]:
            picked_axes.append(axis)  # some positions along this axis are gone
    return _same_units_along(tr, lab, picked_axes)


def _matmul(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """``x @ y`` over the last two axes (batched over the others): the contracted axis
    of ``x`` meets that of ``y`` element for element, so their channels are one
    (``q @ k^T`` couples q's and k's head dims). The output carries an operand's
    channels along its kept axes only if that operand has none along the contracted
    one; channels summed over drop out (removing a dead one leaves the sum as it was).
    A free parameter as ``y`` (``x @ self.w``) is sliced along its contracted axis."""
    x, y = (args[0], args[1]) if len(args) > 1 else (kwargs.get("x"), kwargs.get("y"))
    flags = list(args[2:4]) + [kwargs.get("transpose_x", False), kwargs.get("transpose_y", False)]
    tx, ty = (bool(flags[0]), bool(flags[1])) if len(args) >= 4 else (bool(flags[-2]), bool(flags[-1]))
    out = outputs[0]
    if not all(isinstance(t, paddle.Tensor) and t.ndim >= 2 for t in (x, y)) or out.ndim < 2:
        tr.unknown_op(op, in_labels)
        tr.set_labels(out, L.zeros(out.ndim))
        return
    a = _canonical(tr.labels_of(x), x.ndim, out.ndim, tx)       # [..., M, K]
    b = _canonical(tr.labels_of(y), y.ndim, out.ndim, ty)       # [..., K, N]
    shapes = [_canonical_shape(t, out.ndim, f) for t, f in ((x, tx), (y, ty))]
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


def _canonical(lab, ndim, out_ndim, transposed):
    lab = lab.reshape((1,) * (ndim - lab.ndim) + lab.shape)
    lab = np.swapaxes(lab, -1, -2) if transposed else lab
    return lab.reshape((1,) * (out_ndim - lab.ndim) + lab.shape)


def _canonical_shape(tensor, out_ndim, transposed) -> list:
    shape = [int(d) for d in tensor.shape]
    if transposed:
        shape[-2], shape[-1] = shape[-1], shape[-2]
    return [1] * (out_ndim - len(shape)) + shape


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
            if origin is None or vector is None or _record_on_origin(tr, origin, axis, vector, IN) is None:
                tr.refuse(other, f"is multiplied by a tensor of fixed size {list(tensor.shape)} "
                                 f"by {op} in {tr.where()}")
        return lab
    if lab.shape[k_axis] == 1:
        return lab
    if L.varies_along(lab, [-2 if k_axis == -1 else -1]):
        tr.refuse(lab, f"varies along both axes of a {op} operand in {tr.where()}")
        return np.zeros_like(lab)
    batch = [ax for ax in range(lab.ndim - 2) if lab.shape[ax] > 1]
    if batch and not _same_units_along(tr, lab, batch):
        tr.refuse(lab, f"is mixed across heads by {op} in {tr.where()}")
        return np.zeros_like(lab)
    return lab


def _same_units_along(tr, lab, axes) -> bool:
    """True if every position along each of ``axes`` of ``lab`` holds the same units
    (so removing units never changes those axes' sizes)."""
    atoms = np.unique(lab)
    roots = tr.roots_of(atoms)[np.searchsorted(atoms, lab)]
    for axis in axes:
        slices = [set(np.unique(roots.take(i, axis=axis))) - {0} for i in range(lab.shape[axis])]
        if any(s != slices[0] for s in slices[1:]):
            return False
    return True


def _along_fixed_axes(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """``roll``, ``index_select``, ``gather``, ``flip``: positions move or are picked
    along some axes by fixed amounts or indices. Channels pass through if they do not
    vary along those axes (Swin's shifted windows roll H and W); otherwise the fixed
    numbers would pick other channels once some are removed."""
    x, lab, out = inputs[0], in_labels[0], outputs[0]
    axes = kwargs.get("axis", args[_AXIS_ARG[op]] if len(args) > _AXIS_ARG[op] else None)
    if isinstance(axes, paddle.Tensor):
        axes = axes.tolist()
    axes = list(range(x.ndim)) if axes is None else axes if isinstance(axes, (list, tuple)) else [axes]
    if out.ndim != x.ndim or L.varies_along(lab, [int(a) for a in axes]):
        tr.refuse(lab, f"is moved or picked by {op} along its channel axis in {tr.where()}")
        tr.set_labels(out, L.zeros(out.ndim))
        return
    tr.set_labels(out, lab)


_AXIS_ARG = {"roll": 2, "index_select": 2, "gather": 2, "flip": 1}


def _block_literal_sizes(tr, shape, x, lab, y, skip=()):
    """``reshape(x, [B, 64, H, W])`` or ``[-1, 2048]``: the size on the axis that takes
    a labelled axis's channel count must follow pruning, or those channels stay. That
    axis is the last non-trivial one of its group (a channel shuffle
    ``[B, g, C // g, H, W]`` keeps ``g``). -1 and 0 follow; a size read from a shape
    follows the channels it was read from, so it must be these (a size read from
    another tensor blocks both); a tagged layer attribute (``self.head_dim``) is made
    to follow (see :mod:`~slim_callbacks.tracing.sizes`); a literal does not."""
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
        if not labelled or size in (-1, 0):
            continue
        if isinstance(size, AttrSize):
            tr.size_follows(size.owner, L.atoms(lab), int(size))
        elif isinstance(size, int):
            tr.refuse(lab, f"is reshaped to the literal size {list(shape)} in {tr.where()}")
            return


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


def _couple_split(tr, op, x, lab, outputs, out_labels, sections=None):
    """Equal sections stay equal only if each loses the same positions. Each section
    size along a channel axis must follow its own channels (see
    :func:`_section_follows`): a literal section (``split(x, [8, 8])``) keeps its
    channels; ``split(x, [self.c1, self.c2])`` sets each attribute to the new count."""
    shapes = [list(t.shape) for t in outputs]
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
    if isinstance(size, AttrSize):
        tr.size_follows(size.owner, atoms, int(size))
    elif isinstance(size, RuntimeSize) and size.source.size:
        if not tr.same_units(size.source, atoms):
            tr.refuse(np.concatenate([size.source, atoms]),
                      f"is split by {op} into sections sized by another tensor in {tr.where()}")
    else:
        tr.refuse(atoms, f"is split into the literal sections {list(sections)} by {op} "
                         f"in {tr.where()}")


def _spatial(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    fmt = next((a for a in args if isinstance(a, str) and a in L.DATA_FORMATS), "NCHW")
    axis = L.DATA_FORMATS[fmt]
    x = inputs[0]
    vector = L.channel_vector(in_labels[0], axis, x.shape[axis])
    for t in outputs:
        if vector is None or t.ndim != x.ndim or t.shape[axis] != x.shape[axis]:
            if L.atoms(in_labels[0]).size and t is outputs[0]:
                tr.block(in_labels[0], f"is resampled across channels by {op} in {tr.where()}")
            tr.set_labels(t, L.zeros(t.ndim))
        else:
            tr.set_labels(t, L.along(vector, axis, t.ndim))


def _reduction(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    x, lab = inputs[0], in_labels[0]
    axes = kwargs.get("axis", args[1] if len(args) > 1 else None)
    if isinstance(axes, paddle.Tensor):
        axes = axes.tolist()
    if axes is None or axes == []:
        axes = list(range(x.ndim))
    axes = [int(a) % x.ndim for a in (axes if isinstance(axes, (list, tuple)) else [axes])]
    out = outputs[0]
    if L.varies_along(lab, axes):
        others = [ax for ax in range(x.ndim) if ax not in axes]
        if op == "mean" and not L.varies_along(lab, others):
            # a hand-written LayerNorm (ConvNeXt's channels-first one): like LayerNorm
            tr.approximate(lab, f"{op} over channels in {tr.where()} is then taken over "
                                f"fewer channels")
        elif op != "sum" or L.varies_along(lab, others):
            tr.block(lab, f"is mixed across channels by {op} in {tr.where()}")
        # a sum over channels loses nothing when dead channels are removed
        tr.set_labels(out, L.zeros(out.ndim))
        return
    if out.ndim == x.ndim:
        tr.set_labels(out, lab)
    elif out.ndim == x.ndim - len(axes):
        tr.set_labels(out, np.squeeze(lab, axis=tuple(axes)))
    else:
        tr.set_labels(out, L.zeros(out.ndim))


def _swap_tensors(obj, inputs, in_labels):
    """A copy of ``obj`` with each input tensor replaced by its float64 labels."""
    if isinstance(obj, paddle.Tensor):
        for t, lab in zip(inputs, in_labels):
            if t is obj and (t.is_floating_point() or L.atoms(lab).size):
                return paddle.to_tensor(np.broadcast_to(lab, t.shape).astype("float64"))
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_swap_tensors(o, inputs, in_labels) for o in obj)
    if isinstance(obj, dict):
        return {k: _swap_tensors(v, inputs, in_labels) for k, v in obj.items()}
    return obj


OP_HANDLERS = {}
OP_HANDLERS.update({op: _movement for op in L.MOVEMENT})
OP_HANDLERS.update({op: _spatial for op in L.SPATIAL})
OP_HANDLERS.update({op: _reduction for op in L.REDUCTION})
OP_HANDLERS["concat"] = _concat
OP_HANDLERS["matmul"] = _matmul
OP_HANDLERS["setitem"] = _setitem
OP_HANDLERS.update({op: _along_fixed_axes for op in _AXIS_ARG})

RULES = {"elementwise": _elementwise, "binary": _binary, "movement": _movement,
         "spatial": _spatial, "reduction": _reduction}
REGISTERED_OPS = {}  # op -> handler, looked up before the built-in rules


def op_names() -> list:
    """Every op name the tracer intercepts (``_C_ops`` functions, Tensor operators)."""
    names = {name.rstrip("_") or name for name in dir(_C_ops) if not name.startswith("_")}
    return sorted(names | set(OTHER_DUNDERS.values()) | {"add"})


def builtin_rule(op: str):
    """The tracer's own handler for ``op``, or None for an op it does not know."""
    if op in L.ELEMENTWISE or op in L.SHAPE_LIKE:
        return _elementwise
    if op in L.BINARY:
        return _binary
    return OP_HANDLERS.get(op)


def register_op(op: str, rule, replace: bool = False) -> None:
    """Tells the tracer how an op maps channels, e.g. ``register_op("sinh", "elementwise")``.

    Args:
        op: a ``paddle._C_ops`` function name without a trailing ``_`` (what the
            tracer's warnings name), e.g. ``"sinh"``.
        rule: ``"elementwise"`` (output element i from input element i, same
            shape), ``"binary"`` (broadcast operands, their channels coupled),
            ``"movement"`` (the op only moves elements: it is applied to the labels;
            right only if it moves the kept channels alike once others are gone,
            as a transpose does and a ``roll`` along channels does not),
            ``"spatial"`` (per channel plane, along a ``data_format`` axis),
            ``"reduction"`` (along ``axis``), or a handler ``(tracer, op, func, args,
            kwargs, inputs, in_labels, outputs)``.
        replace: needed for an op the tracer already handles (e.g. ``softmax``): the
            rule replaces that for every network in this process.

    Raises:
        ConfigError: an op the tracer never sees, an unknown rule, or an op with a
            built-in rule without ``replace=True``. A handler that raises while
            tracing is reported as that rule's failure (SlimError naming the op).

    Example:
        >>> register_op("sinh", "elementwise")
        >>> REGISTERED_OPS["sinh"] is RULES["elementwise"]
        True
        >>> del REGISTERED_OPS["sinh"]   # examples leave nothing registered
    """
    if not isinstance(op, str) or op not in op_names():
        raise ConfigError("op", op, "a paddle._C_ops function name, e.g. roll or index_select")
    if op in L.NO_DATA or op in L.CREATION:  # their outputs never carry channels
        raise ConfigError("op", op, "an op that computes from its inputs (this one makes new "
                                    "data or reads no values: the tracer already handles it)")
    if not callable(rule) and rule not in RULES:
        raise ConfigError("rule", rule, f"one of {', '.join(RULES)} or a handler callable")
    if not isinstance(replace, bool):
        raise ConfigError("replace", replace, "True or False")
    if not replace and builtin_rule(op) is not None:
        raise ConfigError("op", op, f"an op without a built-in rule (the tracer handles {op} "
                          f"already); pass replace=True to replace that for every network "
                          f"in this process")
    REGISTERED_OPS[op] = rule if callable(rule) else RULES[rule]
