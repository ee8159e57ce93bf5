"""Transformers: LayerNorm, class token and position embedding, attention.

The networks are small ones written for these tests. A LayerNorm over pruned channels
is *approximate* (its statistics are then taken over fewer channels), so the exactness
check compares the pruned network with the original one whose LayerNorms take their
statistics over the kept channels only: everything else must match exactly.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import (
    SHAPE,
    RuntimeScaledAttention,
    SizesFromTheInput,
    TinyViT,
    kept_channels,
    kill_units,
    layer_norms_over,
    outputs,
    randomize,
)

from slim_callbacks import count_flops, prune
from slim_callbacks.tracing.tracer import trace


class ChannelsLastBlock(nn.Layer):
    """A ConvNeXt-style block: depthwise conv, LayerNorm over channels-last, MLP,
    LayerScale, residual."""

    def __init__(self, dim=8):
        super().__init__()
        self.dw = nn.Conv2D(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = self.create_parameter([dim], default_initializer=nn.initializer.Constant(0.5))

    def forward(self, x):
        y = self.norm(self.dw(x).transpose([0, 2, 3, 1]))
        y = self.gamma * self.fc2(F.gelu(self.fc1(y)))
        return x + y.transpose([0, 3, 1, 2])


class TinyConvNeXt(nn.Layer):
    def __init__(self, dim=8, classes=5):
        super().__init__()
        self.stem = nn.Conv2D(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(ChannelsLastBlock(dim), ChannelsLastBlock(dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean([2, 3]))


class GroupNormNet(nn.Layer):
    """conv - GroupNorm(4 groups) - ReLU - conv, with a residual conv beside it."""

    def __init__(self):
        super().__init__()
        self.a, self.norm = nn.Conv2D(3, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.b = nn.Conv2D(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = F.relu(self.norm(self.a(x)))
        return self.head(F.relu(self.b(y)).mean([2, 3]))


def test_group_norm_keeps_equal_groups():
    net = GroupNormNet()
    group = trace(net, SHAPE).groups[0]
    assert group.prunable and group.num_units == 4 and "normalizes groups" in group.approximate
    prune(net, SHAPE, 0.5)
    assert net.norm.weight.shape == [8] and net.norm._num_channels == 8 and net.norm._num_groups == 4
    assert net(paddle.randn([2] + SHAPE[1:])).shape == [2, 5]


@pytest.mark.parametrize("build", [TinyViT, TinyConvNeXt, GroupNormNet])
def test_dead_channels_prune_exactly_up_to_layer_norm_statistics(build):
    paddle.seed(0)
    net = build()
    randomize(net)
    graph = trace(net, SHAPE)
    dead = kill_units(net, graph, ratio=0.3)
    x = paddle.randn([2] + SHAPE[1:])
    with layer_norms_over(net, kept_channels(net, graph, dead)):
        reference = outputs(net, x)
    plan = prune(net, SHAPE, 0.3)
    np.testing.assert_allclose(outputs(net, x), reference, atol=1e-5)
    assert any(g.get("approximate") for g in plan.groups)


def test_vit_embedding_dim_is_one_group_through_tokens_and_norms():
    net = TinyViT()
    stream = trace(net, SHAPE).groups[0]
    owners = {(m.layer, m.attr) for m in stream.members}
    assert stream.prunable and stream.num_units == 16
    assert {("", "cls_token"), ("", "pos_embed"), ("norm", "weight"), ("blocks.1.norm2", "bias"),
            ("blocks.0.attn.qkv", "weight"), ("head", "weight")} <= owners
    assert "norm1" in stream.approximate


def test_pruned_vit_trains_and_shrinks_its_embeddings():
    paddle.seed(0)
    net = TinyViT()
    before = count_flops(net, SHAPE)
    opt = paddle.optimizer.Momentum(0.01, parameters=net.parameters())
    prune(net, SHAPE, 0.3, optimizer=opt)
    assert net.cls_token.shape == [1, 1, 11] and net.pos_embed.shape == [1, 5, 11]
    assert net.norm._normalized_shape == [11] and net.blocks[0].norm1.weight.shape == [11]
    assert count_flops(net, SHAPE) < 0.75 * before
    x, y = paddle.randn([8] + SHAPE[1:]), paddle.randint(0, 5, [8])
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_concat_with_a_fixed_tensor_blocks_the_channels_it_meets():
    class FixedToken(nn.Layer):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            token = paddle.ones([x.shape[0], 1, 8])   # not a parameter: its 8 is fixed
            return self.head(paddle.concat([token, self.proj(x)], axis=1))

    group = trace(FixedToken(), [1, 3, 4]).groups[0]
    assert not group.prunable and "concatenated with a tensor of fixed size" in group.blocked


def test_head_dim_follows_pruning_and_the_plan_replays_it():
    paddle.seed(0)
    net = TinyViT()
    randomize(net)
    graph = trace(net, SHAPE)
    qkv = next(g for g in graph.groups if g.name == "blocks.0.attn.qkv")
    assert qkv.prunable and [(s.layer, s.attr) for s in qkv.sizes] == [("blocks.0.attn", "head_dim")]
    x = paddle.randn([2] + SHAPE[1:])
    plan = prune(net, SHAPE, {"blocks.*.attn.qkv": 0.5})
    assert plan.attrs == {("blocks.0.attn", "head_dim"): (8, 4), ("blocks.1.attn", "head_dim"): (8, 4)}
    assert net.blocks[0].attn.head_dim == 4 and net.blocks[0].attn.qkv.weight.shape == [16, 24]
    replayed = type(plan).from_dict(plan.to_dict())
    assert replayed.attrs == plan.attrs
    fresh = TinyViT()
    replayed.apply(fresh, input_shape=SHAPE)
    fresh.set_state_dict(net.state_dict())
    assert fresh.blocks[1].attn.head_dim == 4
    np.testing.assert_allclose(outputs(fresh, x), outputs(net, x), atol=1e-6)


def test_dead_head_dims_prune_exactly():
    """Only the attention groups: no LayerNorm is involved, so removal is exact."""
    paddle.seed(0)
    net = TinyViT()
    randomize(net)
    graph = trace(net, SHAPE)
    for name in ("blocks.0.attn.qkv", "blocks.1.attn.qkv"):
        kill_units(net, graph, ratio=0.5, only=name)
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    prune(net, SHAPE, {"blocks.*.attn.qkv": 0.5})
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def test_attention_that_only_computes_with_head_dim_blocks_the_heads():
    paddle.seed(0)
    net = TinyViT()
    for block in net.blocks:
        block.attn = RuntimeScaledAttention(16, 2)
    graph = trace(net, SHAPE)
    qkv = next(g for g in graph.groups if g.name == "blocks.0.attn.qkv")
    assert not qkv.prunable and "which the code also computes with" in qkv.blocked
    prune(net, SHAPE, 0.3)   # whatever stays prunable prunes and the network still runs
    assert net(paddle.randn([2] + SHAPE[1:])).shape == [2, 5]


def paddleclas_style_vit():
    paddle.seed(0)
    net = TinyViT()
    for block in net.blocks:
        block.attn = SizesFromTheInput(16, 2)
    randomize(net)
    return net


def test_attention_sized_by_its_input_width_prunes_in_step_with_the_embedding():
    """``C // self.num_heads`` with ``C`` the embedding width: the embedding channels
    and the attention's head dims are coupled column by column (each unit: one head-dim
    position and ``num_heads`` embedding channels), so both shrink in step."""
    net = paddleclas_style_vit()
    graph = trace(net, SHAPE)
    stream = graph.groups[0]
    assert stream.prunable and stream.num_units == 8   # head_dim positions
    assert {("blocks.0.attn.qkv", "weight"), ("blocks.1.attn.proj", "weight"),
            ("", "pos_embed")} <= {(m.layer, m.attr) for m in stream.members}
    dead = kill_units(net, graph, ratio=0.5)
    x = paddle.randn([2] + SHAPE[1:])
    with layer_norms_over(net, kept_channels(net, graph, dead)):
        reference = outputs(net, x)
    before = count_flops(net, SHAPE)
    prune(net, SHAPE, 0.5)
    np.testing.assert_allclose(outputs(net, x), reference, atol=1e-5)
    assert net.pos_embed.shape == [1, 5, 8] and net.blocks[0].attn.qkv.weight.shape == [8, 24]
    assert count_flops(net, SHAPE) < 0.5 * before


class TwoSourceSize(nn.Layer):
    """A reshape sized by the sum of two tensors' widths: no known layout, so it blocks."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 2), nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        a, b, c = self.a(x), self.b(x), self.c(paddle.concat([self.a(x), self.b(x)], -1))
        return self.head(c.reshape([-1, a.shape[-1] + b.shape[-1]]))


def test_size_read_from_other_tensors_without_a_layout_blocks_both():
    graph = trace(TwoSourceSize(), [1, 4])
    blocked = {g.name: g.blocked for g in graph.groups}
    assert "sizes another tensor" in blocked["c"] and "sizes another tensor" in blocked["a"]


class GramNet(nn.Layer):
    """Channel attention through a Gram matrix: x^T x pairs every channel with every other."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.proj(x)                       # [B, N, 8]
        gram = y.matmul(y, transpose_x=True)   # [B, 8, 8]
        return self.head(gram.mean(1))


def test_matmul_pairing_different_channels_in_one_element_blocks_them():
    group = trace(GramNet(), [1, 3, 4]).groups[0]
    assert not group.prunable and "meets other channels" in group.blocked


class FunctionalLinear(nn.Layer):
    """``x @ self.w`` with a free parameter: the parameter's rows follow x's channels."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.w = self.create_parameter([8, 3])

    def forward(self, x):
        return F.relu(self.proj(x)).matmul(self.w)


def test_functional_linear_with_a_free_parameter_prunes_exactly():
    from helpers import assert_dead_channels_prune_exactly
    net = FunctionalLinear()
    randomize(net)
    assert_dead_channels_prune_exactly(net, [1, 2, 4], 0.5)
    assert net.w.shape == [4, 3] and net.proj.weight.shape == [4, 4]


class ShiftedWindows(nn.Layer):
    """Swin's shift: roll a channels-last map along H and W, then an MLP on channels."""

    def __init__(self, pick_channels=False):
        super().__init__()
        self.pick_channels = pick_channels
        self.proj = nn.Conv2D(3, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.proj(x).transpose([0, 2, 3, 1])
        y = paddle.roll(y, shifts=(-1, -1), axis=(1, 2))
        if self.pick_channels:
            y = paddle.index_select(y, paddle.to_tensor([7, 6, 5, 4, 3, 2, 1, 0]), axis=3)
        return self.fc(F.relu(y)).mean([1, 2])


def test_roll_along_spatial_axes_passes_channels_and_prunes_exactly():
    from helpers import assert_dead_channels_prune_exactly
    net = ShiftedWindows()
    randomize(net)
    assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert net.proj.weight.shape[0] == 4


def test_index_select_along_channels_blocks_them():
    group = trace(ShiftedWindows(pick_channels=True), [1, 3, 4, 4]).groups[0]
    assert not group.prunable and "picked by index_select" in group.blocked


def test_fit_prunes_a_vit_in_two_steps_and_the_ledger_replays_head_dims(tmp_path):
    from helpers import dataset

    from slim_callbacks.callbacks import PruneCallback
    from slim_callbacks.callbacks.ledger import load_pruned
    paddle.seed(0)
    net = TinyViT(classes=4)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    callback = PruneCallback(ratios={"blocks.*.attn.qkv": 0.5, "blocks.*.fc1": 0.5},
                             prune_epochs=[0, 1], input_shape=SHAPE)
    model.fit(dataset(32), epochs=2, batch_size=16, verbose=0, shuffle=False,
              save_dir=str(tmp_path), callbacks=[callback])
    assert net.blocks[0].attn.head_dim == 4 and net.blocks[1].fc1.weight.shape == [16, 16]
    rebuilt = load_pruned(TinyViT(classes=4), str(tmp_path / "final"))
    assert rebuilt.blocks[0].attn.head_dim == 4
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(outputs(rebuilt, x), outputs(net, x), atol=1e-5)


class ChannelsFirstLayerNorm(nn.Layer):
    """A LayerNorm written by hand over axis 1 of NCHW (as ConvNeXt's downsampling)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([channels], is_bias=True)

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / paddle.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class HandNormNet(nn.Layer):
    def __init__(self, reduce="mean"):
        super().__init__()
        self.reduce = reduce
        self.a, self.norm, self.c = nn.Conv2D(3, 8, 1), ChannelsFirstLayerNorm(8), nn.Conv2D(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        if self.reduce == "sum":   # a channel sum as a gate: exact when dead channels go
            return self.c(y * F.sigmoid(y.sum(1, keepdim=True)))
        if self.reduce == "max":
            return self.c(y - y.max(1, keepdim=True))
        return self.c(self.norm(y))


def test_hand_written_layer_norm_is_approximate_and_its_views_are_sliced():
    net = HandNormNet()
    group = trace(net, [1, 3, 4, 4]).groups[0]
    assert group.prunable and "mean over channels" in group.approximate
    assert {("norm", "weight"), ("norm", "bias")} <= {(m.layer, m.attr) for m in group.members}
    prune(net, [1, 3, 4, 4], 0.5)
    assert net.norm.weight.shape == [4] and net(paddle.randn([2, 3, 4, 4])).shape == [2, 2, 4, 4]


def test_sum_over_channels_prunes_exactly_and_max_blocks():
    from helpers import assert_dead_channels_prune_exactly
    net = HandNormNet("sum")
    randomize(net)
    assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert not trace(HandNormNet("max"), [1, 3, 4, 4]).groups[0].prunable


class TokenUpdate(nn.Layer):
    """TNT's outer update: ``y[:, 1:] = y[:, 1:] + proj(...)`` in place, along tokens."""

    def __init__(self, fill_channels=False):
        super().__init__()
        self.fill_channels = fill_channels
        self.patch = nn.Conv2D(3, 6, 2, stride=2)
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose([0, 2, 1])
        y = F.relu(self.fc1(t))
        y[:, 1:] = y[:, 1:] + self.fc2(t[:, 1:])
        if self.fill_channels:
            y[:, :, :4] = 0.0
        return self.head(y).mean(1)


def test_setitem_along_tokens_couples_the_assigned_channels_and_prunes_exactly():
    from helpers import assert_dead_channels_prune_exactly
    net = TokenUpdate()
    randomize(net)
    graph = trace(net, [1, 3, 4, 4])
    joined = [g for g in graph.prunable_groups() if "fc1" in g.producers]
    assert joined and set(joined[0].producers) == {"fc1", "fc2"}
    assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert net.fc1.weight.shape[1] == net.fc2.weight.shape[1] == 4


def test_setitem_of_some_channels_blocks_them():
    graph = trace(TokenUpdate(fill_channels=True), [1, 3, 4, 4])
    group = next(g for g in graph.groups if "fc1" in g.producers)
    assert not group.prunable and "partly assigned by setitem" in group.blocked


class ReducedKeys(nn.Layer):
    """PVT's spatial-reduction attention: kv tokens counted back from widths,
    ``kv.shape[2] * kv.shape[1] // 2 // C``; ``independent`` divides by the width of a
    layer that is not coupled to kv instead."""

    def __init__(self, dim=8, heads=2, independent=False):
        super().__init__()
        self.num_heads, self.independent = heads, independent
        self.embed = nn.Conv2D(3, dim, 2, stride=2)
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.sr = nn.Conv2D(dim, dim, 2, stride=2)
        self.other = nn.Linear(dim, dim)
        self.proj, self.head = nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose([0, 2, 1])
        q = self.q(t).reshape([b, h * w, self.num_heads, c // self.num_heads]).transpose([0, 2, 1, 3])
        kv = self.kv(self.sr(x).flatten(2).transpose([0, 2, 1]))
        width = self.other(t).shape[2] if self.independent else c
        tokens = kv.shape[2] * kv.shape[1] // 2 // width
        kv = kv.reshape([b, tokens, 2, self.num_heads, c // self.num_heads]).transpose([2, 0, 3, 1, 4])
        attn = F.softmax(q.matmul(kv[0], transpose_y=True), axis=-1)
        out = attn.matmul(kv[1]).transpose([0, 2, 1, 3]).reshape([b, h * w, c])
        return self.head(self.proj(out)).mean(1)


def test_token_count_made_of_widths_follows_when_they_shrink_in_step():
    from helpers import assert_dead_channels_prune_exactly
    net = ReducedKeys()
    randomize(net)
    graph = trace(net, [1, 3, 8, 8])
    embed = next(g for g in graph.groups if "embed" in g.producers)
    assert embed.prunable and "kv" in embed.producers
    assert_dead_channels_prune_exactly(net, [1, 3, 8, 8], 0.5)
    assert net.kv.weight.shape == [4, 8]


def test_token_count_from_widths_that_do_not_shrink_in_step_blocks_them():
    graph = trace(ReducedKeys(independent=True), [1, 3, 8, 8])
    embed = next(g for g in graph.groups if "embed" in g.producers)
    assert not embed.prunable and "do not shrink in proportion" in embed.blocked


class SlicedScale(nn.Layer):
    """A free per-channel scale used through a view that moves or drops positions."""

    def __init__(self, view):
        super().__init__()
        self.view = view
        self.proj = nn.Linear(4, 8)
        self.gamma = self.create_parameter([16] if view == "head" else [8])
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        gamma = self.gamma[:8] if self.view == "head" else self.gamma[::-1]
        return self.head(self.proj(x) * gamma)


@pytest.mark.parametrize("view", ["head", "reversed"])
def test_a_view_that_moves_or_drops_a_parameters_positions_is_not_sliced_as_the_parameter(view):
    from helpers import assert_dead_channels_prune_exactly
    net = SlicedScale(view)
    randomize(net)
    group = next(g for g in trace(net, [1, 3, 4]).groups if "proj" in g.producers)
    assert not any(m.layer == "" and m.attr == "gamma" for m in group.members)
    if group.prunable:
        assert_dead_channels_prune_exactly(net, [1, 3, 4], 0.5)
