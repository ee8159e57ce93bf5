"""Grouped convs, 1 < groups < C_in: a position goes from every group at
once, so each group keeps the same width and ``groups`` stays; dead channels removed
=> identical outputs; the pruned network trains and exports."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import ConvBN, assert_dead_channels_prune_exactly, calibrate, momentum_losses, outputs
from nets import RegNet, ResNeXt, ShuffleNet, grouped_convs

from slim_callbacks import count_flops, export, prune, trace
from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import resolve_ratios

SHAPE = [1, 3, 16, 16]


def make_plan(net, shape, ratio, criterion="l1_norm"):
    graph = trace(net, shape)
    return plan_pruning(net, graph, resolve_ratios(graph, ratio), criterion)


def assert_groups_consistent(net, before):
    """Every grouped conv kept its ``groups``; its attributes match its weight."""
    for name, layer in grouped_convs(net):
        assert layer._groups == before[name], name
        c_out, per_group = layer.weight.shape[:2]
        assert layer._in_channels == per_group * layer._groups and layer._out_channels == c_out


NETS = {"resnext": ResNeXt, "regnet": RegNet, "shufflenet": ShuffleNet}


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("name", list(NETS))
def test_dead_channels_of_grouped_nets_prune_exactly_and_groups_stay(name, ratio):
    paddle.seed(0)
    net = NETS[name]()
    groups = {n: l._groups for n, l in grouped_convs(net)}
    graph = trace(net, SHAPE)
    assert [g.name for g in graph.groups if g.blocked] == ["fc"]  # only the output
    macs = count_flops(net, SHAPE)
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=ratio)
    assert_groups_consistent(net, groups)
    assert count_flops(net, SHAPE) < macs
    losses = momentum_losses(net, SHAPE)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_resnext_grouped_convs_lose_whole_positions_and_the_flops_model_agrees():
    paddle.seed(0)
    net = ResNeXt()
    model = FlopsModel(net, SHAPE)
    plan = make_plan(net, SHAPE, 0.5)
    predicted = model.count(plan)
    plan.apply(net)
    assert count_flops(net, SHAPE) == predicted
    conv = net.blocks[2].grouped[0]  # 32 channels in 8 groups of 4: half the positions go
    assert conv._groups == 8 and list(conv.weight.shape) == [16, 2, 3, 3]
    assert conv._in_channels == conv._out_channels == 16
    # the producer of its input (reduce) and the BN after it follow
    assert net.blocks[2].reduce[0].weight.shape[0] == 16 and net.blocks[2].grouped[1]._num_features == 16
    assert net.blocks[2].expand[0].weight.shape[1] == 16


def test_a_position_is_scored_over_every_group():
    """The l1 score of a position is summed over the groups: position 1 (rows 1, 5, 9,
    13) has the lowest sum and goes whole, though row 1 is the strongest row and the
    four weakest rows are 5, 9, 13 and 0."""
    paddle.seed(0)
    net = nn.Sequential(nn.Conv2D(3, 8, 1), nn.Conv2D(8, 16, 3, padding=1, groups=4), nn.Conv2D(16, 2, 1))
    w = np.ones([16, 2, 3, 3], dtype="float32")
    w[[1, 5, 9, 13]] = 0.1
    w[1] = 2.0
    w[[0, 8]] = 0.5
    net[1].weight.set_value(w)
    plan = make_plan(net, [1, 3, 4, 4], 0.25)
    kept = plan.params[("1", "weight")].kept[0]
    assert sorted(set(range(16)) - set(kept)) == [1, 5, 9, 13]


def test_grouped_transposed_conv_prunes_exactly():
    class Decoder(nn.Layer):
        def __init__(self):
            super().__init__()
            self.enc = ConvBN(3, 8, 3, 2)
            self.up = nn.Conv2DTranspose(8, 12, 2, 2, groups=2)  # weight [8, 6, 2, 2]
            self.dec = nn.Sequential(nn.BatchNorm2D(12), nn.ReLU(), nn.Conv2D(12, 2, 1))

        def forward(self, x):
            return self.dec(self.up(self.enc(x)))

    paddle.seed(0)
    net = Decoder()
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.5)
    assert net.up._groups == 2 and list(net.up.weight.shape) == [4, 3, 2, 2]
    assert (net.up._in_channels, net.up._out_channels) == (4, 6)


def test_a_group_position_shared_with_the_input_is_blocked():
    """concat([x, conv(x)]) into a conv of groups 2: group 0 holds the image, group 1
    the conv's channels; removing a position would remove an image channel too."""
    class Mixed(nn.Layer):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2D(3, 3, 1)
            self.g = nn.Conv2D(6, 4, 3, padding=1, groups=2)
            self.head = nn.Conv2D(4, 2, 1)

        def forward(self, x):
            return self.head(self.g(paddle.concat([x, self.a(x)], axis=1)))

    paddle.seed(0)
    net = Mixed()
    groups = {g.name: g for g in trace(net, SHAPE).groups}
    assert "grouped conv g (groups=2)" in groups["a"].blocked
    assert groups["g"].prunable
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.5)
    assert list(net.a.weight.shape)[0] == 3 and list(net.g.weight.shape) == [2, 3, 3, 3]


def test_pruned_grouped_net_exports_with_the_same_outputs(tmp_path):
    paddle.seed(0)
    net = ResNeXt()
    calibrate(net, SHAPE)
    prune(net, SHAPE, 0.3)
    assert net.blocks[2].grouped[0]._groups == 8 and net.blocks[2].grouped[0].weight.shape[0] < 32
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    result = export(net, tmp_path / "m", SHAPE, formats=("paddle", "onnx"))
    assert all(d <= 1e-4 for d in result.max_abs_diff.values()), result.max_abs_diff
    np.testing.assert_allclose(outputs(net, x), before)
