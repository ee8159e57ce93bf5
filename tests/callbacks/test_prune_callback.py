"""PruneCallback inside real paddle.Model.fit runs: schedules, criteria, validation, log line."""
import logging
import os
import warnings

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, WIDTHS, Net, dataset, widths

from slim_callbacks.callbacks import PruneCallback
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.pruning import PruningSpec


class Probe(paddle.callbacks.Callback):
    """Records widths (and losses) at every on_epoch_end, after PruneCallback."""

    def __init__(self):
        super().__init__()
        self.widths, self.losses = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.widths[epoch] = widths(self.model.network)
        self.losses[epoch] = float(np.asarray(logs["loss"]).ravel()[0])


def fit(cb, epochs=3, opt="momentum", lr=0.05, seed=0, probe=None, net=None, **kw):
    paddle.seed(seed)
    net = net or Net()
    params = net.parameters()
    optimizer = (paddle.optimizer.Momentum(lr, parameters=params) if opt == "momentum"
                 else paddle.optimizer.Adam(lr, parameters=params))
    model = paddle.Model(net)
    model.prepare(optimizer, nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    probe = probe or Probe()
    model.fit(dataset(), epochs=epochs, batch_size=16, verbose=0, shuffle=False,
              callbacks=[cb, probe], **kw)
    return model, probe


def expected(ratio):
    return {name: keep_count(w, ratio, original=w) for name, w in WIDTHS.items()}


# -- schedule kinds ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, events", [
    (dict(ratios=0.5), {0: 0.5}),
    (dict(ratios=0.5, schedule="oneshot", start_epoch=1), {1: 0.5}),
    (dict(ratios=0.5, prune_epochs=[0, 2]), {0: 0.25, 2: 0.5}),
    (dict(schedule={0: 0.25, 1: 0.5}), {0: 0.25, 1: 0.5}),
    (dict(ratios=0.5, schedule="linear", start_epoch=0, end_epoch=2), {0: 1 / 6, 1: 1 / 3, 2: 0.5}),
    (dict(ratios=0.5, schedule="agp", start_epoch=0, end_epoch=2),
     {0: 0.5 * (1 - (2 / 3) ** 3), 1: 0.5 * (1 - (1 / 3) ** 3), 2: 0.5}),
    (dict(ratios=0.75, schedule="exp", start_epoch=0, end_epoch=1), {0: 0.5, 1: 0.75}),
])
def test_schedule_kinds_prune_at_their_epochs(kwargs, events):
    cb = PruneCallback(input_shape=SHAPE, **kwargs)
    _, probe = fit(cb, epochs=4)
    assert [h["epoch"] for h in cb.history] == sorted(events)
    target = 0.0
    for epoch in range(4):
        target = events.get(epoch, target)
        assert probe.widths[epoch] == expected(target), (epoch, target)


def test_pattern_ratios_and_skip_prune_only_matching_groups():
    cb = PruneCallback({"c1": 0.5, "c*": 0.25}, skip=["c3"], prune_epochs=[1], input_shape=SHAPE)
    model, probe = fit(cb, epochs=2)
    assert probe.widths[0] == WIDTHS
    assert probe.widths[1] == {"c1.0": 8, "c2.0": 24, "c3.0": 32}


def test_map_schedule_with_pattern_ratios_scales_each_pattern():
    cb = PruneCallback({"c1": 0.5, "c2": 0.25}, schedule={0: 0.25, 1: 0.5}, input_shape=SHAPE)
    _, probe = fit(cb, epochs=2)
    assert probe.widths[0] == {"c1.0": 12, "c2.0": 28, "c3.0": 32}
    assert probe.widths[1] == {"c1.0": 8, "c2.0": 24, "c3.0": 32}


def test_round_to_keeps_multiples():
    cb = PruneCallback(0.3, round_to=8, input_shape=SHAPE)
    model, _ = fit(cb, epochs=1)
    assert all(w % 8 == 0 for w in widths(model.network).values())
    assert widths(model.network) == {"c1.0": 8, "c2.0": 24, "c3.0": 24}


# -- criteria ------------------------------------------------------------------------

@pytest.mark.parametrize("criterion", ["l1_norm", "l2_norm", "fpgm", "geometry_median", "slim", "bn_scale"])
def test_each_criterion_prunes_to_the_target(criterion):
    cb = PruneCallback(0.5, criterion, prune_epochs=[1], input_shape=SHAPE)
    model, probe = fit(cb, epochs=2)
    assert probe.widths[0] == WIDTHS and probe.widths[1] == expected(0.5)
    assert cb.history[0]["plan"]["groups"][0]["criterion"] == cb.criterion.name


def test_slim_removes_the_smallest_gammas():
    paddle.seed(0)
    net = Net()
    gamma = np.linspace(0.01, 1.0, 16).astype("float32")[::-1].copy()
    net.c1[1].weight.set_value(gamma)
    cb = PruneCallback({"c1": 0.5}, "slim", input_shape=SHAPE)
    fit(cb, epochs=1, lr=1e-4, net=net)
    kept = cb.plan.params[("c1.0", "weight")].kept[0]
    assert kept == list(range(8))  # the 8 largest gammas are the first 8


def test_opt_slim_bounds_the_share_of_squared_gammas():
    paddle.seed(0)
    net = Net()
    gamma = np.full(16, 1.0, dtype="float32")
    gamma[:5] = 0.001  # 5 near-dead channels hold a tiny share of sum(gamma^2)
    net.c1[1].weight.set_value(gamma)
    cb = PruneCallback({"c1": 0.01}, "opt_slim", input_shape=SHAPE)
    model, _ = fit(cb, epochs=1, lr=1e-4, net=net)
    assert widths(model.network)["c1.0"] == 11
    assert cb.plan.params[("c1.0", "weight")].kept[0] == list(range(5, 16))


# -- the log line ----------------------------------------------------------------------

def test_each_event_logs_one_fixed_line(caplog):
    cb = PruneCallback(0.5, prune_epochs=[0, 1], input_shape=SHAPE)
    with caplog.at_level(logging.INFO, logger="slim_callbacks.callbacks.prune"):
        fit(cb, epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "slim_callbacks.callbacks.prune"]
    assert len(lines) == 2
    import re
    pattern = (r"^epoch (\d+): pruned (\d+) groups, MACs ([\d.]+[KMG]?) -> ([\d.]+[KMG]?) "
               r"\(([-+][\d.]+)%\), params ([\d.]+[KMG]?) -> ([\d.]+[KMG]?)$")
    first = re.match(pattern, lines[0])
    assert first and first.group(1) == "0" and first.group(2) == "3"
    h = cb.history[0]
    change = (h["macs"][1] - h["macs"][0]) / h["macs"][0] * 100
    assert first.group(5) == f"{change:+.1f}" and change < 0
    assert lines[1].startswith("epoch 1: pruned 3 groups, MACs ")
    assert cb.history[1]["macs"][0] == cb.history[0]["macs"][1]


def test_human_units():
    from slim_callbacks.callbacks.log_lines import event_line
    assert event_line(3, 12, (568_740_352, 401_200_000), (4_253_864, 3_020_000)) == \
        "epoch 3: pruned 12 groups, MACs 568.7M -> 401.2M (-29.5%), params 4.25M -> 3.02M"


# -- it keeps learning after a mid-training prune --------------------------------------

@pytest.mark.parametrize("opt, lr, amp", [("momentum", 0.05, None), ("adam", 0.005, None),
                                         ("adam", 0.005, "O1")])
def test_training_continues_after_a_prune(opt, lr, amp):
    class Snap(paddle.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.w = {}

        def on_epoch_end(self, epoch, logs=None):
            self.w[epoch] = self.model.network.c2[0].weight.numpy().copy()

    snap = Snap()
    probe = Probe()
    cb = PruneCallback(0.5, prune_epochs=[1], input_shape=SHAPE)
    paddle.seed(0)
    net = Net()
    optimizer = (paddle.optimizer.Momentum(lr, parameters=net.parameters()) if opt == "momentum"
                 else paddle.optimizer.Adam(lr, parameters=net.parameters()))
    model = paddle.Model(net)
    model.prepare(optimizer, nn.CrossEntropyLoss(), paddle.metric.Accuracy(), amp_configs=amp)
    model.fit(dataset(128), epochs=5, batch_size=16, verbose=0, shuffle=False,
              callbacks=[cb, probe, snap])
    assert snap.w[1].shape == (16, 8, 3, 3) == snap.w[4].shape
    assert np.abs(snap.w[4] - snap.w[2]).max() > 1e-4  # pruned layers still train
    # the optimizer state was sliced: accumulators have the pruned shape
    for acc in optimizer._accumulators.values():
        state = acc.get(net.c2[0].weight.name)
        if state is not None and state.ndim == 4:
            assert list(state.shape) == [16, 8, 3, 3]
    assert probe.losses[4] < probe.losses[2] < probe.losses[0]
    result = model.evaluate(dataset(64, seed=1), batch_size=32, verbose=0)
    assert result["acc"] > 0.5


def test_checkpoint_of_the_pruning_epoch_is_pruned(tmp_path):
    cb = PruneCallback(0.5, prune_epochs=[0], input_shape=SHAPE)
    fit(cb, epochs=1, save_dir=str(tmp_path))
    state = paddle.load(str(tmp_path / "0.pdparams"))
    assert list(state["c2.0.weight"].shape) == [16, 8, 3, 3]
    assert os.path.exists(tmp_path / "0.pruning.json") and os.path.exists(tmp_path / "final.pruning.json")


# -- validation -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, key", [
    (dict(ratios=1.0), "ratios"),
    (dict(ratios=-0.1), "ratios"),
    (dict(ratios="half"), "ratios"),
    (dict(ratios={"c1": 1.5}), "ratios['c1']"),
    (dict(ratios=0.5, criterion="l3_norm"), "criterion"),
    (dict(ratios=0.5, round_to=0), "round_to"),
    (dict(ratios=0.5, prune_epochs=[]), "prune_epochs"),
    (dict(ratios=0.5, prune_epochs=[2, 1]), "epochs"),
    (dict(ratios=0.5, schedule="cubic"), "schedule"),
    (dict(ratios=0.5, schedule="agp"), "end_epoch"),
    (dict(ratios=0.5, start_epoch=-1), "start_epoch"),
    (dict(ratios=0.5, frequency=0), "frequency"),
    (dict(), "ratios"),
    (dict(ratios=0.5, schedule={1: 0.3}), "ratios"),
    (dict(ratios=0.5, input_shape=[1, 3, "16"]), "input_shape"),
    (dict(ratios=0.5, target_flops_reduction=0.5), "ratios"),
    (dict(target_flops_reduction=1.5), "target_flops_reduction"),
    (dict(ratios=0.5, skip=5), "skip"),
    (dict(ratios={"c1": 0.5}, layers=["c1"]), "layers"),
    (dict(ratios=0.5, strategy="best"), "strategy"),
    (dict(ratios=0.5, strategy="global", strategy_options={"max_ratoi": 0.8}),
     "strategy_options['max_ratoi']"),
    (dict(ratios=0.5, strategy="sensitive"), "ratios"),
    (dict(ratios=0.3, schedule={"kind": "agp", "start_epoch": 0, "end_epoch": 2,
                                "initial_ratio": 0.5}), "ratios"),
])
def test_bad_arguments_fail_at_construction(kwargs, key):
    kwargs.setdefault("input_shape", SHAPE)
    with pytest.raises(ConfigError) as info:
        PruneCallback(**kwargs)
    assert info.value.key.startswith(key) or key in str(info.value)


def test_unknown_criterion_lists_the_names():
    with pytest.raises(ConfigError, match="l1_norm, l2_norm"):
        PruneCallback(0.5, "l3", input_shape=SHAPE)


@pytest.mark.parametrize("kwargs", [
    dict(ratios=0.5, prune_epochs=[1, 3]),
    dict(ratios=0.5, schedule="agp", start_epoch=0, end_epoch=5),
    dict(schedule={0: 0.2, 7: 0.5}),
    dict(ratios={"nonexistent*": 0.5}),
    dict(ratios=0.5, skip=["nope"]),
])
def test_bad_fit_config_fails_before_any_weight_changes(kwargs):
    paddle.seed(0)
    net = Net()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(ConfigError):
        model.fit(dataset(16), epochs=3, batch_size=16, verbose=0,
                  callbacks=[PruneCallback(input_shape=SHAPE, **kwargs)])
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


def test_bn_l1_with_a_weight_criterion_warns():
    with pytest.warns(UserWarning, match="ignores BatchNorm"):
        PruneCallback(spec=PruningSpec(0.5, criterion="l1_norm", aids={"bn_l1": 1e-4}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PruneCallback(spec=PruningSpec(0.5, criterion="slim", aids={"bn_l1": 1e-4}))


def test_input_shape_defaults_to_the_model_input_spec():
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net, inputs=[paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")])
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    cb = PruneCallback(0.5)
    model.fit(dataset(16), epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.input_shape == SHAPE and widths(net) == expected(0.5)


def test_target_flops_reduction_bisects_a_uniform_ratio_at_train_begin():
    pytest.importorskip("slim_callbacks.analysis.strategies")
    from slim_callbacks.analysis.flops import count_flops
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    base = count_flops(net, [1, 3, 32, 32])
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()), nn.CrossEntropyLoss())
    data = paddle.io.TensorDataset([paddle.randn([4, 3, 32, 32]), paddle.randint(0, 10, [4, 1])])
    cb = PruneCallback(target_flops_reduction=0.5, layers=["conv*._pointwise_conv*"],
                       input_shape=[1, 3, 32, 32])
    model.fit(data, epochs=1, batch_size=4, verbose=0, callbacks=[cb])
    assert 0.25 < cb.uniform_ratio < 0.4
    assert len(cb.plan) == 13  # the 13 pointwise convs, nothing else
    assert all("_pointwise_conv" in g["name"] for g in cb.plan.groups)
    assert 0.45 < 1 - count_flops(net, [1, 3, 32, 32]) / base < 0.55


def test_a_reused_callback_refuses_a_second_network_before_changing_it():
    """It used to prune the second network with the first one's plan, then fail."""
    from slim_callbacks.core.errors import SlimError
    cb = PruneCallback(0.5, input_shape=SHAPE)
    fit(cb, epochs=1)
    paddle.seed(1)
    second = Net()
    before = {k: v.numpy().copy() for k, v in second.state_dict().items()}
    with pytest.raises(SlimError, match=r"^this PruneCallback already pruned a Net \(another "
                                        r"network than this fit's Net\); expected a new "
                                        r"PruneCallback for each network$"):
        fit(cb, epochs=1, net=second)
    after = second.state_dict()
    assert all(np.array_equal(before[k], after[k].numpy()) for k in before)


def test_strategy_global_goes_through_resolve_strategy():
    """The callback and recipes share one path: resolve_strategy on the fit's network."""
    from slim_callbacks.analysis.strategies import resolve_strategy
    paddle.seed(0)
    expected_ratios = resolve_strategy("global", Net(), SHAPE, channel_ratio=0.5, max_ratio=0.6,
                                       criterion="l1_norm", skip=[], round_to=1)
    cb = PruneCallback(0.5, input_shape=SHAPE, strategy="global",
                       strategy_options={"max_ratio": 0.6})
    fit(cb, epochs=1)
    assert cb.group_ratios == expected_ratios
    assert len(set(cb.group_ratios.values())) > 1          # per layer, not one uniform ratio
    assert max(cb.group_ratios.values()) <= 0.6


def test_a_float_ratio_may_be_limited_to_layers():
    cb = PruneCallback(0.5, input_shape=SHAPE, layers=["c2*"])
    _, probe = fit(cb, epochs=1)
    assert probe.widths[0] == {**WIDTHS, "c2.0": keep_count(32, 0.5)}
