"""Verified export: save a network as an inference model, load it back, and keep it only
if its outputs match the dygraph network's.

:func:`export` writes ``DIR/model.json`` + ``DIR/model.pdiparams`` (Paddle Inference,
format ``"paddle"``) and/or ``DIR/model.onnx`` (through ``paddle2onnx``, format
``"onnx"``). Each file set is written to a staging directory first, run by its runtime
(a Paddle Inference predictor, oneDNN on; ONNX Runtime on CPU) on the same batch as the
dygraph network in eval mode, and moved into ``DIR`` only when every output agrees
within ``atol + rtol * max|expected|``. On a mismatch nothing is left behind and a
:class:`~slim_callbacks.core.errors.SlimError` gives the largest difference.

The model's inputs are ``example_inputs`` (any structure, see
:mod:`slim_callbacks.core.example_inputs`: a shape is one float32 input; several inputs
with their dtypes are saved as several inputs), fixed as ``slim-callbacks latency``
expects; ``dynamic_batch=True`` saves the batch dimension as dynamic instead. A
verification batch larger than a fixed batch is run in chunks of that batch size.

Examples:
    >>> import paddle, tempfile, os
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU())
    >>> out = os.path.join(tempfile.mkdtemp(), "inference")
    >>> result = export(net, out, [1, 3, 8, 8])
    >>> sorted(os.listdir(out)), result.max_abs_diff["paddle"] < 1e-5
    (['model.json', 'model.pdiparams'], True)
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle

from slim_callbacks.core.checks import check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import ExampleInputs, as_inputs, given_inputs
from slim_callbacks.core.files import make_writable_dir
from slim_callbacks.core.paddle_utils import modes_restored
from slim_callbacks.core.signals import deferred, interruptible
from slim_callbacks.deploy.model_files import check_model_files
from slim_callbacks.deploy.runtime import MODEL_NAME, model_files, predictor, run, save_inference_model
from slim_callbacks.tracing.op_args import tensors_in

logger = logging.getLogger("slim_callbacks.deploy")

FORMATS = ("paddle", "onnx")
ONNX_SUFFIX = ".onnx"
ONNX_OPSET = 11
ONNX_INSTALL = 'pip install "slim_callbacks[onnx]"'
DEFAULT_ATOL, DEFAULT_RTOL = 1e-4, 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote: the directory, the model prefix in it (what
    ``predictor`` and ``slim-callbacks latency`` read), the files of each format,
    the largest absolute output difference to the dygraph network per format, and the
    largest absolute output of the dygraph network (what a difference is relative to)."""

    directory: str
    prefix: str
    files: Dict[str, Tuple[str, ...]]
    max_abs_diff: Dict[str, float]
    output_scale: float = 0.0

    def differences(self) -> str:
        """Each format's largest difference, absolute and relative to the largest
        output (a large absolute difference on large outputs can be float32 rounding).

        Examples:
            >>> ExportResult("d", "d/model", {}, {"paddle": 3e-6}, 25.0).differences()
            'paddle 3e-06 (1.2e-07 of max |output| 25)'
        """
        scale = self.output_scale
        return ", ".join(f"{fmt} {diff:.2g}" + (f" ({diff / scale:.2g} of max |output| "
                                                 f"{scale:.2g})" if scale > 0 else "")
                         for fmt, diff in self.max_abs_diff.items())


# ------------------------------------------------------------------- validation
def check_formats(formats: Union[str, Sequence[str]], key: str = "formats") -> Tuple[str, ...]:
    """The export formats as a tuple; ConfigError unless a non-empty list of distinct
    names from :data:`FORMATS`.

    Examples:
        >>> check_formats("onnx"), check_formats(["paddle", "onnx"])
        (('onnx',), ('paddle', 'onnx'))
    """
    names = (formats,) if isinstance(formats, str) else formats
    allowed = f"a non-empty list of distinct formats from {', '.join(FORMATS)}"
    if not isinstance(names, (list, tuple)) or not names or len(set(names)) != len(names) \
            or any(name not in FORMATS for name in names):
        raise ConfigError(key, formats, allowed)
    return tuple(names)


def check_onnx_available() -> None:
    """SlimError naming the pip command unless paddle2onnx and onnxruntime import."""
    missing = []
    for module in ("paddle2onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SlimError(f"format onnx needs {' and '.join(missing)}, which "
                        f"{'is' if len(missing) == 1 else 'are'} not installed: {ONNX_INSTALL}")


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError("path", path, "a directory path to write the model files in")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError("path", path, "a directory (this is an existing file)")
    return path


def _check_inputs(inputs, example: ExampleInputs, network, dynamic_batch: bool,
                  seed: int) -> List[np.ndarray]:
    """The verification batch, one array per model input in the saved order: ``inputs``
    checked against ``example`` (a batch of the same structure, dtypes and trailing
    shapes), or a seeded standard-normal batch (integer inputs: zeros)."""
    leaves = example.ordered_leaves(network)
    if inputs is None:
        rng = np.random.default_rng(seed)
        return [rng.standard_normal(leaf.shape).astype(leaf.dtype)
                if leaf.dtype.startswith("float") else np.zeros(leaf.shape, leaf.dtype)
                for leaf in leaves]
    step = 1 if dynamic_batch else example.batch
    batch = "N" if step == 1 else f"N (a multiple of {step})"
    if example.shape is not None:  # one float32 input: an array or tensor
        array = inputs.numpy() if isinstance(inputs, paddle.Tensor) else inputs
        shape = example.shape
        if not isinstance(array, np.ndarray) or list(array.shape[1:]) != shape[1:] \
                or array.shape[0] < 1 or array.shape[0] % step:
            got = list(array.shape) if isinstance(array, np.ndarray) else type(inputs).__name__
            raise ConfigError("inputs", got, f"None or a batch (array or tensor) of shape "
                              f"[{batch}, {', '.join(map(str, shape[1:]))}]")
        return [np.ascontiguousarray(array, dtype="float32")]
    given = as_inputs(inputs, key="inputs")
    got = given.ordered_leaves(network)
    sizes = {leaf.shape[0] for leaf in got if leaf.shape}
    if given.signature() != example.signature() or any(g.value is None for g in got) \
            or len(sizes) != 1 or min(sizes) % step:
        raise ConfigError("inputs", given.describe(), f"None or a real batch like "
                          f"{example.describe()} (batch {batch})")
    return [np.ascontiguousarray(leaf.value) for leaf in got]


# ------------------------------------------------------------------------ export
def export(network: paddle.nn.Layer, path, example_inputs=None,
           formats: Union[str, Sequence[str]] = ("paddle",), inputs=None,
           atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
           dynamic_batch: bool = False, seed: int = 0, *,
           input_shape: Optional[Sequence[int]] = None, forward_fn=None) -> ExportResult:
    """Export ``network`` to the directory ``path`` in each of ``formats``, verified.

    Args:
        network: the (pruned) dygraph network; its train/eval modes are restored.
        path: the directory for ``model.json``/``model.pdiparams``/``model.onnx``
            (created; model files already there are replaced only after the check).
        example_inputs: the model's inputs (any structure), e.g. the input shape with
            batch first, ``[1, 3, 224, 224]``; ``input_shape``: that shorthand;
            ``forward_fn``: how the dygraph network is called for the comparison.
        formats: ``"paddle"`` and/or ``"onnx"`` (needs ``slim_callbacks[onnx]``).
        inputs: the batch the outputs are compared on (e.g. real images; a structure
            like ``example_inputs`` holding arrays or tensors); by default a seeded
            standard-normal batch (integer inputs: zeros). Unless ``dynamic_batch``,
            its size must be a multiple of the example batch.
        atol: an output passes if ``max|got - expected| <= atol + rtol *
            max|expected|``.
        rtol: see ``atol``.
        dynamic_batch: save the batch dimension as dynamic (any batch size).

    Raises:
        ConfigError: a bad argument, before anything is written.
        SlimError: the onnx tools are missing; or an exported model's outputs differ
            (its files are deleted, nothing is left in ``path``).
    """
    if not isinstance(network, paddle.nn.Layer):
        raise ConfigError("network", type(network).__name__, "a paddle.nn.Layer")
    path = _check_path(path)
    example = given_inputs(example_inputs, input_shape, forward_fn)
    formats = check_formats(formats)
    batch = _check_inputs(inputs, example, network, dynamic_batch, seed)
    atol = check_number("atol", atol, 0.0)
    rtol = check_number("rtol", rtol, 0.0)
    if "onnx" in formats:
        check_onnx_available()
    expected = dygraph_outputs(network, batch, example)

    created = not os.path.isdir(path)
    make_writable_dir(path, "export directory", "choose another (CLI: --out DIR)")
    with interruptible():  # SIGTERM too: the staging directory is always deleted
        staging = tempfile.mkdtemp(prefix=".export-", dir=path)
        try:
            written, diffs = _write_verified(network, staging, example, formats, batch, expected,
                                             atol, rtol, dynamic_batch)
            moved = _move_all([f for names in written.values() for f in names], path)
        except BaseException as err:
            with deferred():  # a second Ctrl-C must not stop the clean-up half-way
                shutil.rmtree(staging, ignore_errors=True)
                if created:
                    shutil.rmtree(path, ignore_errors=True)
            if isinstance(err, OSError):
                raise SlimError(f"export: cannot write the model in {path} "
                                f"({err.strerror or err}); free some space or choose another "
                                f"directory (CLI: --out DIR)") from None
            raise
        shutil.rmtree(staging, ignore_errors=True)
    files = {fmt: tuple(moved[f] for f in names) for fmt, names in written.items()}
    _warn_stale(path, formats)
    scale = max((float(np.abs(e).max()) for e in expected if e.size), default=0.0)
    return ExportResult(path, os.path.join(path, MODEL_NAME), files, diffs, scale)


def _write_verified(network, staging, example, formats, batch, expected, atol, rtol,
                    dynamic_batch):
    """Save the model in ``staging`` in every format and check each one's outputs:
    ``({format: files}, {format: max abs difference})``."""
    prefix = os.path.join(staging, MODEL_NAME)
    with deferred():  # a signal inside Paddle's C++ save would come out as a SystemError
        save_inference_model(network, prefix, example, dynamic_batch=dynamic_batch)
    check_model_files(prefix)  # a full disk leaves truncated weights
    chunk = len(batch[0]) if dynamic_batch else example.batch
    written, diffs = {}, {}
    if "paddle" in formats:
        diffs["paddle"] = _verify_paddle(prefix, batch, chunk, expected, atol, rtol)
        written["paddle"] = model_files(prefix)
    if "onnx" in formats:
        onnx_file = prefix + ONNX_SUFFIX
        _to_onnx(prefix, onnx_file)
        diffs["onnx"] = _verify("onnx", _onnx_outputs(onnx_file, batch, chunk), expected,
                                atol, rtol)
        written["onnx"] = (onnx_file,)
    return written, diffs


def _verify_paddle(prefix: str, batch, chunk: int, expected, atol: float, rtol: float) -> float:
    """:func:`_verify` of Paddle Inference's outputs; where oneDNN's are off but the
    native kernels' match (Paddle 3.3.1's oneDNN on ConvNeXt), the native ones, with a
    warning: the program is right, oneDNN computes it wrongly."""
    try:
        return _verify("paddle", _paddle_outputs(prefix, batch, chunk), expected, atol, rtol)
    except SlimError as err:
        pred = predictor(prefix, threads=1, onednn=False)
        native = _chunked(lambda part: run(pred, part), batch, chunk)
        diff = _verify("paddle", native, expected, atol, rtol)  # off too: the first error
        logger.warning("export: Paddle Inference's oneDNN kernels compute this model wrongly "
                       "(%s); its native kernels match: deploy it with oneDNN off", err)
        return diff


def _paddle_outputs(prefix: str, batch: List[np.ndarray], chunk: int) -> List[np.ndarray]:
    """Paddle Inference's outputs with oneDNN (the CPU default), or without it, with a
    warning, where oneDNN cannot run one of the model's ops (Paddle 3.3.1's
    ``nearest_interp`` with a ``scale``, as in PP-YOLOE's neck)."""
    try:
        pred = predictor(prefix, threads=1, onednn=True)
        return _chunked(lambda part: run(pred, part), batch, chunk)
    except SlimError as err:
        if "onednn" not in str(err).lower():
            raise
        logger.warning("export: Paddle Inference's oneDNN cannot run this model (%s); verified "
                       "without oneDNN: deploy it with oneDNN off", str(err).splitlines()[0][:200])
    pred = predictor(prefix, threads=1, onednn=False)
    return _chunked(lambda part: run(pred, part), batch, chunk)


def _warn_stale(path: str, formats: Sequence[str]) -> None:
    """A warning for model files in ``path`` of a format not exported now: they come from
    an earlier export and may not match the model just written."""
    prefix = os.path.join(path, MODEL_NAME)
    others = {"paddle": model_files(prefix), "onnx": (prefix + ONNX_SUFFIX,)}
    stale = [f for fmt, names in others.items() if fmt not in formats for f in names
             if os.path.exists(f)]
    if stale:
        logger.warning("export: %s left from an earlier export (not this model; format not "
                       "asked for now)", ", ".join(stale))


def dygraph_outputs(network: paddle.nn.Layer, batch,
                    example: Optional[ExampleInputs] = None) -> List[np.ndarray]:
    """The network's outputs in eval mode on ``batch`` (an array, or one array per input
    in the saved order of ``example``'s inputs, called as ``example`` says; without
    ``example``, positionally), every tensor of any structure, as numpy."""
    arrays = batch if isinstance(batch, (list, tuple)) else [batch]
    with modes_restored(network), paddle.no_grad():
        network.eval()
        if example is None:
            out = network(*[paddle.to_tensor(a) for a in arrays])
        else:
            out = example.of_arrays(network, arrays).call(network)
    return [o.numpy() for o in tensors_in(out)]


def _chunked(fn, batch: List[np.ndarray], chunk: int) -> List[np.ndarray]:
    """``fn`` (one array per input -> list of outputs) over ``batch`` in pieces of
    ``chunk``, outputs concatenated along the batch."""
    parts = [fn([a[i:i + chunk] for a in batch]) for i in range(0, len(batch[0]), chunk)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def _verify(fmt: str, got: Sequence[np.ndarray], expected: Sequence[np.ndarray],
            atol: float, rtol: float) -> float:
    """The largest absolute difference; SlimError if any output is off."""
    if len(got) != len(expected):
        raise SlimError(f"export {fmt}: the exported model has {len(got)} outputs, the "
                        f"network {len(expected)}; the export is refused (files deleted)")
    worst = 0.0
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.shape != e.shape:
            raise SlimError(f"export {fmt}: output {i} has shape {list(g.shape)}, the network's "
                            f"{list(e.shape)}; the export is refused (files deleted)")
        diff = float(np.abs(g.astype("float64") - e.astype("float64")).max()) if e.size else 0.0
        limit = atol + rtol * (float(np.abs(e).max()) if e.size else 0.0)
        if not diff <= limit:  # NaN fails too
            raise SlimError(f"export {fmt}: output {i} differs from the dygraph network by "
                            f"{diff:.3g} (max abs; allowed {limit:.3g} = atol {atol:g} + rtol "
                            f"{rtol:g} x max|output|); the export is refused (files deleted)")
        worst = max(worst, diff)
    return worst


def _move_all(files: Sequence[str], directory: str) -> Dict[str, str]:
    """Move ``files`` into ``directory`` as one step: the files they replace are set
    aside first and put back if any move fails, so ``directory`` never holds a new
    program beside old weights. ``{source: target}``."""
    targets = {f: os.path.join(directory, os.path.basename(f)) for f in files}
    aside = {t: t + ".replaced" for t in targets.values() if os.path.exists(t)}
    done = []
    try:
        for target, backup in aside.items():
            os.replace(target, backup)
        for source, target in targets.items():
            os.replace(source, target)
            done.append(target)
    except BaseException:
        for target in done:
            os.remove(target)
        for target, backup in aside.items():
            if os.path.exists(backup):
                os.replace(backup, target)
        raise
    for backup in aside.values():
        os.remove(backup)
    return targets


def _to_onnx(prefix: str, onnx_file: str) -> None:
    import paddle2onnx
    program, params = model_files(prefix)
    try:  # optimize_tool="none": the default (polygraphy) may try to install packages
        paddle2onnx.export(program, params, save_file=onnx_file, opset_version=ONNX_OPSET,
                           enable_onnx_checker=True, optimize_tool="none")
    except Exception as err:
        raise SlimError(f"export onnx: paddle2onnx cannot convert the model "
                        f"({' '.join(str(err).split())[:300]}); the export is refused "
                        f"(files deleted)") from None
    if not os.path.isfile(onnx_file):
        raise SlimError(f"export onnx: paddle2onnx wrote no {onnx_file} (see its log above)")


def _onnx_outputs(onnx_file: str, batch: List[np.ndarray], chunk: int) -> List[np.ndarray]:
    """ONNX Runtime's outputs; SlimError if it cannot load or run the converted model."""
    try:
        return _run_onnx(onnx_file, batch, chunk)
    except Exception as err:  # onnxruntime raises its own exception types
        message = " ".join(str(err).split())
        raise SlimError(f"export onnx: ONNX Runtime cannot run the model paddle2onnx wrote "
                        f"({message[:300]}); the export is refused (files deleted)") from None


def _run_onnx(onnx_file: str, batch: List[np.ndarray], chunk: int) -> List[np.ndarray]:
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_file, options,
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return _chunked(lambda part: session.run(None, dict(zip(names, part))), batch, chunk)
