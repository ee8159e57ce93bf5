"""The matmul rule covers ``paddle.bmm`` (a matmul of 3-D operands): attention that
merges batch and heads into one axis for ``bmm``, and DANet-style position attention
(``bmm`` over the spatial positions of conv features)."""
import copy

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import (
    SHAPE,
    assert_dead_channels_prune_exactly,
    assert_whole_heads_prune_exactly,
    randomize,
)

from slim_callbacks import count_flops, trace
from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.engine.planner import plan_pruning


class BmmAttention(nn.Layer):
    """Heads merged into the batch axis, scores and values by ``paddle.bmm``; the
    merged size is ``-1`` or ``b * self.num_heads``."""

    def __init__(self, dim, heads, merged="-1"):
        super().__init__()
        self.num_heads, self.head_dim, self.merged = heads, dim // heads, merged
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        rows = -1 if self.merged == "-1" else b * self.num_heads
        q, k, v = (qkv[i].reshape([rows, n, self.head_dim]) for i in range(3))
        attn = F.softmax(paddle.bmm(q, k.transpose([0, 2, 1])) * self.scale, axis=-1)
        out = paddle.bmm(attn, v).reshape([b, self.num_heads, n, self.head_dim])
        return self.proj(out.transpose([0, 2, 1, 3]).reshape([b, n, -1]))


class TokenNet(nn.Layer):
    """Patches, an attention block with a residual, an MLP, a head (no LayerNorm, so
    removing dead channels is exact everywhere)."""

    def __init__(self, merged="-1", dim=16, heads=4):
        super().__init__()
        self.patch = nn.Conv2D(3, dim, 4, stride=4)
        self.attn = BmmAttention(dim, heads, merged)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose([0, 2, 1])
        x = x + self.attn(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


class PositionAttention(nn.Layer):
    """DANet's position attention: scores between all positions by ``bmm``, values
    mixed by ``bmm``, added back to the input with a learned scale."""

    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2D(3, c, 3, padding=1)
        self.q, self.k, self.v = nn.Conv2D(c, c // 2, 1), nn.Conv2D(c, c // 2, 1), nn.Conv2D(c, c, 1)
        self.gamma = self.create_parameter([1], default_initializer=nn.initializer.Constant(0.5))
        self.out, self.head = nn.Conv2D(c, 8, 3, padding=1), nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, c, h, w = x.shape
        q = self.q(x).reshape([b, -1, h * w]).transpose([0, 2, 1])
        k = self.k(x).reshape([b, -1, h * w])
        attn = F.softmax(paddle.bmm(q, k), axis=-1)
        y = paddle.bmm(self.v(x).reshape([b, -1, h * w]), attn.transpose([0, 2, 1]))
        y = F.relu(self.out(self.gamma * y.reshape([b, c, h, w]) + x))
        return self.head(y.mean([2, 3]))


def names(graph):
    return {g.name for g in graph.prunable_groups()}


@pytest.mark.parametrize("merged", ["-1", "b * heads"])
def test_bmm_attention_prunes_head_dims_exactly(merged):
    paddle.seed(0)
    net = TokenNet(merged)
    randomize(net)
    assert names(trace(net, SHAPE)) == {"patch", "attn.qkv", "fc1"}
    plan = assert_dead_channels_prune_exactly(net, SHAPE, 0.5)
    assert plan.attrs == {("attn", "head_dim"): (4, 2)}
    assert net.attn.qkv.weight.shape == [8, 24] and net.attn.proj.weight.shape == [8, 8]


def test_bmm_attention_prunes_whole_heads_exactly():
    paddle.seed(0)
    net = TokenNet()
    randomize(net)
    assert_whole_heads_prune_exactly(net, SHAPE, "attn.qkv", [0, 2])
    assert net.attn.num_heads == 2 and net.attn.qkv.weight.shape == [16, 24]


def test_position_attention_couples_queries_with_keys_and_values_with_the_input():
    paddle.seed(0)
    net = PositionAttention()
    graph = trace(net, SHAPE)
    assert names(graph) == {"stem", "q", "out"}
    stem = next(g for g in graph.groups if g.name == "stem")
    assert {"v", "gamma"} & {m.layer for m in stem.members} == {"v"}  # v's rows are the input's
    assert_dead_channels_prune_exactly(net, SHAPE, 0.5)
    assert net.q.weight.shape[0] == net.k.weight.shape[0] == 4 and net.v.weight.shape[0] == 8


def test_bmm_products_are_counted_without_a_copy(monkeypatch):
    paddle.seed(0)
    net = TokenNet()
    graph = trace(net, SHAPE)
    assert graph.products.complete and len(graph.products.products) == 2
    plans = [plan_pruning(net, graph, {n: r for n in names(graph)}) for r in (0.0, 0.25, 0.5)]
    expected = []
    for plan in plans:
        pruned = copy.deepcopy(net)
        plan.apply(pruned)
        expected.append(count_flops(pruned, SHAPE))
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("the FLOPs model copied"))
    model = FlopsModel(net, SHAPE, graph=graph)
    assert [model.count(plan) for plan in plans] == expected and len(set(expected)) == 3
