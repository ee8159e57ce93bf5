"""Taylor importance: accumulated (sum w * grad)^2 per channel, the taylor criterion."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import Net, dataset

from slim_callbacks import PruneCallback, SlimError, prune
from slim_callbacks.engine import taylor as taylor_mod
from slim_callbacks.engine.taylor import TaylorImportance

SHAPE = [1, 3, 6, 6]


class Tiny(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = nn.functional.relu(self.bn(self.conv(x)))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def test_scores_equal_a_hand_computation_over_batches():
    paddle.seed(0)
    net = Tiny()
    hand = {"bn": 0.0, "conv": 0.0, "fc": 0.0}
    with TaylorImportance(net) as taylor:
        for _ in range(3):
            net(paddle.randn([4, 3, 6, 6])).square().mean().backward()
            gamma, w, fc = net.bn.weight, net.conv.weight, net.fc.weight
            hand["bn"] += (gamma.numpy() * gamma.grad.numpy()) ** 2
            hand["conv"] += ((w.numpy().astype("float64") * w.grad.numpy()).reshape(4, -1).sum(1)) ** 2
            hand["fc"] += ((fc.numpy() * fc.grad.numpy()).sum(0)) ** 2  # Linear: outputs on axis 1
            net.clear_gradients()
        assert taylor.batches == 3
        np.testing.assert_allclose(taylor.scores(net.bn.weight), hand["bn"] / 3, rtol=1e-5)
        # a filter followed by BatchNorm: the loss does not change with its scale, so
        # sum(w * grad) is 0 up to rounding (why taylor scores BN scales when it can)
        assert taylor.scores(net.conv.weight).max() < 1e-12 and hand["conv"].max() < 1e-12
        np.testing.assert_allclose(taylor.scores(net.fc.weight), hand["fc"] / 3, rtol=1e-5)
    assert not list(taylor_mod._ATTACHED) and taylor.handles == []


def test_taylor_criterion_removes_the_channel_that_does_not_matter():
    paddle.seed(1)
    net = Tiny()
    gamma = net.bn.weight.numpy()
    gamma[2] = 0.0  # gamma * dL/dgamma = 0: no first-order effect on the loss
    net.bn.weight.set_value(gamma)
    with TaylorImportance(net):
        net(paddle.randn([4, 3, 6, 6])).square().mean().backward()
        plan = prune(net, SHAPE, {"conv": 0.25}, criterion="taylor")
    kept = plan.params[("conv", "weight")].kept[0]
    assert list(kept) == [0, 1, 3]


def test_taylor_without_gradients_says_what_to_do_before_any_change():
    net = Tiny()
    with pytest.raises(SlimError, match=r"PruneCallback\(criterion='taylor'\)"):
        prune(net, SHAPE, 0.5, criterion="taylor")
    assert net.conv.weight.shape == [4, 3, 3, 3]


def test_prune_callback_accumulates_during_fit_and_starts_afresh_after_an_event():
    paddle.seed(2)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss())
    cb = PruneCallback(0.5, criterion="taylor", input_shape=[1, 3, 16, 16], prune_epochs=[0])
    seen = []

    class Spy(paddle.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(cb.taylor.importance.batches)

    model.fit(dataset(32), epochs=2, batch_size=16, verbose=0, shuffle=False, callbacks=[cb, Spy()])
    assert net.c2[0].weight.shape[0] == 16  # pruned at epoch 0 from 32
    assert seen == [0, 2]  # reset by the event at the end of epoch 0, then 2 batches
    assert cb.taylor.importance.handles == [] and not list(taylor_mod._ATTACHED)
