"""What the PaddleSlim front end taught the native API: depthwise convs named in ratios
are explained, and coupled channels can be ranked PaddleSlim's way."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

from slim_callbacks import ConfigError, Pruner, PruningSpec, prune

SHAPE = [1, 3, 8, 8]


class Residual(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2D(3, 6, 3, padding=1), nn.Conv2D(3, 6, 1)
        self.dw = nn.Conv2D(6, 6, 3, padding=1, groups=6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = self.dw(nn.functional.relu(self.a(x) + self.b(x)))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def residual():
    net = Residual()
    rows = np.arange(6, dtype="float32")[:, None, None, None]
    net.a.weight.set_value(np.zeros([6, 3, 3, 3], "float32") + 0.1 * rows)
    net.b.weight.set_value(np.zeros([6, 3, 1, 1], "float32") + 50 - 5 * rows)
    return net


def kept_rows(net):
    """The original indices of a's rows that stay (row i of a holds 0.1 * i)."""
    return (net.a.weight.numpy()[:, 0, 0, 0] / 0.1).round().astype(int).tolist()


@pytest.mark.parametrize("scoring, kept", [("named", [3, 4, 5]), ("sum", [0, 1, 2])])
def test_coupled_scoring_ranks_by_the_named_producer_or_by_all(scoring, kept):
    net = residual()
    plan = prune(net, SHAPE, {"a": 0.5}, coupled_scoring=scoring)
    assert plan.groups[0]["producers"] == ["a", "b"]
    assert kept_rows(net) == kept


def test_coupled_scoring_is_a_checked_spec_field():
    assert PruningSpec(ratios={"a": 0.5}).coupled_scoring == "sum"
    spec = PruningSpec(ratios={"a": 0.5}, coupled_scoring="named")
    assert PruningSpec.from_dict(spec.to_dict()) == spec
    pruner = Pruner(residual(), SHAPE, spec)
    assert pruner.prepare().scored_layers == {"a": ["a"]}
    assert Pruner(residual(), SHAPE, ratios=0.5, coupled_scoring="named").prepare().scored_layers == {}
    with pytest.raises(ConfigError, match="^coupled_scoring: 'first' is not allowed; expected one of "
                                          "sum, named$"):
        PruningSpec(ratios=0.5, coupled_scoring="first")


def test_a_depthwise_conv_in_ratios_is_explained():
    net = residual()
    for key in ("dw", net.dw.weight.name):
        with pytest.raises(ConfigError, match=r"dw is a depthwise conv, whose channels follow its "
                                              r"input; prune the conv feeding it \(a\)"):
            prune(net, SHAPE, {key: 0.5})
    with pytest.raises(ConfigError, match="expected a pattern matching a Conv2D/Linear layer"):
        prune(net, SHAPE, {"nothing": 0.5})
