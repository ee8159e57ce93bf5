"""Converters that rebuild an op as a real sublayer with the program's parameter
values, so the tracer sees (and prunes) it like a hand-written one: convolutions
(grouped, depthwise, transposed) with the bias ``add`` that follows them, BatchNorm,
LayerNorm, GroupNorm, PReLU, Linear (``matmul`` by a parameter, then the bias ``add``)
and Embedding. An op whose weight is not a parameter (computed in the program) is one
``paddle._C_ops`` call instead.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.program.converters import CONVERTERS, c_ops

CONV = {("pd_op.conv2d", 4): paddle.nn.Conv2D, ("pd_op.depthwise_conv2d", 4): paddle.nn.Conv2D,
        ("pd_op.conv3d", 5): paddle.nn.Conv3D,
        ("pd_op.conv2d_transpose", 4): paddle.nn.Conv2DTranspose,
        ("pd_op.depthwise_conv2d_transpose", 4): paddle.nn.Conv2DTranspose,
        ("pd_op.conv3d_transpose", 5): paddle.nn.Conv3DTranspose}
BATCH_NORM = {2: (paddle.nn.BatchNorm1D, "NC"), 3: (paddle.nn.BatchNorm1D, "NCL"),
              4: (paddle.nn.BatchNorm2D, "NCHW"), 5: (paddle.nn.BatchNorm3D, "NCDHW")}


def bias_add(node, builder, channels: int, channel_axis: int):
    """The ``add`` right after ``node`` that adds a parameter of ``channels`` values
    along ``channel_axis`` (a bias; reshaped to broadcast or not): ``(bias, add node,
    reshape node or None)``, or None."""
    add = builder.sole_user(node.outputs[0])
    if add is None or add.op not in ("pd_op.add", "pd_op.add_") or add.inputs[0] != node.outputs[0]:
        return None
    other, reshape = add.inputs[1], None
    producer = builder.producer(other)
    if producer is not None and producer.op == "pd_op.reshape" \
            and builder.sole_user(other) is add:
        reshape, other = producer, producer.inputs[0]
    value = builder.param_value(other)
    rank = len(node.out_shapes[0])
    shape = add.in_shapes[1]
    if value is None or value.size != channels or shape is None:
        return None
    expected = [1] * rank
    expected[channel_axis] = channels
    if list(shape) != expected[rank - len(shape):] or value.ndim != 1 and reshape is None:
        return None
    return value.reshape(-1), add, reshape


def conv(node, builder) -> None:
    weight = builder.param_value(node.inputs[1])
    cls = CONV.get((node.op, weight.ndim if weight is not None else 0))
    if cls is None:
        return c_ops(node, builder)
    a = node.attrs
    transposed = "transpose" in node.op
    groups = int(a.get("groups", 1))
    channel_last = a.get("data_format", "NCHW") in ("NHWC", "NDHWC")
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    in_channels = weight.shape[0] if transposed else weight.shape[1] * groups
    fused = bias_add(node, builder, out_channels, -1 if channel_last else 1)
    padding = a["paddings"] if a.get("padding_algorithm", "EXPLICIT") == "EXPLICIT" \
        else a["padding_algorithm"]
    extra = {"output_padding": list(a.get("output_padding") or []) or 0} if transposed else {}
    layer = cls(in_channels, out_channels, list(weight.shape[2:]), stride=list(a["strides"]),
                padding=padding, dilation=list(a["dilations"]), groups=groups,
                bias_attr=None if fused else False, data_format=a.get("data_format", "NCHW"),
                **extra)
    layer.weight.set_value(weight)
    outputs = _absorb_bias(layer, fused, builder, node)
    kwargs = {}
    if transposed and "output_size" in node.input_names:
        size = builder.arg(node, node.input_names.index("output_size"))
        if size:
            kwargs["output_size"] = size
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], outputs, node, kwargs)


def batch_norm(node, builder) -> None:
    """A BatchNorm layer; one without scale and shift (``weight_attr=False``) gets a
    scale of ones and a shift of zeros (the same outputs; Paddle Inference 3.3's oneDNN
    kernel crashes on a batch_norm without them)."""
    x, mean, var, scale, bias = (node.inputs[node.input_names.index(n)]
                                 for n in ("x", "mean", "variance", "scale", "bias"))
    values = [builder.param_value(v) for v in (mean, var, scale, bias)]
    if values[0] is not None and scale is None and bias is None:
        values[2:] = np.ones_like(values[0]), np.zeros_like(values[0])
    rank = len(node.in_shapes[0] or ())
    if any(v is None for v in values) or rank not in BATCH_NORM:
        return c_ops(node, builder)
    cls, channel_first = BATCH_NORM[rank]
    last = node.attrs.get("data_format", "NCHW") in ("NHWC", "NLC", "NDHWC")
    data_format = channel_first if not last else channel_first[0] + channel_first[2:] + "C"
    layer = cls(values[0].size, momentum=float(node.attrs.get("momentum", 0.9)),
                epsilon=float(node.attrs["epsilon"]), data_format=data_format)
    for target, value in zip((layer._mean, layer._variance, layer.weight, layer.bias), values):
        target.set_value(value)
    builder.only_first_output(node)
    builder.add_layer(scale or mean, layer, [builder.arg(node, 0)], node.outputs[:1], node)


def layer_norm(node, builder) -> None:
    scale, bias = (builder.param_value(node.inputs[i]) for i in (1, 2))
    shape = node.in_shapes[0]
    if scale is None or bias is None or shape is None:
        return c_ops(node, builder)
    normalized = list(shape[int(node.attrs["begin_norm_axis"]):])
    layer = paddle.nn.LayerNorm(normalized, epsilon=float(node.attrs["epsilon"]))
    layer.weight.set_value(scale)
    layer.bias.set_value(bias)
    builder.only_first_output(node)
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], node.outputs[:1], node)


def group_norm(node, builder) -> None:
    scale, bias = (builder.param_value(node.inputs[i]) for i in (1, 2))
    if scale is None or bias is None:
        return c_ops(node, builder)
    layer = paddle.nn.GroupNorm(int(node.attrs["groups"]), scale.size,
                                epsilon=float(node.attrs["epsilon"]),
                                data_format=node.attrs.get("data_format", "NCHW"))
    layer.weight.set_value(scale)
    layer.bias.set_value(bias)
    builder.only_first_output(node)
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], node.outputs[:1], node)


def prelu(node, builder) -> None:
    alpha = builder.param_value(node.inputs[1])
    if alpha is None or node.attrs.get("mode") not in ("channel", "all"):
        return c_ops(node, builder)
    layer = paddle.nn.PReLU(alpha.size, data_format=node.attrs.get("data_format", "NCHW"))
    layer._weight.set_value(alpha.reshape(layer._weight.shape))
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], node.outputs, node)


def linear(node, builder) -> None:
    """``matmul(x, W)`` by a 2-D parameter (and the ``add`` of a bias parameter)."""
    weight = builder.param_value(node.inputs[1])
    if weight is None or weight.ndim != 2 or node.attrs.get("transpose_x"):
        return c_ops(node, builder)
    if node.attrs.get("transpose_y"):
        weight = weight.T
    fused = bias_add(node, builder, weight.shape[1], -1)
    layer = paddle.nn.Linear(*weight.shape, bias_attr=None if fused else False)
    layer.weight.set_value(np.ascontiguousarray(weight))
    outputs = _absorb_bias(layer, fused, builder, node)
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], outputs, node)


def embedding(node, builder) -> None:
    weight = builder.param_value(node.inputs[1])
    if weight is None:
        return c_ops(node, builder)
    padding = int(node.attrs.get("padding_idx", -1))
    layer = paddle.nn.Embedding(*weight.shape, padding_idx=None if padding == -1 else padding)
    layer.weight.set_value(weight)
    builder.add_layer(node.inputs[1], layer, [builder.arg(node, 0)], node.outputs, node)


CONVERTERS.update({op: conv for op, _ in CONV})
CONVERTERS.update({"pd_op.batch_norm": batch_norm, "pd_op.batch_norm_": batch_norm,
                   "pd_op.layer_norm": layer_norm, "pd_op.group_norm": group_norm,
                   "pd_op.prelu": prelu, "pd_op.matmul": linear, "pd_op.embedding": embedding})


def _absorb_bias(layer, fused, builder, node):
    """The outputs of ``layer``: the fused bias ``add`` (its value now ``layer.bias``)
    when there is one, else the node's own."""
    if not fused:
        return node.outputs
    bias, add, reshape = fused
    layer.bias.set_value(bias)
    builder.absorb(add, reshape)
    return add.outputs
