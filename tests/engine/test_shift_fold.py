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


def test_zero_padded_kxk_consumer_gets_the_mean_contribution_and_is_flagged():
    paddle.seed(2)
    net = OneByOne(nn.Conv2D(8, 4, 3, padding=1))
    scales(net)
    x = paddle.randn([2] + SHAPE[1:])
    seen = {}
    net.consumer.register_forward_post_hook(lambda layer, args, out: seen.__setitem__("y", out.numpy()))
    outputs(net, x)
    before = seen["y"]
    # by hand: the removed channels send relu(beta); the conv adds their taps inside
    # the image, so the contribution map is conv(constant input) - bias
    beta = np.linspace(0.2, 1.0, 8)[DEAD]
    w = net.consumer.weight.numpy()[:, DEAD].astype(np.float64)
    const = np.zeros((1, 3, 6, 6))
    const[0] = beta[:, None, None]
    padded = np.pad(const[0], ((0, 0), (1, 1), (1, 1)))
    contribution = np.array([[[(w[o] * padded[:, i:i + 3, j:j + 3]).sum() for j in range(6)]
                              for i in range(6)] for o in range(4)])
    bias = net.consumer.bias.numpy().copy()
    _, plan = pruned_outputs(net, True, x)
    after = seen["y"]
    assert plan.folds[0]["exact"] is False
    np.testing.assert_allclose(net.consumer.bias.numpy(), bias + contribution.mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)
    # what is left is the contribution's deviation from its mean: 0 on average, largest
    # at the borders, where the zero padding drops taps
    np.testing.assert_allclose(after - before, -(contribution - contribution.mean(axis=(1, 2),
                                                 keepdims=True))[None].repeat(2, 0), atol=1e-4)


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


def test_scales_far_from_zero_are_not_folded():
    paddle.seed(6)
    net = OneByOne(nn.Conv2D(8, 4, 1))
    scales(net, gamma_dead=0.5)  # removed (smallest) but half the median scale of 1
    bias = net.consumer.bias.numpy().copy()
    plan = prune(net, SHAPE, {"conv": 3 / 8}, criterion="slim")
    assert plan.folds == [] and plan.fold_skipped[0]["channels"] == 3
    np.testing.assert_array_equal(net.consumer.bias.numpy(), bias)


def test_channels_without_batchnorm_are_not_folded():
    paddle.seed(4)
    net = nn.Sequential(nn.Conv2D(3, 8, 1), nn.ReLU(), nn.Conv2D(8, 4, 1), nn.Flatten(),
                        nn.Linear(4 * 36, 2))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    plan = prune(net, SHAPE, {"0": 0.5}, criterion="l1_norm", fold_bn_shift=True)
    assert plan.folds == []
    assert plan.fold_skipped == [{"consumer": "2", "channels": 4, "reason":
                                  "the removed channels vary with the input (BatchNorm scale "
                                  "not near 0, or no BatchNorm and nonzero weights)"}]
    np.testing.assert_array_equal(net["2"].bias.numpy(), before["2.bias"])


def test_bad_fold_bn_shift_is_a_config_error_before_any_change():
    net = OneByOne(nn.Conv2D(8, 4, 1))
    with pytest.raises(ConfigError, match="fold_bn_shift"):
        prune(net, SHAPE, 0.3, fold_bn_shift="yes")
    assert net.conv.weight.shape == [8, 3, 3, 3]


def test_prune_callback_folds_at_its_event_and_the_recipe_key_reaches_it():
    from slim_callbacks import PruneCallback
    from slim_callbacks.app.pruning_schema import PruningConfig
    paddle.seed(5)
    net = OneByOne(nn.Conv2D(8, 4, 1))
    scales(net)
    x = paddle.randn([3] + SHAPE[1:])
    before = outputs(net, x)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.0, parameters=net.parameters()))
    cb = PruneCallback({"conv": 3 / 8}, criterion="slim", input_shape=SHAPE)
    assert cb.fold_bn_shift is True
    cb.set_model(model)
    cb.on_train_begin()
    cb.prune_now(0, {"conv": 3 / 8})
    assert net.conv.weight.shape[0] == 5
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    assert PruneCallback(0.3, criterion="l1_norm").fold_bn_shift is False
    assert PruningConfig(ratios=0.3, fold_bn_shift=True).fold_bn_shift is True
    with pytest.raises(ConfigError, match="pruning.fold_bn_shift"):
        PruningConfig.from_dict({"ratios": 0.3, "fold_bn_shift": "yes"})
