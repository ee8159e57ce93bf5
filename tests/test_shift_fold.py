"""BN-shift folding: removed channels' constant output goes into the consumers' biases."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import calibrate, outputs

from slim_callbacks import ConfigError, prune

SHAPE = [1, 3, 6, 6]
DEAD = [1, 4, 6]  # channels of the first conv whose BatchNorm scale is set to 0


class OneByOne(nn.Layer):
    """conv 3x3 -> BN -> ReLU -> consumer -> pool -> Linear head."""

    def __init__(self, consumer):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(8)
        self.consumer = consumer
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = self.consumer(nn.functional.relu(self.bn(self.conv(x))))
        return self.head(paddle.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class FlattenLinear(nn.Layer):
    """conv -> BN -> ReLU -> flatten -> Linear: each channel owns 36 Linear rows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(8)
        self.fc = nn.Linear(8 * 36, 5)

    def forward(self, x):
        return self.fc(paddle.flatten(nn.functional.relu(self.bn(self.conv(x))), 1))


def scales(net, gamma_dead=0.0):
    """BN scales: 1 for live channels, ``gamma_dead`` for DEAD; shifts > 0 (ReLU passes)."""
    calibrate(net, SHAPE)
    gamma = np.ones(8, dtype="float32")
    gamma[DEAD] = gamma_dead
    net.bn.weight.set_value(gamma)
    net.bn.bias.set_value(np.linspace(0.2, 1.0, 8).astype("float32"))


def pruned_outputs(net, fold, x):
    plan = prune(net, SHAPE, {"conv": 3 / 8}, criterion="slim", fold_bn_shift=fold)
    assert plan.groups[0]["after"] == 5
    return outputs(net, x), plan


@pytest.mark.parametrize("make", [lambda: OneByOne(nn.Conv2D(8, 4, 1)), FlattenLinear],
                         ids=["1x1 conv", "flatten-Linear"])
def test_fold_makes_pruning_zero_gamma_channels_exact(make):
    paddle.seed(0)
    net = make()
    scales(net)
    x = paddle.randn([3] + SHAPE[1:])
    before = outputs(net, x)
    unfolded = make()
    unfolded.set_state_dict(net.state_dict())
    without, _ = pruned_outputs(unfolded, False, x)
    assert np.abs(without - before).max() > 1e-2  # the constant mattered
    after, plan = pruned_outputs(net, True, x)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert [(f["channels"], f["exact"], f["max_gamma"]) for f in plan.folds] == [(3, True, 0.0)]


def test_consumer_without_bias_folds_into_the_next_batchnorm_mean():
    paddle.seed(1)
    net = OneByOne(nn.Sequential(nn.Conv2D(8, 4, 1, bias_attr=False), nn.BatchNorm2D(4)))
    scales(net)
    x = paddle.randn([3] + SHAPE[1:])
    before = outputs(net, x)
    after, plan = pruned_outputs(net, None, x)  # on by default for slim
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert [f["into"] for f in plan.folds] == ["consumer.1._mean"]


def test_zero_padded_kxk_consumer_is_exact_inside_and_flagged_at_the_borders():
    paddle.seed(2)
    conv = nn.Conv2D(8, 4, 3, padding=1)
    net = OneByOne(conv)
    scales(net)
    x = paddle.randn([2] + SHAPE[1:])
    seen = {}
    conv.register_forward_post_hook(lambda layer, args, out: seen.__setitem__("y", out.numpy()))
    outputs(net, x)
    before = seen["y"]
    _, plan = pruned_outputs(net, True, x)
    after = seen["y"]
    assert plan.folds[0]["exact"] is False
    np.testing.assert_allclose(after[:, :, 1:-1, 1:-1], before[:, :, 1:-1, 1:-1], atol=1e-5)
    border = np.abs(after - before)
    border[:, :, 1:-1, 1:-1] = 0
    assert border.max() > 1e-3  # fewer taps of the constant at the zero-padded border


def test_small_gammas_fold_approximately_and_say_so():
    paddle.seed(3)
    net = OneByOne(nn.Conv2D(8, 4, 1))
    scales(net, gamma_dead=1e-3)
    x = paddle.randn([3] + SHAPE[1:])
    before = outputs(net, x)
    unfolded = OneByOne(nn.Conv2D(8, 4, 1))
    unfolded.set_state_dict(net.state_dict())
    without, _ = pruned_outputs(unfolded, False, x)
    after, plan = pruned_outputs(net, True, x)
    fold = plan.folds[0]
    assert fold["exact"] is False and fold["max_gamma"] == pytest.approx(1e-3)
    assert np.abs(after - before).max() < 0.05 * np.abs(without - before).max()


def test_channels_without_batchnorm_are_not_folded():
    paddle.seed(4)
    net = nn.Sequential(nn.Conv2D(3, 8, 1), nn.ReLU(), nn.Conv2D(8, 4, 1), nn.Flatten(),
                        nn.Linear(4 * 36, 2))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    plan = prune(net, SHAPE, {"0": 0.5}, criterion="l1_norm", fold_bn_shift=True)
    assert plan.folds == []
    assert plan.fold_skipped == [{"consumer": "2", "channels": 4, "reason":
                                  "the removed channels vary with the input (no BatchNorm, "
                                  "nonzero weights)"}]
    np.testing.assert_array_equal(net["2"].bias.numpy(), before["2.bias"])


def test_bad_fold_bn_shift_is_a_config_error_before_any_change():
    net = OneByOne(nn.Conv2D(8, 4, 1))
    with pytest.raises(ConfigError, match="fold_bn_shift"):
        prune(net, SHAPE, 0.3, fold_bn_shift="yes")
    assert net.conv.weight.shape == [8, 3, 3, 3]
