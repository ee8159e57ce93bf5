"""The Pruner: stepping through a schedule in a hand-written loop, exact removal of
dead channels, undo, and one trace per structure."""
import numpy as np
import paddle
import pytest
from helpers import ConvBN, calibrate, kill_units, outputs, same, snapshot, train_steps

from slim_callbacks import ConfigError, Pruner, PruningSpec
from slim_callbacks.tracing.tracer import trace

nn = paddle.nn
SHAPE = [1, 3, 8, 8]


def small_net(seed=0):
    paddle.seed(seed)
    return nn.Sequential(ConvBN(3, 8), ConvBN(8, 8), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
                         nn.Linear(8, 4))


def test_a_hand_written_loop_prunes_at_the_scheduled_epochs():
    net = small_net()
    opt = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    pruner = Pruner(net, SHAPE, ratios=0.5, schedule={1: 0.25, 3: 0.5}, optimizer=opt)
    x, y = paddle.randn([4, 3, 8, 8]), paddle.arange(4)
    widths, losses = [], []
    for epoch in range(4):
        losses += train_steps(net, opt, x, y, 2)
        plan = pruner.step(epoch)
        assert (plan is not None) == (epoch in (1, 3))
        widths.append(net[0][0].weight.shape[0])
    assert widths == [8, 6, 6, 4]
    assert [e["epoch"] for e in pruner.history] == [1, 3]
    assert pruner.achieved_ratio() == pytest.approx(0.5)
    assert all(np.isfinite(losses))
    # the momentum state was sliced with the parameters: training goes on
    assert all(np.isfinite(train_steps(net, opt, x, y, 2)))


def test_dead_channels_are_removed_exactly_by_prune_to():
    net = small_net(1)
    calibrate(net, SHAPE)
    kill_units(net, trace(net, SHAPE), ratio=0.5)
    x = paddle.randn([2, 3, 8, 8])
    before = outputs(net, x)
    pruner = Pruner(net, SHAPE, ratios=0.5)
    plan = pruner.prune_to(pruner.prepare().group_ratios)
    assert len(plan) == 2
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def test_undo_puts_back_weights_optimizer_state_plan_and_history():
    net = small_net(2)
    opt = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    train_steps(net, opt, paddle.randn([4, 3, 8, 8]), paddle.arange(4), 1)
    pruner = Pruner(net, SHAPE, ratios=0.5, optimizer=opt)
    pruner.step(0)
    kept = snapshot(net, opt)
    plan_before, history_before = pruner.plan.to_dict(), list(pruner.history)
    pruner.prune_to({g: 0.75 for g in pruner.group_ratios}, epoch=1, undoable=True)
    assert net[0][0].weight.shape[0] == 2
    pruner.undo()
    assert same(snapshot(net, opt), kept)
    assert pruner.plan.to_dict() == plan_before and pruner.history == history_before
    with pytest.raises(ConfigError, match="undo: None is not allowed; expected a prune_to"):
        pruner.undo()


def test_drop_undo_keeps_the_event_and_frees_its_copy():
    net = small_net(2)
    pruner = Pruner(net, SHAPE, ratios=0.5)
    pruner.prune_to({g: 0.5 for g in pruner.prepare().group_ratios}, undoable=True)
    pruner.drop_undo()
    with pytest.raises(ConfigError, match="nothing to undo"):
        pruner.undo()
    assert net[0][0].weight.shape[0] == 4 and len(pruner.history) == 1


def test_each_structure_is_traced_once():
    net = small_net(3)
    pruner = Pruner(net, SHAPE, ratios=0.5, schedule={0: 0.25, 1: 0.5})
    pruner.prepare()
    assert pruner.traces == 1           # strategy and targets share the first trace
    pruner.step(0)
    assert pruner.traces == 1           # the first event reuses it
    pruner.step(1)
    assert pruner.traces == 2           # the pruned structure is traced again, once
    pruner.step(2)                      # no event: nothing traced
    assert pruner.traces == 2


def test_a_spec_and_its_fields_as_keywords_are_not_both_taken():
    net = small_net()
    weights = snapshot(net)
    with pytest.raises(ConfigError, match="ratios: 0.5 is not allowed; expected no spec field"):
        Pruner(net, SHAPE, PruningSpec(ratios=0.3), ratios=0.5)
    with pytest.raises(ConfigError, match="spec: 0.3 is not allowed; expected a PruningSpec"):
        Pruner(net, SHAPE, 0.3)
    assert same(snapshot(net), weights)


def test_a_flops_target_is_resolved_once_into_group_ratios():
    net = small_net(4)
    pruner = Pruner(net, SHAPE, target_flops_reduction=0.4).prepare()
    assert pruner.uniform_ratio is not None and 0 < pruner.uniform_ratio < 1
    assert set(pruner.group_ratios.values()) == {pruner.uniform_ratio}
    assert pruner.targets == {0: pruner.group_ratios}
