"""Paddle Inference on CPU: a predictor for an exported model, and running it.

Paddle 3 writes an inference model as ``PREFIX.json`` (the program) and
``PREFIX.pdiparams`` (the weights); ``predictor(PREFIX)`` loads both.

Examples:
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

from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import modes_restored
from slim_callbacks.deploy.model_files import (  # noqa: F401
    PARAMS_SUFFIX,
    PROGRAM_SUFFIX,
    check_model_files,
    model_files,
    onednn_crash,
)
from slim_callbacks.engine.ratios import check_input_shape

MODEL_NAME = "model"
THREADS_PER_CORE = 4


def model_prefix(path: str) -> str:
    """The model prefix a user means by ``path``: ``DIR/model`` for a directory, the
    prefix for one of the model's files (``model.json``, ``model.pdiparams``).

    Examples:
        >>> model_prefix("out/model.json"), model_prefix("out/model")
        ('out/model', 'out/model')
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.join(path, MODEL_NAME)
    for suffix in (PROGRAM_SUFFIX, PARAMS_SUFFIX):
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


def check_threads(threads) -> int:
    """A thread count in [1, 4 x the CPU cores]: more only oversubscribes the cores."""
    most = THREADS_PER_CORE * (os.cpu_count() or 1)
    return check_int("threads", threads, 1, f"an integer >= 1 ({THREADS_PER_CORE} per CPU core "
                     f"at most)", maximum=most)


def save_inference_model(network: paddle.nn.Layer, prefix: str, example_inputs,
                         dynamic_batch: bool = False) -> None:
    """``paddle.jit.save`` the network in eval mode for fixed example inputs (any
    structure; a shape is one float32 input named ``x``), the batch dynamic if asked."""
    spec = as_inputs(example_inputs).input_specs(network, dynamic_batch)
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
    prefix = model_prefix(prefix)
    threads = check_threads(threads)
    if input_shape is not None:
        input_shape = check_input_shape(input_shape)
    check_model_files(prefix)
    crash = onednn_crash(prefix) if onednn else None
    if crash:
        raise SlimError(f"Paddle Inference's oneDNN cannot run the model at {prefix!r}: "
                        f"Paddle {paddle.__version__} crashes on {crash}; run it with oneDNN off")
    config = paddle.inference.Config(*model_files(prefix))
    config.disable_gpu()
    config.disable_glog_info()
    config.set_cpu_math_library_num_threads(threads)
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    if not keep_intermediates:
        return _create(config, prefix)
    with _EAGER_DELETE_LOCK:
        saved = paddle.get_flags([EAGER_DELETE_FLAG])
        paddle.set_flags({EAGER_DELETE_FLAG: -1.0})
        try:
            pred = _create(config, prefix)
            run(pred, zero_inputs(pred, prefix, input_shape, batch))
            return pred
        finally:
            paddle.set_flags(saved)


def _create(config, prefix: str):
    try:
        return paddle.inference.create_predictor(config)
    except Exception as err:  # Paddle raises RuntimeError, ValueError, its own types
        raise SlimError(f"Paddle Inference cannot load the model at {prefix!r} "
                        f"({_first_line(err)}); export it again") from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = next((line for line in lines if "Error" in line), lines[0] if lines else type(err).__name__)
    return text[:300]


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
        shape = [int(d) for d in pred.get_input_handle(name).shape()]
        if i == 0 and input_shape is not None:
            shapes.append(_matching(check_input_shape(input_shape), shape, prefix, name))
            continue
        if len(shape) < 2 or any(d <= 0 for d in shape[1:]):  # a dynamic batch reads as [0]
            where = "pass input_shape (CLI: --input-shape)" if i == 0 else \
                "only the first input's shape can be given; export the model with fixed shapes"
            raise SlimError(f"model {prefix!r}: input {name!r} has shape {shape} with unknown "
                            f"dims; {where}")
        shapes.append([batch or max(shape[0], 1)] + shape[1:])
    return shapes


def _matching(given: List[int], declared: List[int], prefix: str, name: str) -> List[int]:
    """``given`` if it has the declared rank and every declared (known) dim but the batch
    (a model with a dynamic batch declares no shape before its first run: ``[0]``)."""
    if len(declared) < 2:
        return given
    if len(given) != len(declared) or any(0 < d != g for g, d in zip(given[1:], declared[1:])):
        want = ", ".join("N" if i == 0 else str(d) if d > 0 else "?"
                         for i, d in enumerate(declared))
        raise SlimError(f"input_shape {given} does not fit model {prefix!r}: input {name!r} is "
                        f"[{want}] (? = any); give that shape (CLI: --input-shape)")
    return given


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
    """Run a predictor on numpy inputs (in input-name order); its outputs as numpy.
    SlimError if Paddle fails to run it."""
    names = pred.get_input_names()
    if len(inputs) != len(names):
        raise SlimError(f"{len(inputs)} input(s) given; the model takes {len(names)}: "
                        f"{', '.join(names)}")
    for name, array in zip(names, inputs):
        handle = pred.get_input_handle(name)
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(np.ascontiguousarray(array))
    try:
        pred.run()
    except Exception as err:  # Paddle's C++ errors, e.g. a shape the program cannot take
        shapes = [list(a.shape) for a in inputs]
        raise SlimError(f"Paddle Inference cannot run the model on inputs of shape "
                        f"{shapes} ({_first_line(err)})") from None
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
