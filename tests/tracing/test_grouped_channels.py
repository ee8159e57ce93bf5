"""Grouped convs with ``structure={"grouped_conv": "channels"}`` (every group loses the
same number of channels, each group its own) or ``"groups"`` (whole groups go,
``groups`` shrinks): dead channels or groups removed => identical
outputs, optimizer state (Momentum, Adam) sliced like the weights, plans replay and chain, export."""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import ConvBN, assert_dead_channels_prune_exactly, calibrate, momentum_losses, outputs, train_steps
from nets import RegNet, ResNeXt, ResNeXtBlock, ShuffleNet, grouped_convs

from slim_callbacks import count_flops, export, prune, trace
from slim_callbacks.callbacks.ledger import fingerprint, load_pruned, save_ledger
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import resolve_ratios
from slim_callbacks.engine.surgery import take

SHAPE = [1, 3, 16, 16]

CHANNELS, GROUPS = {"grouped_conv": "channels"}, {"grouped_conv": "groups"}


class RepVGGBlock(nn.Layer):
    """RepVGG-g style: grouped 3x3 + grouped 1x1 + identity BatchNorm, summed."""

    def __init__(self, c_in, c_out, groups, stride=1):
        super().__init__()
        self.k3 = nn.Sequential(nn.Conv2D(c_in, c_out, 3, stride, 1, groups=groups, bias_attr=False),
                                nn.BatchNorm2D(c_out))
        self.k1 = nn.Sequential(nn.Conv2D(c_in, c_out, 1, stride, groups=groups, bias_attr=False),
                                nn.BatchNorm2D(c_out))
        self.identity = nn.BatchNorm2D(c_in) if stride == 1 and c_in == c_out else None

    def forward(self, x):
        y = self.k3(x) + self.k1(x)
        return nn.functional.relu(y if self.identity is None else y + self.identity(x))


class RepVGG(nn.Layer):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = RepVGGBlock(3, 16, 1, 2)
        self.stage = nn.Sequential(RepVGGBlock(16, 24, 1, 2), RepVGGBlock(24, 24, 2), RepVGGBlock(24, 24, 1))
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc(self.stage(self.stem(x)).mean(axis=[2, 3]))


NETS = {"resnext": ResNeXt, "regnet": RegNet, "repvgg": RepVGG}
FALLING_BACK = {"shufflenet": ShuffleNet}  # its shuffles split channels otherwise: positions


def groups_of(net):
    return {n: layer._groups for n, layer in grouped_convs(net)}


def assert_attributes_match_weights(net):
    for name, layer in grouped_convs(net):
        c_out, per_group = layer.weight.shape[:2]
        assert layer._in_channels == per_group * layer._groups, name
        assert layer._out_channels == c_out and c_out % layer._groups == 0, name


@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
@pytest.mark.parametrize("name", list(NETS) + list(FALLING_BACK))
def test_dead_channels_or_groups_prune_exactly_and_the_net_trains(name, structure):
    paddle.seed(0)
    net = {**NETS, **FALLING_BACK}[name]()
    before = groups_of(net)
    macs = count_flops(net, SHAPE)
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.4, structure=structure)
    assert_attributes_match_weights(net)
    after = groups_of(net)
    if structure is CHANNELS or name in FALLING_BACK:
        assert after == before
    else:
        assert all(after.get(n, 1) <= before[n] for n in before) and after != before
    assert count_flops(net, SHAPE) < macs
    losses = momentum_losses(net, SHAPE)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def scored_net():
    """1x1 (8 channels) -> grouped 3x3 (groups 2) -> 1x1: the weakest input channels of
    the grouped conv are 0 and 1 in group 0 and 6 and 7 in group 1, not one position."""
    net = nn.Sequential(nn.Conv2D(3, 8, 1), nn.Conv2D(8, 8, 3, padding=1, groups=2), nn.Conv2D(8, 2, 1))
    scale = np.array([0.1, 0.2, 1, 1, 1, 1, 0.2, 0.1], dtype="float32")[:, None, None, None]
    net[0].weight.set_value(np.ones([8, 3, 1, 1], dtype="float32") * scale)
    return net


def test_channels_each_group_drops_its_own_weakest_and_cuts_columns_per_group():
    paddle.seed(0)
    net = scored_net()
    graph = trace(net, [1, 3, 4, 4], CHANNELS)
    plan = plan_pruning(net, graph, {"0": 0.5})
    assert plan.params[("0", "weight")].kept[0] == [2, 3, 4, 5]
    cut = plan.params[("1", "weight")]
    assert cut.blocks == {1: (0, [[2, 3], [0, 1]])} and cut.shape_after == [8, 2, 3, 3]
    # positions would take one position from both groups: 0 and 4, 1 and 5
    positions = plan_pruning(net, trace(net, [1, 3, 4, 4]), {"0": 0.5})
    assert positions.params[("0", "weight")].kept[0] == [1, 2, 5, 6]
    w = net[1].weight.numpy()
    plan.apply(net, input_shape=[1, 3, 4, 4])
    assert net[1]._groups == 2 and net[1]._in_channels == 4
    np.testing.assert_array_equal(net[1].weight.numpy(), np.concatenate([w[:4, 2:4], w[4:, 0:2]]))


def test_round_to_rounds_the_per_group_width_so_the_total_is_a_multiple():
    paddle.seed(0)
    net = nn.Sequential(nn.Conv2D(3, 32, 1), nn.Conv2D(32, 32, 3, padding=1, groups=4), nn.Conv2D(32, 2, 1))
    graph = trace(net, [1, 3, 4, 4], CHANNELS)
    plan = plan_pruning(net, graph, resolve_ratios(graph, 0.3), round_to=8)
    for width in (len(plan.params[("0", "weight")].kept[0]), plan.params[("1", "weight")].shape_after[0]):
        assert width % 8 == 0 and width < 32  # 4 groups of 6 channels: 24


def after_one_step(net, optimizer, shape=SHAPE):
    opt = optimizer(0.1, parameters=net.parameters())
    net.train()
    net(paddle.randn([2] + shape[1:])).mean().backward()
    opt.step()
    opt.clear_grad()
    return opt


@pytest.mark.parametrize("optimizer", [paddle.optimizer.Momentum, paddle.optimizer.Adam], ids=["momentum", "adam"])
@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
def test_optimizer_state_is_sliced_like_the_weights(structure, optimizer):
    paddle.seed(0)
    net = ResNeXt()
    opt = after_one_step(net, optimizer)
    kinds = [k for k in opt._accumulators if k in ("velocity", "moment1", "moment2")]
    saved = {(k, n): v.numpy().copy() for k in kinds for n, v in opt._accumulators[k].items()}
    names = {(n, a): p.name for n, layer in net.named_sublayers() for a, p in layer._parameters.items()
             if p is not None}
    plan = prune(net, SHAPE, 0.4, optimizer=opt, structure=structure)
    cut = plan.params[("blocks.2.grouped.0", "weight")]
    assert (1 in cut.blocks) == (structure is CHANNELS)
    checked = 0
    for key, c in plan.params.items():
        for kind in kinds:
            if (kind, names[key]) in saved:  # BatchNorm statistics have no state
                state = opt._accumulators[kind][names[key]].numpy()
                np.testing.assert_array_equal(state, take(saved[(kind, names[key])], c.surgery()))
                checked += 1
    assert checked >= len(kinds) * 3
    x, labels = paddle.randn([4] + SHAPE[1:]), paddle.arange(4)
    losses = train_steps(net, opt, x, labels, 3)  # the sliced state is used, not rebuilt
    assert np.isfinite(losses).all()


@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
def test_load_pruned_replays_the_plan_on_a_fresh_network(structure, tmp_path):
    paddle.seed(0)
    net = ResNeXt()
    fresh = ResNeXt()
    print_ = fingerprint(fresh)
    calibrate(net, SHAPE)
    plan = prune(net, SHAPE, 0.4, structure=structure)
    prefix = str(tmp_path / "final")
    paddle.save(net.state_dict(), prefix + ".pdparams")
    save_ledger(prefix, {"fingerprint": print_, "plan": plan.to_dict(), "history": [],
                         "cursor": {"epoch": 0}, "original_widths": {}, "input_shape": SHAPE})
    load_pruned(fresh, prefix)
    assert groups_of(fresh) == groups_of(net)
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(outputs(fresh, x), outputs(net, x), atol=1e-6)


@pytest.mark.parametrize("first,second", [(CHANNELS, CHANNELS), (GROUPS, CHANNELS), (CHANNELS, GROUPS)],
                         ids=["channels-channels", "groups-channels", "channels-groups"])
def test_two_prunes_chain_into_one_plan(first, second):
    paddle.seed(0)
    net, copy = ResNeXt(), ResNeXt()
    copy.set_state_dict(net.state_dict())
    calibrate(net, SHAPE)
    copy.set_state_dict(net.state_dict())
    plan = prune(net, SHAPE, 0.3, structure=first).then(prune(net, SHAPE, 0.3, structure=second))
    PruningPlan.from_dict(plan.to_dict()).apply(copy, input_shape=SHAPE)
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_array_equal(outputs(copy, x), outputs(net, x))
    assert groups_of(copy) == groups_of(net)


def test_a_pruned_channels_net_exports_with_the_same_outputs(tmp_path):
    paddle.seed(0)
    net = RegNet()
    calibrate(net, SHAPE)
    plan = prune(net, SHAPE, 0.4, structure=CHANNELS)
    assert any(cut.blocks for cut in plan.params.values())
    result = export(net, tmp_path / "m", SHAPE, formats=("paddle",))
    assert all(d <= 1e-4 for d in result.max_abs_diff.values()), result.max_abs_diff


class Dual(nn.Layer):
    """DPN-like: concat of two producers into a grouped conv (channels of two groups in
    each of its groups), and one channel set read by grouped convs of groups 2 and 4."""

    def __init__(self):
        super().__init__()
        self.a, self.b = ConvBN(3, 8, 1), ConvBN(3, 8, 1)
        self.g = ConvBN(16, 16, 3, groups=4)
        self.p = ConvBN(3, 16, 1)
        self.g2, self.g4 = ConvBN(16, 8, 3, groups=2), ConvBN(16, 8, 3, groups=4)
        self.head = nn.Conv2D(32, 4, 1)

    def forward(self, x):
        cat = self.g(paddle.concat([self.a(x), self.b(x)], axis=1))
        p = self.p(x)
        return self.head(paddle.concat([cat, self.g2(p), self.g4(p)], axis=1)).mean(axis=[2, 3])


@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
def test_where_the_choice_cannot_hold_it_falls_back_to_positions_with_a_log_line(structure, caplog):
    paddle.seed(0)
    with caplog.at_level(logging.INFO, logger="slim_callbacks.tracing.grouped"):
        graph = trace(Dual(), SHAPE, structure)
    text = caplog.text
    assert "grouped conv g.0 (groups=4): its" in text and "(a concat)" in text
    assert "p.0" in {g.name for g in graph.prunable_groups()}
    assert "g2.0 (groups=2)" in text or "g4.0 (groups=4)" in text
    assert graph.fallbacks and all(line in text for line in graph.fallbacks)
    paddle.seed(0)
    assert_dead_channels_prune_exactly(Dual(), SHAPE, ratio=0.5, structure=structure)


def test_the_shapes_that_can_hold_do_not_fall_back(caplog):
    with caplog.at_level(logging.INFO, logger="slim_callbacks.tracing.grouped"):
        for structure in (CHANNELS, GROUPS):
            for make in NETS.values():
                trace(make(), SHAPE, structure)
    assert "by positions" not in caplog.text
    assert trace(ResNeXt(), SHAPE, GROUPS).fallbacks == []


def test_whole_groups_make_one_unit_per_group_and_groups_follow():
    paddle.seed(0)
    net = nn.Sequential(ResNeXtBlock(8, 16, 8, groups=4))
    graph = trace(net, [1, 8, 8, 8], GROUPS)
    group = next(g for g in graph.groups if g.name == "0.reduce.0")
    assert group.num_units == 4 and [(s.layer, s.attr) for s in group.sizes] == [("0.grouped.0", "_groups")]
    plan = plan_pruning(net, graph, {"0.reduce.0": 0.5})
    assert plan.attrs == {("0.grouped.0", "_groups"): (4, 2)}
    plan.apply(net, input_shape=[1, 8, 8, 8])
    conv = net[0].grouped[0]
    assert (conv._groups, conv._in_channels, conv._out_channels) == (2, 8, 8)
    assert list(conv.weight.shape) == [8, 4, 3, 3]


def test_a_bad_grouped_conv_choice_names_the_key():
    with pytest.raises(ConfigError, match=r"structure\.grouped_conv: 'rows' .* 'positions', 'channels', 'groups'"):
        prune(ResNeXt(), SHAPE, 0.3, structure={"grouped_conv": "rows"})


class GroupedNet(nn.Layer):
    """A trainable ResNeXt-style block on the callback tests' 16x16 data."""

    def __init__(self, classes=4):
        super().__init__()
        self.stem = ConvBN(3, 16)
        self.block = ResNeXtBlock(16, 16, 16, groups=4)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean(axis=[2, 3]))


def test_prune_callback_prunes_whole_groups_inside_fit():
    from helpers import dataset

    from slim_callbacks import PruneCallback
    paddle.seed(0)
    net = GroupedNet()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    callback = PruneCallback(0.5, input_shape=SHAPE, structure=GROUPS)
    model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    conv = net.block.grouped[0]
    assert callback.structure.grouped_conv == "groups"
    assert conv._groups == 2 and list(conv.weight.shape) == [8, 4, 3, 3]


def test_the_recipe_key_reaches_the_callback():
    from helpers import BASE_RECIPE as BASE

    from slim_callbacks.app.builders import build_callbacks
    from slim_callbacks.app.job import Job
    from slim_callbacks.app.recipe import load_recipe
    recipe = load_recipe(BASE, overrides=["pruning.structure={grouped_conv: channels}",
                                          "logging.visualdl=false"])
    assert recipe.to_dict()["pruning"]["structure"] == {"grouped_conv": "channels"}
    assert build_callbacks(Job(recipe), 0.5)[-1].structure.grouped_conv == "channels"
    with pytest.raises(ConfigError, match=r"pruning\.structure\.grouped_conv: 'rows'"):
        load_recipe(BASE, overrides=["pruning.structure={grouped_conv: rows}"])


@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
def test_sensitivity_removers_match_the_planner_and_put_everything_back(structure):
    import copy

    from slim_callbacks.analysis.maskers import GroupMask, GroupPrune
    from slim_callbacks.engine.criteria import get_criterion
    from slim_callbacks.engine.planner import select_units
    paddle.seed(0)
    net = ResNeXt()
    calibrate(net, SHAPE)
    graph = trace(net, SHAPE, structure)
    layers = dict(net.named_sublayers())
    x = paddle.randn([2] + SHAPE[1:])
    original, state = outputs(net, x), {k: v.numpy().copy() for k, v in net.state_dict().items()}
    for group in (g for g in graph.prunable_groups() if g.segments is not None or g.sizes):
        units = select_units(group, get_criterion("l1_norm")(group, layers, graph.layer_types),
                             0.5, get_criterion("l1_norm"))
        pruned = copy.deepcopy(net)
        plan_pruning(net, graph, {group.name: 0.5}).apply(pruned, input_shape=SHAPE)
        with GroupPrune(group, layers).applied(units):
            np.testing.assert_allclose(outputs(net, x), outputs(pruned, x), atol=1e-6)
        with GroupMask(group, layers).applied(units):  # consumers no longer see the units
            np.testing.assert_allclose(outputs(net, x), outputs(pruned, x), atol=1e-5)
            assert not np.allclose(outputs(net, x), original)
    np.testing.assert_array_equal(outputs(net, x), original)
    assert groups_of(net) == groups_of(ResNeXt())
    assert all(np.array_equal(v.numpy(), state[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("structure", [CHANNELS, GROUPS], ids=["channels", "groups"])
def test_the_flops_model_predicts_the_pruned_count(structure):
    from slim_callbacks.analysis.flops_model import FlopsModel
    paddle.seed(0)
    net = RegNet()
    model = FlopsModel(net, SHAPE)
    graph = trace(net, SHAPE, structure)
    plan = plan_pruning(net, graph, resolve_ratios(graph, 0.5))
    predicted = model.count(plan)
    plan.apply(net)
    assert count_flops(net, SHAPE) == predicted < model.base


def test_a_grouped_conv_called_on_two_channel_sets_falls_back_to_positions():
    """(Such a conv is a limit in positions mode too: its input columns follow both
    channel sets, and where they disagree the pruned forward pass fails and the prune
    is rolled back.)"""
    class Twice(nn.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = ConvBN(3, 8, 1), ConvBN(3, 8, 1)
            self.g = ConvBN(8, 8, 3, groups=2)
            self.head = nn.Conv2D(16, 4, 1)

        def forward(self, x):
            return self.head(paddle.concat([self.g(self.a(x)), self.g(self.b(x))], axis=1)).mean(axis=[2, 3])

    for structure in (CHANNELS, GROUPS):
        paddle.seed(0)
        assert trace(Twice(), SHAPE, structure).fallbacks == [
            "grouped conv g.0 (groups=2) runs on different channels in different calls; pruned by positions"] * 2


@pytest.mark.parametrize("criterion", ["l1_norm", "l2_norm", "fpgm", "slim", "opt_slim"])
def test_every_criterion_takes_the_same_number_from_each_group(criterion):
    from slim_callbacks.engine.criteria import get_criterion
    from slim_callbacks.engine.planner import select_units
    paddle.seed(0)
    net = RegNet()
    calibrate(net, SHAPE)
    graph = trace(net, SHAPE, CHANNELS)
    layers = dict(net.named_sublayers())
    segmented = [g for g in graph.prunable_groups() if g.segments is not None]
    assert len(segmented) == 4  # in and out of both grouped convs
    for group in segmented:
        scores = get_criterion(criterion)(group, layers, graph.layer_types)
        gone = select_units(group, scores, 0.4, get_criterion(criterion))
        counts = np.bincount(group.segments[gone], minlength=group.segments.max() + 1)
        assert len(set(counts.tolist())) == 1 and counts[0] < np.sum(group.segments == 0), counts
    prune(net, SHAPE, 0.4, criterion, structure=CHANNELS)
    assert groups_of(net) == groups_of(RegNet())
    assert np.isfinite(outputs(net, paddle.randn([2] + SHAPE[1:]))).all()


def test_round_to_auto_of_a_recipe_probes_the_units_of_its_structure(monkeypatch):
    """The recipe's pruner (plan, run) traces with ``pruning.structure``, as the
    strategies do, so auto times the groups that will be pruned."""
    from helpers import BASE_RECIPE as BASE

    from slim_callbacks.app.builders import recipe_pruner
    from slim_callbacks.app.job import Job
    from slim_callbacks.app.recipe import load_recipe
    from slim_callbacks.latency import auto_round
    seen = []
    monkeypatch.setattr(auto_round, "auto_round_to",
                        lambda network, shape, **kw: seen.append(kw["graph"]) or
                        auto_round.RoundingChoice(8))
    recipe = load_recipe(BASE, overrides=["pruning.structure={grouped_conv: groups}",
                                          "pruning.round_to=auto", "logging.visualdl=false",
                                          "input_shape=[1, 3, 16, 16]"])
    net = GroupedNet()
    assert recipe_pruner(Job(recipe), net).round_to == 8
    expected = trace(net, list(recipe.input_shape), {"grouped_conv": "groups"})
    assert [g.name for g in seen[0].groups] == [g.name for g in expected.groups]
