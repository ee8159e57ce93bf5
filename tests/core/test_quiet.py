"""Paddle's known warnings are filtered inside this package's own calls only: a user's
warning with another message, or the same message raised by the user's own code
outside our calls, is still shown."""
import warnings

import paddle
import pytest
from helpers import SHAPE, Net, aided, dataset

from slim_callbacks.core.quiet import PADDLE_WARNINGS, quiet_paddle

BN_WARNING = PADDLE_WARNINGS[0]


def recorded(action):
    """The messages of every warning ``action()`` raises, each one shown."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(w.message) for w in caught]


def test_only_the_known_messages_are_hidden_and_only_inside_the_block():
    def action():
        with quiet_paddle():
            for message in PADDLE_WARNINGS:
                warnings.warn(message + " (more text)")
            warnings.warn("the user's own warning")
        warnings.warn(BN_WARNING)     # the same message outside the block
    assert recorded(action) == ["the user's own warning", BN_WARNING]


def test_the_filters_are_put_back_after_an_error():
    before = list(warnings.filters)
    with pytest.raises(RuntimeError), quiet_paddle():
        raise RuntimeError("boom")
    assert warnings.filters == before


def fit_with_pruning(batches, epochs=3):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss())
    cb = aided(ratios=0.5, input_shape=SHAPE, recalibrate_bn=1,
                       schedule={"kind": "agp", "start_epoch": 0, "end_epoch": 1, "frequency": 1})
    model.fit(dataset(8 * batches), epochs=epochs, batch_size=8, verbose=0, shuffle=False,
              callbacks=[cb])
    warnings.warn("a warning of the user's own")
    warnings.warn(BN_WARNING)     # the user's code, after fit, raising the same message
    return cb


def test_prune_callback_hides_the_warnings_of_its_own_forwards_not_the_training_steps():
    """Net has 3 BatchNorms: every training step warns 3 times (the user's network in
    the user's fit); the callback's own train-mode forwards (tracing, the verified
    prune, BN recalibration) add none."""
    cbs = []
    messages = recorded(lambda: cbs.append(fit_with_pruning(batches=2)))
    assert len(cbs[0].history) == 2                                 # both events ran
    assert messages.count(BN_WARNING) == 3 * 2 * 3 + 1              # 3 BNs x 2 steps x 3 epochs, + user's
    assert messages[-2:] == ["a warning of the user's own", BN_WARNING]
