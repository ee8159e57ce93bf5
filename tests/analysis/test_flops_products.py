"""The FLOPs model counts attention's products analytically: for every plan it equals
the count of the really pruned network, and no copy of the network is made."""
import copy

import numpy as np
import paddle
import pytest
from helpers import SizesFromTheInput, TinyViT, randomize
from paddle import nn

from slim_callbacks.analysis import flops_model as flops_model_module
from slim_callbacks.analysis.flops import count_flops
from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.tracing import products as products_module
from slim_callbacks.tracing.tracer import trace

SHAPE = [2, 3, 16, 16]


class OperatorAttention(nn.Layer):
    """Scores by the ``@`` operator on q and a transposed k, values by ``paddle.matmul``
    with a key word, separate q, k and v projections."""

    def __init__(self, dim=12, heads=3):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, 4)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]

        def split(t):
            return t.reshape([b, n, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose([0, 1, 3, 2])
        values = paddle.matmul(x=scores, y=v)
        return self.out(values.transpose([0, 2, 1, 3]).reshape([b, n, -1]))


def no_copies(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the FLOPs model copied the network")
    monkeypatch.setattr(flops_model_module.copy, "deepcopy", refuse)


def plans(net, graph, count=4, seed=0):
    """Plans with different ratios per group, from none to most channels."""
    rng = np.random.default_rng(seed)
    names = [g.name for g in graph.prunable_groups()]
    yield plan_pruning(net, graph, {})
    for _ in range(count):
        yield plan_pruning(net, graph, {n: float(rng.uniform(0.1, 0.8)) for n in names})


def counted_after(net, plan, shape):
    pruned = copy.deepcopy(net)
    plan.apply(pruned)
    return count_flops(pruned, shape)


CASES = {
    "head dims": (lambda: TinyViT(dim=16, heads=2), SHAPE, None),
    "whole heads": (lambda: TinyViT(dim=16, heads=4), SHAPE, {"attention": "heads"}),
    "operator and key words": (lambda: OperatorAttention(), [2, 5, 12], {"attention": "heads"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_analytic_counts_equal_the_really_pruned_network(case, monkeypatch):
    build, shape, structure = CASES[case]
    paddle.seed(0)
    net = build()
    randomize(net)
    graph = trace(net, shape, structure)
    assert graph.products.complete and graph.products.products
    expected = [counted_after(net, plan, shape) for plan in plans(net, graph)]
    no_copies(monkeypatch)
    model = FlopsModel(net, shape, graph=graph)
    assert [model.count(plan) for plan in plans(net, graph)] == expected
    assert len(set(expected)) > 2  # the plans really differ in MACs


def test_sizes_read_from_the_input_are_counted_too(monkeypatch):
    paddle.seed(0)
    net = TinyViT(dim=16, heads=2)
    for block in net.blocks:
        old = block.attn
        block.attn = SizesFromTheInput(16, 2)
        block.attn.qkv, block.attn.proj = old.qkv, old.proj
    graph = trace(net, SHAPE)
    expected = [counted_after(net, plan, SHAPE) for plan in plans(net, graph)]
    no_copies(monkeypatch)
    model = FlopsModel(net, SHAPE)  # traces on its own
    assert [model.count(plan) for plan in plans(net, graph)] == expected


def test_uniform_ratio_on_attention_needs_no_copy_and_decides_as_the_copies_did(monkeypatch):
    paddle.seed(0)
    net = TinyViT(dim=16, heads=2)
    graph = trace(net, SHAPE)
    monkeypatch.setattr(FlopsModel, "_product_table", lambda self, graph: products_module.ProductTable(
        complete=False))  # the old way: a pruned copy per count
    by_copies = uniform_ratio(net, SHAPE, 0.4, graph=graph)
    monkeypatch.undo()
    no_copies(monkeypatch)
    assert uniform_ratio(net, SHAPE, 0.4, graph=graph) == by_copies


def test_a_product_the_trace_cannot_describe_falls_back_to_copies():
    class VectorProduct(nn.Layer):  # a 1-D product: counted, but not laid out as rows
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            y = self.fc(x)
            return self.out(y) + paddle.matmul(y[0, 0], y[0, 0])

    paddle.seed(0)
    net, shape = VectorProduct(), [1, 3, 4]
    graph = trace(net, shape)
    assert not graph.products.complete
    model = FlopsModel(net, shape, graph=graph)
    assert model.positions is None  # each count prunes a copy
    for plan in plans(net, graph, count=2):
        assert model.count(plan) == counted_after(net, plan, shape)


def test_product_macs_after_docstring():
    import doctest
    assert doctest.testmod(products_module).failed == 0
