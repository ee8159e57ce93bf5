"""Ops rebuilt as one ``paddle._C_ops`` call (:mod:`slim_callbacks.program.converters`):
a small exported net per op family gives Paddle Inference's outputs on load and the
Python network's on another batch."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from helpers import exported

from slim_callbacks import load_inference_model


class IndexedTableAndResize(nn.Layer):
    """A parameter indexed by an integer buffer (``gather_nd``: a relative position
    bias table, as in BEiT), bicubic and linear resizing, roll and strided slicing (LeViT's
    subsampling)."""

    def __init__(self):
        super().__init__()
        self.table = self.create_parameter([7, 2])
        self.register_buffer("index", paddle.to_tensor([[0, 3], [6, 1], [2, 2]], dtype="int64"))
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        bias = self.table[self.index.reshape([-1])].reshape([3, 2, 2]).sum()
        z = F.interpolate(y, size=[6, 6], mode="bicubic", align_corners=False)
        line = F.interpolate(z.flatten(2), size=[20], mode="linear")
        rolled = paddle.roll(z, shifts=[1, -2], axis=[2, 3])
        picked = paddle.index_select(rolled, paddle.to_tensor([3, 0]), axis=1)[:, :, ::2, 1::2]
        return picked.mean(axis=[2, 3]) + line.cumsum(-1).mean(-1)[:, :2] + bias


class SumsPatchesAndSlicesSet(nn.Layer):
    """``add_n`` (ResNeSt's split attention), ``unfold`` (RedNet's involution) and a
    slice assigned in place (ReXNet's ``out[:, :c] += x``), comparisons and a mask."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        patches = F.unfold(y, kernel_sizes=3, paddings=1).reshape([-1, 4, 9, 64]).mean(2)
        y = paddle.add_n([y, y * 2, patches.reshape([-1, 4, 8, 8])])
        y[:, :3] = y[:, :3] + x
        mask = paddle.logical_or(y > 0.5, y <= -0.5) != (y == 0)  # Swin's attention mask
        return paddle.where(mask, y, y * 0.1).mean(axis=[2, 3])


def test_sums_patches_and_slices_set_in_place_rebuild_exactly(tmp_path):
    net = SumsPatchesAndSlicesSet()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))  # checked
    x = paddle.randn([2, 3, 8, 8])
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)


def test_indexed_tables_and_resizes_rebuild_exactly(tmp_path):
    net = IndexedTableAndResize()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))  # checked
    x = paddle.randn([2, 3, 8, 8])
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)
