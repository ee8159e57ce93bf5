"""max_metric_drop: an event whose eval falls too far is undone exactly, pruning stops."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import WIDTHS, Net, dataset, same, snapshot, widths

from slim_callbacks import ConfigError, PruneCallback


class At(paddle.callbacks.Callback):
    """Runs ``fn`` at one epoch's end (placed before or after the pruning callback)."""

    def __init__(self, epoch, fn):
        super().__init__()
        self.epoch, self.fn = epoch, fn

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.fn()


class AfterEval(paddle.callbacks.Callback):
    def __init__(self, fn):
        super().__init__()
        self.fn, self.epoch = fn, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_eval_end(self, logs=None):
        self.fn(self.epoch)


def fit(optimizer_cls, cb, before, after, epochs=3):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    optimizer = optimizer_cls(learning_rate=0.01, parameters=net.parameters())
    model.prepare(optimizer, nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    data = dataset(32)
    model.fit(data, data, epochs=epochs, batch_size=16, verbose=0, shuffle=False,
              callbacks=[At(1, lambda: before(net, optimizer)), cb,
                         AfterEval(lambda e: after(e, net, optimizer))])
    return net


@pytest.mark.parametrize("optimizer_cls", [paddle.optimizer.Momentum, paddle.optimizer.Adam])
def test_an_event_over_budget_is_undone_bit_for_bit_and_pruning_stops(optimizer_cls):
    cb = PruneCallback(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                       max_metric_drop=0.02, budget_metric="acc")
    saved, seen = {}, {}

    def before(net, optimizer):
        saved["state"] = snapshot(net, optimizer)
        cb.budget.reference = 2.0  # no accuracy can be within 0.02 of it: forces the undo

    def after(epoch, net, optimizer):
        if epoch == 1:
            seen["state"] = snapshot(net, optimizer)
            seen["history"] = list(cb.history)

    net = fit(optimizer_cls, cb, before, after)
    assert same(saved["state"], seen["state"])  # weights, BN statistics, optimizer state
    assert seen["history"] == [] and len(cb.plan) == 0
    assert widths(net) == WIDTHS  # the epoch-2 event was skipped: pruning stopped
    assert [u["epoch"] for u in cb.budget.undone] == [1]
    assert cb.budget.undone[0]["before"] == 2.0 and cb.budget.undone[0]["metric"] == "acc"
    assert all(np.isfinite(p.numpy()).all() for p in net.parameters())  # training went on


def test_an_event_within_budget_is_kept():
    cb = PruneCallback(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1],
                       max_metric_drop=1.0)
    net = fit(paddle.optimizer.Momentum, cb, lambda *a: None, lambda *a: None)
    assert widths(net) == {k: v // 2 for k, v in WIDTHS.items()}
    assert cb.budget.undone == [] and cb.budget.metric == "acc"
    assert len(cb.history) == 1


@pytest.mark.parametrize("value", [0, -0.1, "2%"])
def test_bad_max_metric_drop_is_a_config_error(value):
    with pytest.raises(ConfigError, match="max_metric_drop"):
        PruneCallback(0.5, max_metric_drop=value)


def test_a_resumed_run_stays_stopped(tmp_path):
    def make():
        return PruneCallback(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                             max_metric_drop=0.02, budget_metric="acc")

    def force_undo():
        cb.budget.reference = 2.0

    paddle.seed(0)
    cb = make()
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    data = dataset(32)
    stop = At(1, lambda: setattr(model, "stop_training", True))  # as if killed after epoch 1
    model.fit(data, data, epochs=3, batch_size=16, verbose=0, shuffle=False,
              save_dir=str(tmp_path), callbacks=[At(1, force_undo), cb, stop])
    from slim_callbacks.callbacks.ledger import load_ledger
    ledger = load_ledger(str(tmp_path / "1"))  # rewritten after the undo
    assert ledger["history"] == [] and ledger["budget"]["undone"][0]["epoch"] == 1
    paddle.seed(0)
    net2 = Net()
    model2 = paddle.Model(net2)
    model2.prepare(paddle.optimizer.Momentum(0.01, parameters=net2.parameters()),
                   nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    cb2 = PruneCallback(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                        max_metric_drop=0.02, budget_metric="acc", resume_from=str(tmp_path / "1"))
    model2.fit(data, data, epochs=3, batch_size=16, verbose=0, shuffle=False, callbacks=[cb2])
    assert cb2.budget.stopped and widths(net2) == WIDTHS  # the epoch-2 event did not fire
