"""Movement rules: ``unbind`` splits a tensor into sections of one along an axis that
its outputs lose (timm's ``q, k, v = qkv.unbind(0)``); each section must lose the
same channels."""
import numpy as np
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

from slim_callbacks import trace


class UnbindAttention(nn.Layer):
    """timm-style attention: packed qkv, reshaped, transposed and unbound."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv.unbind(0)
        attn = F.softmax(q.matmul(k, transpose_y=True) * self.scale, axis=-1)
        return self.proj(attn.matmul(v).transpose([0, 2, 1, 3]).reshape([b, n, -1]))


class TokenNet(nn.Layer):
    """Patches, an attention block with a residual, an MLP, a head (no LayerNorm, so
    removing dead channels is exact everywhere)."""

    def __init__(self, attention=UnbindAttention, dim=16, heads=4):
        super().__init__()
        self.patch = nn.Conv2D(3, dim, 4, stride=4)
        self.attn = attention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose([0, 2, 1])
        x = x + self.attn(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


class GatedHalves(nn.Layer):
    """A conv of 2c channels viewed as [B, 2, c, H, W] and unbound into two halves
    that gate each other: channel i of one half meets channel i of the other."""

    def __init__(self, c=8):
        super().__init__()
        self.a = nn.Conv2D(3, 2 * c, 3, padding=1)
        self.b = nn.Conv2D(c, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        y = self.a(x)
        n, _, h, w = y.shape
        value, gate = y.reshape([n, 2, -1, h, w]).unbind(1)
        return self.head(F.relu(self.b(value * F.sigmoid(gate))).mean([2, 3]))


def test_unbound_qkv_traces_like_indexed_qkv():
    paddle.seed(0)
    graph = trace(TokenNet(), SHAPE)
    qkv = next(g for g in graph.groups if g.name == "attn.qkv")
    assert qkv.prunable and qkv.num_units == 4 and [s.attr for s in qkv.sizes] == ["head_dim"]
    rows = next(m for m in qkv.members if m.layer == "attn.qkv" and m.attr == "weight")
    assert np.bincount(rows.units).tolist() == [3 * 4] * 4   # q, k and v of every head


def test_unbound_qkv_prunes_exactly():
    paddle.seed(0)
    net = TokenNet()
    randomize(net)
    plan = assert_dead_channels_prune_exactly(net, SHAPE, 0.5)
    assert plan.attrs == {("attn", "head_dim"): (4, 2)}
    assert net.attn.head_dim == 2 and net.attn.qkv.weight.shape == [8, 24]


def test_unbound_qkv_prunes_whole_heads_exactly():
    paddle.seed(0)
    net = TokenNet()
    randomize(net)
    assert_whole_heads_prune_exactly(net, SHAPE, "attn.qkv", [1, 3])
    assert net.attn.num_heads == 2 and net.attn.qkv.weight.shape == [16, 24]


def test_unbound_halves_lose_the_same_channels():
    paddle.seed(0)
    net = GatedHalves()
    group = next(g for g in trace(net, SHAPE).groups if g.name == "a")
    rows = next(m for m in group.members if m.attr == "weight")
    assert group.prunable and group.num_units == 8
    assert sorted(rows.indices[rows.units == 0].tolist()) == [0, 8]   # channel 0 of each half
    assert_dead_channels_prune_exactly(net, SHAPE, 0.5)
    assert net.a.weight.shape[0] == 8 and net.b.weight.shape[1] == 4


@pytest.mark.parametrize("axis", [0, -3])
def test_unbind_axis_by_keyword_or_from_the_end(axis):
    class Keyword(UnbindAttention):
        def forward(self, x):
            b, n = x.shape[0], x.shape[1]
            qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, self.head_dim]).transpose([0, 3, 2, 1, 4])
            q, k, v = paddle.unbind(qkv, axis=2 if axis == 0 else axis)
            attn = F.softmax(q.matmul(k, transpose_y=True) * self.scale, axis=-1)
            return self.proj(attn.matmul(v).transpose([0, 2, 1, 3]).reshape([b, n, -1]))
    paddle.seed(0)
    net = TokenNet(Keyword)
    randomize(net)
    assert_dead_channels_prune_exactly(net, SHAPE, 0.5)
    assert net.attn.head_dim == 2
