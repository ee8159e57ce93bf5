"""Token models as ERNIE and BERT build them: word + position + token-type embeddings
-> LayerNorm -> post-norm residual attention blocks (separate q/k/v projections
reshaped by ``[0, 0, self.num_heads, self.head_dim]``) -> a pooled classifier.

The hidden size starts at the embedding tables and runs through every LayerNorm and
residual ``add``: one group. The network takes a float tensor and makes its token ids
from it (the ids themselves stay unlabelled), so it traces with ``input_shape``.
"""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import kept_channels, kill_units, layer_norms_over, outputs, randomize, train_steps

from slim_callbacks import count_flops, prune, trace

SHAPE = [1, 8]  # one sequence of 8 tokens
HEADS = {"attention": "heads"}


class SelfAttention(nn.Layer):
    """Like ``paddle.nn.MultiHeadAttention``: the scale is computed in forward."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def split(self, x):
        return x.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])

    def forward(self, x, mask):
        q, k, v = (self.split(p(x)) for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = paddle.matmul(q * self.head_dim ** -0.5, k, transpose_y=True) + mask
        out = paddle.matmul(F.softmax(scores, axis=-1), v).transpose([0, 2, 1, 3])
        return self.out_proj(out.reshape([0, 0, -1]))


class EncoderLayer(nn.Layer):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.attn, self.norm1 = SelfAttention(dim, heads), nn.LayerNorm(dim)
        self.fc1, self.fc2, self.norm2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.LayerNorm(dim)

    def forward(self, x, mask):
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))


class TokenModel(nn.Layer):
    def __init__(self, vocab=50, dim=16, heads=4, hidden=32, layers=2, classes=3):
        super().__init__()
        self.vocab = vocab
        self.words, self.positions = nn.Embedding(vocab, dim), nn.Embedding(32, dim)
        self.types, self.norm = nn.Embedding(2, dim), nn.LayerNorm(dim)
        self.layers = nn.LayerList([EncoderLayer(dim, heads, hidden) for _ in range(layers)])
        self.pooler, self.classifier = nn.Linear(dim, dim), nn.Linear(dim, classes)

    def forward(self, x):
        ids = (x.abs() * 10).astype("int64") % self.vocab  # token ids from the float input
        positions = paddle.arange(ids.shape[1], dtype="int64").unsqueeze(0)
        h = self.norm(self.words(ids) + self.positions(positions) + self.types(paddle.zeros_like(ids)))
        mask = ((ids == 0).astype("float32") * -1e4).unsqueeze([1, 2])  # padding id 0
        for layer in self.layers:
            h = layer(h, mask)
        return self.classifier(F.tanh(self.pooler(h[:, 0])))


def token_model():
    paddle.seed(0)
    net = TokenModel()
    randomize(net)
    return net


def group_of(graph, producer):
    return next(g for g in graph.groups if producer in g.producers)


@pytest.mark.parametrize("structure", [None, HEADS])
def test_hidden_size_is_one_group_from_the_embeddings_through_the_residual_stream(structure):
    stream = group_of(trace(token_model(), SHAPE, structure), "words")
    owners = {(m.layer, m.attr, m.axis) for m in stream.members}
    assert stream.prunable and stream.num_units == 16 and stream.approximate
    assert {("words", "weight", 1), ("positions", "weight", 1), ("types", "weight", 1),
            ("norm", "weight", 0), ("layers.1.norm2", "bias", 0), ("layers.0.attn.out_proj", "weight", 1),
            ("layers.0.attn.v_proj", "weight", 0), ("layers.1.fc2", "weight", 1),
            ("pooler", "weight", 0)} <= owners


def test_head_dim_that_the_code_computes_with_keeps_q_k_and_v_whole(caplog):
    """``self.head_dim ** -0.5`` in forward: head_dim cannot follow pruning, so no
    projection of q, k or v may lose columns (v used to, and the forward failed)."""
    net = token_model()
    with caplog.at_level(logging.WARNING):
        graph = trace(net, SHAPE)
    for proj in ("q_proj", "v_proj"):
        group = group_of(graph, f"layers.0.attn.{proj}")
        assert not group.prunable and "head_dim" in group.blocked
    before = count_flops(net, SHAPE)
    prune(net, SHAPE, 0.3)
    attn = net.layers[0].attn
    assert attn.v_proj.weight.shape[1] == attn.num_heads * attn.head_dim == 16
    assert count_flops(net, SHAPE) < before


def test_dead_channels_prune_exactly_up_to_layer_norm_statistics():
    net = token_model()
    graph = trace(net, SHAPE, HEADS)
    dead = kill_units(net, graph, ratio=0.5)
    x = paddle.randn([2] + SHAPE[1:])
    with layer_norms_over(net, kept_channels(net, graph, dead)):
        reference = outputs(net, x)
    plan = prune(net, SHAPE, 0.5, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), reference, atol=1e-4)
    assert net.words.weight.shape == [50, 8] and net.words._embedding_dim == 8
    assert net.layers[1].attn.num_heads == 2 and net.layers[1].attn.head_dim == 4
    assert any(g.get("approximate") for g in plan.groups)


def test_groups_without_layer_norms_prune_exactly():
    net = token_model()
    graph = trace(net, SHAPE, HEADS)
    exact = [g.name for g in graph.prunable_groups() if not g.approximate]
    assert exact  # the heads and the feed-forward widths
    for name in exact:
        kill_units(net, graph, ratio=0.5, only=name)
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    prune(net, SHAPE, {name: 0.5 for name in exact}, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def test_pruned_token_model_trains():
    net = token_model()
    before = count_flops(net, SHAPE)
    opt = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    prune(net, SHAPE, 0.3, optimizer=opt, structure=HEADS)
    assert count_flops(net, SHAPE) < 0.7 * before
    x, y = paddle.randn([4] + SHAPE[1:]), paddle.arange(3).tile([2])[:4]
    losses = train_steps(net, opt, x, y, 3)
    assert all(np.isfinite(losses))


class TiedLanguageModel(TokenModel):
    """BERT's masked-LM head: a transform, then the word embedding table used again as
    the output projection (``matmul(h, words.weight, transpose_y=True)``)."""

    def __init__(self):
        super().__init__()
        self.transform, self.lm_norm = nn.Linear(16, 16), nn.LayerNorm(16)

    def forward(self, x):
        ids = (x.abs() * 10).astype("int64") % self.vocab
        positions = paddle.arange(ids.shape[1], dtype="int64").unsqueeze(0)
        h = self.norm(self.words(ids) + self.positions(positions) + self.types(paddle.zeros_like(ids)))
        for layer in self.layers:
            h = layer(h, paddle.zeros([1, 1, 1, ids.shape[1]]))
        h = self.lm_norm(F.gelu(self.transform(h)))
        return paddle.matmul(h, self.words.weight, transpose_y=True)


def test_a_tied_embedding_keeps_the_hidden_size_and_the_rest_prunes():
    paddle.seed(0)
    net = TiedLanguageModel()
    stream = group_of(trace(net, SHAPE, HEADS), "words")
    assert not stream.prunable and "tied weight" in stream.blocked
    prune(net, SHAPE, 0.5, structure=HEADS)
    assert net.words.weight.shape == [50, 16] and net.layers[0].attn.num_heads == 2
    assert net(paddle.randn([2] + SHAPE[1:])).shape == [2, SHAPE[1], 50]
