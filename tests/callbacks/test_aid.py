"""The training aids as callbacks of their own beside a PruneCallback: they find it in
any order of the fit's callbacks, and behave exactly as the spec form (and the
deprecated keywords) does."""
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, WIDTHS, At, Net, aided, dataset, same, snapshot, widths

from slim_callbacks.callbacks import (
    AccuracyBudget,
    BNRecalibration,
    BNScaleL1,
    DistillCallback,
    PruneCallback,
    VisualDLLogger,
)
from slim_callbacks.core.errors import ConfigError, SlimError


def run(callbacks, epochs=3, evaluate=False, first=()):
    """Fits a seeded Net with ``callbacks`` (a function of nothing, so the callbacks
    are built after the seed); returns the network's state and the callbacks."""
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    cbs = callbacks()
    data = dataset(32)
    model.fit(data, data if evaluate else None, epochs=epochs, batch_size=16, verbose=0,
              shuffle=False, callbacks=[*first, *cbs])
    return snapshot(net), net, cbs


def kwargs():
    return dict(ratios=0.5, input_shape=SHAPE, prune_epochs=[1, 2])


def test_distill_beside_the_callback_is_the_spec_form():
    spec_form, _, (cb,) = run(lambda: [aided(**kwargs(), distill={"alpha": 0.7})])
    beside, _, (cb2, distill) = run(lambda: [PruneCallback(**kwargs()), DistillCallback(alpha=0.7)])
    assert same(spec_form, beside) and cb.history == cb2.history
    assert cb2.distill is distill and distill.steps == cb.distill.steps == 2  # after the event


def test_recalibration_and_bn_l1_beside_the_callback_are_the_spec_form():
    spec_form, _, (cb,) = run(lambda: [aided(**kwargs(), criterion="slim", bn_l1=1e-2,
                                             recalibrate_bn=2)])
    # in any order of the list: the aids meet the PruneCallback through fit's params
    beside, net, (recal, l1, cb2) = run(lambda: [
        BNRecalibration(2), BNScaleL1(1e-2), PruneCallback(**kwargs(), criterion="slim")])
    assert same(spec_form, beside) and cb.history == cb2.history
    assert recal.recalibrated == [(1, 2), (2, 2)] and l1.end_epoch == 3 == cb.bn_l1.end_epoch
    assert not net._forward_pre_hooks  # the recorder is gone after fit


def test_the_budget_beside_the_callback_is_the_spec_form():
    def refuse(cb):
        return At(1, lambda: setattr(cb.budget, "reference", 2.0))  # forces an undo

    def spec_form():
        cb = aided(**kwargs(), max_metric_drop=0.02, budget_metric="acc")
        return [refuse(cb), cb]

    def beside():
        cb = PruneCallback(**kwargs())
        return [refuse(cb), AccuracyBudget(0.02, metric="acc"), cb]

    state, _, (_, cb) = run(spec_form, epochs=4, evaluate=True)
    state2, net, (_, budget, cb2) = run(beside, epochs=4, evaluate=True)
    assert same(state, state2) and cb2.budget is budget
    assert cb.history == cb2.history and budget.undone == cb.budget.undone
    # the reference 2.0 stays (a refused eval never becomes it): every attempt is undone
    assert [u["epoch"] for u in budget.undone] == [1, 2, 3] and budget.to_dict() == cb.budget.to_dict()
    assert widths(net) == WIDTHS and cb2.history == []


def test_the_deprecated_keywords_warn_and_do_the_same():
    def deprecated():
        # one warning per keyword; a pytest.warns re-emits what it did not match, so
        # each keyword has its own context
        with pytest.deprecated_call(match=r"PruneCallback\(distill=\.\.\.\) is deprecated; "
                                          r"put DistillCallback"):
            with pytest.deprecated_call(match=r"PruneCallback\(recalibrate_bn=\.\.\.\) is "
                                              r"deprecated; put BNRecalibration\(batches=N\)"):
                cb = PruneCallback(**kwargs(), recalibrate_bn=2, distill=True)
        return [cb]
    old, _, (cb,) = run(deprecated)
    new, _, (cb2, *_) = run(lambda: [PruneCallback(**kwargs()), BNRecalibration(2), DistillCallback()])
    assert same(old, new) and cb.history == cb2.history


@pytest.mark.parametrize("aid", [lambda: BNRecalibration(2), lambda: AccuracyBudget(0.02)])
def test_an_aid_that_needs_a_prune_callback_refuses_a_fit_without_one(aid):
    with pytest.raises(SlimError, match="put a PruneCallback in the same fit"):
        run(lambda: [aid()], evaluate=True)


def test_one_budget_per_prune_callback():
    with pytest.raises(ConfigError, match="one AccuracyBudget per PruneCallback"):
        run(lambda: [aided(**kwargs(), max_metric_drop=0.1), AccuracyBudget(0.1)], evaluate=True)


def test_aids_alone_keep_working_and_a_later_fit_meets_afresh(tmp_path):
    """A logger without a PruneCallback logs no pruning curve; the aids of an earlier
    fit are not the PruneCallback's in the next one."""
    _, _, (logger,) = run(lambda: [VisualDLLogger(str(tmp_path), log_freq=1)], epochs=1)
    assert logger.pruner is None
    cb = PruneCallback(**kwargs())
    recal = BNRecalibration(1)
    run(lambda: [cb, recal])
    assert cb.aids == [recal] and recal.prune_callback is cb
    cb.set_params({"epochs": 1})  # the params of the next fit
    assert cb.aids == []


def test_bad_batches_for_recalibration():
    with pytest.raises(ConfigError, match=r"batches: 0 .*leave the callback out"):
        BNRecalibration(0)
    with pytest.raises(ConfigError, match=r"batches: 129"):
        BNRecalibration(129)
