"""prune(), the PaddleSlim-compatible pruners, PruningPlan and optimizer state."""
import json

import numpy as np
import paddle
import paddle.nn as nn
import paddle.vision.models as models
import pytest
from helpers import Seed, calibrate, outputs, same, snapshot, train_steps

from slim_callbacks import ConfigError, PruningPlan, SlimError, prune
from slim_callbacks.paddleslim import (
    FPGMFilterPruner,
    L1NormFilterPruner,
    L2NormFilterPruner,
    OptSlimFilterPruner,
    SlimFilterPruner,
)

SHAPE = [1, 3, 32, 32]


def tiny_mobilenet():
    paddle.seed(0)
    return models.mobilenet_v1(scale=0.25, num_classes=10)


def test_seed_snippet_runs_as_written():
    with paddle.utils.unique_name.guard():
        net = Seed()
    assert net.conv[0].weight.name == "conv2d_0.w_0"
    pruner = L1NormFilterPruner(net, [1, 3, 128, 128])
    pruner.prune_vars({"conv2d_0.w_0": 0.3})
    assert net.conv[0]._out_channels == 8 - round(8 * 0.3)
    assert list(net.head.weight.shape) == [6, 4]


@pytest.mark.parametrize("cls", [L1NormFilterPruner, L2NormFilterPruner, FPGMFilterPruner,
                                 SlimFilterPruner, OptSlimFilterPruner])
def test_every_seed_pruner_shrinks_and_still_runs(cls):
    net = tiny_mobilenet()
    calibrate(net, SHAPE)
    rng = np.random.default_rng(0)
    for layer in net.sublayers():
        if isinstance(layer, nn.BatchNorm2D):  # trained-looking scales, not all 1.0
            layer.weight.set_value(rng.uniform(0.01, 1, layer.weight.shape).astype("float32"))
    plan = cls(net, SHAPE).prune_vars({"conv2_1._pointwise_conv*": 0.5}).engine_plan
    assert plan.groups and plan.groups[0]["after"] < plan.groups[0]["before"]
    assert net.conv2_2._depthwise_conv[0]._groups == plan.groups[0]["after"]
    assert outputs(net, paddle.randn(SHAPE)).shape == (1, 10)


def test_structural_patterns_and_layer_attributes_follow():
    net = tiny_mobilenet()
    plan = prune(net, SHAPE, {"conv2_*._pointwise_conv": 0.5, "conv3_1": 0.25})
    widths = plan.layer_widths()
    assert widths["conv2_1._pointwise_conv.0"] == (16, 8)
    assert widths["conv3_1._pointwise_conv.0"] == (32, 24)
    dw = net.conv2_2._depthwise_conv[0]
    assert (dw._in_channels, dw._out_channels, dw._groups) == (8, 8, 8)
    assert net.conv2_2._depthwise_conv[1]._num_features == 8
    pointwise = net.conv2_2._pointwise_conv[0]
    assert pointwise._in_channels == 8 and list(pointwise.weight.shape)[1] == 8


def test_first_matching_pattern_wins():
    net = tiny_mobilenet()
    plan = prune(net, SHAPE, {"conv2_1*": 0.5, "conv*": 0.25})
    widths = plan.layer_widths()
    assert widths["conv2_1._pointwise_conv.0"] == (16, 8)
    assert widths["conv2_2._pointwise_conv.0"] == (32, 24)


def test_round_to_keeps_multiples():
    net = tiny_mobilenet()
    plan = prune(net, SHAPE, 0.3, round_to=4)
    assert all(g["after"] % 4 == 0 for g in plan.groups)


def test_skip_leaves_groups_whole():
    net = tiny_mobilenet()
    plan = prune(net, SHAPE, 0.5, skip=["conv1", "conv6"])
    names = {g["name"] for g in plan.groups}
    assert "conv1.0" not in names and "conv6._pointwise_conv.0" not in names and len(names) == 12


def test_state_dict_holds_only_the_small_tensors():
    net = tiny_mobilenet()
    keys = set(net.state_dict())
    before = sum(int(np.prod(v.shape)) for v in net.state_dict().values())
    prune(net, SHAPE, 0.5)
    after = sum(int(np.prod(v.shape)) for v in net.state_dict().values())
    assert set(net.state_dict()) == keys  # no backup buffers
    assert after < 0.4 * before


@pytest.mark.parametrize("bad, message", [
    (1.0, r"ratios: 1.0 is not allowed; expected a number in \[0, 1\)"),
    (-0.1, r"ratios: -0.1 is not allowed"),
    ("half", r"ratios: 'half' is not allowed"),
    ({"nope*": 0.3}, r"ratios pattern: 'nope\*' is not allowed; expected a pattern matching"),
    ({"conv1": 1.5}, r"ratios\['conv1'\]: 1.5 is not allowed"),
])
def test_bad_ratios_raise_before_anything_changes(bad, message):
    net = tiny_mobilenet()
    opt = paddle.optimizer.Momentum(0.1, parameters=net.parameters())
    net(paddle.randn(SHAPE)).mean().backward()
    opt.step()
    before = snapshot(net, opt)
    with pytest.raises(ConfigError, match=message):
        prune(net, SHAPE, bad, optimizer=opt)
    assert same(before, snapshot(net, opt))


def test_unknown_criterion_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"criterion: 'l3_norm' is not allowed; expected one of "
                                          r"l1_norm, l2_norm, fpgm, geometry_median, slim, "
                                          r"bn_scale, opt_slim, taylor$"):
        prune(tiny_mobilenet(), SHAPE, 0.3, criterion="l3_norm")


def test_bad_round_to_skip_and_axis():
    net = tiny_mobilenet()
    with pytest.raises(ConfigError, match=r"round_to: 0 is not allowed; expected an int >= 1 or 'auto'"):
        prune(net, SHAPE, 0.3, round_to=0)
    with pytest.raises(ConfigError, match=r"skip pattern: 'zzz' is not allowed"):
        prune(net, SHAPE, 0.3, skip=["zzz"])
    with pytest.raises(ConfigError, match=r"axis: 1 is not allowed"):
        L1NormFilterPruner(net, SHAPE).prune_vars({"conv1": 0.3}, axis=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": "abc"}, r"^input_shape: 'abc' is not allowed; expected a list of positive "
                             r"ints, batch first, e\.g\. \[1, 3, 224, 224\]$"),
    ({"input_shape": [1, 3, 0, 32]}, r"^input_shape: \[1, 3, 0, 32\] is not allowed"),
    ({"optimizer": "adam"}, r"^optimizer: 'adam' is not allowed; expected None or the "
                            r"paddle\.optimizer\.Optimizer training the network"),
    ({"skip": 5}, r"^skip: 5 is not allowed; expected a list of layer name patterns"),
    ({"network": None}, r"^network: None is not allowed; expected a paddle\.nn\.Layer"),
])
def test_bad_prune_arguments_are_one_line_errors_before_any_change(kwargs, message):
    """These were tracebacks (input_shape, network, skip) or silently ignored (optimizer)."""
    net = tiny_mobilenet()
    before = snapshot(net)
    args = {"network": net, "input_shape": SHAPE, "ratios": 0.3, **kwargs}
    with pytest.raises(ConfigError, match=message):
        prune(**args)
    assert same(before, snapshot(net))


def test_rejected_input_shape_changes_nothing():
    net = tiny_mobilenet()
    before = snapshot(net)
    with pytest.raises(SlimError, match="rejected"):
        prune(net, [1, 4, 32, 32], 0.3)
    assert same(before, snapshot(net))


def test_plan_round_trips_through_json_and_replays_on_a_fresh_network(tmp_path):
    net = tiny_mobilenet()
    calibrate(net, SHAPE)
    original = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    plan = prune(net, SHAPE, 0.4, criterion="fpgm")
    path = tmp_path / "plan.json"
    plan.save(str(path))
    json.loads(path.read_text())  # plain JSON
    fresh = tiny_mobilenet()
    fresh.set_state_dict(original)
    PruningPlan.load(str(path)).apply(fresh, input_shape=SHAPE)
    x = paddle.randn([2, 3, 32, 32])
    np.testing.assert_allclose(outputs(fresh, x), outputs(net, x), atol=1e-6)


def test_plan_applied_to_the_wrong_network_is_refused():
    plan = prune(tiny_mobilenet(), SHAPE, 0.4)
    already_pruned = tiny_mobilenet()
    plan.apply(already_pruned)
    with pytest.raises(SlimError, match="plan expects .* of shape"):
        plan.apply(already_pruned)


def test_two_plans_chain_into_one():
    net = tiny_mobilenet()
    calibrate(net, SHAPE)
    original = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    first = prune(net, SHAPE, 0.25)
    second = prune(net, SHAPE, 0.25)
    fresh = tiny_mobilenet()
    fresh.set_state_dict(original)
    first.then(second).apply(fresh)
    x = paddle.randn([1, 3, 32, 32])
    np.testing.assert_allclose(outputs(fresh, x), outputs(net, x), atol=1e-6)


@pytest.mark.parametrize("make_opt", [
    lambda p: paddle.optimizer.Momentum(0.05, momentum=0.9, parameters=p),
    lambda p: paddle.optimizer.Adam(0.005, parameters=p),
    lambda p: paddle.optimizer.AdamW(0.005, parameters=p),
], ids=["momentum", "adam", "adamw"])
def test_training_keeps_learning_after_a_mid_training_prune(make_opt):
    net = tiny_mobilenet()
    opt = make_opt(net.parameters())
    paddle.seed(1)
    x, y = paddle.randn([16, 3, 32, 32]), paddle.randint(0, 10, [16])
    first = train_steps(net, opt, x, y, 8)
    prune(net, SHAPE, 0.5, optimizer=opt)
    pw = net.conv3_1._pointwise_conv[0].weight
    for per_param in opt._accumulators.values():
        state = per_param.get(pw.name)
        if state is not None and state.ndim == 4:
            assert list(state.shape) == list(pw.shape)  # sliced with the weights
    before = pw.numpy().copy()
    later = train_steps(net, opt, x, y, 12)
    assert later[-1] < later[0] and later[-1] < first[0]
    assert not np.allclose(before, pw.numpy())  # the optimizer still updates the pruned layer


def test_momentum_velocity_is_sliced_with_the_kept_indices():
    net = nn.Sequential(nn.Conv2D(3, 4, 1), nn.Conv2D(4, 2, 1))
    opt = paddle.optimizer.Momentum(0.1, parameters=net.parameters())
    net(paddle.randn([1, 3, 2, 2])).mean().backward()
    opt.step()
    w = net[0].weight
    velocity = opt._accumulators["velocity"][w.name].numpy().copy()
    plan = prune(net, [1, 3, 2, 2], 0.5, optimizer=opt)
    kept = plan.params[("0", "weight")].kept[0]
    np.testing.assert_array_equal(opt._accumulators["velocity"][w.name].numpy(), velocity[kept])


def test_jit_save_of_a_pruned_network_is_small(tmp_path):
    net = tiny_mobilenet()
    full = tmp_path / "full"
    paddle.jit.save(net, str(full), input_spec=[paddle.static.InputSpec(SHAPE, "float32")])
    prune(net, SHAPE, 0.5)
    small = tmp_path / "small"
    paddle.jit.save(net, str(small), input_spec=[paddle.static.InputSpec(SHAPE, "float32")])
    size = lambda p: (p.parent / (p.name + ".pdiparams")).stat().st_size
    assert size(small) < 0.4 * size(full)
    loaded = paddle.jit.load(str(small))
    assert loaded(paddle.randn(SHAPE)).shape == [1, 10]


def test_master_weights_are_sliced_like_their_parameter():
    """multi_precision keeps float32 master copies; CPU has no float16 kernels, so the
    copy is put in place by hand where Paddle would keep it (opt._master_weights)."""
    net = nn.Sequential(nn.Conv2D(3, 4, 1), nn.Conv2D(4, 2, 1))
    opt = paddle.optimizer.Momentum(0.1, parameters=net.parameters(), multi_precision=True)
    w = net[0].weight
    master = np.arange(12, dtype="float32").reshape(4, 3, 1, 1)
    opt._master_weights[w.name] = paddle.to_tensor(master)
    plan = prune(net, [1, 3, 2, 2], 0.5, optimizer=opt)
    kept = plan.params[("0", "weight")].kept[0]
    np.testing.assert_array_equal(opt._master_weights[w.name].numpy(), master[kept])


def test_summary_and_print_show_the_pruned_network(capsys):
    from slim_callbacks.analysis.flops import count_params
    net = tiny_mobilenet()
    prune(net, SHAPE, {"conv2_1._pointwise_conv": 0.5})
    info = paddle.summary(net, tuple(SHAPE))
    assert int(info["total_params"]) == count_params(net)
    assert str(net.conv2_2._depthwise_conv[0]).startswith("Conv2D(8, 8, kernel_size=[3, 3]")
    assert "groups=8" in str(net.conv2_2._depthwise_conv[0])
