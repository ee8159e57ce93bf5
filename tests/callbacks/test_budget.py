"""max_metric_drop: an event whose eval falls too far is undone exactly, then retried
with half the step or, below budget_min_step, pruning stops."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import WIDTHS, At, Net, dataset, same, snapshot, widths
from helpers import aided as budgeted

from slim_callbacks import ConfigError, PruneCallback, Pruner
from slim_callbacks.callbacks.budget import MetricBudget
from slim_callbacks.core.errors import SlimError


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
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                       max_metric_drop=0.02, budget_metric="acc", budget_min_step=1.0)
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
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1],
                       max_metric_drop=1.0)
    net = fit(paddle.optimizer.Momentum, cb, lambda *a: None, lambda *a: None)
    assert widths(net) == {k: v // 2 for k, v in WIDTHS.items()}
    assert cb.budget.undone == [] and cb.budget.metric == "acc"
    assert len(cb.history) == 1
    with pytest.raises(ConfigError, match="nothing to undo"):  # its copy was freed when kept
        cb.pruner.undo()


@pytest.mark.parametrize("value", [0, -0.1, "2%"])
def test_bad_max_metric_drop_is_a_config_error(value):
    with pytest.raises(ConfigError, match="max_metric_drop"):
        budgeted(0.5, max_metric_drop=value)


def test_a_resumed_run_stays_stopped(tmp_path):
    def make():
        return budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                             max_metric_drop=0.02, budget_metric="acc", budget_min_step=1.0)

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
    cb2 = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1, 2],
                        max_metric_drop=0.02, budget_metric="acc", budget_min_step=1.0,
                        resume_from=str(tmp_path / "1"))
    model2.fit(data, data, epochs=3, batch_size=16, verbose=0, shuffle=False, callbacks=[cb2])
    assert cb2.budget.stopped and widths(net2) == WIDTHS  # the epoch-2 event did not fire


def reference(cb, value):
    """Sets the budget's reference before the event of that epoch: 2.0 forces an undo,
    -1.0 an acceptance."""
    return lambda: setattr(cb.budget, "reference", value)


def scaled(share):
    return {k: v - int(v * share) for k, v in WIDTHS.items()}


def budget_model():
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return net, model


def test_a_refused_event_is_retried_with_half_the_step_and_a_resume_keeps_the_retry(tmp_path):
    def make(**kw):
        return budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1],
                             max_metric_drop=0.02, budget_metric="acc", **kw)

    paddle.seed(0)
    cb = make()
    net, model = budget_model()
    seen = {}
    probe = AfterEval(lambda e: seen.setdefault(e, (widths(net), len(cb.history))))
    stop = At(3, lambda: setattr(model, "stop_training", True))  # as if killed after epoch 3
    data = dataset(32)
    model.fit(data, data, epochs=6, batch_size=16, verbose=0, shuffle=False, save_dir=str(tmp_path),
              callbacks=[At(1, reference(cb, 2.0)), At(2, reference(cb, -1.0)),
                         At(3, reference(cb, 2.0)), cb, probe, stop])
    # epoch 1: 0.5 refused; epoch 2: retried at 0.25, kept; epoch 3: behind the
    # schedule, 0.5 tried again and refused; the retry at 0.375 is pending
    assert seen[1] == (WIDTHS, 0) and seen[2] == (scaled(0.25), 1) and seen[3] == (scaled(0.25), 1)
    assert [u["epoch"] for u in cb.budget.undone] == [1, 3]
    assert [u["target"] for u in cb.budget.undone] == [0.5, 0.5]
    assert set(cb.budget.retry.values()) == {0.375} and not cb.budget.stopped
    assert cb.budget_summary()["reached"] == 0.25 and cb.budget_summary()["target"] == 0.5
    from slim_callbacks.callbacks.ledger import load_ledger
    assert load_ledger(str(tmp_path / "3"))["budget"]["retry"] == cb.budget.retry

    paddle.seed(0)
    cb2 = make(resume_from=str(tmp_path / "3"))
    net2, model2 = budget_model()
    model2.fit(data, data, epochs=6, batch_size=16, verbose=0, shuffle=False,
               callbacks=[At(0, reference(cb2, -1.0)), At(1, reference(cb2, 2.0)), cb2])
    # global epoch 4: the retry at 0.375, kept; epoch 5: 0.5 again, refused (retry 0.4375)
    assert [h["epoch"] for h in cb2.history] == [2, 4]
    assert [u["epoch"] for u in cb2.budget.undone] == [1, 3, 5]
    assert widths(net2) == scaled(0.375) and cb2.budget.reached() == 0.375
    assert set(cb2.budget.retry.values()) == {0.4375}


def test_a_refused_step_below_budget_min_step_stops_pruning():
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[1],
                       max_metric_drop=0.02, budget_metric="acc", budget_min_step=0.2)
    paddle.seed(0)
    net, model = budget_model()
    data = dataset(32)
    # 0.5 refused (retry 0.25), 0.25 refused (half of it, 0.125 < 0.2: stop)
    model.fit(data, data, epochs=4, batch_size=16, verbose=0, shuffle=False,
              callbacks=[At(1, reference(cb, 2.0)), At(2, reference(cb, 2.0)), cb])
    assert [u["target"] for u in cb.budget.undone] == [0.5, 0.25]
    assert cb.budget.stopped and cb.budget.retry is None and widths(net) == WIDTHS
    assert cb.history == [] and cb.budget_summary()["reached"] == 0.0


@pytest.mark.parametrize("value", [0, 1.5, "0.1"])
def test_bad_budget_min_step_is_a_config_error(value):
    with pytest.raises(ConfigError, match="budget_min_step"):
        budgeted(0.5, max_metric_drop=0.02, budget_min_step=value)


def test_run_summary_reports_the_budget():
    from slim_callbacks.app.runner import budget_summary
    nn = paddle.nn
    net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2D(8, 8, 3, padding=1),
                        nn.ReLU(), nn.Conv2D(8, 4, 1))
    with_budget = budgeted({"0": 0.5, "2": 0.3}, max_metric_drop=0.02, input_shape=[1, 3, 8, 8])
    with_budget.pruner = Pruner(net, [1, 3, 8, 8], with_budget.spec).prepare()
    assert sorted(with_budget.group_ratios.values()) == [0.3, 0.5]
    with_budget.budget.keep({g: r / 2 for g, r in with_budget.group_ratios.items()})
    summary = budget_summary([paddle.callbacks.LRScheduler(), with_budget])
    assert summary["target"] == pytest.approx(0.4) and summary["reached"] == pytest.approx(0.2)
    assert summary["undone"] == [] and not summary["stopped"]
    assert budget_summary([PruneCallback(0.5)]) is None and budget_summary([]) is None


def test_an_undo_puts_back_the_int_attributes_a_plan_set():
    """A plan also sets layer attributes (``head_dim``, ``num_heads``): an undone event
    must put them back with the tensors, or the next forward reshapes wrongly."""
    from helpers import TinyViT

    from slim_callbacks import prune
    from slim_callbacks.pruning.snapshot import Snapshot
    paddle.seed(0)
    net = TinyViT()
    x = paddle.randn([2, 3, 16, 16])
    net.eval()
    before = net(x).numpy()
    snap = Snapshot.take(net, None, {})
    plan = prune(net, [1, 3, 16, 16], {"blocks.*.attn.qkv": 0.5})
    assert plan.attrs and net.blocks[0].attn.head_dim == 4
    snap.restore()
    assert net.blocks[0].attn.head_dim == 8
    np.testing.assert_allclose(net(x).numpy(), before, atol=1e-6)


class Killed(Exception):
    """Stands for the run being killed."""


class Scripted(paddle.metric.Metric):
    """An eval metric whose value is scripted per global epoch: ``values[e]`` after the
    event of epoch ``e`` (the epoch read from the pruning callback). The eval of epoch
    ``killed_at`` raises :class:`Killed`."""

    def __init__(self, values, pruner, killed_at=None):
        super().__init__()
        self.values, self.pruner, self.killed_at = values, pruner, killed_at

    def name(self):
        return "acc"

    def reset(self):
        pass

    def update(self, *args):
        pass

    def accumulate(self):
        epoch = max(self.pruner.last_epoch, 0)
        if epoch == self.killed_at and not self.pruner.network.training:
            raise Killed
        return self.values[epoch]


# epoch 1 accepted (0.60 vs 0.50), 2 accepted (0.70), 3 refused (0.62 is 0.08 below
# 0.70, but within 0.05 of epoch 1's 0.60), 4: the retry at half the step, accepted,
# 5: the whole step again (behind the schedule), accepted
SCRIPT = [0.50, 0.60, 0.70, 0.62, 0.69, 0.69]


def scripted_fit(save_dir, resume_from=None, killed_at=None):
    """A 6-epoch AGP run (events at epochs 1-4) judged by :data:`SCRIPT`, killed
    during the eval of global epoch ``killed_at``."""
    paddle.seed(0)
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], schedule="agp", start_epoch=1,
                       end_epoch=4, max_metric_drop=0.05, budget_min_step=0.01,
                       resume_from=resume_from)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), Scripted(SCRIPT, cb, killed_at))
    data = dataset(32)
    try:
        model.fit(data, data, epochs=6, batch_size=16, verbose=0, shuffle=False,
                  save_dir=str(save_dir), callbacks=[cb])
    except Killed:
        pass
    return net, cb


def decisions(cb):
    return [h["epoch"] for h in cb.history], [u["epoch"] for u in cb.budget.undone]


def test_a_resumed_run_judges_its_events_as_an_uninterrupted_one(tmp_path):
    import os
    whole, whole_cb = scripted_fit(tmp_path / "whole")
    assert decisions(whole_cb) == ([1, 2, 4, 5], [3])
    cut = tmp_path / "cut"
    scripted_fit(cut)
    for name in os.listdir(cut):  # as if killed during epoch 3
        if name.split(".")[0] in ("3", "4", "5", "final"):
            os.remove(cut / name)
    resumed, resumed_cb = scripted_fit(cut, resume_from=str(cut))
    assert decisions(resumed_cb) == decisions(whole_cb)
    assert widths(resumed) == widths(whole) != WIDTHS
    assert resumed_cb.history[-1]["macs"] == whole_cb.history[-1]["macs"]


def test_a_run_killed_during_an_events_eval_resumes_before_that_event(tmp_path):
    whole, whole_cb = scripted_fit(tmp_path / "whole")
    cut = tmp_path / "cut"
    scripted_fit(cut, killed_at=3)  # epoch 3's event pruned and saved, never judged
    resumed, resumed_cb = scripted_fit(cut, resume_from=str(cut))
    assert resumed_cb.epoch_offset == 3
    assert decisions(resumed_cb) == decisions(whole_cb)
    assert widths(resumed) == widths(whole)


def budget_fit(cb, metrics=True, eval_data=True, before=None, net=None):
    paddle.seed(0)
    net = net or Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy() if metrics else None)
    data = dataset(32)
    callbacks = ([] if before is None else [At(0, before)]) + [cb]
    model.fit(data, data if eval_data else None, epochs=2, batch_size=16, verbose=0,
              shuffle=False, callbacks=callbacks)
    return net


@pytest.mark.parametrize("metrics, eval_data, metric, error, text", [
    (True, False, None, "SlimError", "needs an eval after each event: pass eval_data"),
    (False, True, None, "SlimError", r"needs an eval metric; the fit logs only \['loss'\]"),
    (True, True, "top5", "ConfigError", r"budget_metric: 'top5' .*one of the fit's eval logs: \['loss', 'acc'\]"),
])
def test_a_budget_the_fit_cannot_judge_is_refused_before_any_event(metrics, eval_data, metric,
                                                                   error, text):
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[0],
                       max_metric_drop=0.02, budget_metric=metric)
    net = Net()
    start = snapshot(net)
    with pytest.raises(SlimError, match=text) as info:
        budget_fit(cb, metrics, eval_data, net=net)
    assert type(info.value).__name__ == error
    assert cb.history == [] and same(snapshot(net), start) and widths(net) == WIDTHS


@pytest.mark.parametrize("metric, mode, reference, value, kept", [
    ("acc", None, 0.90, 0.87, False),     # higher is better: a fall of 0.03
    ("acc", None, 0.90, 0.95, True),
    ("loss", None, 1.00, 0.50, True),     # lower is better: a fall is an improvement
    ("loss", None, 1.00, 1.03, False),
    ("top1_error", None, 0.10, 0.13, False),
    ("mae", "min", 1.00, 0.50, True),     # an explicit direction wins over the name
    ("loss", "max", 1.00, 0.50, False),
])
def test_the_budget_direction(metric, mode, reference, value, kept):
    budget = MetricBudget(0.02, metric=metric, mode=mode)
    budget.reference = reference
    assert budget.accepts({metric: [value]}) is kept
    assert budget.reference == (value if kept else reference)


def test_an_event_that_lowered_the_loss_is_kept():
    cb = budgeted(0.5, input_shape=[1, 3, 16, 16], prune_epochs=[0],
                       max_metric_drop=0.01, budget_metric="loss")

    def high_reference():
        cb.budget.reference = 1e9  # any loss is far below it: an improvement
    budget_fit(cb, before=high_reference)
    assert cb.budget.undone == [] and len(cb.history) == 1


@pytest.mark.parametrize("kwargs, text", [
    (dict(budget_mode="up"), r"budget_mode: 'up' .*one of max, min"),
    (dict(budget_metric=""), r"budget_metric: ''"),
    (dict(budget_min_step=0), r"budget_min_step: 0"),
])
def test_bad_budget_arguments_are_config_errors(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        budgeted(0.5, max_metric_drop=0.02, **kwargs)
