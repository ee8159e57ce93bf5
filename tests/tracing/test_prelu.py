"""PReLU: a per-channel slope is sliced with its channels, a shared one passes."""
import numpy as np
import paddle
import paddle.nn as nn
from helpers import assert_dead_channels_prune_exactly, momentum_losses

from slim_callbacks import prune, trace
from slim_callbacks.analysis.flops import count_flops

SHAPE = [1, 3, 8, 8]


class PReLUNet(nn.Layer):
    """conv-BN-PReLU blocks with a residual add through a PReLU, then a Linear head."""

    def __init__(self, shared_slope=False):
        super().__init__()
        slopes = 1 if shared_slope else 8
        self.stem = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.PReLU(slopes))
        self.block = nn.Sequential(nn.Conv2D(8, 12, 1), nn.BatchNorm2D(12), nn.PReLU(12),
                                   nn.Conv2D(12, 8, 3, padding=1), nn.BatchNorm2D(8))
        self.act = nn.PReLU(slopes)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = self.act(x + self.block(x))
        return self.fc(x.mean(axis=[2, 3]))


def randomize_slopes(net, seed=0):
    rng = np.random.default_rng(seed)
    for layer in net.sublayers():
        if isinstance(layer, nn.PReLU):
            layer._weight.set_value(rng.uniform(0.05, 0.5, layer._weight.shape).astype("float32"))


def test_per_channel_prelu_is_prunable_and_dead_channels_prune_exactly():
    paddle.seed(0)
    net = PReLUNet()
    randomize_slopes(net)
    graph = trace(net, SHAPE)
    blocked = [g.name for g in graph.groups if g.blocked]
    assert blocked == ["fc"], blocked  # only the network's output
    macs = count_flops(net, SHAPE)
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.5)
    assert count_flops(net, SHAPE) < macs
    for prelu, width in ((net.stem[2], 4), (net.block[2], 6), (net.act, 4)):
        assert list(prelu._weight.shape) == [width] and prelu._num_parameters == width


def test_pruned_prelu_network_trains_with_momentum():
    paddle.seed(0)
    net = PReLUNet()
    prune(net, SHAPE, 0.5)
    losses = momentum_losses(net, SHAPE)
    assert losses[-1] < losses[0]


def test_a_shared_slope_passes_channels_through_unchanged():
    paddle.seed(0)
    net = PReLUNet(shared_slope=True)
    randomize_slopes(net)
    assert_dead_channels_prune_exactly(net, SHAPE, ratio=0.5)
    assert list(net.act._weight.shape) == [1] and net.stem[0]._out_channels == 4
