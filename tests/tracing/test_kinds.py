"""One registry of layer kinds: register_layer / register_op, and the
engine parts that read it (tracing, surgery, MACs, widths)."""
import pathlib
import re

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import ROOT, assert_dead_channels_prune_exactly, momentum_losses, outputs

from slim_callbacks import ConfigError, SlimError, count_flops, prune, register_layer, register_op, trace
from slim_callbacks.analysis.flops import layer_widths
from slim_callbacks.tracing import kinds, op_rules

SHAPE = [1, 3, 8, 8]
EXTENDING = pathlib.Path(ROOT) / "docs" / "guides" / "extending.md"


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test starts with the built-in kinds and rules only, and leaves them so."""
    layers, ops = list(kinds._REGISTERED), dict(op_rules.REGISTERED_OPS)
    kinds._REGISTERED.clear()
    op_rules.REGISTERED_OPS.clear()
    yield
    kinds._REGISTERED[:] = layers
    op_rules.REGISTERED_OPS.clear()
    op_rules.REGISTERED_OPS.update(ops)


class ChannelScale(nn.Layer):
    """A learnable scale per channel, reshaped before use (so the tracer cannot adopt it)."""

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.scale = self.create_parameter([channels])

    def forward(self, x):
        return x * self.scale.reshape([1, self.channels, 1, 1])


class ScaledNet(nn.Layer):
    """conv-BN-scale-relu twice with a residual add through a scale, then sinh and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), ChannelScale(8))
        self.block = nn.Sequential(nn.Conv2D(8, 12, 1), nn.BatchNorm2D(12), ChannelScale(12), nn.ReLU(),
                                   nn.Conv2D(12, 8, 3, padding=1), nn.BatchNorm2D(8))
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = paddle.sinh(x + self.block(x))
        return self.fc(x.mean(axis=[2, 3]))


def scaled_net(seed=0):
    paddle.seed(seed)
    net = ScaledNet()
    rng = np.random.default_rng(seed)
    for layer in net.sublayers():
        if isinstance(layer, ChannelScale):
            layer.scale.set_value(rng.uniform(0.5, 1.5, layer.scale.shape).astype("float32"))
    return net


def register_scale():
    return register_layer(ChannelScale, params={"scale": 0},
                          attributes={"channels": lambda layer: layer.scale.shape[0]})


def blocked(net):
    return sorted(g.name for g in trace(net, SHAPE).groups if g.blocked)


def test_unregistered_layer_and_op_block_their_channels():
    assert blocked(scaled_net()) == ["block.0", "fc", "stem.0"]


def test_registered_layer_and_op_prune_exactly_and_keep_attributes_true():
    register_scale()
    net = scaled_net()
    assert blocked(net) == ["fc", "stem.0"]  # sinh still blocks the residual group
    register_op("sinh", "elementwise")
    assert blocked(net) == ["fc"]
    macs = count_flops(net, SHAPE)
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.5)
    assert count_flops(net, SHAPE) < macs
    for layer, width in ((net.stem[2], 4), (net.block[2], 6)):
        assert list(layer.scale.shape) == [width] and layer.channels == width


def test_pruned_custom_layer_trains_with_momentum():
    register_scale()
    register_op("sinh", "elementwise")
    net = scaled_net()
    prune(net, SHAPE, 0.5)
    losses = momentum_losses(net, SHAPE, lr=0.05)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_a_failed_prune_restores_a_registered_layers_attributes():
    """Surgery saves and restores a kind's attributes when verification fails."""
    register_layer(ChannelScale, params={"scale": 0},
                   attributes={"channels": lambda layer: layer.scale.shape[0] + 1000})

    class Refuses(ChannelScale):
        def forward(self, x):
            if self.channels > 1000:
                raise RuntimeError("wrong channels")
            return super().forward(x)

    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), Refuses(8), nn.Conv2D(8, 4, 1))
    with pytest.raises(SlimError, match="nothing was changed"):
        prune(net, SHAPE, 0.5)
    assert net[1].channels == 8 and list(net[1].scale.shape) == [8]
    assert list(net[0].weight.shape) == [8, 3, 3, 3]


def test_a_registered_kind_counts_its_macs_and_replaces_an_earlier_record():
    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), ChannelScale(8))
    conv, conv_legacy = count_flops(net, SHAPE), count_flops(net, SHAPE, "paddleslim_legacy")
    register_scale()
    assert count_flops(net, SHAPE) == conv  # no macs given: not counted
    kind = register_layer(ChannelScale, params={"scale": 0},
                          macs=lambda layer, inputs, output: int(np.prod(output.shape)))
    assert kinds.kind_of(net[1]) is kind and sum(k.layer_type is ChannelScale for k in kinds.kinds()) == 1
    assert count_flops(net, [2, 3, 8, 8]) == conv + 8 * 8 * 8  # per sample
    assert count_flops(net, SHAPE, convention="paddleslim_legacy") == conv_legacy + 2 * 8 * 8 * 8  # twice its macs


def test_a_registered_subclass_wins_over_the_built_in_kind():
    class MyConv(nn.Conv2D):
        pass

    assert kinds.kind_of(MyConv(3, 4, 1)).name == "conv"
    register_layer(MyConv, params={})
    assert kinds.kind_of(MyConv(3, 4, 1)).name == "MyConv"
    assert kinds.kind_of(nn.Conv2D(3, 4, 1)).name == "conv"


def test_conv1d_and_conv3d_are_counted_listed_and_pruned():
    """Every conv kind has MACs and a width (layer_widths listed Conv2D only)."""
    net = nn.Sequential(nn.Conv1D(3, 8, 3, padding=1), nn.BatchNorm1D(8), nn.ReLU(),
                        nn.Conv1D(8, 6, 3, padding=1))
    shape = [1, 3, 10]
    assert count_flops(net, shape) == 10 * 8 * 3 * 3 + 10 * 6 * 8 * 3
    assert layer_widths(net) == {"0": 8, "3": 6}
    paddle.seed(0)
    assert_dead_channels_prune_exactly(net, shape, ratio=0.5)
    assert layer_widths(net) == {"0": 4, "3": 6}
    assert count_flops(net, shape) == 10 * 4 * 3 * 3 + 10 * 6 * 4 * 3
    net3 = nn.Sequential(nn.Conv3D(2, 4, 1), nn.Conv3DTranspose(4, 6, 1))
    assert layer_widths(net3) == {"0": 4, "1": 6}
    assert count_flops(net3, [1, 2, 2, 2, 2]) == 8 * 4 * 2 + 8 * 4 * 6


@pytest.mark.parametrize("kwargs, key", [
    ({"layer_type": int}, "layer_type"),
    ({"params": {"scale": "0"}}, "params"),
    ({"params": {"scale": 0}, "trace": print}, "params"),
    ({"trace": 3}, "trace"),
    ({"channel_axis": "1"}, "channel_axis"),
    ({"attributes": {"channels": 3}}, "attributes"),
    ({"macs": 5}, "macs"),
])
def test_register_layer_names_the_bad_argument(kwargs, key):
    kwargs = {"layer_type": ChannelScale, **kwargs}
    with pytest.raises(ConfigError, match=f"^{key}:"):
        register_layer(kwargs.pop("layer_type"), **kwargs)
    assert kinds._REGISTERED == []


def test_register_op_names_the_bad_argument():
    with pytest.raises(ConfigError, match="^op: 'sinhh'"):
        register_op("sinhh", "elementwise")
    with pytest.raises(ConfigError, match="^rule: 'pointwise'"):
        register_op("sinh", "pointwise")
    with pytest.raises(ConfigError, match="^op: 'full'.*makes new data"):
        register_op("full", "elementwise")  # would never be called: outputs carry no channels
    assert op_rules.REGISTERED_OPS == {}


def test_extending_guide_example_runs(capsys):
    text = EXTENDING.read_text(encoding="utf-8")
    section = text.split("## Custom layers and ops", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "extending.md", "exec"), namespace)
    net = namespace["net"]
    assert capsys.readouterr().out.split() == ["8", "[8]", "0.5"]
    assert net[1].channels == 8 and list(net[0].weight.shape) == [8, 3, 3, 3]
    x = paddle.randn([2, 3, 32, 32])
    assert outputs(net, x).shape == (2, 8, 32, 32)


@pytest.mark.parametrize("register", [
    lambda **kw: register_layer(nn.Conv2D, params={}, **kw),
    lambda **kw: register_layer(nn.BatchNorm2D, params={"weight": 0}, **kw),
    lambda **kw: register_op("softmax", "elementwise", **kw),
    lambda **kw: register_op("add", "binary", **kw),
], ids=["Conv2D", "BatchNorm2D", "softmax", "add"])
def test_replacing_built_in_handling_needs_replace_true(register):
    with pytest.raises(ConfigError, match="pass replace=True to replace that for every network"):
        register()
    assert kinds._REGISTERED == [] and op_rules.REGISTERED_OPS == {}
    register(replace=True)   # said explicitly: allowed (the fixture restores the registry)
    assert kinds._REGISTERED or op_rules.REGISTERED_OPS


@pytest.mark.parametrize("kwargs, message", [
    ({"params": {"scal": 0}}, r"^register_layer\(ChannelScale\) params: 'scal' is not allowed; "
                              r"expected a parameter of layer '1' \(scale\)"),
    ({"params": {"scale": 1}}, r"^register_layer\(ChannelScale\) params\['scale'\]: 1 is not "
                               r"allowed; expected an axis of the 1-d parameter 1.scale"),
    ({"params": {"scale": 0}, "channel_axis": 4}, r"^register_layer\(ChannelScale\) "
                                                  r"channel_axis: 4 .*-4..3"),
], ids=["missing parameter", "axis out of range", "channel axis out of range"])
def test_a_registration_that_does_not_fit_the_layer_is_named_when_traced(kwargs, message):
    register_layer(ChannelScale, **kwargs)
    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), ChannelScale(8), nn.Conv2D(8, 4, 1))
    weights = [p.numpy().copy() for p in net.parameters()]
    with pytest.raises(ConfigError, match=message):
        prune(net, SHAPE, 0.5)
    assert all(np.array_equal(p.numpy(), w) for p, w in zip(net.parameters(), weights))


def failing_rule(tracer, op, func, args, kwargs, inputs, in_labels, outputs):
    raise IndexError("list index out of range")


def failing_layer_rule(tracer, name, layer, x, y):
    raise KeyError("channels")


@pytest.mark.parametrize("register, message", [
    (lambda: register_op("sinh", failing_rule),
     r"^the rule register_op\('sinh', failing_rule\) failed at .*\(IndexError: list index"),
    (lambda: register_layer(ChannelScale, trace=failing_layer_rule),
     r"^the rule register_layer\(ChannelScale\) failed at stem.2 \(KeyError: 'channels'\)"),
], ids=["op rule", "layer rule"])
def test_an_exception_in_a_registered_rule_is_reported_as_that_rule_failing(register, message):
    register()
    with pytest.raises(SlimError, match=message) as info:
        trace(scaled_net(), SHAPE)
    assert "rejected" not in str(info.value)
