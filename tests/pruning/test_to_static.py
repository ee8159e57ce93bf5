"""Static graphs the Paddle 3 way: a ``paddle.jit.to_static`` forward is pruned and
keeps training inside ``fit()``; a ``paddle.Model`` built in static mode is refused."""
import numpy as np
import paddle
import pytest
from helpers import SHAPE, Net, dataset, outputs

from slim_callbacks import PruneCallback, SlimError, prune
from slim_callbacks.core.paddle_utils import reset_static_programs


class Losses(paddle.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, step, logs=None):
        self.losses.append(float(np.asarray(logs["loss"]).ravel()[0]))


def fit_losses(static: bool):
    paddle.seed(0)
    net = Net()
    if static:
        net = paddle.jit.to_static(net, full_graph=True)
    model = paddle.Model(net, paddle.static.InputSpec([None] + SHAPE[1:], "float32", "x"))
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss())
    losses = Losses()
    model.fit(dataset(32), epochs=3, batch_size=8, shuffle=False, verbose=0,
              callbacks=[PruneCallback(0.5, schedule={0: 0.25, 1: 0.5}, input_shape=SHAPE), losses])
    return net, losses.losses


def test_a_to_static_network_trains_across_pruning_events_like_the_dygraph_one():
    dygraph, expected = fit_losses(static=False)
    static, got = fit_losses(static=True)
    assert isinstance(static.forward, paddle.jit.dy2static.program_translator.StaticFunction)
    assert static.c2[0].weight.shape == dygraph.c2[0].weight.shape == [16, 8, 3, 3]
    assert len(got) == len(expected) == 12
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(outputs(static, x), outputs(dygraph, x), rtol=1e-4, atol=1e-5)


def test_pruning_dead_channels_of_a_to_static_network_is_exact():
    paddle.seed(0)
    net = paddle.jit.to_static(Net(), full_graph=True)
    w = net.c1[1].weight.numpy()
    b = net.c1[1].bias.numpy()
    w[:8], b[:8] = 0, 0  # BatchNorm zeroes channels 0-7 of c1, which L1 of c1 alone does not
    net.c1[1].weight.set_value(w)
    net.c1[1].bias.set_value(b)
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    assert len(net.forward.program_cache) == 1
    prune(net, SHAPE, {"c1": 0.5}, criterion="slim", fold_bn_shift=False)
    assert net.c1[0].weight.shape[0] == 8
    assert len(net.forward.program_cache) == 0  # converted again for the new shapes
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    assert len(net.forward.program_cache) == 1
    reset_static_programs(net)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def test_a_paddle_model_built_in_static_mode_is_refused_before_training():
    data = dataset(8)
    paddle.enable_static()
    try:
        net = Net()
        model = paddle.Model(net, paddle.static.InputSpec([None] + SHAPE[1:], "float32", "x"),
                             paddle.static.InputSpec([None, 1], "int64", "y"))
        model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                      paddle.nn.CrossEntropyLoss())
        with pytest.raises(SlimError, match=r"static mode \(paddle.enable_static\(\)\).*to_static"):
            model.fit(data, epochs=1, batch_size=8, verbose=0,
                      callbacks=[PruneCallback(0.5, input_shape=SHAPE)])
        with pytest.raises(SlimError, match="static mode"):
            prune(net, SHAPE, 0.5)
    finally:
        paddle.disable_static()
