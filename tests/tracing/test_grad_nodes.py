"""Reading autograd nodes keeps no graph alive: a trace frees every activation its two
forward passes saved (Paddle 3.3's ``Tensor.grad_fn`` leaks a reference per read)."""
import gc
import weakref

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from slim_callbacks.tracing.grad_nodes import grad_node, leaked_per_read
from slim_callbacks.tracing.tracer import trace

SAVED = []  # weak references to what each Saving node keeps for backward


class Marker:
    """Stands for an activation a node saved: alive as long as the node is."""


class Saving(PyLayer):
    @staticmethod
    def forward(ctx, x):
        ctx.saved = Marker()
        SAVED.append(weakref.ref(ctx.saved))
        return x * 1

    @staticmethod
    def backward(ctx, grad):
        return grad


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2D(3, 8, 3), nn.Conv2D(8, 4, 3)

    def forward(self, x):
        return self.b(Saving.apply(F.relu(self.a(x))))


def graph_freed(read) -> bool:
    """Builds a graph, reads its last node with ``read``, drops it: is it freed?"""
    x = paddle.ones([3])
    x.stop_gradient = False
    y = Saving.apply(x) + 1
    for _ in range(3):
        read(y)
    del x, y
    gc.collect()
    return SAVED[-1]() is None


def test_grad_node_reads_leave_the_graph_free():
    assert graph_freed(lambda y: None)
    assert graph_freed(grad_node)
    assert graph_freed(lambda y: y.grad_fn) == (leaked_per_read() == 0)  # Paddle's own read


def test_a_trace_keeps_no_activation_of_its_passes():
    SAVED.clear()
    for _ in range(2):
        graph = trace(Net(), [1, 3, 8, 8])
        del graph
    gc.collect()
    assert len(SAVED) == 4 and all(ref() is None for ref in SAVED)  # two passes, two traces


def test_grad_node_is_the_node():
    x = paddle.ones([2])
    x.stop_gradient = False
    y = paddle.exp(x)
    assert grad_node(y) is grad_node(y) and grad_node(y).name() == y.grad_fn.name()
