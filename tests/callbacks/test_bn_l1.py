"""BNScaleL1: per-parameter L1 on BatchNorm scales during fit (Network Slimming)."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, Net, aided, dataset

from slim_callbacks import prune
from slim_callbacks.callbacks import BNScaleL1
from slim_callbacks.callbacks.bn_l1 import bn_scales, gamma_below_share
from slim_callbacks.core.errors import ConfigError


class Watch(paddle.callbacks.Callback):
    """Share of |gamma| < 1e-2, mean |gamma| and the regularizers seen, per epoch."""

    def __init__(self):
        super().__init__()
        self.share, self.mean, self.regs = [], [], []

    def on_train_batch_end(self, step, logs=None):
        if step == 0:
            self.regs.append(type(bn_scales(self.model.network)[0].regularizer).__name__)

    def on_epoch_end(self, epoch, logs=None):
        net = self.model.network
        self.share.append(gamma_below_share(net))
        self.mean.append(float(np.mean([np.abs(p.numpy()).mean() for p in bn_scales(net)])))


def train(callbacks, epochs=16, lr=0.02, amp=None, seed=0):
    paddle.seed(seed)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(lr, parameters=net.parameters()), nn.CrossEntropyLoss(),
                  paddle.metric.Accuracy(), amp_configs=amp)
    watch = Watch()
    model.fit(dataset(256), epochs=epochs, batch_size=32, verbose=0, shuffle=False,
              callbacks=list(callbacks) + [watch])
    return net, watch


def recalibrate(net):
    """Re-estimates BatchNorm statistics on the training data (no weight update)."""
    data = dataset(256)
    x = paddle.stack([data[i][0] for i in range(256)])
    net.train()
    with paddle.no_grad():
        for _ in range(3):
            for i in range(0, 256, 32):
                net(x[i:i + 32])
    net.eval()


def pruned_accuracy(net, ratio):
    state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    copy = Net()
    copy.set_state_dict(state)
    prune(copy, SHAPE, ratio, "slim")
    recalibrate(copy)
    model = paddle.Model(copy)
    model.prepare(None, nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model.evaluate(dataset(256, seed=1), batch_size=64, verbose=0)["acc"]


def test_sparsity_grows_and_slim_pruning_then_costs_less():
    sparse, watch = train([BNScaleL1(3e-3, start_epoch=2)])
    dense, dense_watch = train([])
    assert watch.share[1] == 0.0 and watch.share[-1] > 0.15
    assert watch.share[-1] > watch.share[len(watch.share) // 2] > watch.share[2]
    assert dense_watch.share[-1] == 0.0
    assert watch.mean[-1] < 0.6 * dense_watch.mean[-1]
    assert watch.regs[:2] == ["NoneType", "NoneType"] and set(watch.regs[2:]) == {"L1Decay"}
    for p in bn_scales(sparse):  # restored at train end
        assert p.regularizer is None
    # same data, same seed, same BN recalibration: pruning the sparse net costs less
    sparse_acc = [pruned_accuracy(sparse, r) for r in (0.5, 0.75)]
    dense_acc = [pruned_accuracy(dense, r) for r in (0.5, 0.75)]
    assert np.mean(sparse_acc) > np.mean(dense_acc) + 0.1, (sparse_acc, dense_acc)


def test_end_epoch_switches_it_off():
    _, watch = train([BNScaleL1(1e-2, start_epoch=0, end_epoch=2)], epochs=4)
    assert watch.regs == ["L1Decay", "L1Decay", "NoneType", "NoneType"]


def test_l1_survives_amp_loss_scaling():
    _, with_l1 = train([BNScaleL1(3e-2)], epochs=4, amp="O1")
    _, without = train([], epochs=4, amp="O1")
    assert with_l1.mean[-1] < without.mean[-1] - 0.1


def test_prune_callback_switches_it_on_for_slim():
    cb = aided(0.5, "slim", bn_l1=1e-2, prune_epochs=[3], input_shape=SHAPE)
    net, watch = train([cb], epochs=4)
    assert watch.regs[:4] == ["L1Decay"] * 4
    assert all(p.regularizer is None for p in bn_scales(net))
    assert cb.history[0]["groups"] == 3


@pytest.mark.parametrize("kwargs, key", [
    (dict(coeff=0), "coeff"), (dict(coeff=-1e-4), "coeff"), (dict(coeff="1e-4"), "coeff"),
    (dict(start_epoch=-1), "start_epoch"), (dict(start_epoch=1.5), "start_epoch"),
    (dict(start_epoch=3, end_epoch=3), "end_epoch"),
])
def test_bad_arguments(kwargs, key):
    with pytest.raises(ConfigError) as info:
        BNScaleL1(**kwargs)
    assert info.value.key == key


def test_start_beyond_fit_fails_before_training():
    with pytest.raises(ConfigError, match="start_epoch"):
        train([BNScaleL1(1e-2, start_epoch=5)], epochs=2)


def test_it_replaces_the_global_weight_decay_of_bn_scales():
    """Documented choice: a per-parameter regularizer wins over the optimizer's decay."""
    def mean_gamma(callbacks):
        paddle.seed(0)
        net = Net()
        model = paddle.Model(net)
        model.prepare(paddle.optimizer.SGD(0.02, parameters=net.parameters(),
                                           weight_decay=paddle.regularizer.L2Decay(1.0)),
                      nn.CrossEntropyLoss())
        model.fit(dataset(256), epochs=2, batch_size=32, verbose=0, shuffle=False,
                  callbacks=callbacks)
        return float(np.mean([np.abs(p.numpy()).mean() for p in bn_scales(net)])), net

    decayed, _ = mean_gamma([])
    replaced, net = mean_gamma([BNScaleL1(1e-8)])
    assert decayed < 0.85 < 0.95 < replaced
    paddle.seed(0)
    initial = Net().fc.weight.numpy().std()
    assert net.fc.weight.numpy().std() < 0.85 * initial  # the other weights still decay
