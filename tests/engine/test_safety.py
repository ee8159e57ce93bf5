"""Train-only branches, transposed convs, and structures that used to end in
"the pruned network failed a forward pass" are handled or blocked up front."""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import assert_dead_channels_prune_exactly, calibrate, same, snapshot

from slim_callbacks import SlimError, prune, trace
from slim_callbacks.analysis.flops import count_flops, layer_widths


def group_named(graph, name):
    return next(g for g in graph.groups if g.name == name)


# --------------------------------------------------------------- 1. train-only branches
class AuxHead(nn.Layer):
    """A minimal auxiliary head behind `if self.training:`, with BatchNorm and Dropout."""

    def __init__(self, blocked_aux=False):
        super().__init__()
        self.blocked_aux = blocked_aux
        self.c1 = nn.Conv2D(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2D(16)
        self.head = nn.Conv2D(16, 2, 1)
        self.aux = nn.Sequential(nn.Dropout(0.5), nn.Conv2D(16, 4, 1), nn.BatchNorm2D(4),
                                 nn.Conv2D(4, 2, 1))

    def forward(self, x):
        f = F.relu(self.bn(self.c1(x)))
        if not self.training:
            return self.head(f)
        aux_in = paddle.cumprod(f, dim=1) if self.blocked_aux else f  # cumprod: unmappable
        return [self.head(f), self.aux(aux_in)]


def test_train_only_branch_is_pruned_and_the_network_trains():
    paddle.seed(0)
    net = AuxHead()
    plan = prune(net, [1, 3, 16, 16], 0.3)
    assert plan.layer_widths()["c1"] == (16, 11)
    assert net.head._in_channels == net.aux[1]._in_channels == 11
    assert net.aux[1]._out_channels == 3  # the aux head's own conv is pruned as well
    net.train()
    optimizer = paddle.optimizer.SGD(0.1, parameters=net.parameters())
    main, aux = net(paddle.randn([2, 3, 16, 16]))
    (main.mean() + aux.mean()).backward()
    optimizer.step()


def test_trace_and_prune_leave_bn_statistics_and_rng_unchanged():
    paddle.seed(0)
    net = AuxHead()
    calibrate(net, [1, 3, 16, 16])
    net.train()
    state, rng = snapshot(net), paddle.get_rng_state()
    trace(net, [1, 3, 16, 16])
    assert same(state, snapshot(net)) and net.training
    drawn = paddle.rand([8]).numpy()
    paddle.set_rng_state(rng)
    assert np.array_equal(paddle.rand([8]).numpy(), drawn)

    paddle.set_rng_state(rng)
    plan = prune(net, [1, 3, 16, 16], 0.3)
    drawn = paddle.rand([8]).numpy()
    paddle.set_rng_state(rng)
    assert np.array_equal(paddle.rand([8]).numpy(), drawn)
    for layer, name in ((net.bn, "bn"), (net.aux[2], "aux.2")):
        kept = plan.params[(name, "_mean")].kept[0]
        for attr in ("_mean", "_variance"):
            np.testing.assert_array_equal(getattr(layer, attr).numpy(), state[f"{name}.{attr}"][kept])


def test_train_only_branch_that_cannot_be_pruned_blocks_its_channels():
    net = AuxHead(blocked_aux=True)
    graph = trace(net, [1, 3, 16, 16])
    assert "cumprod" in group_named(graph, "c1").blocked
    plan = prune(net, [1, 3, 16, 16], 0.3)
    assert "c1" not in plan.layer_widths() and net.c1._out_channels == 16
    net.train()
    net(paddle.randn([2, 3, 16, 16]))


class TrainModeFails(nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2D(3, 8, 1)

    def forward(self, x):
        if self.training:
            raise ValueError("targets are required in training")
        return self.c1(x).mean()


def test_network_rejecting_train_mode_input_is_a_clear_error_and_unchanged():
    net = TrainModeFails()
    state = snapshot(net)
    with pytest.raises(SlimError, match=r"rejected by the network in train mode"):
        prune(net, [1, 3, 4, 4], 0.5)
    assert same(state, snapshot(net)) and net.training


# --------------------------------------------------------------- 2. transposed convs
class EncoderDecoder(nn.Layer):
    """Down, up with a Conv2DTranspose of equal in/out widths, skip-free decoder."""

    def __init__(self, groups=1, up_width=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2D(3, 8, 3, 2, 1), nn.BatchNorm2D(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2D(8, 8, 3, 1, 1), nn.BatchNorm2D(8), nn.ReLU())
        self.up = nn.Conv2DTranspose(8, up_width, 2, 2, groups=groups)
        self.dec = nn.Sequential(nn.BatchNorm2D(up_width), nn.ReLU(), nn.Conv2D(up_width, 2, 1))

    def forward(self, x):
        return self.dec(self.up(self.mid(self.enc(x))))


def test_transposed_conv_prunes_dead_channels_exactly():
    paddle.seed(0)
    net, shape = EncoderDecoder(), [1, 3, 8, 8]
    macs = count_flops(net, shape)
    plan = assert_dead_channels_prune_exactly(net, shape)
    assert plan.layer_widths()["up"] == (8, 6) and plan.layer_widths()["mid.0"] == (8, 6)
    assert list(net.up.weight.shape) == [6, 6, 2, 2]  # [C_in, C_out, k, k]
    assert (net.up._in_channels, net.up._out_channels) == (6, 6)
    assert layer_widths(net)["up"] == 6 and count_flops(net, shape) < macs


def test_depthwise_transposed_conv_follows_its_input_exactly():
    paddle.seed(0)
    net = EncoderDecoder(groups=8, up_width=16)  # two outputs per input channel
    plan = assert_dead_channels_prune_exactly(net, [1, 3, 8, 8])
    assert "up" not in plan.layer_widths()  # not a producer: it follows mid.0
    assert list(net.up.weight.shape) == [6, 2, 2, 2]
    assert (net.up._in_channels, net.up._out_channels, net.up._groups) == (6, 12, 6)


def test_transposed_conv_macs_count_each_input_element_once_per_output_tap():
    for groups in (1, 2):
        up = nn.Conv2DTranspose(4, 6, 3, stride=2, groups=groups)
        # H_in * W_in * C_in * (C_out / groups) * Kh * Kw
        assert count_flops(up, [1, 4, 5, 5]) == 5 * 5 * 4 * (6 // groups) * 9


# --------------------------------------------------------------- 3. fixed-size tensors
class AddsUntracedOutput(nn.Layer):
    """``a(x)`` is added to the output of an op the tracer cannot map."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2D(3, 8, 1)
        self.b = nn.Conv2D(3, 8, 1)
        self.prelu = nn.PReLU(8)
        self.c = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        y = self.b(x)
        y = F.layer_norm(y, y.shape[1:]) if self.kind == "layer_norm" else self.prelu(y)
        return self.c(self.a(x) + y)


@pytest.mark.parametrize("kind", ["layer_norm"])  # PReLU is traced (test_prelu.py)
def test_channels_added_to_an_untraced_op_output_are_blocked_with_one_warning(kind, caplog):
    net = AddsUntracedOutput(kind)
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.tracing.tracer"):
        graph = trace(net, [1, 3, 4, 4])
    assert "fixed size" in group_named(graph, "a").blocked
    assert len([r for r in caplog.records if "fixed size" in r.getMessage()]) == 1
    with pytest.raises(SlimError, match="no prunable channel group .*blocked.* nothing was changed"):
        prune(net, [1, 3, 4, 4], 0.5)  # said, not an empty plan without a word
    assert net.a._out_channels == 8


class Reshapes(nn.Layer):
    def __init__(self, literal, through_flatten, varargs=False):
        super().__init__()
        self.literal, self.through_flatten, self.varargs = literal, through_flatten, varargs
        self.dim = 8
        self.a = nn.Conv2D(3, 8, 1)
        self.c = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        y = self.a(x)
        b, c, h, w = y.shape
        if self.through_flatten:
            y = y.flatten(2)  # [B, C, H*W], as attention blocks do
        shape = [b, (8 if self.literal == "number" else self.dim) if self.literal else c, h, w]
        y = y.reshape(*shape) if self.varargs else y.reshape(shape)
        return self.c(y)


@pytest.mark.parametrize("through_flatten, varargs", [(False, False), (True, False), (False, True)])
def test_reshape_to_a_literal_channel_count_is_blocked(through_flatten, varargs, caplog):
    net = Reshapes(literal="number", through_flatten=through_flatten, varargs=varargs)
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.tracing.tracer"):
        graph = trace(net, [1, 3, 4, 4])
    assert "literal size [1, 8, 4, 4]" in group_named(graph, "a").blocked
    assert len([r for r in caplog.records if "literal size" in r.getMessage()]) == 1
    with pytest.raises(SlimError, match="no prunable channel group .*literal size"):
        prune(net, [1, 3, 4, 4], 0.5)
    assert net.a._out_channels == 8


@pytest.mark.parametrize("through_flatten", [False, True])
def test_reshape_to_a_layer_attribute_follows_pruning(through_flatten):
    """``self.dim`` is set to the new channel count (a tagged attribute, see
    tracing/sizes.py); the prune is exact."""
    net = Reshapes(literal="attribute", through_flatten=through_flatten)
    plan = assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert net.dim == 4 and plan.attrs == {("", "dim"): (8, 4)}


@pytest.mark.parametrize("through_flatten", [False, True])
def test_reshape_to_a_size_read_from_the_shape_stays_prunable(through_flatten):
    paddle.seed(0)
    net = Reshapes(literal=False, through_flatten=through_flatten)
    plan = assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], ratio=0.5)
    assert plan.layer_widths()["a"] == (8, 4)


class LiteralSplit(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 1)
        self.c = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        left, right = paddle.split(self.a(x), [4, 4], axis=1)
        return self.c(paddle.concat([right, left], axis=1))


def test_split_into_literal_sections_is_blocked():
    net = LiteralSplit()
    group = group_named(trace(net, [1, 3, 4, 4]), "a")
    assert not group.prunable and "literal sections [4, 4]" in group.blocked
    with pytest.raises(SlimError, match="no prunable channel group .*literal sections"):
        prune(net, [1, 3, 4, 4], 0.5)
    assert net.a._out_channels == 8


class LayerScale(nn.Layer):
    def __init__(self, shape):
        super().__init__()
        self.conv = nn.Conv2D(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.gamma = self.create_parameter(
            shape, default_initializer=nn.initializer.Uniform(0.5, 1.5))

    def forward(self, x):
        return x + self.gamma * F.relu(self.bn(self.conv(x)))


class LayerScaleNet(nn.Layer):
    def __init__(self, shape):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.block = LayerScale(shape)
        self.head = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


@pytest.mark.parametrize("shape", [[1, 8, 1, 1], [8, 1, 1]])
def test_layer_scale_parameter_is_sliced_with_its_channels(shape):
    paddle.seed(0)
    net = LayerScaleNet(shape)
    plan = assert_dead_channels_prune_exactly(net, [1, 3, 8, 8])
    assert plan.layer_widths()["block.conv"] == (8, 6)
    assert plan.layer_widths()["stem.0"] == (8, 6)  # the residual couples stem and block
    shape_after = list(shape)
    shape_after[shape.index(8)] = 6
    assert list(net.block.gamma.shape) == shape_after


class TopLevelScale(nn.Layer):
    """A free parameter on the network itself: its owner's structural name is ""."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 1)
        self.gamma = self.create_parameter([1, 8, 1, 1])
        self.c = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        return self.c(self.gamma * self.a(x))


def test_free_parameter_of_the_network_itself_is_sliced_with_its_channels():
    net = TopLevelScale()
    group = group_named(trace(net, [1, 3, 4, 4]), "a")
    assert group.prunable and ("", "gamma") in {(m.layer, m.attr) for m in group.members}
    assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert net.a._out_channels == 4 and net.gamma.shape == [1, 4, 1, 1]


def test_count_flops_with_max_pool_returning_its_mask():
    net = nn.Sequential(nn.Conv2D(3, 4, 1), nn.MaxPool2D(2, return_mask=True))
    assert count_flops(net, [1, 3, 4, 4]) == 4 * 4 * 4 * 3
    assert count_flops(net, [1, 3, 4, 4], "paddleslim_legacy") == 2 * 4 * 4 * 4 * 3 + 4 * 2 * 2 * 4


class IntOfChannelCount(nn.Layer):
    """NextViT's E_MHSA: ``q`` is reshaped by ``int(C // heads)`` with ``C`` read from
    its input ``t``, a tensor of other channels (a literal for ``q``, a size for ``t``)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2D(3, 8, 1)
        self.q = nn.Linear(8, 8)
        self.mid = nn.Conv2D(3, 6, 1)
        self.mix = nn.Conv2D(6, 4, 1)
        self.head = nn.Conv2D(4, 2, 1)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose([0, 2, 1])  # [B, N, C]
        B, N, C = t.shape
        q = self.q(t).reshape([B, N, 2, int(C // 2)])
        return self.head(F.relu(self.mix(F.relu(self.mid(x))))), q


def test_int_of_a_channel_count_in_the_network_blocks_those_channels():
    """Without the block, ``stem`` is pruned, ``C // 2`` becomes 3 and the reshape of
    the unpruned ``q`` fails: the prune would be refused whole."""
    paddle.seed(0)
    net, shape = IntOfChannelCount(), [1, 3, 4, 4]
    graph = trace(net, shape)
    assert "made a plain int by int() in the top-level network" in group_named(graph, "stem").blocked
    assert group_named(graph, "mid").prunable
    assert_dead_channels_prune_exactly(net, shape, ratio=0.5)
    assert net.stem._out_channels == 8 and net.mid._out_channels == 3 and net.mix._out_channels == 2
