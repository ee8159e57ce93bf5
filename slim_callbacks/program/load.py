"""``load_inference_model``: an exported inference program back as a dygraph network,
checked against Paddle Inference on the original files."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from slim_callbacks.core.checks import check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.deploy.export import DEFAULT_ATOL, DEFAULT_RTOL, dygraph_outputs
from slim_callbacks.deploy.runtime import model_prefix, predictor, run
from slim_callbacks.program.build import build_network
from slim_callbacks.program.network import ProgramNetwork
from slim_callbacks.program.reader import read_program


def load_inference_model(path, input_shape: Optional[Sequence[int]] = None, verify: bool = True,
                         atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                         seed: int = 0) -> ProgramNetwork:
    """Rebuilds the network of an exported inference model as a dygraph ``paddle.nn.Layer``.

    Convolutions, BatchNorm, LayerNorm, GroupNorm, PReLU, Linear and Embedding become
    real sublayers holding the exported weights, so ``prune``, ``PruneCallback`` and
    ``export`` treat the network like a hand-written one; every other op runs as the
    same Paddle call. The rebuilt network is checked against Paddle Inference on the
    original files before it is returned.

    Args:
        path: the model's directory (``DIR/model.json`` + ``DIR/model.pdiparams``) or
            prefix (``DIR/model``).
        input_shape: the input shape the check runs at; by default the program's own,
            with a dynamic batch as 1 (needed when other dimensions are dynamic).
        verify: compare the outputs with Paddle Inference's (on a seeded
            standard-normal batch); SlimError if any differs by more than ``atol +
            rtol * max|output|``.

    Raises:
        SlimError: missing or unreadable files, an op without a converter (see
            :func:`slim_callbacks.program.register_converter`), or outputs that differ.

    Examples:
        >>> import paddle, tempfile, os
        >>> from slim_callbacks.deploy.export import export
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.BatchNorm2D(4),
        ...                            paddle.nn.ReLU())
        >>> out = os.path.join(tempfile.mkdtemp(), "inference")
        >>> _ = export(net, out, [1, 3, 8, 8])
        >>> rebuilt = load_inference_model(out)
        >>> [type(layer).__name__ for layer in rebuilt.children()]
        ['Conv2D', 'BatchNorm2D']
    """
    prefix = model_prefix(path)
    program = read_program(prefix)
    shape = _input_shape(program, input_shape)
    network = build_network(program)
    network.input_shape = shape  # the shape it was checked at (batch 1 unless given)
    network.eval()
    if verify:
        check_number("atol", atol, 0.0)
        check_number("rtol", rtol, 0.0)
        verify_network(network, prefix, shape, atol, rtol, seed, program.input_dtypes[0],
                       onednn=onednn_can_run(program))
    return network


def onednn_can_run(program) -> bool:
    """False for a program Paddle Inference's oneDNN kernels crash on (the process
    dies, nothing to catch): a batch_norm without scale and shift (Paddle 3.3)."""
    return not any(node.op in ("pd_op.batch_norm", "pd_op.batch_norm_")
                   and node.inputs[node.input_names.index("scale")] is None
                   for node in program.nodes)


def _input_shape(program, input_shape):
    if len(program.inputs) != 1:
        raise SlimError(f"{program.prefix}: the program takes {len(program.inputs)} inputs "
                        f"({', '.join(program.inputs)}); only one input is supported")
    declared = list(program.input_shapes[0])
    if input_shape is None:
        shape = [1 if i == 0 and d < 0 else d for i, d in enumerate(declared)]
        if any(d < 0 for d in shape):
            raise ConfigError("input_shape", None, f"the input shape to check the model at "
                              f"(the program's is {declared}, dynamic beyond the batch)")
        return shape
    shape = list(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) != len(declared) or any(
            not isinstance(d, int) or d < 1 or 0 <= e != d for d, e in zip(shape, declared)):
        raise ConfigError("input_shape", input_shape, f"a list of positive ints matching the "
                          f"program's input {declared} (-1: any)")
    return shape


def verify_network(network, prefix: str, shape, atol: float, rtol: float, seed: int = 0,
                   dtype: str = "float32", onednn: bool = True) -> float:
    """The largest output difference between ``network`` and Paddle Inference running
    the model at ``prefix`` on a seeded batch (standard normal; 0 and 1 for an integer
    input, such as token ids): with oneDNN (if ``onednn``) where it runs the program and
    agrees, else without (the native kernels, as the dygraph network runs); SlimError if
    over ``atol + rtol * max|output|``."""
    rng = np.random.default_rng(seed)
    batch = rng.standard_normal(shape).astype(dtype) if "float" in dtype \
        else rng.integers(0, 2, shape).astype(dtype)
    got = dygraph_outputs(network, batch)
    try:
        if not onednn:
            raise SlimError("oneDNN is off")
        return _compare(got, run(predictor(prefix, threads=1, onednn=True), [batch]),
                        prefix, atol, rtol)
    except SlimError:  # oneDNN cannot run it, or computes it wrongly (Paddle 3.3, ConvNeXt)
        return _compare(got, run(predictor(prefix, threads=1, onednn=False), [batch]),
                        prefix, atol, rtol)


def _compare(got, expected, prefix: str, atol: float, rtol: float) -> float:
    worst = 0.0
    for i, (g, e) in enumerate(zip(got, expected)):
        diff = float(np.abs(g.astype("float64") - e).max()) if e.size else 0.0
        limit = atol + rtol * (float(np.abs(e).max()) if e.size else 0.0)
        if g.shape != e.shape or not diff <= limit:
            raise SlimError(f"{prefix}: the rebuilt network's output {i} differs from Paddle "
                            f"Inference's ({_describe(g, e, diff)}; allowed {limit:.3g}): a "
                            f"converter is wrong for this program")
        worst = max(worst, diff)
    if len(got) != len(expected):
        raise SlimError(f"{prefix}: the rebuilt network has {len(got)} outputs, the program "
                        f"{len(expected)}")
    return worst


def _describe(got, expected, diff) -> str:
    if got.shape != expected.shape:
        return f"shape {list(got.shape)}, expected {list(expected.shape)}"
    return f"max abs difference {diff:.3g}"

