"""Attention pruned by whole heads: ``structure={"attention": "heads"}``.

The exactness tests zero whole heads (their q, k and v columns: q = k = 0 gives a
uniform softmax, v = 0 makes the head's output 0), prune in heads mode and compare
the outputs; where a LayerNorm normalizes the pruned channels the reference takes its
statistics over the kept channels only (see ``helpers.layer_norms_over``).
"""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import (
    SHAPE,
    Attention,
    RuntimeScaledAttention,
    SizesFromTheInput,
    TinyViT,
    dataset,
    kept_channels,
    kill_units,
    layer_norms_over,
    outputs,
    randomize,
    train_steps,
)

from slim_callbacks import PruneCallback, count_flops, prune, trace
from slim_callbacks.callbacks.ledger import load_pruned

HEADS = {"attention": "heads"}


def vit(attention=Attention, dim=32, heads=4, classes=5):
    """TinyViT with 4 heads of head_dim 8 and the given attention class."""
    paddle.seed(0)
    net = TinyViT(dim=dim, heads=heads, classes=classes)
    for block in net.blocks:
        block.attn = attention(dim, heads)
    randomize(net)
    return net


def group(graph, name):
    return next(g for g in graph.groups if g.name == name)


def test_a_unit_is_one_whole_head_and_num_heads_counts_them():
    net = vit()
    qkv = group(trace(net, SHAPE, HEADS), "blocks.0.attn.qkv")
    assert qkv.prunable and qkv.num_units == 4
    assert [(s.layer, s.attr) for s in qkv.sizes] == [("blocks.0.attn", "num_heads")]
    rows = next(m for m in qkv.members if m.layer.endswith("qkv") and m.attr == "weight")
    assert np.bincount(rows.units).tolist() == [24] * 4                 # q, k and v: 3 x head_dim
    assert sorted(rows.indices[rows.units == 0] % 32) == sorted(list(range(8)) * 3)  # head 0 of each
    proj = next(m for m in qkv.members if m.layer.endswith("proj") and m.attr == "weight")
    assert proj.axis == 0 and np.bincount(proj.units).tolist() == [8] * 4
    default = group(trace(net, SHAPE), "blocks.0.attn.qkv")             # head_dim mode as before
    assert default.num_units == 8 and [s.attr for s in default.sizes] == ["head_dim"]


@pytest.mark.parametrize("attention", [Attention, RuntimeScaledAttention])
def test_dead_heads_prune_exactly_and_num_heads_follows(attention):
    """RuntimeScaledAttention computes ``self.head_dim ** -0.5`` in forward: head_dim
    mode must block it, heads mode keeps head_dim and prunes."""
    net = vit(attention)
    graph = trace(net, SHAPE, HEADS)
    for name in ("blocks.0.attn.qkv", "blocks.1.attn.qkv"):
        kill_units(net, graph, only=name, units=[0, 2])
    x = paddle.randn([2] + SHAPE[1:])
    before, macs = outputs(net, x), count_flops(net, SHAPE)
    plan = prune(net, SHAPE, {"blocks.*.attn.qkv": 0.5}, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    assert plan.attrs == {("blocks.0.attn", "num_heads"): (4, 2), ("blocks.1.attn", "num_heads"): (4, 2)}
    attn = net.blocks[1].attn
    assert attn.num_heads == 2 and attn.head_dim == 8 and attn.scale == 8 ** -0.5
    assert attn.qkv.weight.shape == [32, 48] and attn.proj.weight.shape == [16, 32]
    assert count_flops(net, SHAPE) < macs


def test_heads_mode_prunes_what_head_dim_mode_blocks():
    net = vit(RuntimeScaledAttention)
    assert not group(trace(net, SHAPE), "blocks.0.attn.qkv").prunable
    assert group(trace(net, SHAPE, HEADS), "blocks.0.attn.qkv").prunable


def test_pruned_heads_train_and_the_plan_replays_on_a_fresh_network():
    net = vit()
    opt = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    plan = prune(net, SHAPE, {"blocks.*.attn.qkv": 0.5}, optimizer=opt, structure=HEADS)
    losses = train_steps(net, opt, paddle.randn([8] + SHAPE[1:]), paddle.randint(0, 5, [8]), 5)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    fresh = vit()
    type(plan).from_dict(plan.to_dict()).apply(fresh, input_shape=SHAPE)
    fresh.set_state_dict(net.state_dict())
    assert fresh.blocks[0].attn.num_heads == 2
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(outputs(fresh, x), outputs(net, x), atol=1e-6)


def test_fit_prunes_heads_and_the_ledger_replays_num_heads(tmp_path):
    net = vit(classes=4)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    callback = PruneCallback(ratios={"blocks.*.attn.qkv": 0.5}, prune_epochs=[0], input_shape=SHAPE,
                             structure=HEADS)
    model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, shuffle=False,
              save_dir=str(tmp_path), callbacks=[callback])
    assert net.blocks[0].attn.num_heads == 2 and net.blocks[0].attn.head_dim == 8
    rebuilt = load_pruned(vit(classes=4), str(tmp_path / "final"))
    assert rebuilt.blocks[1].attn.num_heads == 2
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(outputs(rebuilt, x), outputs(net, x), atol=1e-5)


def test_head_dim_from_the_input_width_couples_each_head_with_embedding_channels():
    """PaddleClas' ``C // self.num_heads``: head h joins embedding channels
    ``h*8 .. h*8+7``, so the embedding loses head_dim channels with each head and the
    quotient stays 8."""
    net = vit(SizesFromTheInput)
    graph = trace(net, SHAPE, HEADS)
    stream = graph.groups[0]
    assert stream.prunable and stream.num_units == 4
    assert {("blocks.0.attn", "num_heads"), ("blocks.1.attn", "num_heads")} == {
        (s.layer, s.attr) for s in stream.sizes}
    dead = kill_units(net, graph, only=stream.name, units=[1, 2])
    x = paddle.randn([2] + SHAPE[1:])
    with layer_norms_over(net, kept_channels(net, graph, dead)):
        reference = outputs(net, x)
    prune(net, SHAPE, {stream.name: 0.5}, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), reference, atol=1e-5)
    assert net.blocks[0].attn.num_heads == 2 and net.pos_embed.shape == [1, 5, 16]
    assert net.blocks[0].attn.qkv.weight.shape == [16, 48]


class WindowAttention(nn.Layer):
    """Swin-style attention in one window of 2 x 2 tokens, with a relative position
    bias table ``[(2 * 2 - 1) ** 2, num_heads]`` indexed per token pair and added per head."""

    def __init__(self, dim, heads, window=2):
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.table = self.create_parameter([(2 * window - 1) ** 2, heads])
        grid = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
        offsets = (grid[:, :, None] - grid[:, None, :]).transpose(1, 2, 0) + window - 1
        index = offsets[..., 0] * (2 * window - 1) + offsets[..., 1]
        self.register_buffer("index", paddle.to_tensor(index.reshape(-1)))
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape([-1, n, 3, self.num_heads, c // self.num_heads]).transpose([2, 0, 3, 1, 4])
        attn = paddle.mm(qkv[0] * self.scale, qkv[1].transpose([0, 1, 3, 2]))
        bias = paddle.index_select(self.table, self.index).reshape([n, n, -1]).transpose([2, 0, 1])
        attn = F.softmax(attn + bias.unsqueeze(0), axis=-1)
        return self.proj(paddle.mm(attn, qkv[2]).transpose([0, 2, 1, 3]).reshape([-1, n, c]))


class WindowNet(nn.Layer):
    def __init__(self, dim=24, heads=3):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(3, dim), WindowAttention(dim, heads), nn.Linear(dim, 5)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose([0, 2, 1]))
        return self.head((tokens + self.attn(tokens)).mean(1))


def test_a_relative_position_bias_table_loses_the_columns_of_the_pruned_heads():
    paddle.seed(0)
    net = WindowNet()
    randomize(net)
    shape = [1, 3, 2, 2]
    graph = trace(net, shape, HEADS)
    assert ("attn", "table", 1) in {(m.layer, m.attr, m.axis) for m in graph.groups[0].members}
    assert not any(m.attr == "table" for g in trace(net, shape).groups for m in g.members)
    kill_units(net, graph, only="embed", units=[0])   # a live head's bias sits in column 1 or 2
    table = net.attn.table.numpy()
    x = paddle.randn([2] + shape[1:])
    before = outputs(net, x)
    prune(net, shape, {"embed": 0.34}, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    assert net.attn.num_heads == 2 and net.attn.qkv.weight.shape == [16, 48]
    np.testing.assert_array_equal(net.attn.table.numpy(), table[:, 1:])


class MHANet(nn.Layer):
    """``paddle.nn.MultiHeadAttention``: separate q, k and v projections."""

    def __init__(self, dim=24, heads=3):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(3, dim), nn.MultiHeadAttention(dim, heads), nn.Linear(dim, 5)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose([0, 2, 1]))
        return self.head(self.attn(tokens, tokens, tokens).mean(1))


def test_paddle_multi_head_attention_loses_whole_heads_exactly():
    paddle.seed(0)
    net = MHANet()
    randomize(net)
    shape = [1, 3, 2, 2]
    assert not group(trace(net, shape), "attn.q_proj").prunable   # head_dim ** -0.5 at run time
    graph = trace(net, shape, HEADS)
    heads = group(graph, "attn.q_proj")
    assert heads.prunable and heads.num_units == 3
    assert {m.layer for m in heads.members} >= {"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj"}
    kill_units(net, graph, only="attn.q_proj", units=[1])
    x = paddle.randn([2] + shape[1:])
    before = outputs(net, x)
    plan = prune(net, shape, {"attn.q_proj": 0.34}, structure=HEADS)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    assert plan.attrs == {("attn", "num_heads"): (3, 2)} and net.attn.head_dim == 8
    assert net.attn.v_proj.weight.shape == [24, 16] and net.attn.out_proj.weight.shape == [16, 24]


class UnnamedHeads(Attention):
    """Heads sized by attributes whose names do not say so: heads cannot be told apart."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads)
        self.n, self.d = heads, dim // heads

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape([b, n, 3, self.n, self.d]).transpose([2, 0, 3, 1, 4])
        attn = F.softmax(qkv[0].matmul(qkv[1], transpose_y=True) * self.scale, axis=-1)
        return self.proj(attn.matmul(qkv[2]).transpose([0, 2, 1, 3]).reshape([b, n, -1]))


def test_heads_that_cannot_be_told_apart_are_pruned_by_head_dim_with_a_warning(caplog):
    net = vit(UnnamedHeads)
    with caplog.at_level(logging.WARNING):
        qkv = group(trace(net, SHAPE, HEADS), "blocks.0.attn.qkv")
    assert qkv.num_units == 8 and [s.attr for s in qkv.sizes] == ["d"]
    assert sum("is pruned by head dim" in r.getMessage() for r in caplog.records) == 2  # once per block


class PartlyFixedHeads(nn.Layer):
    """Heads whose q columns are partly a constant: a head cannot go as one."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = 2, 4
        self.q = nn.Linear(3, 6)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        tokens = x.flatten(2).transpose([0, 2, 1])
        q = paddle.concat([self.q(tokens), paddle.ones([x.shape[0], tokens.shape[1], 2])], axis=-1)
        q = q.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])
        attn = F.softmax(q.matmul(q, transpose_y=True), axis=-1)
        return self.head(attn.matmul(q).transpose([0, 2, 1, 3]).reshape([0, 0, 8]).mean(1))


def test_a_head_holding_fixed_channels_is_not_pruned():
    graph = trace(PartlyFixedHeads(), [1, 3, 2, 2], HEADS)
    assert not group(graph, "q").prunable


def test_a_recipe_run_prunes_whole_heads(capsys, tmp_path):
    import yaml
    from helpers import TINY_RECIPE

    from slim_callbacks.app.cli import main
    from slim_callbacks.callbacks.ledger import load_ledger
    recipe = dict(TINY_RECIPE, model={"name": "helpers:TinyViT", "kwargs": {"dim": 32, "heads": 4, "classes": 4}},
                  train={**TINY_RECIPE["train"], "epochs": 1},
                  pruning={"strategy": "custom", "ratios": {"blocks.*.attn.qkv": 0.5},
                           "structure": {"attention": "heads"},
                           "schedule": {"kind": "epochs", "epochs": [0]}})
    path = tmp_path / "vit.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["run", str(path), "-o", f"output_dir={tmp_path / 'out'}", "--verbose", "0"])
    assert code == 0, capsys.readouterr().err[-2000:]
    ledger = load_ledger(str(tmp_path / "out" / "checkpoints" / "final"))
    assert ledger["plan"]["attrs"] == {"blocks.0.attn:num_heads": [4, 2], "blocks.1.attn:num_heads": [4, 2]}


class ScaleFromTheWidth(Attention):
    """Head dim -1 in the reshape, but the scale computed at run time as
    ``(C // self.num_heads) ** -0.5`` from the embedding width: fewer heads would change it."""

    def forward(self, x):
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, -1]).transpose([2, 0, 3, 1, 4])
        attn = qkv[0].matmul(qkv[1], transpose_y=True) * (c // self.num_heads) ** -0.5
        return self.proj(F.softmax(attn, axis=-1).matmul(qkv[2]).transpose([0, 2, 1, 3]).reshape([b, n, -1]))


def test_num_heads_divided_into_a_width_that_keeps_its_channels_blocks_the_heads():
    net = vit(ScaleFromTheWidth)
    qkv = group(trace(net, SHAPE, HEADS), "blocks.0.attn.qkv")
    assert not qkv.prunable and "divides another size by" in qkv.blocked
    assert group(trace(net, SHAPE), "blocks.0.attn.qkv").prunable   # by head dim the quotient stays
