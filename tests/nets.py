"""Small networks shared by several test modules (written for the tests): grouped-conv
families (ResNeXt, RegNet, ShuffleNet blocks) and a conv/depthwise/linear stack."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from helpers import ConvBN


def grouped_convs(net):
    return [(n, l) for n, l in net.named_sublayers()
            if isinstance(l, (nn.Conv2D, nn.Conv2DTranspose)) and 1 < l._groups < l._in_channels]


class ResNeXtBlock(nn.Layer):
    """1x1 reduce, grouped 3x3, 1x1 expand, residual (projection when the shape changes)."""

    def __init__(self, c_in, width, c_out, groups, stride=1):
        super().__init__()
        self.reduce = ConvBN(c_in, width, 1)
        self.grouped = ConvBN(width, width, 3, stride, groups=groups)
        self.expand = nn.Sequential(nn.Conv2D(width, c_out, 1, bias_attr=False), nn.BatchNorm2D(c_out))
        self.short = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2D(c_in, c_out, 1, stride, bias_attr=False),
                                       nn.BatchNorm2D(c_out))

    def forward(self, x):
        skip = x if self.short is None else self.short(x)
        return nn.functional.relu(skip + self.expand(self.grouped(self.reduce(x))))


class ResNeXt(nn.Layer):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = ConvBN(3, 16)
        self.blocks = nn.Sequential(ResNeXtBlock(16, 16, 32, groups=4), ResNeXtBlock(32, 16, 32, groups=4),
                                    ResNeXtBlock(32, 32, 48, groups=8, stride=2))
        self.fc = nn.Linear(48, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(axis=[2, 3]))


class RegNetBlock(nn.Layer):
    """RegNetY-style: 1x1, grouped 3x3 of group width 4, squeeze-excitation, 1x1, residual."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.a = ConvBN(c_in, c_out, 1)
        self.b = ConvBN(c_out, c_out, 3, stride, groups=c_out // 4)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Conv2D(c_out, 4, 1), nn.ReLU(),
                                nn.Conv2D(4, c_out, 1), nn.Sigmoid())
        self.c = nn.Sequential(nn.Conv2D(c_out, c_out, 1, bias_attr=False), nn.BatchNorm2D(c_out))
        self.proj = nn.Sequential(nn.Conv2D(c_in, c_out, 1, stride, bias_attr=False), nn.BatchNorm2D(c_out))

    def forward(self, x):
        y = self.b(self.a(x))
        return nn.functional.relu(self.proj(x) + self.c(y * self.se(y)))


class RegNet(nn.Layer):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = ConvBN(3, 8, 3, 2)
        self.stages = nn.Sequential(RegNetBlock(8, 16, 2), RegNetBlock(16, 24, 2))
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean(axis=[2, 3]))


def channel_shuffle(x, groups):
    b, c, h, w = x.shape
    x = x.reshape([b, groups, c // groups, h, w]).transpose([0, 2, 1, 3, 4])
    return x.reshape([b, c, h, w])


class ShuffleUnit(nn.Layer):
    """ShuffleNet v1-style: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1, residual."""

    def __init__(self, channels, groups):
        super().__init__()
        self.groups = groups
        self.g1 = ConvBN(channels, channels, 1, groups=groups)
        self.dw = nn.Sequential(nn.Conv2D(channels, channels, 3, padding=1, groups=channels, bias_attr=False),
                                nn.BatchNorm2D(channels))
        self.g2 = nn.Sequential(nn.Conv2D(channels, channels, 1, groups=groups, bias_attr=False),
                                nn.BatchNorm2D(channels))

    def forward(self, x):
        y = self.g2(self.dw(channel_shuffle(self.g1(x), self.groups)))
        return nn.functional.relu(x + y)


class ShuffleNet(nn.Layer):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = ConvBN(3, 24)
        self.units = nn.Sequential(ShuffleUnit(24, 3), ShuffleUnit(24, 3))
        self.mid = ConvBN(24, 24, 1, groups=4)
        self.fc = nn.Linear(24, classes)

    def forward(self, x):
        return self.fc(self.mid(self.units(self.stem(x))).mean(axis=[2, 3]))


class Blocks(nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2D(3, 10, 3, padding=1), nn.BatchNorm2D(10), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2D(10, 10, 3, padding=1, groups=10), nn.BatchNorm2D(10))
        self.c3 = nn.Sequential(nn.Conv2D(10, 12, 1), nn.BatchNorm2D(12), nn.ReLU())
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = self.c1(x)
        x = self.c3(F.relu(self.c2(x) + x))
        return self.fc(paddle.flatten(F.adaptive_avg_pool2d(x, 1), 1))
