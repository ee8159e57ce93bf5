"""Paddle Inference on CPU: a predictor for an exported model, and running it.

Paddle 3 writes an inference model as ``PREFIX.json`` (the program) and
``PREFIX.pdiparams`` (the weights); ``predictor(PREFIX)`` loads both.

Example:
    >>> import numpy as np, paddle, tempfile, os
    >>> net = paddle.nn.Linear(4, 2)
    >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_inference_model(net, prefix, [1, 4])
    >>> p = predictor(prefix, threads=1)
    >>> x = np.ones((1, 4), dtype="float32")
    >>> bool(np.allclose(run(p, [x])[0], net(paddle.to_tensor(x)).numpy(), atol=1e-6))
    True
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import modes_restored

PROGRAM_SUFFIX = ".json"
PARAMS_SUFFIX = ".pdiparams"


def model_files(prefix: str) -> tuple:
    """The program and weight files of the inference model saved at ``prefix``."""
    return prefix + PROGRAM_SUFFIX, prefix + PARAMS_SUFFIX


def save_inference_model(network: paddle.nn.Layer, prefix: str, input_shape: Sequence[int],
                         dtype: str = "float32") -> None:
    """``paddle.jit.save`` the network in eval mode for one fixed input shape."""
    spec = [paddle.static.InputSpec(list(input_shape), dtype, "x")]
    with modes_restored(network):
        network.eval()
        paddle.jit.save(network, prefix, input_spec=spec)


EAGER_DELETE_FLAG = "FLAGS_eager_delete_tensor_gb"


def predictor(prefix: str, threads: int = 1, onednn: bool = True,
              keep_intermediates: bool = False, input_shape: Optional[Sequence[int]] = None):
    """A Paddle Inference CPU predictor for the model saved at ``prefix``.

    ``threads`` is the CPU math library's thread count; ``onednn`` switches the oneDNN
    kernels (Paddle's CPU default) on or off. ``keep_intermediates`` turns eager
    deletion off (``FLAGS_eager_delete_tensor_gb = -1``): the executor keeps every
    intermediate tensor of a run instead of handing each to its garbage collector after
    its last use - faster, but the predictor then holds all activations of the network
    at once. Paddle reads the flag when the first run builds the executor, not at
    creation, so the predictor is created *and run once* on zeros with the flag set
    (``input_shape`` for the first input, or the shapes the model declares), and the
    flag is restored right after, also on failure.
    """
    program, params = model_files(prefix)
    missing = [f for f in (program, params) if not os.path.isfile(f)]
    if missing:
        raise SlimError(f"no inference model at {prefix!r}: missing {', '.join(missing)}; "
                        "export one with `slim-callbacks export` or slim_callbacks.export()")
    config = paddle.inference.Config(program, params)
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(int(threads))
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    if not keep_intermediates:
        return paddle.inference.create_predictor(config)
    saved = paddle.get_flags([EAGER_DELETE_FLAG])
    paddle.set_flags({EAGER_DELETE_FLAG: -1.0})
    try:
        pred = paddle.inference.create_predictor(config)
        run(pred, zero_inputs(pred, prefix, input_shape))
        return pred
    finally:
        paddle.set_flags(saved)


def input_shapes(pred, prefix: str, input_shape: Optional[Sequence[int]] = None) -> List[List[int]]:
    """The shape of every input of ``pred``: ``input_shape`` for the first, the declared
    shape for the others; a clear error for unknown dims (a model exported with a
    dynamic batch declares none)."""
    shapes = []
    for i, name in enumerate(pred.get_input_names()):
        if i == 0 and input_shape is not None:
            shapes.append([int(d) for d in input_shape])
            continue
        shape = [int(d) for d in pred.get_input_handle(name).shape()]
        if len(shape) < 2 or any(d <= 0 for d in shape[1:]):  # a dynamic batch reads as [0]
            raise SlimError(f"model {prefix!r}: input {name!r} has shape {shape} with unknown "
                            "dims; pass input_shape (CLI: --input-shape)")
        shapes.append([max(shape[0], 1)] + shape[1:])
    return shapes


def zero_inputs(pred, prefix: str, input_shape: Optional[Sequence[int]] = None) -> List[np.ndarray]:
    """Zeros of every input's shape and dtype (see :func:`input_shapes`)."""
    dtypes = [pred.get_input_handle(n).type().name.lower() for n in pred.get_input_names()]
    return [np.zeros(shape, dtype=dtype)
            for shape, dtype in zip(input_shapes(pred, prefix, input_shape), dtypes)]


def run(pred, inputs: List[np.ndarray]) -> List[np.ndarray]:
    """Run a predictor on numpy inputs (in input-name order); its outputs as numpy."""
    for name, array in zip(pred.get_input_names(), inputs):
        handle = pred.get_input_handle(name)
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(np.ascontiguousarray(array))
    pred.run()
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
