"""Tracing finds coupled channels; pruning dead channels leaves outputs unchanged."""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import paddle.vision.models as models
import pytest
from helpers import ConcatNet, SENet, assert_dead_channels_prune_exactly, calibrate, kill_units, outputs

from slim_callbacks import SlimError, prune, trace
from slim_callbacks.analysis.flops import count_flops

ZOO = [name for name in models.__all__ if name[0].islower()]
# Smallest square input each architecture accepts (fixed-size flatten -> Linear).
INPUT_SIZE = {"alexnet": 224, "googlenet": 224, "inception_v3": 96}


@pytest.mark.parametrize("name", ZOO)
def test_pruning_dead_channels_keeps_outputs_for_every_vision_model(name):
    """Zero some channels, prune exactly those: outputs must not move."""
    paddle.seed(0)
    net = getattr(models, name)(num_classes=10)
    size = INPUT_SIZE.get(name, 32)
    shape = [1, 3, size, size]
    calibrate(net, shape)
    graph = trace(net, shape)
    assert graph.prunable_groups(), f"{name}: nothing prunable"
    kill_units(net, graph, ratio=0.3)
    x = paddle.randn([2, 3, size, size])
    before, macs_before = outputs(net, x), count_flops(net, shape)
    plan = prune(net, shape, 0.3)
    after = outputs(net, x)
    assert len(plan) >= 1
    scale = max(1.0, float(np.abs(before).max()))
    assert np.abs(before - after).max() <= 1e-4 * scale
    assert count_flops(net, shape) < macs_before


def test_mobilenet_v1_groups_pair_each_pointwise_with_next_depthwise():
    net = models.mobilenet_v1(scale=0.25, num_classes=10)
    graph = trace(net, [1, 3, 32, 32])
    groups = {g.name: g for g in graph.prunable_groups()}
    assert len(groups) == 14  # first conv + 13 pointwise
    g = groups["conv2_1._pointwise_conv.0"]
    layers = g.layers()
    assert "conv2_1._pointwise_conv.1" in layers  # its BatchNorm
    assert "conv2_2._depthwise_conv.0" in layers  # the depthwise conv that follows
    assert "conv2_2._pointwise_conv.0" in layers  # the next consumer's input
    assert not graph.groups[-1].prunable and "output" in graph.groups[-1].blocked


def test_residual_stage_is_one_group():
    graph = trace(models.resnet18(num_classes=10), [1, 3, 32, 32])
    stage = next(g for g in graph.groups if g.name == "conv1")
    assert stage.producers == ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    assert stage.num_units == 64


def test_concat_maps_channel_offsets_into_consumer():
    graph = trace(ConcatNet(), [1, 3, 8, 8])
    by_name = {g.name: g for g in graph.groups}
    consumer_cols = {g: [m for m in by_name[g].members if m.layer == "mix.0" and m.role == "in"][0]
                     for g in ("a.0", "b.0")}
    assert consumer_cols["a.0"].indices.tolist() == list(range(6))
    assert consumer_cols["b.0"].indices.tolist() == list(range(6, 10))


def test_flatten_maps_each_channel_to_its_linear_rows():
    graph = trace(ConcatNet(), [1, 3, 8, 8])
    mix = next(g for g in graph.groups if g.name == "mix.0")
    fc_rows = next(m for m in mix.members if m.layer == "fc")
    # channel c of the 4x4 map owns rows 16c .. 16c+15 of the Linear weight
    assert sorted(fc_rows.indices[fc_rows.units == 2].tolist()) == list(range(32, 48))


def test_squeeze_excitation_couples_expand_conv_with_the_scaled_channels():
    graph = trace(SENet(), [1, 3, 8, 8])
    coupled = next(g for g in graph.groups if "se_expand" in g.producers)
    assert set(coupled.producers) == {"stem.0", "body.0", "se_expand"}


def test_squeeze_excitation_network_prunes_exactly():
    net, shape = SENet(), [1, 3, 8, 8]
    calibrate(net, shape)
    kill_units(net, trace(net, shape), ratio=0.25)
    x = paddle.randn([2, 3, 8, 8])
    before = outputs(net, x)
    prune(net, shape, 0.25)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def test_channel_shuffle_keeps_branch_internals_prunable():
    graph = trace(models.shufflenet_v2_x0_25(num_classes=10), [1, 3, 32, 32])
    names = [g.name for g in graph.prunable_groups()]
    assert "2_2._conv_pw.0" in names


class UnknownOp(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 4, 1)
        self.b = nn.Conv2D(3, 4, 1)
        self.c = nn.Conv2D(4, 2, 1)

    def forward(self, x):
        y = paddle.cumprod(self.a(x), dim=1)  # mixes channels: the tracer can't map it
        return self.c(y + 0 * self.b(x).mean())


def test_unknown_op_blocks_its_channels_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.tracing.tracer"):
        graph = trace(UnknownOp(), [1, 3, 4, 4])
    blocked = next(g for g in graph.groups if g.name == "a")
    assert not blocked.prunable and "cumprod" in blocked.blocked
    assert len([r for r in caplog.records if "cumprod" in r.message]) == 1
    assert any("cumprod" in op for op in graph.unknown_ops)


class HardCodedSlice(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 1)
        self.c = nn.Conv2D(4, 2, 1)

    def forward(self, x):
        return self.c(self.a(x)[:, :4])


def test_hard_coded_channel_slice_is_not_pruned():
    graph = trace(HardCodedSlice(), [1, 3, 4, 4])
    group = next(g for g in graph.groups if g.name == "a")
    assert not group.prunable and "getitem" in group.blocked


def test_trace_changes_nothing_global():
    net = models.mobilenet_v1(scale=0.25, num_classes=10)
    net.train()
    net.conv1.eval()
    add = paddle.Tensor.__add__
    state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    trace(net, [1, 3, 32, 32])
    assert paddle.Tensor.__add__ is add and paddle.in_dynamic_mode()
    assert net.training and not net.conv1.training
    assert all(np.array_equal(state[k], v.numpy()) for k, v in net.state_dict().items())
    assert not net._forward_pre_hooks and not net.conv1[0]._forward_post_hooks


def test_rejected_input_shape_is_a_clear_error():
    net = models.mobilenet_v1(scale=0.25, num_classes=10)
    with pytest.raises(SlimError, match=r"input_shape \[1, 5, 32, 32\] was rejected"):
        trace(net, [1, 5, 32, 32])
    assert paddle.Tensor.__add__.__name__ == "__add__"  # interception undone


class Split(nn.Layer):
    def __init__(self, sections, axis):
        super().__init__()
        self.sections, self.axis = sections, axis
        self.a = nn.Conv2D(3, 8, 1)
        self.c = nn.Conv2D(8, 2, 1)

    def forward(self, x):
        parts = paddle.split(self.a(x), self.sections, axis=self.axis)
        return self.c(paddle.concat(parts[::-1], axis=self.axis))


def test_unequal_channel_split_to_literal_sections_blocks_instead_of_crashing():
    group = next(g for g in trace(Split([3, 5], 1), [1, 3, 4, 4]).groups if g.name == "a")
    assert not group.prunable and "literal sections [3, 5]" in group.blocked


class AttributeSplit(nn.Layer):
    """Unequal sections sized by layer attributes: each follows its own channels."""

    def __init__(self):
        super().__init__()
        self.first, self.rest = 3, 5
        self.a = nn.Conv2D(3, 8, 1)
        self.b, self.c = nn.Conv2D(3, 2, 1), nn.Conv2D(5, 2, 1)

    def forward(self, x):
        y, z = paddle.split(F.relu(self.a(x)), [self.first, self.rest], axis=1)
        return self.b(y) + self.c(z)


def test_unequal_split_sized_by_attributes_prunes_each_section_exactly():
    net = AttributeSplit()
    groups = trace(net, [1, 3, 4, 4]).groups
    a = next(g for g in groups if g.name == "a")
    assert a.prunable and {(s.layer, s.attr) for s in a.sizes} == {("", "first"), ("", "rest")}
    plan = assert_dead_channels_prune_exactly(net, [1, 3, 4, 4], 0.5)
    assert net.first + net.rest == net.a.weight.shape[0] == 4
    assert plan.attrs[("", "first")][0] == 3 and plan.attrs[("", "rest")][0] == 5


def test_unequal_spatial_split_leaves_channels_prunable():
    group = next(g for g in trace(Split([1, 3], 2), [1, 3, 4, 4]).groups if g.name == "a")
    assert group.prunable and group.num_units == 8


def test_equal_channel_split_couples_matching_positions():
    group = next(g for g in trace(Split(2, 1), [1, 3, 4, 4]).groups if g.name == "a")
    assert group.prunable and group.num_units == 4  # channel i pairs with channel i + 4
