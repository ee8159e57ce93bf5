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
import threading
from typing import List, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import modes_restored
from slim_callbacks.engine.ratios import check_input_shape

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
_EAGER_DELETE_LOCK = threading.Lock()   # the flag is process-wide: one keeping first run at a time
_NUMPY_DTYPES = {"FLOAT32": "float32", "FLOAT64": "float64", "FLOAT16": "float16",
                 "INT64": "int64", "INT32": "int32", "INT8": "int8", "UINT8": "uint8",
                 "BOOL": "bool"}


def predictor(prefix: str, threads: int = 1, onednn: bool = True,
              keep_intermediates: bool = False, input_shape: Optional[Sequence[int]] = None,
              batch: Optional[int] = None):
    """A Paddle Inference CPU predictor for the model saved at ``prefix``.

    ``threads`` is the CPU math library's thread count; ``onednn`` switches the oneDNN
    kernels (Paddle's CPU default) on or off. ``keep_intermediates`` turns eager
    deletion off (``FLAGS_eager_delete_tensor_gb = -1``): the executor keeps every
    intermediate tensor of a run instead of handing each to its garbage collector after
    its last use - faster, but the predictor then holds all activations of the network
    at once. Paddle reads the flag when the first run builds the executor, not at
    creation, so the predictor is created *and run once* on zeros with the flag set
    (the first input at ``input_shape``, else every input at its declared shape, with
    ``batch`` as its batch if given), and the flag is restored right after, also on
    failure. The flag is process-wide: a lock keeps two such first runs apart, but a
    predictor another thread runs for the first time meanwhile keeps too, and
    ``pred.clone()`` reads the flag at its own first run.
    """
    program, params = model_files(prefix)
    missing = [f for f in (program, params) if not os.path.isfile(f)]
    if missing:
        raise SlimError(f"no inference model at {prefix!r}: missing {', '.join(missing)}; "
                        "export one with `slim-callbacks export` or slim_callbacks.export()")
    if input_shape is not None:
        input_shape = check_input_shape(input_shape)
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
    with _EAGER_DELETE_LOCK:
        saved = paddle.get_flags([EAGER_DELETE_FLAG])
        paddle.set_flags({EAGER_DELETE_FLAG: -1.0})
        try:
            pred = paddle.inference.create_predictor(config)
            run(pred, zero_inputs(pred, prefix, input_shape, batch))
            return pred
        finally:
            paddle.set_flags(saved)


def keeps_intermediates(asked: bool) -> bool:
    """Whether predictors asked to keep intermediates (``asked``) really do: also when the
    process-wide flag already has eager deletion off, whatever was asked."""
    return bool(asked) or float(paddle.get_flags([EAGER_DELETE_FLAG])[EAGER_DELETE_FLAG]) < 0


def input_shapes(pred, prefix: str, input_shape: Optional[Sequence[int]] = None,
                 batch: Optional[int] = None) -> List[List[int]]:
    """The shape of every input of ``pred``: ``input_shape`` for the first, the declared
    shape for the others (with ``batch`` as the batch, if given); a clear error for
    unknown dims (a model exported with a dynamic batch declares none)."""
    shapes = []
    for i, name in enumerate(pred.get_input_names()):
        if i == 0 and input_shape is not None:
            shapes.append(check_input_shape(input_shape))
            continue
        shape = [int(d) for d in pred.get_input_handle(name).shape()]
        if len(shape) < 2 or any(d <= 0 for d in shape[1:]):  # a dynamic batch reads as [0]
            where = "pass input_shape (CLI: --input-shape)" if i == 0 else \
                "only the first input's shape can be given; export the model with fixed shapes"
            raise SlimError(f"model {prefix!r}: input {name!r} has shape {shape} with unknown "
                            f"dims; {where}")
        shapes.append([batch or max(shape[0], 1)] + shape[1:])
    return shapes


def input_dtypes(pred, prefix: str) -> List[str]:
    """The numpy dtype of every input of ``pred``; a clear error for one numpy lacks."""
    dtypes = []
    for name in pred.get_input_names():
        kind = pred.get_input_handle(name).type().name
        if kind not in _NUMPY_DTYPES:
            raise SlimError(f"model {prefix!r}: input {name!r} is {kind}; inputs of "
                            f"{', '.join(_NUMPY_DTYPES)} only")
        dtypes.append(_NUMPY_DTYPES[kind])
    return dtypes


def zero_inputs(pred, prefix: str, input_shape: Optional[Sequence[int]] = None,
                batch: Optional[int] = None) -> List[np.ndarray]:
    """Zeros of every input's shape and dtype (see :func:`input_shapes`)."""
    return [np.zeros(shape, dtype=dtype) for shape, dtype in
            zip(input_shapes(pred, prefix, input_shape, batch), input_dtypes(pred, prefix))]


def run(pred, inputs: List[np.ndarray]) -> List[np.ndarray]:
    """Run a predictor on numpy inputs (in input-name order); its outputs as numpy."""
    names = pred.get_input_names()
    if len(inputs) != len(names):
        raise SlimError(f"{len(inputs)} input(s) given; the model takes {len(names)}: "
                        f"{', '.join(names)}")
    for name, array in zip(names, inputs):
        handle = pred.get_input_handle(name)
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(np.ascontiguousarray(array))
    pred.run()
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
