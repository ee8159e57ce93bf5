"""``flops()``: PaddleSlim's FLOPs count of a dygraph network, equal to its numbers.

PaddleSlim counts the ops of the static program its tracer builds; this counts the same
work with forward hooks on the layers, per its conventions (one multiply-add = 1):

- ``Conv2D``: ``H_out * W_out * C_out * Kh * Kw * C_in / groups`` (no batch, no bias);
- ``Linear``: ``x.shape[0] * x.shape[1] * out`` (the first two input dims, so the batch
  of ``inputs`` counts here, as in PaddleSlim);
- with ``only_conv=False`` also ``BatchNorm``: 2 per input element, ``ReLU``,
  ``ReLU6``, ``Sigmoid``: 1 per input element, ``AvgPool2D`` and ``AdaptiveAvgPool2D``:
  ``2 * output elements * kernel_h ** 2`` (an adaptive pool's kernel is its output size).

Functional calls in a ``forward`` (``F.relu``, ``paddle.matmul``) are not counted.
MobileNetV1 at 224x224: 568,740,352 and, with ``only_conv=False``, 583,870,464 - what
PaddleSlim 2.6 reports.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU())
    >>> flops(net, [1, 3, 10, 10]), flops(net, [1, 3, 10, 10], only_conv=False)
    (13824, 14336)
"""
from __future__ import annotations

import math
from typing import Dict, Tuple, Union

import paddle
import paddle.nn as nn

from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import ExampleInputs, as_inputs
from slim_callbacks.core.paddle_utils import dygraph_forwards, modes_restored

_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.Sigmoid)
_NORMS = (nn.BatchNorm, nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)
_AVG_POOLS = (nn.AvgPool2D, nn.AdaptiveAvgPool2D)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _numel(shape) -> int:
    return math.prod(max(int(d), 1) for d in shape)


def _layer_flops(layer, x, out, only_conv: bool) -> Tuple[int, str]:
    """(FLOPs, weight name or "") of one call of ``layer``."""
    if isinstance(layer, nn.Conv2D):
        c_out, c_in, k_h, k_w = layer.weight.shape
        h_out, w_out = out.shape[2:4] if layer._data_format == "NCHW" else out.shape[1:3]
        return h_out * w_out * c_out * k_h * k_w * c_in, layer.weight.name
    if isinstance(layer, nn.Linear):
        rows = [max(int(d), 1) for d in x.shape[:2]] if len(x.shape) > 1 else [1, int(x.shape[0])]
        return rows[0] * rows[1] * int(layer.weight.shape[1]), layer.weight.name
    if only_conv:
        return 0, ""
    if isinstance(layer, _NORMS):
        return 2 * _numel(x.shape), ""
    if isinstance(layer, _ELEMENTWISE):
        return _numel(x.shape), ""
    if isinstance(layer, _AVG_POOLS):
        size = layer._output_size if isinstance(layer, nn.AdaptiveAvgPool2D) else layer.ksize
        kernel = size if isinstance(size, int) else size[0]
        return 2 * _numel(out.shape[1:]) * int(kernel) ** 2, ""
    return 0, ""


def example_inputs(inputs, dtypes=None) -> ExampleInputs:
    """The engine's :class:`~slim_callbacks.core.example_inputs.ExampleInputs` of
    PaddleSlim's ``inputs``: one shape, a list of shapes (zeros of ``dtypes``: one
    dtype for all or one each, default float32), or the forward's inputs themselves."""
    if isinstance(inputs, ExampleInputs):
        return inputs

    def is_shape(value):
        return isinstance(value, (list, tuple)) and value and all(
            isinstance(d, int) and not isinstance(d, bool) for d in value)

    if is_shape(inputs):
        shapes = [list(inputs)]
    elif isinstance(inputs, (list, tuple)) and inputs and all(is_shape(s) for s in inputs):
        shapes = [list(s) for s in inputs]
    elif isinstance(inputs, (paddle.Tensor, list, tuple)) and inputs is not None:
        return as_inputs(inputs if isinstance(inputs, paddle.Tensor) else list(inputs), key="inputs")
    else:
        raise ConfigError("inputs", inputs, "a shape, a list of shapes or the forward's inputs")
    dtypes = ["float32"] * len(shapes) if dtypes is None else (
        [dtypes] * len(shapes) if isinstance(dtypes, str) else list(dtypes))
    if len(dtypes) != len(shapes):
        raise ConfigError("dtypes", dtypes, f"one dtype per input shape ({len(shapes)})")
    shapes = [[max(d, 1) for d in s] for s in shapes]  # PaddleSlim's -1 batch is 1
    if len(shapes) == 1 and dtypes[0] == "float32":
        return as_inputs(shapes[0], key="inputs")
    return as_inputs([{"shape": s, "dtype": t} for s, t in zip(shapes, dtypes)], key="inputs")


def flops(model, inputs=None, dtypes=None, only_conv: bool = True,
          detail: bool = False) -> Union[int, Tuple[int, Dict[str, int]]]:
    """FLOPs of one forward pass of ``model`` on ``inputs``, PaddleSlim's way.

    Args:
        model: a dygraph ``paddle.nn.Layer``.
        inputs: a shape (``[1, 3, 224, 224]``), a list of shapes, or the forward's
            inputs (tensors); or the engine's ``ExampleInputs``.
        dtypes: the dtype (or one per shape) of inputs given as shapes; default float32.
        only_conv: count only Conv2D and Linear; ``False`` adds BatchNorm, activations
            and average pools (see the module docstring).
        detail: also return ``{weight name: FLOPs}`` of every Conv2D and Linear.

    Returns:
        The count (an int), or ``(count, details)`` with ``detail``.
    """
    if isinstance(model, paddle.static.Program):
        raise SlimError("flops of a static Program is not supported: pass the dygraph "
                        "paddle.nn.Layer (a paddle.jit.to_static forward is fine)")
    if not isinstance(model, nn.Layer):
        raise ConfigError("model", model, "a paddle.nn.Layer")
    inputs = example_inputs(inputs, dtypes)
    total, details = [0], {}

    def hook(layer, layer_inputs, output):
        count, name = _layer_flops(layer, _first(layer_inputs), _first(output), only_conv)
        total[0] += int(count)
        if name:
            details[name] = details.get(name, 0) + int(count)

    handles = [layer.register_forward_post_hook(hook) for layer in model.sublayers(include_self=True)]
    try:
        with modes_restored(model, training=False), dygraph_forwards(), paddle.no_grad():
            inputs.call(model)
    finally:
        for handle in handles:
            handle.remove()
    return (total[0], details) if detail else total[0]


def dygraph_flops(model, inputs, dtypes=None, only_conv: bool = False, detail: bool = False):
    """:func:`flops` with PaddleSlim's ``dygraph_flops`` default ``only_conv=False``."""
    return flops(model, inputs, dtypes=dtypes, only_conv=only_conv, detail=detail)
