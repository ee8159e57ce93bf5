"""Sizes written as numbers in an export that the rebuilt network makes follow pruning
(:mod:`slim_callbacks.program.shapes`)."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from helpers import assert_dead_channels_prune_exactly, exported

from slim_callbacks import load_inference_model, prune

SHAPE = [1, 3, 8, 8]


class DualPath(nn.Layer):
    """DPN's split into unequal parts sized by attributes: a residual part added to
    another branch and a dense part concatenated."""

    def __init__(self, residual=8, dense=4):
        super().__init__()
        self.residual, self.dense = residual, dense
        self.stem = nn.Conv2D(3, residual + dense, 3, padding=1)
        self.side = nn.Conv2D(3, residual, 3, padding=1)
        self.head = nn.Conv2D(residual + dense, 6, 1)

    def forward(self, x):
        a, b = paddle.split(F.relu(self.stem(x)), [self.residual, self.dense], axis=1)
        return self.head(paddle.concat([a + self.side(x), b], axis=1)).mean(axis=[2, 3])


def test_unequal_split_sections_follow_pruning_as_in_the_python_code(tmp_path):
    net = DualPath()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))
    assert sorted(v for k, v in vars(rebuilt).items() if k.startswith("split_")) == [4, 8]
    prune(net, SHAPE, 0.5)
    plan = assert_dead_channels_prune_exactly(rebuilt, SHAPE, ratio=0.5)
    conv = next(c for c in rebuilt.children() if isinstance(c, nn.Conv2D))
    assert len(plan) and conv.weight.shape[0] == net.stem.weight.shape[0] < 12


class FlattenByAttribute(nn.Layer):
    """GhostNet's head: ``x.reshape([-1, self.channels])`` before a Linear."""

    def __init__(self, channels=8):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2D(3, channels, 3, padding=1)
        self.fc = nn.Linear(channels, 6)
        self.out = nn.Linear(6, 4)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1)
        return self.out(F.relu(self.fc(x.reshape([-1, self.channels]))))


def test_a_reshape_to_minus_one_and_a_width_follows_pruning(tmp_path):
    net = FlattenByAttribute()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))
    prune(net, SHAPE, 0.5)
    plan = assert_dead_channels_prune_exactly(rebuilt, SHAPE, ratio=0.5)
    widths = sorted(layer.weight.shape[0] for layer in rebuilt.children() if isinstance(layer, nn.Conv2D))
    assert len(plan) and widths == [net.conv.weight.shape[0]] == [4]
