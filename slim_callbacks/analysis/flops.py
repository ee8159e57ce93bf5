"""FLOPs, parameter and size counters for PaddlePaddle dynamic-graph networks.

``paddle.flops`` crashes with numpy >= 2.4, so slim_callbacks counts on its own: one
forward pass in eval mode with forward post-hooks on the leaf layers records, per call,
the work of each counted layer under every convention at once. Shapes are read from the
layers' actual weights and outputs, so a pruned network is counted as it now is. Counts
are per sample: the batch dimension of the (first) input is divided out.

Conventions (see :func:`count_flops`):

* ``macs``: one multiply-add = 1, for convolutions (1-D, 2-D and 3-D, transposed or
  not), Linear and registered layer kinds with ``macs`` (see
  :mod:`slim_callbacks.tracing.kinds`), and products between tensors outside those
  layers (attention's ``q @ k^T`` and ``attn @ v``: ``paddle.matmul``, ``bmm``, ``@``;
  see :mod:`slim_callbacks.analysis.matmul_counts`); biases not counted. A transposed
  conv does ``H_in * W_in * C_in * (C_out / groups) * Kh * Kw``.
* ``flops``: 2 x ``macs``.
* ``paddleslim_legacy``: PaddleSlim's legacy ``fluid.contrib.slim`` counter, the one
  behind the "1.11 GFLOPs" of PaddleSlim's MobileNetV1 table (1,113,234,132 at 224):

  - Conv2D: ``2 * H_out * W_out * C_out * Kh * Kw * (C_in / groups) / groups``. The
    filter already holds ``C_in / groups`` input channels and the legacy code divides by
    ``groups`` again, so a depthwise conv counts ``2 * H_out * W_out * Kh * Kw``.
  - Linear: ``2 * in * out`` per row; Conv2DTranspose: ``2 * macs``.
  - BatchNorm, ReLU, Sigmoid: 1 per input element.
  - MaxPool2D / AvgPool2D: ``output elements * Kh * Kw``; for the adaptive pools the
    kernel is ``ceil(in / out)`` per spatial dim, i.e. the whole input for a global pool.

Besides those products, only layers are seen: other functional calls in a ``forward``
(``F.conv2d``, ``paddle.einsum``, ``F.relu``, ...) are not counted, nor are layers of any
other type. A layer called several times is counted every time.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU())
    >>> profile(net, [1, 3, 8, 8])["macs"]
    13824
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import paddle
import paddle.nn as nn

from slim_callbacks.analysis.matmul_counts import counting_matmuls
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import ExampleInputs, as_inputs, given_inputs
from slim_callbacks.core.paddle_utils import attributes_restored, dygraph_forwards, modes_restored
from slim_callbacks.tracing.kinds import LayerKind, kind_of

logger = logging.getLogger(__name__)

CONVENTIONS = ("macs", "flops", "paddleslim_legacy")

_ELEMENTWISE = (nn.ReLU, nn.Sigmoid)
_POOLS = (nn.MaxPool2D, nn.AvgPool2D)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D)

Counts = Tuple[int, int]  # (macs, legacy flops) of one layer call, whole batch


@dataclasses.dataclass
class _Tally:
    """What one counting pass found, per sample; ``depth``: counted layers running now."""

    macs: int = 0
    legacy: int = 0
    depth: int = 0

    def add_macs(self, macs: int) -> None:
        self.macs += macs


_FROM_TALLY: Dict[str, Callable[[_Tally], int]] = {
    "macs": lambda tally: tally.macs,
    "flops": lambda tally: 2 * tally.macs,
    "paddleslim_legacy": lambda tally: tally.legacy,
}


class _CountingError(RuntimeError):
    """A counter failed on a layer (a bug here, not a shape the network rejects)."""


# ----------------------------------------------------------------------- per-layer counts


def _numel(tensor) -> int:
    return math.prod(tensor.shape)


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def _spatial(tensor, data_format: str) -> Tuple[int, int]:
    """(H, W) of a 4-D tensor in NCHW or NHWC."""
    return tuple(tensor.shape[1:3] if data_format == "NHWC" else tensor.shape[2:4])


def _elementwise_counts(layer, inputs, output) -> Counts:
    """ReLU, Sigmoid: legacy 1 per input element (BatchNorm: its kind says the same)."""
    return 0, _numel(inputs[0])


def _pooled(output):
    """The pooled tensor of a pool's output (``(out, mask)`` with ``return_mask=True``)."""
    return output[0] if isinstance(output, (list, tuple)) else output


def _pool_counts(layer, inputs, output) -> Counts:
    """MaxPool2D / AvgPool2D: legacy output elements x Kh * Kw."""
    kernel_h, kernel_w = _pair(layer.ksize)
    return 0, _numel(_pooled(output)) * kernel_h * kernel_w


def _adaptive_pool_counts(layer, inputs, output) -> Counts:
    """Adaptive pools: as a pool whose kernel is ceil(in / out) per spatial dim."""
    output = _pooled(output)
    data_format = getattr(layer, "_data_format", "NCHW")
    (in_h, in_w), (out_h, out_w) = _spatial(inputs[0], data_format), _spatial(output, data_format)
    kernel = math.ceil(in_h / out_h) * math.ceil(in_w / out_w)
    return 0, _numel(output) * kernel


# Legacy-only counts of layers that are no layer kind (first match wins); every kind of
# slim_callbacks.tracing.kinds counts its own MACs and legacy FLOPs.
_LEGACY_COUNTERS = (
    (lambda layer: isinstance(layer, _ELEMENTWISE), _elementwise_counts),
    (lambda layer: isinstance(layer, _POOLS), _pool_counts),
    (lambda layer: isinstance(layer, _ADAPTIVE_POOLS), _adaptive_pool_counts),
)


def _kind_counter(kind: LayerKind) -> Callable:
    def counts(layer, inputs, output) -> Counts:
        legacy = kind.legacy_flops(layer, inputs, output) if kind.legacy_flops else 0
        return kind.count_macs(layer, inputs, output), legacy
    return counts


def _counter_for(layer) -> Callable | None:
    kind = kind_of(layer)
    if kind is not None and (kind.counts_macs() or kind.legacy_flops is not None):
        return _kind_counter(kind)
    for match, counter in _LEGACY_COUNTERS:
        if match(layer):
            return counter
    return None


def counts_macs(layer) -> bool:
    """A layer the ``macs`` convention counts: a Conv1D/2D/3D (transposed or not), Linear,
    or a registered kind with ``macs``."""
    kind = kind_of(layer)
    return kind is not None and kind.counts_macs()


# ------------------------------------------------------------------------ counting pass


def _require_layer(network) -> None:
    if not isinstance(network, nn.Layer):
        raise ConfigError("network", type(network).__name__, "a paddle.nn.Layer")


def _is_leaf(layer) -> bool:
    return next(iter(layer.children()), None) is None


def _make_hook(counter: Callable, totals: _Tally, observe: Optional[Callable]) -> Callable:
    def hook(layer, inputs, output):
        totals.depth -= 1
        try:
            macs, legacy = counter(layer, inputs, output)
            if observe is not None:
                observe(layer, inputs, output)
        except Exception as exc:
            raise _CountingError(f"counting {type(layer).__name__} failed: {exc}") from exc
        totals.macs += macs
        totals.legacy += legacy

    return hook


def _make_pre_hook(totals: _Tally) -> Callable:
    def pre_hook(layer, inputs):
        totals.depth += 1
    return pre_hook


def _attach_hooks(network, totals: _Tally, observe: Optional[Callable] = None) -> list:
    """Hooks every counted leaf layer; returns the remove handles."""
    handles, uncounted = [], set()
    for layer in network.sublayers(include_self=True):
        if not _is_leaf(layer):
            continue
        counter = _counter_for(layer)
        if counter is None:
            uncounted.add(type(layer).__name__)
            continue
        handles.append(layer.register_forward_pre_hook(_make_pre_hook(totals)))
        seen = observe if counts_macs(layer) else None
        handles.append(layer.register_forward_post_hook(_make_hook(counter, totals, seen)))
    for name in sorted(n for n in uncounted if "Conv" in n):
        logger.warning("%s layers are not counted by slim_callbacks.analysis.flops", name)
    logger.debug("not counted: %s", sorted(uncounted))
    return handles


def _forward(network, inputs: ExampleInputs) -> None:
    try:
        with paddle.no_grad(), attributes_restored(network):
            inputs.call(network)
    except _CountingError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise SlimError(f"{inputs.argument} {inputs.describe()} is rejected by the network: "
                        f"{type(exc).__name__}: {reason}") from exc


def _count(network, example_inputs, observe: Optional[Callable] = None) -> _Tally:
    """One eval-mode forward pass on zeros; returns per-sample counts of every convention.
    ``observe(layer, inputs, output)`` sees every call of a layer that counts MACs.

    Train/eval flags of every sublayer are restored and the hooks removed, even on error.
    """
    _require_layer(network)
    inputs = as_inputs(example_inputs)
    totals = _Tally()
    handles = _attach_hooks(network, totals, observe)
    try:
        with modes_restored(network, training=False), dygraph_forwards(), \
                counting_matmuls(totals.add_macs, inside=lambda: totals.depth > 0):
            _forward(network, inputs)
    finally:
        for handle in handles:
            handle.remove()
    batch = inputs.batch
    tally = _Tally(macs=totals.macs // batch, legacy=totals.legacy // batch)
    logger.debug("counted %s at %s: %s", type(network).__name__, inputs.describe(), tally)
    return tally


# --------------------------------------------------------------------------- public API


def count_flops(network, example_inputs=None, convention: str = "macs", *,
                input_shape: Optional[Sequence[int]] = None) -> int:
    """Counts the work of one forward pass, per sample.

    Runs one forward pass under ``paddle.no_grad()`` in eval mode on zeros of
    ``example_inputs``; the network's train/eval mode is restored and the hooks removed.

    Args:
        network: a ``paddle.nn.Layer``.
        example_inputs: inputs of any structure (see
            :mod:`slim_callbacks.core.example_inputs`), e.g. the full input shape,
            batch first, ``[1, 3, 224, 224]``. The result is per sample (divided by
            the first input's batch) whatever the batch size.
        input_shape: the shorthand for one float32 input of this shape.
        convention: ``"macs"`` (multiply-adds of convs and Linear), ``"flops"``
            (2 x macs) or ``"paddleslim_legacy"`` (PaddleSlim's legacy counter, see
            the module docstring).

    Returns:
        The count, an ``int``.

    Raises:
        ConfigError: unknown ``convention``, bad ``input_shape`` or ``network``.
        SlimError: the network rejects an input of ``input_shape``.

    Examples:
        >>> import paddle
        >>> count_flops(paddle.nn.Linear(8, 4), [1, 8], convention="flops")
        64
    """
    return _FROM_TALLY[_check_convention(convention)](
        _count(network, given_inputs(example_inputs, input_shape)))


def _check_convention(convention) -> str:
    if convention not in _FROM_TALLY:
        raise ConfigError("convention", convention, "one of " + ", ".join(CONVENTIONS))
    return convention


def count_observing(network, example_inputs, convention: str, observe: Callable) -> int:
    """:func:`count_flops`; ``observe(layer, inputs, output)`` sees each MACs layer call."""
    return _FROM_TALLY[_check_convention(convention)](_count(network, example_inputs, observe))


def count_params(network) -> int:
    """Counts every parameter and buffer of ``network.state_dict()``.

    BatchNorm running mean and variance are included; a tensor shared by several
    layers is counted once.

    Args:
        network: a ``paddle.nn.Layer``.

    Returns:
        The number of scalars, an ``int``.

    Examples:
        >>> import paddle
        >>> count_params(paddle.nn.BatchNorm2D(4))  # weight, bias, mean, variance
        16
    """
    _require_layer(network)
    unique = {id(tensor): tensor for tensor in network.state_dict().values()}
    return sum(math.prod(tensor.shape) for tensor in unique.values())


def model_size_mb(network) -> float:
    """Size of the state dict stored as float32, in decimal megabytes.

    Args:
        network: a ``paddle.nn.Layer``.

    Returns:
        ``count_params(network) * 4 / 1e6``.

    Examples:
        >>> import paddle
        >>> model_size_mb(paddle.nn.Linear(999, 250))  # 250,000 float32
        1.0
    """
    return count_params(network) * 4 / 1e6


def layer_widths(network) -> Dict[str, int]:
    """Output channels of every conv (1-D, 2-D, 3-D, transposed or not) and features of
    every Linear (every layer kind with a ``width``).

    Args:
        network: a ``paddle.nn.Layer``.

    Returns:
        ``{structural sublayer name: width}`` in ``named_sublayers()`` order.

    Examples:
        >>> import paddle
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.Flatten(),
        ...                            paddle.nn.Linear(8, 2))
        >>> layer_widths(net)
        {'0': 8, '2': 2}
    """
    _require_layer(network)
    widths = {}
    for name, layer in network.named_sublayers():
        kind = kind_of(layer)
        if kind is not None and kind.width is not None:
            widths[name] = int(kind.width(layer))
    return widths


def profile(network, example_inputs=None, *, input_shape: Optional[Sequence[int]] = None) -> dict:
    """Every count at once, from a single forward pass.

    Args:
        network: a ``paddle.nn.Layer``.
        example_inputs: inputs of any structure, e.g. the full input shape, batch
            first; counts are per sample (see :func:`count_flops`).
        input_shape: the shorthand for one float32 input of this shape.

    Returns:
        ``{"macs", "flops", "gflops" (flops / 1e9), "gflops_legacy"
        (paddleslim_legacy / 1e9), "params", "size_mb"}``.

    Raises:
        ConfigError: bad ``input_shape`` or ``network``.
        SlimError: the network rejects an input of ``input_shape``.

    Examples:
        >>> import paddle
        >>> profile(paddle.nn.Linear(8, 4), [1, 8])["flops"]
        64
    """
    tally = _count(network, given_inputs(example_inputs, input_shape))
    flops = _FROM_TALLY["flops"](tally)
    params = count_params(network)
    return {
        "macs": _FROM_TALLY["macs"](tally),
        "flops": flops,
        "gflops": flops / 1e9,
        "gflops_legacy": _FROM_TALLY["paddleslim_legacy"](tally) / 1e9,
        "params": params,
        "size_mb": params * 4 / 1e6,
    }
