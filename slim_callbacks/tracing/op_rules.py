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
import os
import sys

import numpy as np
import paddle
from paddle import _C_ops

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.groups import CHANNEL
from slim_callbacks.tracing.kinds import is_known_layer

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
    try:
        for name in dir(_C_ops):
            func = getattr(_C_ops, name)
            if not name.startswith("_") and type(func).__name__ == "builtin_function_or_method":
                originals[(_C_ops, name)] = func
                setattr(_C_ops, name, _wrap(tracer, name.rstrip("_") or name, func))
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
        tracer.intercepting = True
        yield
    finally:
        tracer.intercepting = False
        for (owner, name), func in originals.items():
            setattr(owner, name, func)


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


class RuntimeSize(int):
    """A size read from ``Tensor.shape`` while tracing, or computed from one with
    ``+ - * //``. Unlike a literal ``int`` in the network's code, it follows the
    channel count once channels are pruned.

    ``int()`` of one read along channels, in the network's own code
    (``int(C // self.num_heads)``), blocks those channels: the code then holds their
    count as a plain number, which may size another tensor (a reshape of ``q`` by the
    width of ``x``) and cannot follow pruning."""

    source = None  # (tracer, labels of the tensor, axis) if read along its channels

    def __int__(self):
        if self.source is not None and _called_by_network_code():
            tracer, labels, axis = self.source
            if tracer.intercepting and not tracer.quiet:
                tracer.refuse(labels, f"has its size on axis {axis} made a plain int by int() "
                                      f"in {tracer.where()}")
        return int.__int__(self)


_LIBRARY_DIRS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep for m in (paddle, np))
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _called_by_network_code() -> bool:
    """True if the ``int()`` being run was called outside Paddle, numpy and slim_callbacks."""
    caller = os.path.abspath(sys._getframe(2).f_code.co_filename)
    return not caller.startswith(_LIBRARY_DIRS + (_OWN_DIR,))


def _runtime_arithmetic(name: str):
    int_method = getattr(int, name)

    def method(self, other):
        result = int_method(self, other)
        if type(result) is not int:
            return result
        size = RuntimeSize(result)
        size.source = self.source or getattr(other, "source", None)
        return size
    return method


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__floordiv__", "__rfloordiv__"):
    setattr(RuntimeSize, _name, _runtime_arithmetic(_name))


def _runtime_shape(tracer, tensor, shape):
    """``tensor.shape`` as :class:`RuntimeSize` values; those along labelled channels
    remember where they were read."""
    entry = tracer.tensor_labels.get(id(tensor))
    labels = entry[1] if entry is not None and entry[0] is tensor else None
    sizes = []
    for axis, d in enumerate(shape):
        size = RuntimeSize(d)
        if labels is not None and labels.ndim == len(shape) and labels.shape[axis] > 1:
            size.source = (tracer, labels, axis)
        sizes.append(size)
    return type(shape)(sizes)


def _is_literal(size) -> bool:
    """A size written in the code (not -1, 0 or read from a shape)."""
    return isinstance(size, int) and not isinstance(size, RuntimeSize) and size not in (-1, 0)


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
    if op in L.NO_DATA or op in L.CREATION or not any(L.atoms(lab).size for lab in in_labels):
        for t in outputs:
            tr.set_labels(t, L.zeros(t.ndim))
        return
    handler = OP_HANDLERS.get(op)
    if op in REGISTERED_OPS:
        handler = REGISTERED_OPS[op]
    elif op in L.ELEMENTWISE or op in L.SHAPE_LIKE:
        handler = _elementwise
    elif op in L.BINARY:
        handler = _binary
    tr.site = (op, tr.where())
    try:
        if handler is None:
            tr.unknown_op(op, in_labels)
            for t in outputs:
                tr.set_labels(t, L.zeros(t.ndim))
            return
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
    # An operand broadcast along an axis where another one's channels vary would
    # spread its single channel over many: it must keep that channel.
    for k, (shape, lab) in enumerate(zip(shapes, labs)):
        spread = [ax for ax in range(ndim) if shape[ax] == 1 and out.shape[ax] > 1
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
    for t in outputs:
        tr.set_labels(t, result if t.ndim == ndim else L.zeros(t.ndim))


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
    """A free parameter multiplied or added into channels (LayerScale's ``gamma``) is
    sliced with them: a CHANNEL member on it. Parameters of Conv/Linear/BatchNorm
    layers, or of the network itself, stay fixed (and block those channels)."""
    owner = tr.param_names.get(getattr(tensor, "name", None))
    if owner is None or L.atoms(labs[k]).size:
        return labs[k]
    layer, attr = owner
    if tr.layers[layer]._parameters.get(attr) is not tensor or is_known_layer(tr.layers[layer]):
        return labs[k]
    others = [lab for j, lab in enumerate(labs) if j != k]
    combined = others[0]
    for lab in others[1:]:
        a, b = L.broadcast_pair(combined, lab, combined.ndim)
        combined = np.where(a > 0, a, b)
    hits = [ax for ax in range(combined.ndim) if combined.shape[ax] > 1 and shapes[k][ax] > 1]
    if len(hits) != 1:
        return labs[k]
    vector = L.channel_vector(combined, hits[0], shapes[k][hits[0]])
    if vector is None:
        return labs[k]
    axis = hits[0] - (combined.ndim - tensor.ndim)
    tr.record(layer, attr, axis, CHANNEL, vector)
    tr.layer_types.setdefault(layer, type(tr.layers[layer]).__name__)
    tr.set_labels(tensor, L.along(vector, axis, tensor.ndim))
    return L.along(vector, hits[0], combined.ndim)


def _movement(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Applies the op itself to label tensors, then checks what pruning allows."""
    label_args = _swap_tensors(args, inputs, in_labels)
    label_kwargs = _swap_tensors(kwargs, inputs, in_labels)
    moved = list(tensors_in(func(*label_args, **label_kwargs)))
    out_labels = [np.rint(m.numpy()).astype(np.int64) for m in moved]
    lost = set(np.concatenate([L.atoms(lab) for lab in in_labels]).tolist()) - set(
        np.concatenate([L.atoms(lab) for lab in out_labels] + [np.zeros(0, np.int64)]).tolist())
    if lost and op not in ("split", "split_with_num", "unbind"):
        # e.g. x[:, :16]: hard-coded bounds select other channels once x is pruned
        for lab in in_labels:
            tr.block(lab, f"is partly selected by {op} in {tr.where()}")
    if op == "reshape":
        _block_literal_sizes(tr, args[1] if len(args) > 1 else kwargs.get("shape"),
                             inputs[0], in_labels[0], outputs[0])
    if op in ("reshape", "flatten", "squeeze", "unsqueeze"):
        _couple_reshape(tr, op, inputs[0], in_labels[0], outputs[0])
    if op in ("split", "split_with_num", "unbind"):
        _couple_split(tr, op, inputs[0], in_labels[0], outputs, out_labels,
                      args[1] if op == "split" and len(args) > 1 else None)
    for t, lab in zip(outputs, out_labels):
        tr.set_labels(t, lab)


def _block_literal_sizes(tr, shape, x, lab, y):
    """``reshape(x, [B, 64, H, W])`` or ``[-1, 2048]``: a literal size on the axis
    that takes a labelled axis's channel count cannot follow pruning. That axis is the
    last non-trivial one of its group (a channel shuffle ``[B, g, C // g, H, W]``
    keeps ``g``); -1, 0 and sizes read from ``x.shape`` follow."""
    if not isinstance(shape, (list, tuple)) or len(shape) != y.ndim:
        return
    for in_axes, out_axes in L.reshape_groups(list(x.shape), list(y.shape)):
        sized = [a for a in out_axes if y.shape[a] > 1]
        if sized and L.varies_along(lab, in_axes) and _is_literal(shape[sized[-1]]):
            tr.refuse(lab, f"is reshaped to the literal size {list(shape)} in {tr.where()}")
            return


def _couple_reshape(tr, op, x, lab, y):
    in_shape, out_shape = list(x.shape), list(y.shape)
    if not L.is_merge_or_split(lab, in_shape, out_shape):
        tr.block(lab, f"is reshaped by {op} in {tr.where()} in a way pruning cannot follow")
        return
    for column in L.factorized_columns(lab, in_shape, out_shape):
        real = column[column > 0]
        for other in real[1:]:
            tr.uf.union(int(real[0]), int(other))


def _couple_split(tr, op, x, lab, outputs, out_labels, sections=None):
    """Equal sections stay equal only if each loses the same positions; unequal
    sections along a channel axis, or literal ones (``split(x, [8, 8])``), have sizes
    pruning cannot follow."""
    shapes = [list(t.shape) for t in outputs]
    differing = [ax for ax in range(len(shapes[0])) if len({s[ax] for s in shapes}) > 1]
    if differing:
        if L.varies_along(lab, differing):
            tr.block(lab, f"is split into unequal sections by {op} in {tr.where()}")
        return
    split_axes = [ax for ax in range(x.ndim) if shapes[0][ax] != x.shape[ax]]
    if (isinstance(sections, (list, tuple)) and any(_is_literal(n) for n in sections)
            and L.varies_along(lab, split_axes)):
        tr.refuse(lab, f"is split into the literal sections {list(sections)} by {op} "
                       f"in {tr.where()}")
        return
    full = [np.broadcast_to(o, shapes[0]) for o in out_labels]
    for other in full[1:]:
        tr.union_pairs(L.label_pairs(full[0], other))


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
        tr.block(lab, f"is mixed across channels by {op} in {tr.where()}")
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

RULES = {"elementwise": _elementwise, "binary": _binary, "movement": _movement,
         "spatial": _spatial, "reduction": _reduction}
REGISTERED_OPS = {}  # op -> handler, looked up before the built-in rules


def op_names() -> list:
    """Every op name the tracer intercepts (``_C_ops`` functions, Tensor operators)."""
    names = {name.rstrip("_") or name for name in dir(_C_ops) if not name.startswith("_")}
    return sorted(names | set(OTHER_DUNDERS.values()) | {"add"})


def register_op(op: str, rule) -> None:
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

    Raises:
        ConfigError: an op the tracer never sees, or an unknown rule.

    Example:
        >>> register_op("sinh", "elementwise")
        >>> REGISTERED_OPS["sinh"] is RULES["elementwise"]
        True
    """
    if not isinstance(op, str) or op not in op_names():
        raise ConfigError("op", op, "a paddle._C_ops function name, e.g. roll or index_select")
    if not callable(rule) and rule not in RULES:
        raise ConfigError("rule", rule, f"one of {', '.join(RULES)} or a handler callable")
    REGISTERED_OPS[op] = rule if callable(rule) else RULES[rule]
