"""The interception that sees every op, and the registry of the rules that say what
each Paddle op does to channel labels.

:func:`intercept` routes every ``paddle._C_ops`` function and the Tensor operators
(``+``, ``*``, ``x[...]``, ...) through the tracer while it is active, and makes
``Tensor.shape`` return :class:`~slim_callbacks.tracing.sizes.RuntimeSize` values.
Each op's output labels then come from one rule: elementwise and binary (broadcast)
ops (:mod:`~slim_callbacks.tracing.elementwise_rules`), movement ops, applied to the
labels themselves with reshape and split coupling
(:mod:`~slim_callbacks.tracing.movement_rules`), spatial resampling and reductions
(:mod:`~slim_callbacks.tracing.axis_rules`) and matmul
(:mod:`~slim_callbacks.tracing.matmul_rules`); views of free parameters are followed
by :mod:`~slim_callbacks.tracing.param_views`. An op without a rule blocks the
channels that flow into it; :func:`register_op` gives an op one of these rules (or a
handler of its own).
"""
from __future__ import annotations

import contextlib

import paddle
from paddle import _C_ops

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import op_aliases
from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing import sizes
from slim_callbacks.tracing.axis_rules import AXIS_ARG, along_fixed_axes, reduction, spatial
from slim_callbacks.tracing.elementwise_rules import binary, elementwise, setitem
from slim_callbacks.tracing.matmul_rules import matmul, record_product
from slim_callbacks.tracing.movement_rules import block_literal_sizes, concat, movement
from slim_callbacks.tracing.op_args import tensors_in
from slim_callbacks.tracing.param_views import follow_origin
from slim_callbacks.tracing.rule_errors import registered_rule
from slim_callbacks.tracing.sizes import RuntimeSize, source_of

BINARY_DUNDERS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                  "__truediv__", "__rtruediv__", "__floordiv__", "__mod__", "__pow__")
OTHER_DUNDERS = {"__neg__": "scale", "__abs__": "abs", "__getitem__": "getitem",
                 "__setitem__": "setitem", "__matmul__": "matmul", "__rmatmul__": "matmul",
                 # C-level methods that return a copy or a view of the same data
                 "_use_gpudnn": "assign", "clone": "assign", "detach": "assign",
                 "contiguous": "assign"}


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
    labels = entry[1] if entry is not None and entry[0]() is tensor else L.zeros(len(shape))
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
                block_literal_sizes(tracer, shape, x, tracer.labels_of(x), x)
            finally:
                tracer.site = None
        return out
    return reshape


def _propagate(tr, op: str, func, args, kwargs, out) -> None:
    inputs = list(tensors_in(args)) + list(tensors_in(kwargs))
    outputs = list(tensors_in(out))
    in_labels = [tr.labels_of(t) for t in inputs]
    for t in inputs:
        tr.note_direct_use(t, op)
    follow_origin(tr, op, func, args, kwargs, inputs, in_labels, outputs)
    if op in ("matmul", "bmm") and tr.passes == 1:
        record_product(tr, args, kwargs, outputs)
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


OP_HANDLERS = {}
OP_HANDLERS.update({op: movement for op in L.MOVEMENT})
OP_HANDLERS.update({op: spatial for op in L.SPATIAL})
OP_HANDLERS.update({op: reduction for op in L.REDUCTION})
OP_HANDLERS["concat"] = concat
OP_HANDLERS["matmul"] = OP_HANDLERS["bmm"] = matmul  # bmm: a matmul of 3-D operands
OP_HANDLERS["setitem"] = setitem
OP_HANDLERS.update({op: along_fixed_axes for op in AXIS_ARG})

RULES = {"elementwise": elementwise, "binary": binary, "movement": movement,
         "spatial": spatial, "reduction": reduction}
REGISTERED_OPS = {}  # op -> handler, looked up before the built-in rules


def op_names() -> list:
    """Every op name the tracer intercepts (``_C_ops`` functions, Tensor operators)."""
    names = {name.rstrip("_") or name for name in dir(_C_ops) if not name.startswith("_")}
    return sorted(names | set(OTHER_DUNDERS.values()) | {"add"})


def builtin_rule(op: str):
    """The tracer's own handler for ``op``, or None for an op it does not know."""
    if op in L.ELEMENTWISE or op in L.SHAPE_LIKE:
        return elementwise
    if op in L.BINARY:
        return binary
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

    Examples:
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
