"""Reading a tensor's autograd node (``tensor.grad_fn``) without keeping its graph alive.

In Paddle 3.3 each read of ``Tensor.grad_fn`` adds a reference to the node's Python
object that nobody owns (``ToPyObject`` increments what ``release()`` already handed
over), so that object, the node and every activation the node saved for backward live
until the process ends: a trace, which reads the node of every tensor it labels, kept
two forward passes' activations per call. :func:`grad_node` reads the node and drops
the references a read leaks, as measured once on a tiny graph (none where Paddle is
fixed, so nothing is dropped there).

Examples:
    >>> x = paddle.ones([2]); x.stop_gradient = False
    >>> y = x * 2
    >>> node = grad_node(y)
    >>> before = sys.getrefcount(node)
    >>> again = grad_node(y)
    >>> again is node, sys.getrefcount(node) - before   # one more: `again`
    (True, 1)
    >>> grad_node(x.detach()) is None
    True
"""
from __future__ import annotations

import ctypes
import functools
import sys

import paddle


@functools.lru_cache(maxsize=None)
def leaked_per_read() -> int:
    """How many references one read of ``Tensor.grad_fn`` leaks in this Paddle (0 or 1).
    Call it outside a trace (it runs one multiply)."""
    x = paddle.ones([1])
    x.stop_gradient = False
    with paddle.set_grad_enabled(True):
        y = x * 2
    node = y.grad_fn
    first = sys.getrefcount(node)
    again = y.grad_fn  # noqa: F841 (one reference of its own)
    leaked = sys.getrefcount(node) - first - 1
    for _ in range(2 * leaked):  # both reads
        ctypes.pythonapi.Py_DecRef(ctypes.py_object(node))
    return max(leaked, 0)


def grad_node(tensor):
    """``tensor.grad_fn``, without the reference Paddle leaks (None for a leaf or a
    tensor without gradient)."""
    leaked = leaked_per_read()
    node = tensor.grad_fn
    if node is not None:
        for _ in range(leaked):
            ctypes.pythonapi.Py_DecRef(ctypes.py_object(node))
    return node
