"""FilterPruner.sensitive / get_ratios_by_sensitivity / sensitive_prune: the
MobileNetV1 table's sensitive flows, on tiny widths."""
import json

import numpy as np
import paddle
import pytest
from helpers import Net, calibrate, same, snapshot

from slim_callbacks import SlimError, sensitivity
from slim_callbacks.paddleslim import L1NormFilterPruner, Status, flops

SHAPE = [1, 3, 16, 16]
RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def network():
    paddle.seed(0)
    net = Net()
    calibrate(net, SHAPE)
    return net


def evaluator(net, calls=None):
    """A metric that falls as channels go: minus the distance to the unpruned outputs."""
    x = paddle.randn([4] + SHAPE[1:])
    net.eval()
    with paddle.no_grad():
        reference = net(x).numpy()

    def eval_func():
        if calls is not None:
            calls.append(1)
        net.eval()
        with paddle.no_grad():
            return 1.0 - float(np.abs(net(x).numpy() - reference).mean())
    return eval_func


def conv_weights(net):
    return [net.c1[0].weight.name, net.c2[0].weight.name, net.c3[0].weight.name]


def test_sensitive_fills_saves_and_returns_a_table_by_parameter_name(tmp_path):
    net = network()
    start = snapshot(net)
    path = str(tmp_path / "sen.pickle")
    pruner = L1NormFilterPruner(net, SHAPE)
    table = pruner.sensitive(eval_func=evaluator(net), sen_file=path)
    assert list(table) == conv_weights(net)
    assert all(list(losses) == RATIOS for losses in table.values())
    assert all(min(losses.values()) >= 0 and losses[0.9] > losses[0.1] for losses in table.values())
    assert same(snapshot(net), start)
    assert json.load(open(path))["sensitivities"].keys() == set(table)
    assert pruner.sensitive() is table and Status(path).sensitivies == table


def test_the_losses_are_the_engines_for_the_same_group():
    net = network()
    fn = evaluator(net)
    table = L1NormFilterPruner(net, SHAPE).sensitive(fn, target_vars=[net.c2[0].weight.name])
    native = sensitivity(net, lambda n: fn(), SHAPE, layers=["c2.0"], progress=False)
    np.testing.assert_allclose(list(table[net.c2[0].weight.name].values()),
                               list(native["c2.0"].values()), rtol=1e-6)


def test_an_interrupted_analysis_resumes_from_its_file(tmp_path):
    net = network()
    path = str(tmp_path / "sen.json")
    calls = []
    fn = evaluator(net, calls)

    def failing():
        if len(calls) == 5:
            raise KeyboardInterrupt
        return fn()

    with pytest.raises(KeyboardInterrupt):
        L1NormFilterPruner(net, SHAPE).sensitive(failing, path, skip_vars=[net.c3[0].weight.name])
    saved = Status(path).sensitivies
    assert sum(map(len, saved.values())) == 4  # the base evaluation, then 4 losses
    calls.clear()
    table = L1NormFilterPruner(net, SHAPE, sen_file=path).sensitive(fn, path,
                                                                    skip_vars=[net.c3[0].weight.name])
    assert len(calls) == 1 + 2 * len(RATIOS) - 4
    assert list(table) == conv_weights(net)[:2] and table[conv_weights(net)[0]] == {
        **table[conv_weights(net)[0]], **saved[conv_weights(net)[0]]}


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_sensitive_prune_reaches_the_flops_target_and_restore_undoes_it(target):
    net = network()
    start = snapshot(net)
    base = flops(net, SHAPE, only_conv=False)
    pruner = L1NormFilterPruner(net, SHAPE)
    pruner.sensitive(evaluator(net))
    ratios, measured = pruner.get_ratios_by_sensitivity(target)
    assert same(snapshot(net), start) and pruner.plan is None
    assert set(ratios) <= set(conv_weights(net))
    plan = pruner.sensitive_prune(target)
    assert pruner.plan is plan and plan.pruned_flops == pytest.approx(measured)
    assert (base - flops(net, SHAPE, only_conv=False)) / base == pytest.approx(measured)
    assert abs(measured - target) < 0.03
    pruner.restore()
    assert same(snapshot(net), start)


def test_sensitive_prune_needs_sensitivities():
    with pytest.raises(SlimError, match=r"no sensitivities yet: call sensitive\(eval_func, sen_file\)"):
        L1NormFilterPruner(network(), SHAPE).sensitive_prune(0.3)


def test_sensitive_prune_skips_and_aligns():
    net = network()
    pruner = L1NormFilterPruner(net, SHAPE)
    pruner.sensitive(evaluator(net))
    pruner.sensitive_prune(0.4, skip_vars=[net.c1[0].weight.name], align=4)
    assert net.c1[0].weight.shape[0] == 16
    assert all(net.__getattr__(n)[0].weight.shape[0] % 4 == 0 for n in ("c2", "c3"))
