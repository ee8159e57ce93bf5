"""slim_callbacks.paddleslim: PaddleSlim's dygraph pruning API, name by name."""
import logging
import pickle
import sys
import types

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import ConvBN, calibrate, outputs, same, snapshot

import slim_callbacks.paddleslim as paddleslim
from slim_callbacks import ConfigError, SlimError, prune
from slim_callbacks.paddleslim import (
    FilterPruner,
    FPGMFilterPruner,
    L1NormFilterPruner,
    L2NormFilterPruner,
    OptSlimFilterPruner,
    PruningMask,
    PruningPlan,
    SlimFilterPruner,
    Status,
    dygraph_flops,
    flops,
)

SHAPE = [1, 3, 16, 16]


def mobilenet():
    paddle.seed(0)
    return paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)


def pointwise_weights(net):
    return [layer._pointwise_conv[0].weight.name for name, layer in net.named_sublayers()
            if hasattr(layer, "_pointwise_conv")]


class Plain(nn.Layer):
    """conv -> relu -> conv -> pool -> fc, with biases: no BatchNorm in the way."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2D(3, 8, 3, padding=1), nn.Conv2D(8, 6, 3), nn.Linear(6, 4)

    def forward(self, x):
        x = self.c2(nn.functional.relu(self.c1(x)))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Residual(nn.Layer):
    """Two convs added: their output channels are one coupled group."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2D(3, 8, 3, padding=1), nn.Conv2D(3, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = nn.functional.relu(self.a(x) + self.b(x))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_every_name_is_exported_and_the_submodules_are_the_same_objects():
    for name in paddleslim.__all__:
        assert hasattr(paddleslim, name), name
    assert paddleslim.dygraph.L1NormFilterPruner is L1NormFilterPruner
    assert paddleslim.dygraph.Status is Status and paddleslim.dygraph.PruningPlan is PruningPlan
    assert paddleslim.analysis.flops is flops and paddleslim.analysis.dygraph_flops is dygraph_flops
    criteria = {cls.__name__: cls.criterion for cls in (L1NormFilterPruner, L2NormFilterPruner,
                                                        FPGMFilterPruner, SlimFilterPruner,
                                                        OptSlimFilterPruner)}
    assert criteria == {"L1NormFilterPruner": "l1_norm", "L2NormFilterPruner": "l2_norm",
                        "FPGMFilterPruner": "fpgm", "SlimFilterPruner": "slim",
                        "OptSlimFilterPruner": "opt_slim"}
    assert all(issubclass(paddleslim.dygraph.__dict__[n], FilterPruner) for n in criteria)


def test_the_constructor_takes_paddleslims_arguments_in_its_order(tmp_path):
    net = Plain()
    path = str(tmp_path / "sen.json")
    Status().save(path)
    opt = paddle.optimizer.Adam(parameters=net.parameters())
    pruner = L1NormFilterPruner(net, SHAPE, path, opt, True, "conv", -1, "float32")
    assert (pruner.opt, pruner.plan, pruner.sensitive()) == (opt, None, {})
    assert L1NormFilterPruner(net, SHAPE).input_shape == SHAPE
    for kwargs, key in (({"prune_type": "fc"}, "prune_type"), ({"num_head": 4}, "num_head"),
                        ({"input_dtype": "int3"}, r"inputs\[0\]\.dtype"),
                        ({"coupled_scoring": "max"}, "coupled_scoring")):
        with pytest.raises(ConfigError, match=f"^{key}: "):
            L1NormFilterPruner(net, SHAPE, **kwargs)
    with pytest.raises(ConfigError, match=r"^sen_file: .*the optimizer is the fourth argument, opt="):
        L1NormFilterPruner(net, SHAPE, opt)  # 0.1.0 took the optimizer third


def test_uniform_ratios_by_parameter_name_prune_the_pointwise_convs_of_mobilenet():
    net = mobilenet()
    names = pointwise_weights(net)
    before = flops(net, SHAPE)
    plan = L1NormFilterPruner(net, SHAPE).prune_vars({n: 0.5 for n in names}, axis=0)
    assert set(names) <= set(plan.masks)
    assert all(int(m.mask.sum()) == len(m.mask) // 2 for n in names for m in plan.masks[n])
    assert net.conv2_2._depthwise_conv[0]._groups == net.conv2_1._pointwise_conv[0].weight.shape[0]
    assert flops(net, SHAPE) < 0.5 * before
    assert outputs(net, paddle.randn(SHAPE)).shape == (1, 10)


def test_prune_vars_traces_the_model_once(monkeypatch):
    """The parameter check and the pruner that plans share one trace."""
    from helpers import counting_traces
    net = mobilenet()
    pruner = L1NormFilterPruner(net, SHAPE)
    made = counting_traces(monkeypatch)
    plan = pruner.prune_vars({n: 0.5 for n in pointwise_weights(net)}, axis=0, apply=None)
    assert len(made) == 1 and len(plan.masks) > 0


def test_a_depthwise_weight_in_ratios_is_skipped_with_a_reason(caplog):
    net = mobilenet()
    depthwise = net.conv2_1._depthwise_conv[0].weight.name
    with caplog.at_level(logging.INFO, logger="slim_callbacks.paddleslim"):
        plan = L1NormFilterPruner(net, SHAPE).prune_vars({depthwise: 0.5}, 0)
    assert len(plan) == 0 and "follow the conv feeding it" in caplog.text
    with pytest.raises(ConfigError, match="depthwise conv, whose channels follow its input; prune "
                                          r"the conv feeding it \(conv1.0\)"):
        prune(net, SHAPE, {depthwise: 0.5})


def dead_plain(dead=(1, 4, 6)):
    """Plain whose c1 channels ``dead`` output zero (weights and biases 0)."""
    paddle.seed(1)
    net = Plain()
    w, b = net.c1.weight.numpy(), net.c1.bias.numpy()
    w[list(dead)], b[list(dead)] = 0, 0
    net.c1.weight.set_value(w)
    net.c1.bias.set_value(b)
    return net


@pytest.mark.parametrize("cls", [L1NormFilterPruner, L2NormFilterPruner])
@pytest.mark.parametrize("apply", ["impretive", "lazy"])
def test_pruning_dead_channels_leaves_the_outputs_exactly(cls, apply):
    net, x = dead_plain((1, 4, 6)), paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    plan = cls(net, SHAPE).prune_vars({net.c1.weight.name: 3 / 8}, 0, apply=apply)
    assert np.flatnonzero(plan.masks[net.c1.weight.name][0].mask).tolist() == [0, 2, 3, 5, 7]
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-6)
    width = 8 if apply == "lazy" else 5
    assert net.c1.weight.shape[0] == width and net.c2.weight.shape[1] == width


def test_lazy_masks_zero_every_member_and_none_only_plans():
    net = Plain()
    start = snapshot(net)
    pruner = L1NormFilterPruner(net, SHAPE)
    plan = pruner.prune_vars({net.c1.weight.name: 0.5}, 0, apply=None)
    assert same(snapshot(net), start) and pruner.plan is plan
    gone = np.flatnonzero(plan.masks[net.c1.weight.name][0].mask == 0)
    assert [m.dims for m in plan.masks[net.c2.weight.name]] == [1]
    pruner.prune_vars({net.c1.weight.name: 0.5}, 0, apply="lazy")
    assert list(net.c1.weight.shape) == [8, 3, 3, 3]
    assert not net.c1.weight.numpy()[gone].any() and not net.c1.bias.numpy()[gone].any()
    assert not net.c2.weight.numpy()[:, gone].any()
    pruner.restore()
    assert same(snapshot(net), start)
    with pytest.raises(ConfigError, match="^apply: 'eager'"):
        pruner.prune_vars({net.c1.weight.name: 0.5}, 0, apply="eager")
    with pytest.raises(ConfigError, match="^axis: 1"):
        pruner.prune_vars({net.c1.weight.name: 0.5}, [1])


def test_restore_puts_back_parameters_and_optimizer_state_bit_for_bit():
    net, x = Plain(), paddle.randn([4] + SHAPE[1:])
    opt = paddle.optimizer.Adam(0.01, parameters=net.parameters())
    net(x).mean().backward()
    opt.step()
    opt.clear_grad()
    start = snapshot(net, opt)
    pruner = FPGMFilterPruner(net, SHAPE, opt=opt)
    pruner.prune_vars({net.c1.weight.name: 0.5}, 0)
    pruner.prune_var(net.c2.weight.name, 0, 0.5)
    assert net.c2.weight.shape[:2] == [3, 4]
    net(x).mean().backward()  # the optimizer follows the pruned shapes
    opt.step()
    opt.clear_grad()
    pruner.restore()
    assert same(snapshot(net, opt), start)


def test_a_plan_applies_and_restores_by_itself_and_masks_merge():
    net = Plain()
    start = snapshot(net)
    plan = L2NormFilterPruner(net, SHAPE).prune_var(net.c1.weight.name, 0, 0.25, apply=None)
    assert plan.contains(net.c1.weight.name, 0) and not plan.contains(net.c1.weight.name, 1)
    mine = PruningPlan("mine")
    mine.extend(plan)
    mine.add(net.c1.weight.name, PruningMask(0, np.array([0] + [1] * 7), 0.125))
    mine.add(net.c1.bias.name, PruningMask(0, np.array([0] + [1] * 7), 0.125))
    mine.add(net.c2.weight.name, PruningMask(1, np.array([0] + [1] * 7), 0.125))
    kept = int(mine.masks[net.c1.weight.name][0].mask.sum())
    mine.apply(net)
    assert net.c1.weight.shape[0] == kept == net.c2.weight.shape[1]
    assert "pruned FLOPs" in str(mine)
    mine.restore(net)
    assert same(snapshot(net), start)


def test_coupled_channels_are_ranked_by_the_named_parameter_or_summed():
    paddle.seed(0)
    net = Residual()
    rows = np.arange(8, dtype="float32")[:, None, None, None]
    wa = np.zeros([8, 3, 3, 3], "float32") + 0.1 * rows       # a: rising
    wb = np.zeros([8, 3, 1, 1], "float32") + 100 - 10 * rows  # b: falling, and larger
    net.a.weight.set_value(wa)
    net.b.weight.set_value(wb)

    def kept(scoring):
        plan = L1NormFilterPruner(net, SHAPE, coupled_scoring=scoring).prune_vars(
            {net.a.weight.name: 0.5}, 0, apply=None)
        return np.flatnonzero(plan.masks[net.b.weight.name][0].mask).tolist()

    assert kept("named") == [4, 5, 6, 7]  # a's L1 alone: the largest rows of a
    summed = np.abs(wa).sum((1, 2, 3)) + np.abs(wb).sum((1, 2, 3))
    assert kept("sum") == sorted(np.argsort(summed)[4:].tolist())
    assert kept("sum") != kept("named")


def test_status_is_json_and_a_paddleslim_pickle_needs_the_opt_in(tmp_path):
    status = Status()
    status.sensitivies["w"] = {0.1: 0.5}
    path = str(tmp_path / "sen.pickle")
    status.save(path)
    assert open(path).read().lstrip().startswith("{")
    assert Status(path).sensitivities == {"w": {0.1: 0.5}}

    names = ["paddleslim", "paddleslim.dygraph", "paddleslim.dygraph.prune",
             "paddleslim.dygraph.prune.filter_pruner"]  # what PaddleSlim's pickle names
    modules = {name: types.ModuleType(name) for name in names}
    legacy = type("Status", (), {"__module__": names[-1]})
    modules[names[-1]].Status = legacy
    sys.modules.update(modules)
    try:
        old = legacy()
        old.sensitivies, old.accumulates, old.is_ckp = {"conv2d_0.w_0": {np.float64(0.2): 0.3}}, {}, True
        data = pickle.dumps(old)
    finally:
        for name in names:
            del sys.modules[name]
    pickled = tmp_path / "paddleslim.pickle"
    pickled.write_bytes(data)
    with pytest.raises(SlimError, match="is a pickle .* allow_pickle=True"):
        Status(str(pickled))
    with pytest.raises(SlimError, match="allow_pickle"):
        L1NormFilterPruner(Plain(), SHAPE, sen_file=str(pickled))
    assert Status(str(pickled), allow_pickle=True).sensitivies == {"conv2d_0.w_0": {0.2: 0.3}}
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SlimError, match="not a sensitivity file"):
        Status(str(bad))


def test_flops_counts_as_paddleslim_does():
    net = nn.Sequential(ConvBN(3, 8), nn.Conv2D(8, 8, 3, padding=1, groups=8), nn.ReLU6(),
                        nn.AvgPool2D(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    shape = [2, 3, 8, 8]
    conv = 8 * 8 * 8 * 3 * 3 * 3
    depthwise = 8 * 8 * 8 * 3 * 3 * 1
    linear = 2 * 128 * 5  # PaddleSlim counts the batch of a matmul, not of a conv
    assert flops(net, shape) == conv + depthwise + linear
    elementwise = 2 * (2 * 8 * 8 * 8) + 2 * 8 * 8 * 8 + 2 * 8 * 8 * 8  # BN, ReLU, ReLU6
    pool = 2 * (8 * 4 * 4) * 2 ** 2
    assert flops(net, shape, only_conv=False) == conv + depthwise + linear + elementwise + pool
    assert dygraph_flops(net, shape) == flops(net, shape, only_conv=False)
    total, detail = flops(net, shape, detail=True)
    assert detail == {net[0][0].weight.name: conv, net[1].weight.name: depthwise,
                      net[5].weight.name: linear} and total == sum(detail.values())
    assert flops(net, paddle.zeros(shape)) == flops(net, [shape]) == flops(net, shape, dtypes="float32")
    with pytest.raises(SlimError, match="static Program"):
        flops(paddle.static.Program(), shape)


def test_flops_of_mobilenet_v1_equal_paddleslims_numbers():
    """PaddleSlim 2.6's counts of MobileNetV1 at 224x224 (shared/reference/paddleslim.md)."""
    net = paddle.vision.models.mobilenet_v1()
    assert flops(net, [1, 3, 224, 224]) == 568_740_352
    assert flops(net, [1, 3, 224, 224], only_conv=False) == 583_870_464


class Two(nn.Layer):
    """An image and token ids: two inputs of two dtypes."""

    def __init__(self):
        super().__init__()
        self.conv, self.head, self.emb = nn.Conv2D(3, 8, 1), nn.Conv2D(8, 4, 1), nn.Embedding(10, 4)

    def forward(self, x, ids):
        return self.head(nn.functional.relu(self.conv(x))).mean((2, 3)) + self.emb(ids).mean(1)


def test_flops_takes_several_inputs_with_dtypes():
    shapes = [[1, 3, 4, 4], [1, 2]]
    assert flops(Two(), shapes, dtypes=["float32", "int64"]) == 4 * 4 * (8 * 3 + 4 * 8)
    with pytest.raises(ConfigError, match="^dtypes: "):
        flops(Two(), shapes, dtypes=["float32"])


def test_a_pruner_takes_several_input_shapes_with_their_dtypes():
    net = Two()
    pruner = L2NormFilterPruner(net, [[1, 3, 4, 4], [1, 2]], input_dtype=["float32", "int64"])
    assert pruner.input_shape is None
    pruner.prune_vars({net.conv.weight.name: 0.5}, 0)
    assert net.conv.weight.shape[0] == net.head.weight.shape[1] == 4
    pruner.restore()
    tensors = [paddle.zeros([1, 3, 4, 4]), paddle.zeros([1, 2], dtype="int64")]
    L1NormFilterPruner(net, tensors).prune_vars({net.conv.weight.name: 0.25}, 0)
    assert net.conv.weight.shape[0] == 6


def test_paddleslims_static_pruner_points_to_the_supported_paths():
    with pytest.raises(SlimError, match="static Program.*L1NormFilterPruner.*to_static"):
        paddleslim.prune.Pruner(criterion="l1_norm")


def test_slim_pruners_rank_by_batchnorm_scales():
    net = nn.Sequential(ConvBN(3, 8), ConvBN(8, 4), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
                        nn.Linear(4, 2))
    calibrate(net, SHAPE)
    net[0][1].weight.set_value(np.arange(1, 9, dtype="float32"))
    plan = SlimFilterPruner(net, SHAPE).prune_vars({net[0][0].weight.name: 0.25}, 0, apply=None)
    assert np.flatnonzero(plan.masks[net[0][0].weight.name][0].mask).tolist() == [2, 3, 4, 5, 6, 7]
    plan = OptSlimFilterPruner(net, SHAPE).prune_vars({net[0][0].weight.name: 0.01}, 0, apply=None)
    assert int(plan.masks[net[0][0].weight.name][0].mask.sum()) == 7  # 1^2 / 204 < 1% of the mass


def test_uniform_fpgm_on_mobilenet_keeps_what_the_native_fpgm_keeps():
    net, native = mobilenet(), mobilenet()
    native.set_state_dict(net.state_dict())
    before = flops(net, SHAPE)
    plan = FPGMFilterPruner(net, SHAPE).prune_vars({n: 0.3125 for n in pointwise_weights(net)}, 0)
    prune(native, SHAPE, {"conv*._pointwise_conv*": 0.3125}, criterion="fpgm")
    assert len(plan.masks) > 13
    for a, b in zip(net.parameters(), native.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert flops(net, SHAPE) == flops(native, SHAPE) < 0.6 * before
