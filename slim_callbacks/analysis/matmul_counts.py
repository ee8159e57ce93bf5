"""Multiply-adds of matrix products between activations, outside any counted layer.

A transformer does part of its work in functional products that no layer owns:
attention's ``q @ k^T`` and ``attn @ v`` (``paddle.matmul``, ``paddle.bmm``, the ``@``
operator, ``paddle.tensor.matmul``). :func:`counting_matmuls` routes those calls through a counter while a forward
pass runs, so :mod:`slim_callbacks.analysis.flops` counts them under ``macs``. A product
made inside a layer that is counted on its own (a ``Linear``) is skipped: ``inside()``
says when, so nothing is counted twice. ``paddle.einsum`` is not counted.

A product of ``[..., M, K]`` and ``[..., K, N]`` does ``K`` multiply-adds per output
element: ``numel(out) * K``.

Examples:
    >>> import paddle
    >>> total = []
    >>> with counting_matmuls(total.append, inside=lambda: False):
    ...     out = paddle.randn([2, 4, 3]) @ paddle.randn([2, 3, 5])
    >>> total  # 2 * 4 * 5 outputs, 3 each
    [120]
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, List, Tuple

import paddle
from paddle import _C_ops

from slim_callbacks.core.paddle_utils import op_aliases

_PRODUCTS = ("matmul", "bmm")
_OPERATORS = ("__matmul__", "__rmatmul__")


def _entry_points() -> List[Tuple[object, str]]:
    """``(owner, attribute)`` of every way into a product: ``_C_ops.matmul``/``bmm``, the
    Paddle modules that hold those same built-ins (:func:`~slim_callbacks.core.paddle_utils.op_aliases`:
    ``paddle.tensor.matmul``, used by ``nn.MultiHeadAttention``) and the ``@`` operator."""
    products = {id(getattr(_C_ops, name)) for name in _PRODUCTS}
    aliases = [(module, name) for module, name, func in op_aliases() if id(func) in products]
    return ([(_C_ops, name) for name in _PRODUCTS] + aliases
            + [(paddle.Tensor, name) for name in _OPERATORS])


def product_macs(x, y, out, transpose_x: bool = False, reflected: bool = False) -> int:
    """Multiply-adds of ``x @ y`` (or ``y @ x`` when ``reflected``) with result ``out``:
    every output element sums over the shared axis ``K``.

    >>> import paddle
    >>> product_macs(paddle.ones([4, 3]), paddle.ones([3, 5]), paddle.ones([4, 5]))
    60
    """
    left = y if reflected else x
    shape = list(left.shape)
    if len(shape) == 1:
        shared = shape[0]
    else:
        shared = shape[-2] if transpose_x else shape[-1]
    return int(math.prod(out.shape)) * int(shared)


def _argument(args, kwargs, position: int, name: str, default=None):
    """An argument given by position or by name (``paddle.matmul(x=q, y=k)``)."""
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _wrap(func, attribute: str, add: Callable[[int], None], inside: Callable[[], bool], busy: list):
    reflected = attribute == _OPERATORS[1]

    def counted(*args, **kwargs):
        if busy or inside():
            return func(*args, **kwargs)
        busy.append(True)
        try:
            out = func(*args, **kwargs)
        finally:
            busy.pop()
        x, y = _argument(args, kwargs, 0, "x"), _argument(args, kwargs, 1, "y")
        if all(isinstance(t, paddle.Tensor) for t in (x, y, out)):
            transpose_x = bool(_argument(args, kwargs, 2, "transpose_x", False))
            add(product_macs(x, y, out, transpose_x, reflected))
        return out
    return counted


@contextlib.contextmanager
def counting_matmuls(add: Callable[[int], None], inside: Callable[[], bool]):
    """While the block runs, every product between tensors calls ``add(macs)``, unless
    ``inside()`` is true (a counted layer is running) or it is nested in another product.
    The original functions are put back when the block ends, even on error."""
    busy: list = []
    originals = []
    try:
        for owner, attribute in _entry_points():
            func = getattr(owner, attribute, None)
            if func is None:
                continue
            originals.append((owner, attribute, func))
            setattr(owner, attribute, _wrap(func, attribute, add, inside, busy))
        yield
    finally:
        for owner, attribute, func in originals:
            setattr(owner, attribute, func)
