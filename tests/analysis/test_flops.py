"""Tests of slim_callbacks.analysis.flops: exact MobileNetV1 numbers, conventions, hygiene, errors."""
import doctest

import paddle
import paddle.nn as nn
import pytest

from slim_callbacks.analysis import flops as flops_module
from slim_callbacks.analysis.flops import count_flops, count_params, layer_widths, model_size_mb, profile
from slim_callbacks.core.errors import ConfigError, SlimError

SHAPE_224 = [1, 3, 224, 224]

# MobileNetV1 (scale 1.0, 1000 classes) at 224: pointwise widths and their strides.
MOBILENET_WIDTHS = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
MOBILENET_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
MOBILENET_MACS = 568_740_352  # conv 567,716,352 + FC 1,024,000
MOBILENET_LEGACY = 1_113_234_132  # PaddleSlim's "1.11 GFLOPs"
MOBILENET_PARAMS = 4_253_864

# The seed row: every pointwise conv keeps c - round(c * 0.3125) channels.
PRUNED_WIDTHS = [c - round(c * 0.3125) for c in MOBILENET_WIDTHS]
PRUNED_MACS = 285_137_632
PRUNED_PARAMS = 2_251_204
PRUNED_LEGACY = 551_971_412  # 0.552 G, -50.4 %


def conv_bn_relu(c_in, c_out, kernel, stride, groups=1):
    """paddle.vision.ops.ConvNormActivation: a bias-free conv, BN, ReLU."""
    return nn.Sequential(
        nn.Conv2D(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias_attr=False),
        nn.BatchNorm2D(c_out), nn.ReLU())


class MiniMobileNetV1(nn.Layer):
    """paddle.vision.models.MobileNetV1's structure with configurable pointwise widths."""

    def __init__(self, widths, num_classes=1000):
        super().__init__()
        self.conv1 = conv_bn_relu(3, 32, 3, 2)
        blocks, c_in = [], 32
        for width, stride in zip(widths, MOBILENET_STRIDES):
            blocks.append(nn.Sequential(conv_bn_relu(c_in, c_in, 3, stride, groups=c_in),
                                        conv_bn_relu(c_in, width, 1, 1)))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.pool2d_avg = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = self.pool2d_avg(self.blocks(self.conv1(x)))
        return self.fc(paddle.flatten(x, 1))


class TwiceLinear(nn.Layer):
    """Calls the same Linear twice."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.fc(x))


@pytest.fixture(scope="module")
def mobilenet():
    paddle.seed(0)
    return paddle.vision.models.mobilenet_v1(scale=1.0, num_classes=1000)


@pytest.fixture(scope="module")
def mobilenet_profile(mobilenet):
    return profile(mobilenet, SHAPE_224)


# ------------------------------------------------------------------------- MobileNetV1


def test_mobilenet_v1_profile_is_exact(mobilenet_profile):
    assert mobilenet_profile["macs"] == MOBILENET_MACS
    assert mobilenet_profile["flops"] == 2 * MOBILENET_MACS == 1_137_480_704
    assert mobilenet_profile["gflops"] == pytest.approx(1.137480704)
    assert mobilenet_profile["gflops_legacy"] == pytest.approx(1.113234132)
    assert round(mobilenet_profile["gflops_legacy"], 2) == 1.11
    assert mobilenet_profile["params"] == MOBILENET_PARAMS
    assert mobilenet_profile["size_mb"] == pytest.approx(17.015456)


def test_mobilenet_v1_public_counters(mobilenet):
    assert count_flops(mobilenet, SHAPE_224, convention="paddleslim_legacy") == MOBILENET_LEGACY
    assert count_params(mobilenet) == MOBILENET_PARAMS
    assert round(model_size_mb(mobilenet), 1) == 17.0
    widths = layer_widths(mobilenet)
    assert widths["conv1.0"] == 32
    assert widths["conv6._pointwise_conv.0"] == 1024
    assert widths["fc"] == 1000
    assert len(widths) == 1 + 2 * 13 + 1


def test_mini_mobilenet_has_mobilenet_v1_structure(mobilenet, mobilenet_profile):
    mini = MiniMobileNetV1(MOBILENET_WIDTHS)
    assert profile(mini, SHAPE_224) == mobilenet_profile
    assert list(layer_widths(mini).values()) == list(layer_widths(mobilenet).values())
    shapes = [list(t.shape) for t in mini.state_dict().values()]
    assert shapes == [list(t.shape) for t in mobilenet.state_dict().values()]


def test_pruned_seed_row_numbers():
    assert PRUNED_WIDTHS == [44, 88, 88, 176, 176, 352, 352, 352, 352, 352, 352, 704, 704]
    pruned = MiniMobileNetV1(PRUNED_WIDTHS)
    result = profile(pruned, SHAPE_224)
    assert result["macs"] == PRUNED_MACS
    assert result["params"] == PRUNED_PARAMS
    assert count_flops(pruned, SHAPE_224, "paddleslim_legacy") == PRUNED_LEGACY
    assert round(result["gflops_legacy"], 3) == 0.552
    assert round(1 - PRUNED_LEGACY / MOBILENET_LEGACY, 3) == 0.504
    assert layer_widths(pruned)["blocks.12.1.0"] == 704
    assert layer_widths(pruned)["blocks.12.0.0"] == 704  # depthwise follows its input


# ------------------------------------------------------------------- layer conventions


def test_depthwise_conv_macs_and_legacy_bug():
    depthwise = nn.Conv2D(8, 8, 3, padding=1, groups=8)
    assert count_flops(depthwise, [1, 8, 10, 10], "macs") == 10 * 10 * 8 * 9
    assert count_flops(depthwise, [1, 8, 10, 10], "flops") == 2 * 10 * 10 * 8 * 9
    # legacy divides by groups twice: 2 * H * W * C_out * K * K * (C_in / g) / g
    assert count_flops(depthwise, [1, 8, 10, 10], "paddleslim_legacy") == 2 * 10 * 10 * 9


def test_grouped_and_nhwc_conv():
    grouped = nn.Conv2D(8, 4, 3, stride=2, groups=2)  # out 4 x 4 x 4, 4 inputs per group
    assert count_flops(grouped, [1, 8, 9, 9]) == 4 * 4 * 4 * 9 * 4
    assert count_flops(grouped, [1, 8, 9, 9], "paddleslim_legacy") == 2 * 4 * 4 * 4 * 9 * 4 // 2
    nhwc = nn.Conv2D(3, 6, 3, padding=1, data_format="NHWC")
    assert count_flops(nhwc, [1, 5, 5, 3]) == 5 * 5 * 6 * 27


def test_linear_on_3d_input_counts_every_row():
    linear = nn.Linear(5, 7)
    assert count_flops(linear, [2, 3, 5], "macs") == 3 * 5 * 7
    assert count_flops(linear, [2, 3, 5], "flops") == 2 * 3 * 5 * 7
    assert count_flops(linear, [2, 3, 5], "paddleslim_legacy") == 2 * 3 * 5 * 7


def test_layer_called_twice_is_counted_twice():
    assert count_flops(TwiceLinear(), [1, 4]) == 2 * 4 * 4


def test_counts_are_per_sample():
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.BatchNorm2D(4), nn.ReLU())
    one, five = profile(net, [1, 3, 6, 6]), profile(net, [5, 3, 6, 6])
    assert one == five
    assert one["macs"] == 4 * 4 * 4 * 27


def test_legacy_counts_norm_activation_and_pools():
    net = nn.Sequential(nn.BatchNorm2D(4), nn.ReLU(), nn.Sigmoid(), nn.MaxPool2D(2),
                        nn.AvgPool2D(2, stride=1), nn.AdaptiveAvgPool2D(1))
    elements = 4 * 8 * 8
    max_pool = (4 * 4 * 4) * 4  # output elements x kernel
    avg_pool = (4 * 3 * 3) * 4
    global_pool = 4 * (3 * 3)  # the whole 3 x 3 input per channel
    assert count_flops(net, [1, 4, 8, 8], "paddleslim_legacy") == (
        3 * elements + max_pool + avg_pool + global_pool)
    assert count_flops(net, [1, 4, 8, 8], "macs") == 0


def test_uncounted_layers_add_nothing():
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5))
    assert count_flops(net, [1, 2, 3]) == 0


def test_conv1d_and_conv3d_macs_are_counted_like_conv2d(caplog):
    """Output elements x C_in / groups x kernel volume (they once counted 0)."""
    net = nn.Sequential(nn.Conv1D(2, 4, 3), nn.Conv1D(4, 4, 1, groups=2))
    with caplog.at_level("WARNING", logger="slim_callbacks.analysis.flops"):
        assert count_flops(net, [1, 2, 9]) == 7 * 4 * (2 * 3) + 7 * 4 * (2 * 1)
    assert caplog.records == []
    net3d = nn.Conv3D(2, 3, (1, 2, 3))
    assert count_flops(net3d, [1, 2, 4, 5, 6]) == (4 * 4 * 4 * 3) * (2 * 1 * 2 * 3)


def test_conv1d_and_conv3d_transposed_count_each_input_element_per_output_tap():
    assert count_flops(nn.Conv1DTranspose(2, 4, 3), [1, 2, 5]) == 5 * 2 * 4 * 3
    assert count_flops(nn.Conv3DTranspose(2, 2, 2), [1, 2, 2, 2, 2]) == 8 * 2 * 2 * 8


# --------------------------------------------------------------------------- hygiene


def _hook_counts(net):
    return [len(layer._forward_post_hooks) for layer in net.sublayers(include_self=True)]


def _modes(net):
    return [layer.training for layer in net.sublayers(include_self=True)]


def test_hooks_removed_and_modes_restored():
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.BatchNorm2D(4), nn.ReLU())
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training network stays frozen
    user_handle = net[2].register_forward_post_hook(lambda layer, inputs, output: None)
    before = _modes(net)
    assert before == [True, True, False, True]
    profile(net, [1, 3, 6, 6])
    assert _modes(net) == before
    assert _hook_counts(net) == [0, 0, 0, 1]
    user_handle.remove()
    net.eval()
    count_flops(net, [1, 3, 6, 6])
    assert _modes(net) == [False] * 4


def test_forward_runs_in_eval_mode_without_grad():
    seen = []
    net = nn.Sequential(nn.Linear(2, 2))
    net.train()
    net[0].register_forward_post_hook(
        lambda layer, inputs, output: seen.append((layer.training, output.stop_gradient)))
    count_flops(net, [1, 2])
    assert seen == [(False, True)]
    assert net[0].training


def test_hooks_removed_and_modes_restored_after_rejected_shape():
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU())
    net.train()
    with pytest.raises(SlimError):
        count_flops(net, [1, 5, 8, 8])
    assert _modes(net) == [True, True, True]
    assert _hook_counts(net) == [0, 0, 0]


# ---------------------------------------------------------------------------- errors


def test_unknown_convention():
    with pytest.raises(ConfigError, match=r"^convention: 'gflops' is not allowed; expected "
                                          r"one of macs, flops, paddleslim_legacy$"):
        count_flops(nn.Linear(2, 2), [1, 2], convention="gflops")


def test_rejected_shape_names_shape_and_error():
    with pytest.raises(SlimError, match=r"^input_shape \[1, 5, 8, 8\] is rejected by the "
                                        r"network: ValueError: .*input's channels is 5") as info:
        count_flops(nn.Conv2D(3, 4, 3), [1, 5, 8, 8])
    assert not isinstance(info.value, ConfigError)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize("shape", [[], [1, 0, 4], [1, -3], "1,3", [1.0, 3], None])
def test_bad_input_shape(shape):
    with pytest.raises(ConfigError, match=r"^input_shape: .* expected a list of positive ints"):
        profile(nn.Linear(3, 3), shape)


def test_not_a_layer():
    with pytest.raises(ConfigError, match=r"^network: 'dict' is not allowed; expected a "
                                          r"paddle.nn.Layer$"):
        count_params({})


# ------------------------------------------------------------------- params and widths


def test_count_params_includes_buffers_and_counts_shared_once():
    bn = nn.BatchNorm2D(4)
    assert count_params(bn) == 4 * 4  # weight, bias, running mean, running variance
    shared = nn.Linear(3, 5)
    assert count_params(nn.Sequential(shared, nn.ReLU(), shared)) == 3 * 5 + 5
    assert model_size_mb(nn.Linear(999, 250)) == 1.0


def test_layer_widths_conv_and_linear_only():
    net = nn.Sequential(nn.Conv2D(3, 6, 3), nn.BatchNorm2D(6),
                        nn.Sequential(nn.Conv2D(6, 6, 1, groups=6), nn.Flatten()),
                        nn.Linear(6, 9))
    assert layer_widths(net) == {"0": 6, "2.0": 6, "3": 9}


def test_docstring_examples_run():
    result = doctest.testmod(flops_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6
    assert result.failed == 0


# ------------------------------------------------- products between activations (attention)


class TinyAttention(nn.Layer):
    """q @ k^T and attn @ v between activations (paddle.matmul, ``@`` and bmm)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape([b, n, 3, self.heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q, k, transpose_y=True)          # [b, heads, n, n], head_dim each
        out = attn @ v                                         # [b, heads, n, head_dim], n each
        flat = out.reshape([b * self.heads, n, self.head_dim])
        return paddle.bmm(flat, flat.transpose([0, 2, 1]))     # [b*heads, n, n], head_dim each


def test_products_between_activations_count_under_macs_and_not_legacy():
    dim, heads, n = 8, 2, 5
    net = TinyAttention(dim, heads)
    linear = n * dim * 3 * dim
    products = heads * n * n * (dim // heads) + heads * n * (dim // heads) * n \
        + heads * n * n * (dim // heads)
    assert count_flops(net, [1, n, dim]) == linear + products
    assert count_flops(net, [3, n, dim]) == linear + products  # per sample
    assert count_flops(net, [1, n, dim], "paddleslim_legacy") == 2 * linear


def test_products_inside_counted_layers_are_not_counted_twice():
    assert count_flops(nn.Linear(8, 4), [2, 8]) == 32
    mha = nn.MultiHeadAttention(8, 2)
    n = 3
    projections = 4 * n * 8 * 8  # q, k, v and out, each [n, 8] x [8, 8]
    assert count_flops(mha, [1, n, 8]) == projections + 2 * (2 * n * n * 4)


def test_matmul_counting_is_undone_after_the_pass():
    from paddle import _C_ops
    before = (_C_ops.matmul, _C_ops.bmm, paddle.Tensor.__matmul__)
    count_flops(TinyAttention(8, 2), [1, 5, 8])
    with pytest.raises(SlimError):
        count_flops(TinyAttention(8, 2), [1, 5, 7])
    assert (_C_ops.matmul, _C_ops.bmm, paddle.Tensor.__matmul__) == before
