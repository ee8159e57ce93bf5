"""BatchNorm recalibration: the function, BNRecalibration beside a PruneCallback, sensitivity()."""
import copy

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, Net, calibrate, dataset, snapshot

from slim_callbacks.analysis.bn_recalibration import InputRecorder, recalibrate_bn
from slim_callbacks.analysis.sensitivity import sensitivity
from slim_callbacks.callbacks import BNRecalibration, PruneCallback
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning import PruningSpec

EPS = 1e-5


def mlp():
    paddle.seed(3)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1D(6), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(6, 5), nn.BatchNorm1D(5))


def numpy_statistics(net, batches):
    """Cumulative average of per-batch mean and biased variance at each BatchNorm,
    computed by hand (BatchNorms normalize with the batch's own statistics)."""
    w1, b1 = net[0].weight.numpy(), net[0].bias.numpy()
    g1, s1 = net[1].weight.numpy(), net[1].bias.numpy()
    w2, b2 = net[4].weight.numpy(), net[4].bias.numpy()
    stats = {1: [], 5: []}
    for x in batches:
        h = x @ w1 + b1
        stats[1].append((h.mean(0), h.var(0)))
        h = np.maximum(g1 * (h - h.mean(0)) / np.sqrt(h.var(0) + EPS) + s1, 0)  # dropout is off
        h2 = h @ w2 + b2
        stats[5].append((h2.mean(0), h2.var(0)))
    return {i: (np.mean([m for m, _ in s], 0), np.mean([v for _, v in s], 0)) for i, s in stats.items()}


def parameters(net):
    return {p.name: p.numpy().copy() for p in net.parameters() if not p.stop_gradient}


def test_recalibration_sets_cumulative_statistics_and_changes_nothing_else():
    net = mlp()
    net[1]._mean.set_value(np.full([6], 7.0, "float32"))  # stale statistics
    rng = np.random.default_rng(0)
    batches = [rng.normal(i, 1 + i, (8, 4)).astype("float32") for i in range(3)]
    before = parameters(net)
    net.train()
    assert recalibrate_bn(net, [paddle.to_tensor(b) for b in batches]) == 3
    expected = numpy_statistics(net, batches)
    for index, (mean, var) in expected.items():
        np.testing.assert_allclose(net[index]._mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net[index]._variance.numpy(), var, rtol=1e-5, atol=1e-6)
    after = parameters(net)
    assert len(after) == 8  # Linear weights and biases, BN scales and shifts
    assert all(np.array_equal(before[k], after[k]) for k in before)  # bit-identical
    assert [layer.training for layer in net.sublayers()] == [True] * 6  # modes put back
    assert net[1]._momentum == 0.9 and net[5]._momentum == 0.9


def test_no_batch_changes_nothing():
    net = mlp()
    state = snapshot(net)
    assert recalibrate_bn(net, []) == 0
    assert all(np.array_equal(state[k], v) for k, v in snapshot(net).items())


def test_input_recorder_keeps_first_or_last_and_only_while_armed():
    net = nn.Linear(2, 1)
    last, first = InputRecorder(net, 2), InputRecorder(net, 2, first=True)
    _ = net(paddle.full([1, 2], -1.0))  # not armed: ignored
    last.armed = first.armed = True
    for i in range(4):
        _ = net(paddle.full([1, 2], float(i)))
    assert [float(b[0][0, 0]) for b in last.batches] == [2.0, 3.0]
    assert [float(b[0][0, 0]) for b in first.batches] == [0.0, 1.0]
    last.remove()
    first.remove()
    assert not net._forward_pre_hooks


class AtEvent(paddle.callbacks.Callback):
    """A copy of the network right after PruneCallback's on_epoch_end of epoch 0."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.net = copy.deepcopy(self.model.network)


def fit(recalibrate, epochs=2):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    probe = AtEvent()
    cb = PruneCallback(0.5, input_shape=SHAPE, prune_epochs=[0])
    aids = [BNRecalibration(recalibrate)] if recalibrate else []
    model.fit(dataset(), epochs=epochs, batch_size=16, verbose=0, shuffle=False,
              callbacks=[cb, *aids, probe])
    return probe.net, net


def bn_statistics(net):
    return {k: v for k, v in snapshot(net).items() if k.endswith(("_mean", "_variance"))}


def test_prune_callback_recalibrates_only_bn_statistics_on_the_last_batches():
    plain, _ = fit(0)
    recal, net = fit(2)
    plain_state, recal_state = snapshot(plain), snapshot(recal)
    stats = bn_statistics(recal)
    for key, value in plain_state.items():
        if key in stats:
            assert not np.array_equal(value, recal_state[key]), key
        else:
            assert np.array_equal(value, recal_state[key]), key  # parameters bit-identical
    # the same statistics from the last two training batches (shuffle=False, 64 samples)
    images = dataset().tensors[0].numpy()
    recalibrate_bn(plain, [paddle.to_tensor(images[32:48]), paddle.to_tensor(images[48:64])])
    for key, value in bn_statistics(plain).items():
        np.testing.assert_allclose(value, stats[key], rtol=1e-5, atol=1e-6)
    assert not net._forward_pre_hooks  # the recorder is gone after fit


@pytest.mark.parametrize("value", [-1, 1.5, True, "8", 129, 10 ** 12])
def test_prune_callback_rejects_a_bad_recalibrate_bn(value):
    """Every batch is kept in memory: the count is bounded."""
    with pytest.raises(ConfigError, match=rf"recalibrate_bn: {value!r} .*an int in \[0, 128\]"):
        PruningSpec(0.5, aids={"recalibrate_bn": value})


# -- sensitivity with adaptive BN ----------------------------------------------------

def bn_net():
    paddle.seed(1)
    net = Net()
    calibrate(net, SHAPE)
    return net


def sensitivities(net, **kw):
    x = dataset(32, seed=1).tensors[0]
    train = [dataset(32, seed=2).tensors[0][i:i + 8] for i in range(0, 32, 8)]

    def eval_fn(network):
        network.eval()
        with paddle.no_grad():
            return -float(network(x).square().mean())
    kw.setdefault("bn_data", train)
    return sensitivity(net, eval_fn, SHAPE, layers=["c1.0", "c2.0"], ratios=[0.25, 0.5],
                       progress=False, **kw)


def test_sensitivity_with_recalibration_differs_is_deterministic_and_leaves_the_net():
    net = bn_net()
    state = snapshot(net)
    plain = sensitivities(net)
    adapted = sensitivities(net, recalibrate_bn=2)
    again = sensitivities(net, recalibrate_bn=2)
    uncached = sensitivities(net, recalibrate_bn=2, cache=False)
    pruned = sensitivities(net, recalibrate_bn=2, method="prune")
    assert adapted == again == uncached  # deterministic, exact with the prefix cache
    for group in adapted:
        for ratio in adapted[group]:
            assert adapted[group][ratio] != plain[group][ratio]
            assert pruned[group][ratio] == pytest.approx(adapted[group][ratio], rel=1e-4, abs=1e-6)
    assert all(np.array_equal(state[k], v) for k, v in snapshot(net).items())


def test_sensitivity_can_take_its_batches_from_eval_fn():
    net = bn_net()
    x = dataset(32, seed=1).tensors[0]
    calls = []

    def eval_fn(network):
        network.eval()
        with paddle.no_grad():
            calls.append(1)
            return -float(network(x).square().mean())
    own = sensitivity(net, eval_fn, SHAPE, layers=["c1.0"], ratios=[0.5], progress=False,
                      recalibrate_bn=1)
    given = sensitivity(net, eval_fn, SHAPE, layers=["c1.0"], ratios=[0.5], progress=False,
                        recalibrate_bn=1, bn_data=[x])
    assert own == given


def test_sensitivity_rejects_bad_recalibration_arguments():
    net = bn_net()
    for value in (-2, 10 ** 12):
        with pytest.raises(ConfigError, match="recalibrate_bn"):
            sensitivities(net, recalibrate_bn=value)
    with pytest.raises(ConfigError, match="bn_data"):
        sensitivities(net, recalibrate_bn=2, bn_data=[])
    with pytest.raises(ConfigError, match="bn_data"):
        sensitivities(net, recalibrate_bn=2, bn_data=paddle.ones([2, 3, 16, 16]))
