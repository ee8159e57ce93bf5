"""Detectors as PP-YOLOE builds them: a CSP backbone, an SPP block, a PAN neck (upsample,
concat across scales, downsample), and a head whose class and box convs feed decoding
(``reshape([-1, self.num_classes, l])``, a softmax over ``self.reg_channels`` box
bins). The neck and head stems prune; the class and box channels stay whole without
being listed, and ``num_classes``/``reg_channels`` keep their values. In train mode
the head returns a loss dict against targets the test stores on the network.
"""
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import ConvBN, calibrate, kill_units, outputs

from slim_callbacks import count_flops, explain, export, prune, trace

SHAPE = [1, 3, 32, 32]


class CSP(nn.Layer):
    """Two 1x1 branches, residual convs on one, concatenated and fused."""

    def __init__(self, cin, cout):
        super().__init__()
        self.a, self.b = ConvBN(cin, cout // 2, 1), ConvBN(cin, cout // 2, 1)
        self.blocks = nn.Sequential(ConvBN(cout // 2, cout // 2), ConvBN(cout // 2, cout // 2))
        self.fuse = ConvBN(cout, cout, 1)

    def forward(self, x):
        y = self.b(x)
        return self.fuse(paddle.concat([self.a(x), y + self.blocks(y)], axis=1))


class SPP(nn.Layer):
    def __init__(self, channels):
        super().__init__()
        self.conv = ConvBN(3 * channels, channels, 1)

    def forward(self, x):
        pools = [F.max_pool2d(x, k, 1, k // 2) for k in (3, 5)]
        return self.conv(paddle.concat([x] + pools, axis=1))


class Head(nn.Layer):
    """ESE attention stems, class and box convs, and their decoding."""

    def __init__(self, widths, num_classes=3, reg_max=4):
        super().__init__()
        self.num_classes, self.reg_channels = num_classes, reg_max + 1
        self.fc = nn.LayerList([nn.Conv2D(c, c, 1) for c in widths])
        self.stem_cls = nn.LayerList([ConvBN(c, c, 1) for c in widths])
        self.stem_reg = nn.LayerList([ConvBN(c, c, 1) for c in widths])
        self.pred_cls = nn.LayerList([nn.Conv2D(c, num_classes, 3, padding=1) for c in widths])
        self.pred_reg = nn.LayerList([nn.Conv2D(c, 4 * self.reg_channels, 3, padding=1) for c in widths])
        self.register_buffer("proj", paddle.arange(self.reg_channels, dtype="float32"))

    def forward(self, feats):
        scores, dists = [], []
        for i, feat in enumerate(feats):
            l = feat.shape[2] * feat.shape[3]
            weighted = feat * F.sigmoid(self.fc[i](F.adaptive_avg_pool2d(feat, 1)))
            cls = self.pred_cls[i](self.stem_cls[i](weighted) + feat)
            reg = self.pred_reg[i](self.stem_reg[i](weighted))
            scores.append(F.sigmoid(cls).reshape([-1, self.num_classes, l]))
            bins = F.softmax(reg.reshape([-1, 4, self.reg_channels, l]), axis=2)
            dists.append((bins * self.proj.reshape([1, 1, -1, 1])).sum(2).transpose([0, 2, 1]))
        return paddle.concat(scores, axis=-1), paddle.concat(dists, axis=1)


class TinyDetector(nn.Layer):
    def __init__(self, num_classes=3):
        super().__init__()
        self.stem = ConvBN(3, 8, stride=2)
        self.stage3 = nn.Sequential(ConvBN(8, 16, stride=2), CSP(16, 16))   # stride 4
        self.stage4 = nn.Sequential(ConvBN(16, 16, stride=2), CSP(16, 16))  # stride 8
        self.spp, self.lateral = SPP(16), ConvBN(16, 8, 1)
        self.fpn, self.down, self.pan = CSP(24, 8), ConvBN(8, 8, stride=2), CSP(16, 16)
        self.head = Head([8, 16], num_classes)
        self.targets = None  # (boxes [B, L, 4], one-hot classes [B, C, L]) for the loss

    def forward(self, x):
        c3 = self.stage3(self.stem(x))
        p4 = self.lateral(self.spp(self.stage4(c3)))
        p3 = self.fpn(paddle.concat([F.interpolate(p4, scale_factor=2, mode="nearest"), c3], axis=1))
        n4 = self.pan(paddle.concat([self.down(p3), p4], axis=1))
        scores, dists = self.head([p3, n4])
        if not self.training:
            return dists, scores
        boxes, classes = (t.expand([x.shape[0]] + t.shape[1:]) for t in self.targets)
        return {"loss": F.binary_cross_entropy(scores, classes) + F.l1_loss(dists, boxes),
                "loss_cls": F.binary_cross_entropy(scores, classes)}


def detector():
    paddle.seed(0)
    net = TinyDetector()
    positions = (SHAPE[2] // 4) ** 2 + (SHAPE[2] // 8) ** 2
    net.targets = (paddle.rand([1, positions, 4]) * 4,
                   F.one_hot(paddle.randint(0, 3, [1, positions]), 3).transpose([0, 2, 1]))
    return net


def test_class_and_box_channels_stay_whole_and_say_they_feed_decoding():
    graph = trace(detector(), SHAPE)
    for name in ("head.pred_cls.0", "head.pred_reg.0"):
        group = next(g for g in graph.groups if name in g.producers)
        assert not group.prunable and "feeds decoding" in group.blocked
    report = explain(detector(), SHAPE)
    assert {row.op for row in report.rows} == {"reshape"}


def test_neck_spp_csp_and_head_stems_prune_and_decoding_sizes_keep_their_values():
    net = detector()
    graph = trace(net, SHAPE)
    prunable = {p for g in graph.prunable_groups() for p in g.producers}
    assert {"spp.conv.0", "lateral.0", "fpn.a.0", "fpn.fuse.0", "down.0", "pan.blocks.1.0",
            "head.stem_reg.1.0", "stage4.1.fuse.0"} <= prunable
    before = count_flops(net, SHAPE)
    prune(net, SHAPE, 0.3)
    assert net.head.num_classes == 3 and net.head.reg_channels == 5
    assert net.head.pred_cls[1].weight.shape[0] == 3 and net.head.pred_reg[0].weight.shape[0] == 20
    assert count_flops(net, SHAPE) < 0.7 * before


def test_dead_channels_prune_exactly():
    net = detector()
    calibrate(net, SHAPE)
    net.eval()
    kill_units(net, trace(net, SHAPE), ratio=0.3)
    x = paddle.randn([2] + SHAPE[1:])
    with paddle.no_grad():
        before = [t.numpy() for t in net(x)]
    prune(net, SHAPE, 0.3)
    with paddle.no_grad():
        after = [t.numpy() for t in net(x)]
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pruned_detector_trains_one_step_on_its_loss_dict():
    net = detector()
    opt = paddle.optimizer.Momentum(0.01, parameters=net.parameters())
    prune(net, SHAPE, 0.3, optimizer=opt)
    net.train()
    loss = net(paddle.randn([2] + SHAPE[1:]))["loss"]
    loss.backward()
    opt.step()
    assert np.isfinite(float(loss))


class ClassSum(nn.Layer):
    """Class scores reshaped by ``self.num_classes`` and summed over the classes: a
    dead class would drop out exactly, but the classes are the user's."""

    def __init__(self):
        super().__init__()
        self.num_classes = 4
        self.body, self.cls = ConvBN(3, 8), nn.Conv2D(8, 4, 1)

    def forward(self, x):
        scores = self.cls(self.body(x)).reshape([0, self.num_classes, -1])
        return scores.sum(axis=1)


def test_a_reshape_by_num_classes_keeps_the_classes_even_where_removing_them_is_exact():
    net = ClassSum()
    prune(net, SHAPE, 0.5)
    assert net.num_classes == 4 and net.cls.weight.shape == [4, 4, 1, 1]
    assert outputs(net, paddle.randn(SHAPE)).shape == (1, SHAPE[2] * SHAPE[3])


@pytest.mark.slow
def test_pruned_detector_exports_verified_although_onednn_cannot_run_its_upsampling(tmp_path, caplog):
    """Paddle 3.3.1's oneDNN cannot run ``nearest_interp`` with a ``scale``: the export is
    verified without oneDNN and says so."""
    net = detector()
    prune(net, SHAPE, 0.3)
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.deploy"):
        result = export(net, str(tmp_path / "det"), SHAPE)
    assert max(result.max_abs_diff.values()) < 1e-4
    assert any("verified without oneDNN" in r.getMessage() for r in caplog.records)
