"""Views of a free parameter followed by the tracer (:mod:`slim_callbacks.tracing.param_views`)."""
import paddle
import paddle.nn as nn
from helpers import exported

from slim_callbacks import load_inference_model, prune

SHAPE = [1, 3, 8, 8]


class ClassToken(nn.Layer):
    """A class token expanded to the batch and put before the patch tokens (CvT, ViT)."""

    def __init__(self, dim=8):
        super().__init__()
        self.patch = nn.Conv2D(3, dim, 4, stride=4)
        self.cls_token = self.create_parameter([1, 1, dim])
        self.fc = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose([0, 2, 1])
        x = paddle.concat([self.cls_token.expand([x.shape[0], -1, -1]), x], axis=1)
        return self.fc(x[:, 0])


def test_a_class_token_expanded_by_sizes_in_a_tensor_is_followed(tmp_path):
    """An export with a dynamic batch expands by a computed shape tensor."""
    net = ClassToken()
    rebuilt = load_inference_model(exported(net, [None, 3, 8, 8], tmp_path))
    prune(net, SHAPE, 0.5)
    prune(rebuilt, SHAPE, 0.5)
    conv = next(c for c in rebuilt.children() if isinstance(c, nn.Conv2D))
    assert conv.weight.shape[0] == net.patch.weight.shape[0] == 4
    assert rebuilt(paddle.randn([2, 3, 8, 8])).shape == [2, 4]
