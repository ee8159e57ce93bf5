"""Exported inference programs rebuilt as dygraph networks: every op family the
converters handle gives Paddle Inference's outputs, an unknown op is a clear error, and
a rebuilt network prunes like the Python network it was exported from."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import assert_dead_channels_prune_exactly, exported
from nets import Blocks

from slim_callbacks import SlimError, export, load_inference_model, prune
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.deploy.runtime import save_inference_model
from slim_callbacks.program import converters
from slim_callbacks.program.converters import CONVERTERS, register_converter
from slim_callbacks.program.network import ProgramNetwork

SHAPE = [1, 3, 16, 16]


class ConvFamilies(nn.Layer):
    """Plain, grouped, depthwise and transposed convs (with and without bias), BatchNorm,
    GroupNorm, PReLU, LayerNorm, Linear, pooling, split/concat and activations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.grouped = nn.Conv2D(8, 8, 3, padding=[1, 1, 0, 2], groups=2, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(8)
        self.depthwise = nn.Conv2D(8, 8, 3, stride=2, padding=1, groups=8)
        self.up = nn.Conv2DTranspose(8, 6, 2, stride=2)
        self.up_nobias = nn.Conv2DTranspose(6, 6, 3, padding=1, bias_attr=False)
        self.gn = nn.GroupNorm(2, 6)
        self.prelu = nn.PReLU(6)
        self.fc = nn.Linear(6, 5)
        self.ln = nn.LayerNorm(5)
        self.head = nn.Linear(5, 4, bias_attr=False)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = F.hardswish(self.bn2(self.grouped(x)))
        x = F.max_pool2d(F.relu6(self.depthwise(x)), 3, 1, 1) + F.avg_pool2d(x, 2)
        a, b = paddle.split(x, 2, axis=1)
        x = paddle.concat([F.sigmoid(a), b * 0.5], axis=1)
        x = self.prelu(self.gn(self.up_nobias(self.up(x))))
        x = paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        x = self.ln(self.fc(self.drop(x)))
        return F.softmax(self.head(F.silu(x)))


class OtherOps(nn.Layer):
    """Ops that run as one Paddle call: slicing, padding, resizing, reductions, shapes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 6, 3, padding=1)
        self.conv3d = nn.Conv3D(2, 4, 3, padding=1)
        self.bn3d = nn.BatchNorm3D(4)

    def forward(self, x):
        y = self.conv(x)
        a = F.pad(y[:, :3], [1, 1, 1, 1])[:, :, 1:-1, 1:-1]
        b = F.max_pool2d(F.interpolate(y[:, 3:], scale_factor=2, mode="bilinear"), 2)
        z = paddle.concat([F.gelu(a), F.leaky_relu(b, 0.1), paddle.tanh(a).clip(-0.5, 0.5)], axis=1)
        z = F.interpolate(z, size=[8, 8], mode="nearest").transpose([0, 2, 3, 1])
        v = F.relu(self.bn3d(self.conv3d(y[:, :4].reshape([-1, 2, 2, 16, 16]))))
        return z.sum(axis=[1, 2]).unsqueeze(1).squeeze(1) * v.mean(axis=[2, 3, 4]).max(axis=1, keepdim=True)


def test_other_ops_run_as_the_same_paddle_calls(tmp_path):
    net = OtherOps()
    rebuilt = load_inference_model(exported(net, SHAPE, tmp_path))
    assert sorted(type(layer).__name__ for layer in rebuilt.children()) == ["BatchNorm3D", "Conv2D", "Conv3D"]
    x = paddle.randn(SHAPE)
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)


class TokenFamilies(nn.Layer):
    """Embedding, a free parameter (position embedding), attention-like matmuls."""

    def __init__(self, vocab=10, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.pos = self.create_parameter([6, dim])
        self.ln = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, 3)

    def forward(self, ids):
        x = self.ln(self.embed(ids) + self.pos)
        q, k, v = paddle.split(self.qkv(x), 3, axis=-1)
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True) / 8 ** 0.5, axis=-1)
        return self.out(paddle.matmul(attn, v).mean(axis=1))


def test_conv_families_rebuild_as_layers_with_the_programs_outputs(tmp_path):
    net = ConvFamilies()
    prefix = exported(net, SHAPE, tmp_path)
    rebuilt = load_inference_model(prefix)  # verified against Paddle Inference on load
    assert isinstance(rebuilt, ProgramNetwork)
    kinds = sorted(type(layer).__name__ for layer in rebuilt.children())
    assert kinds == sorted(type(layer).__name__ for layer in net.children()
                           if not isinstance(layer, nn.Dropout))
    x = paddle.randn([3] + SHAPE[1:])  # a batch of 3: the program's batch was fixed at 1
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)
    convs = [layer for layer in rebuilt.children() if isinstance(layer, nn.Conv2D)]
    assert [c._groups for c in convs] == [1, 2, 8]
    assert [c.bias is not None for c in convs] == [True, False, True]


def test_token_families_rebuild_with_a_free_parameter(tmp_path):
    net = TokenFamilies()
    prefix = exported(net, [1, 6], tmp_path, dtype="int64")
    rebuilt = load_inference_model(prefix)
    assert [type(layer).__name__ for layer in rebuilt.children()] == \
        ["Embedding", "LayerNorm", "Linear", "Linear"]
    assert len(rebuilt.parameters(include_sublayers=False)) == 1   # the position embedding
    ids = paddle.to_tensor([[0, 3, 9, 1, 0, 2]], dtype="int64")
    np.testing.assert_allclose(rebuilt(ids).numpy(), net(ids).numpy(), atol=1e-5)


class Sinh(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3)

    def forward(self, x):
        return paddle.sinh(self.conv(x))


def test_an_unknown_op_names_itself_and_how_to_register_a_converter(tmp_path):
    net = Sinh()
    prefix = str(tmp_path / "model")
    save_inference_model(net, prefix, SHAPE)
    with pytest.raises(SlimError, match=r"no converter for pd_op\.sinh .*register_converter\("
                                        r"'pd_op\.sinh', 'c_ops'\)"):
        load_inference_model(prefix)
    register_converter("pd_op.sinh", "c_ops")
    try:
        rebuilt = load_inference_model(prefix)
    finally:
        del CONVERTERS["pd_op.sinh"]
    x = paddle.randn(SHAPE)
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)


def test_a_wrong_converter_is_caught_by_the_check_on_load(tmp_path):
    prefix = str(tmp_path / "model")
    save_inference_model(nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU()), prefix, SHAPE)
    register_converter("pd_op.relu", converters.unpack, replace=True)  # the identity
    try:
        with pytest.raises(SlimError, match="output 0 differs from Paddle Inference"):
            load_inference_model(prefix)
        assert isinstance(load_inference_model(prefix, verify=False), ProgramNetwork)
    finally:
        register_converter("pd_op.relu", "c_ops", replace=True)


@pytest.mark.parametrize("op, converter, replace, key", [
    ("relu", "c_ops", False, "op"), ("pd_op.relu", "c_ops", False, "op"),
    ("pd_op.no_such_op", "c_ops", False, "op"), ("pd_op.sinh", "fast", False, "converter"),
    ("pd_op.sinh", "c_ops", 1, "replace")])
def test_register_converter_refuses_bad_arguments(op, converter, replace, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        register_converter(op, converter, replace=replace)
    assert "pd_op.sinh" not in CONVERTERS


def test_missing_files_and_a_bad_input_shape_are_refused(tmp_path):
    with pytest.raises(SlimError, match="no inference model"):
        load_inference_model(tmp_path / "nothing")
    prefix = str(tmp_path / "model")
    save_inference_model(nn.Conv2D(3, 4, 3), prefix, SHAPE)
    with pytest.raises(ConfigError, match="input_shape"):
        load_inference_model(prefix, input_shape=[1, 3, 8])


def widths_by_weight(net):
    """Output widths keyed by the weight's parameter name (what the program keeps)."""
    return {layer.weight.name.rsplit(".", 1)[0]: layer.weight.shape[0 if "Conv" in type(layer).__name__ else 1]
            for layer in net.sublayers() if isinstance(layer, (nn.Conv2D, nn.Linear))}


def test_a_rebuilt_network_prunes_like_the_python_one_exactly_and_exports(tmp_path):
    net = Blocks()
    prefix = exported(net, SHAPE, tmp_path)
    rebuilt = load_inference_model(prefix)
    names = {id(layer): layer.weight.name.rsplit(".", 1)[0] for layer in net.sublayers()
             if isinstance(layer, (nn.Conv2D, nn.Linear))}
    prune(net, SHAPE, 0.3)
    python_widths = {names[id(layer)]: layer.weight.shape[0 if isinstance(layer, nn.Conv2D) else 1]
                     for layer in net.sublayers() if id(layer) in names}
    prune(rebuilt, SHAPE, 0.3)
    rebuilt_widths = {name: layer.weight.shape[0 if isinstance(layer, nn.Conv2D) else 1]
                      for name, layer in rebuilt.named_children()
                      if isinstance(layer, (nn.Conv2D, nn.Linear))}
    assert rebuilt_widths == python_widths
    assert rebuilt_widths[names[id(net.c1[0])]] < 10
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)  # same channels kept
    result = export(rebuilt, str(tmp_path / "pruned"), SHAPE)
    assert result.max_abs_diff["paddle"] < 1e-4


def test_dead_channels_of_a_rebuilt_network_prune_exactly(tmp_path):
    rebuilt = load_inference_model(exported(Blocks(), SHAPE, tmp_path))
    plan = assert_dead_channels_prune_exactly(rebuilt, SHAPE)
    assert len(plan)


class Shuffle(nn.Layer):
    """A ShuffleNet-like unit: split in halves by x.shape, a branch, concat, shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2D(4, 4, 1), nn.BatchNorm2D(4), nn.ReLU())
        self.head = nn.Conv2D(8, 6, 1)

    def forward(self, x):
        x = self.stem(x)
        a, b = paddle.split(x, [x.shape[1] // 2, x.shape[1] // 2], axis=1)
        x = paddle.concat([a, self.branch(b)], axis=1)
        n, c, h, w = x.shape
        x = x.reshape([n, 2, c // 2, h, w]).transpose([0, 2, 1, 3, 4]).reshape([n, c, h, w])
        return self.head(x).mean(axis=[2, 3])


@pytest.mark.parametrize("batch", [1, None], ids=["fixed batch", "dynamic batch"])
def test_a_channel_shuffle_written_as_numbers_prunes_like_the_python_code(tmp_path, batch):
    """Fixed shapes are numbers in the program; a dynamic batch is computed from
    ``shape64`` while the other sizes are still numbers."""
    net = Shuffle()
    rebuilt = load_inference_model(exported(net, [batch] + SHAPE[1:], tmp_path))
    names = {id(layer): layer.weight.name.rsplit(".", 1)[0] for layer in net.sublayers()
             if isinstance(layer, nn.Conv2D)}
    prune(net, SHAPE, 0.5)
    prune(rebuilt, SHAPE, 0.5)
    widths = {names[id(layer)]: layer.weight.shape[0] for layer in net.sublayers() if id(layer) in names}
    assert {name: layer.weight.shape[0] for name, layer in rebuilt.named_children()
            if isinstance(layer, nn.Conv2D)} == widths
    assert widths[names[id(net.stem[0])]] < 8   # the shuffled channels were pruned
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)
