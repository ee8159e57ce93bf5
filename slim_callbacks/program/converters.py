"""The converter registry: how each op of an inference program becomes part of the
rebuilt network, keyed by the program's op name (``pd_op.relu``).

A converter is ``converter(node, builder)``: it reads the :class:`~.reader.Node`
(attributes, operands) and tells the :class:`~.build.Builder` what to run - a sublayer
it adds (:mod:`~.layer_converters`: convs, BatchNorm, Linear, ...) or a Paddle call
(``builder.emit``). Most ops are one ``paddle._C_ops`` call with the operands and
attributes in the op's signature order: the rule ``"c_ops"`` does that.

An op with no converter stops the rebuild with a SlimError naming it and
:func:`register_converter`.

Examples:
    >>> register_converter("pd_op.sinh", "c_ops")
    >>> CONVERTERS["pd_op.sinh"] is c_ops
    True
    >>> del CONVERTERS["pd_op.sinh"]   # examples leave nothing registered
"""
from __future__ import annotations

from typing import Callable, Dict

import paddle

from slim_callbacks.core.errors import ConfigError

CONVERTERS: Dict[str, Callable] = {}
# operands that Paddle computes as a constant tensor (pd_op.full) but the Python call
# takes as a number
SCALAR_OPERANDS = {"axis", "scale", "min", "max", "value", "factor", "num_or_sections",
                   "start", "end", "step", "bias", "p"}


def c_op_name(op: str) -> str:
    """``relu`` for ``pd_op.relu`` and for the in-place ``pd_op.relu_``."""
    name = op.split(".", 1)[-1]
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def c_ops(node, builder, order=None) -> None:
    """One ``paddle._C_ops`` call: operands then attributes in the op's signature order,
    or in ``order`` (names) where the signature interleaves them."""
    args = {name: builder.arg(node, i) for i, name in enumerate(node.input_names)}
    args.update({name: builder.attr(node.attrs[name]) for name in node.attr_names})
    names = order or [*node.input_names, *node.attr_names]
    builder.emit(c_op_name(node.op), [args[n] for n in names], node.outputs, node)


def ordered(*names) -> Callable:
    """A ``c_ops`` converter for an op whose call takes its arguments in ``names``
    order (the program lists operands before attributes)."""
    def convert(node, builder):
        c_ops(node, builder, order=list(names))
    convert.__name__ = f"c_ops_{'_'.join(names)}"
    return convert


def register_converter(op: str, converter, replace: bool = False) -> None:
    """Tells :func:`~slim_callbacks.program.load_inference_model` how to rebuild an op.

    Args:
        op: the program's op name, e.g. ``"pd_op.sinh"`` (what the error names).
        converter: ``"c_ops"`` (call ``paddle._C_ops.<name>`` with the operands then
            the attributes, in the op's signature order) or a callable
            ``(node, builder)`` that emits what the op computes (see
            :mod:`slim_callbacks.program.layer_converters` for examples).
        replace: needed for an op that already has a converter.

    Raises:
        ConfigError: a bad op name or converter, or an op that has a converter already
            without ``replace=True``.
    """
    if not isinstance(op, str) or "." not in op:
        raise ConfigError("op", op, "a program op name such as 'pd_op.sinh'")
    if converter == "c_ops":
        if not hasattr(paddle._C_ops, c_op_name(op)):
            raise ConfigError("op", op, f"an op with a paddle._C_ops function (there is no "
                              f"paddle._C_ops.{c_op_name(op)}); register a callable instead")
        converter = c_ops
    if not callable(converter):
        raise ConfigError("converter", converter, "'c_ops' or a callable (node, builder)")
    if not isinstance(replace, bool):
        raise ConfigError("replace", replace, "True or False")
    if op in CONVERTERS and not replace:
        raise ConfigError("op", op, "an op without a converter (it has one); pass "
                          "replace=True to replace it")
    CONVERTERS[op] = converter


# ------------------------------------------------------------------ built-in ops
def no_step(node, builder) -> None:
    """Ops the builder handles itself (inputs, outputs, parameters)."""


def int_array(node, builder) -> None:
    builder.set_constant(node.outputs[0], [int(v) for v in node.attrs["value"]])


def full(node, builder) -> None:
    a = node.attrs
    builder.emit(paddle.full, [[int(d) for d in a["shape"]], float(a["value"]),
                               builder.attr(a["dtype"])], node.outputs, node)


def assign_value(node, builder) -> None:
    """A constant tensor written into the program (``paddle.to_tensor([3, 0])`` in a
    forward): made again on each call."""
    a = node.attrs
    builder.emit(_constant, [list(a["values"]), [int(d) for d in a["shape"]],
                             builder.attr(a["dtype"])], node.outputs, node)


def combine(node, builder) -> None:
    builder.emit(_pack, [builder.arg(node, i) for i in range(len(node.inputs))],
                 node.outputs, node)


def unpack(node, builder) -> None:
    builder.emit(_identity, [builder.arg(node, 0)], node.outputs, node)


def dropout(node, builder) -> None:
    """Inference dropout: the identity, or ``x * (1 - p)`` for ``downgrade_in_infer``."""
    p = builder.arg(node, node.input_names.index("p")) if "p" in node.input_names else 0.0
    mode = node.attrs.get("mode", "upscale_in_train")
    if mode == "upscale_in_train":
        builder.emit(_identity, [builder.arg(node, 0)], node.outputs[:1], node)
    else:
        builder.emit(paddle.scale, [builder.arg(node, 0), 1.0 - float(p)], node.outputs[:1], node)


def _constant(values, shape, dtype):
    return paddle.to_tensor(values, dtype="float64").reshape(shape).astype(dtype)


def _pack(*values):
    return list(values)


def _identity(value):
    return value


C_OPS = """relu relu6 sigmoid hardswish hardsigmoid swish silu gelu tanh leaky_relu elu
    softmax log_softmax exp sqrt rsqrt abs erf pow square log sin cos mish softplus
    add subtract multiply divide maximum minimum elementwise_pow scale clip cast
    flatten reshape transpose squeeze unsqueeze concat split expand
    tile pool2d pool3d mean sum max min matmul bmm shape shape64 gather stack floor_divide
    pad pad3d bilinear_interp nearest_interp bicubic_interp linear_interp trilinear_interp
    argmax assign gather_nd index_select roll where cumsum add_n unfold
    set_value_with_tensor set_value equal not_equal greater_than less_than greater_equal
    less_equal logical_and logical_or logical_not masked_fill""".split()

CONVERTERS.update({f"pd_op.{name}": c_ops for name in C_OPS})
CONVERTERS.update({f"pd_op.{name}_": c_ops for name in C_OPS})  # in-place forms
CONVERTERS.update({
    "builtin.parameter": no_step, "pd_op.data": no_step, "pd_op.fetch": no_step,
    "pd_op.full_int_array": int_array, "pd_op.full": full,
    "pd_op.assign_value_": assign_value, "pd_op.assign_value": assign_value,
    "builtin.combine": combine, "builtin.split": unpack, "pd_op.dropout": dropout,
    "pd_op.split_with_num": ordered("x", "num", "axis"),
    "pd_op.slice": ordered("input", "axes", "starts", "ends", "infer_flags", "decrease_axis"),
    "pd_op.strided_slice": ordered("x", "axes", "starts", "ends", "strides"),
})
