"""Ops rebuilt as real sublayers (:mod:`slim_callbacks.program.layer_converters`)."""
import numpy as np
import paddle
import paddle.nn as nn
from helpers import exported

from slim_callbacks import export, load_inference_model, prune


class AffineFreeNorms(nn.Layer):
    """BatchNorm without scale and shift (``weight_attr=False``), as AdaFace's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(8, weight_attr=False, bias_attr=False)
        self.fc = nn.Linear(8, 6)
        self.bn1d = nn.BatchNorm1D(6, weight_attr=False, bias_attr=False)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.bn(self.conv(x)))
        return self.bn1d(self.fc(x.mean(axis=[2, 3])))


def test_a_batch_norm_without_scale_and_shift_is_a_layer_and_prunes(tmp_path):
    net = AffineFreeNorms()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))  # checked
    norms = [layer for layer in rebuilt.children() if isinstance(layer, nn.layer.norm._BatchNormBase)]
    assert len(norms) == 2 and all(float(n.weight.min()) == 1 and float(n.bias.abs().max()) == 0
                                   for n in norms)
    first = next(name for name, layer in rebuilt.named_children() if layer is norms[0])
    assert rebuilt.weight_names[first] == net.bn._mean.name  # it has no weight of its own
    x = paddle.randn([2, 3, 8, 8])
    np.testing.assert_allclose(rebuilt(x).numpy(), net(x).numpy(), atol=1e-5)
    prune(rebuilt, [1, 3, 8, 8], 0.5)
    assert next(c for c in rebuilt.children() if isinstance(c, nn.Conv2D)).weight.shape[0] == 4
    export(rebuilt, str(tmp_path / "pruned"), [1, 3, 8, 8])  # oneDNN runs it: it has a scale
