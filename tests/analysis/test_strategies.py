"""Strategies: uniform bisection (PaddleSlim's MobileNetV1 numbers), sensitive loss
levels, global thresholds, custom ratios, analytic FLOPs, and the single entry point."""
import copy
import logging
import re

import numpy as np
import paddle
import paddle.nn as nn
import paddle.vision.models as models
import pytest
from helpers import ConcatNet, SENet

from slim_callbacks import ConfigError, SlimError, prune, trace
from slim_callbacks.analysis.flops import count_flops
from slim_callbacks.analysis.flops_model import FlopsModel
from slim_callbacks.analysis.global_strategy import global_ratios, normalized_scores
from slim_callbacks.analysis.sensitive_strategy import ratio_for_loss, sensitive_ratios
from slim_callbacks.analysis.strategies import custom_ratios, resolve_strategy
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import resolve_ratios

SHAPE = [1, 3, 32, 32]
POINTWISE = "conv*._pointwise_conv*"


def tiny_mobilenet(seed=0):
    paddle.seed(seed)
    net = models.mobilenet_v1(scale=0.25, num_classes=10)
    rng = np.random.default_rng(seed)
    for layer in net.sublayers():  # trained-looking BN scales, not all 1.0
        if isinstance(layer, nn.BatchNorm2D):
            layer.weight.set_value(rng.uniform(0.01, 1.5, layer.weight.shape).astype("float32"))
    return net


def snapshot(net):
    return {k: v.numpy().copy() for k, v in net.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def pruned_reduction(net, shape, ratios, criterion="l1_norm", convention="macs", skip=()):
    """FLOPs reduction of a really pruned copy."""
    copied = copy.deepcopy(net)
    prune(copied, shape, ratios, criterion, skip=skip)
    return 1 - count_flops(copied, shape, convention) / count_flops(net, shape, convention)


# ----------------------------------------------------------------------- uniform
def test_uniform_reproduces_paddleslim_mobilenet_v1_bisection(caplog):
    """PaddleSlim: 13 pointwise convs, target 0.5: tries 0.5, 0.25, 0.375, 0.3125 and
    stops at 0.3125 = -49.87% MACs, 285,137,632 MACs."""
    paddle.seed(0)
    net = models.mobilenet_v1(scale=1.0, num_classes=1000)
    shape = [1, 3, 224, 224]
    before = snapshot(net)
    graph = trace(net, shape)
    assert len(resolve_ratios(graph, {POINTWISE: 0.5})) == 13
    with caplog.at_level(logging.INFO, logger="slim_callbacks.analysis.strategies"):
        ratio = uniform_ratio(net, shape, 0.5, layers=[POINTWISE], graph=graph)
    assert ratio == 0.3125
    tries = [float(t) for t in re.findall(r"uniform ratio ([0-9.]+):", caplog.text)]
    assert tries == [0.5, 0.25, 0.375, 0.3125]
    assert "uniform ratio 0.3125: -49.87% macs" in caplog.text
    assert same(snapshot(net), before)  # decided without touching the network
    assert count_flops(net, shape) == 568_740_352
    prune(net, shape, {POINTWISE: ratio})
    assert count_flops(net, shape) == 285_137_632


def test_uniform_over_every_group_hits_the_target_with_skip():
    net = tiny_mobilenet()
    for target in (0.3, 0.6):
        ratio = uniform_ratio(net, SHAPE, target, skip=["conv1"], tolerance=0.01)
        assert abs(pruned_reduction(net, SHAPE, ratio, skip=["conv1"]) - target) <= 0.01


def test_uniform_out_of_reach_is_refused():
    net = tiny_mobilenet()
    with pytest.raises(SlimError, match=r"a macs reduction of 95.00% is out of reach: pruning the 1 chosen "
                                         r"groups as far as allowed removes \d.\d\d%"):
        uniform_ratio(net, SHAPE, 0.95, layers=["conv6"])


# ------------------------------------------------------------------ FLOPs model
class DecoderNet(nn.Layer):
    """Conv, a transposed conv (plain and grouped-as-depthwise) and a Linear head."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2D(3, 16, 3, 2, 1), nn.BatchNorm2D(16), nn.ReLU())
        self.up = nn.Sequential(nn.Conv2DTranspose(16, 12, 2, 2), nn.BatchNorm2D(12), nn.ReLU())
        self.dw = nn.Conv2DTranspose(12, 12, 3, padding=1, groups=12)
        self.head = nn.Sequential(nn.Conv2D(12, 8, 1), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.head(self.dw(self.up(self.enc(x))))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SignalNet(nn.Layer):
    """Conv1D over the flattened image: counted in MACs like Conv2D."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1D(3, 16, 3, padding=1), nn.BatchNorm1D(16), nn.ReLU(),
                                  nn.Conv1D(16, 12, 1), nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.body(paddle.flatten(x, 2))
        return self.fc(x.mean(axis=2))


FLOPS_MODELS = {
    "decoder_net": DecoderNet,
    "signal_net": SignalNet,
    "mobilenet_v1": lambda: models.mobilenet_v1(scale=0.25, num_classes=10),
    "mobilenet_v2": lambda: models.mobilenet_v2(scale=0.35, num_classes=10),
    "resnet18": lambda: models.resnet18(num_classes=10),
    "se_net": SENet,
    "concat_net": ConcatNet,
}


@pytest.mark.parametrize("name", sorted(FLOPS_MODELS))
def test_analytic_flops_equal_count_flops_of_a_really_pruned_copy(name):
    paddle.seed(0)
    net = FLOPS_MODELS[name]()
    graph = trace(net, SHAPE)
    rng = np.random.default_rng(0)
    group_ratios = {g.name: float(rng.uniform(0.1, 0.8)) for g in graph.prunable_groups()}
    plan = plan_pruning(net, graph, group_ratios)
    pruned = copy.deepcopy(net)
    plan.apply(pruned)
    for convention in ("macs", "flops", "paddleslim_legacy"):
        model = FlopsModel(net, SHAPE, convention)
        assert (model.positions is not None) == (convention != "paddleslim_legacy")
        assert model.base == count_flops(net, SHAPE, convention)
        assert model.count(plan) == count_flops(pruned, SHAPE, convention) < model.base


# --------------------------------------------------------------------- sensitive
@pytest.mark.parametrize("level, ratio", [
    (0.0, 0.0), (0.005, 0.05), (0.01, 0.1), (0.02, 0.15), (0.03, 0.2), (0.115, 0.25),
    (1.0, 0.3),  # never extrapolated past the largest ratio analysed
])
def test_ratio_for_loss_interpolates_from_zero(level, ratio):
    assert ratio_for_loss({0.1: 0.01, 0.2: 0.03, 0.3: 0.2}, level) == pytest.approx(ratio)


def test_ratio_for_loss_takes_the_largest_ratio_under_the_level():
    # not monotonic: 0.3 loses less than 0.2; the largest ratio under 0.05 is past 0.3
    curve = {0.1: 0.02, 0.2: 0.1, 0.3: 0.04, 0.4: 0.2}
    assert ratio_for_loss(curve, 0.05) == pytest.approx(0.3 + 0.1 * (0.05 - 0.04) / (0.2 - 0.04))
    # pruning that helps (negative loss) is taken at any level at or above it
    assert ratio_for_loss({0.1: -0.01, 0.2: 0.5}, -0.005) == pytest.approx(0.1 + 0.1 * 0.005 / 0.51)
    assert ratio_for_loss({0.1: -0.01, 0.2: 0.5}, -0.02) == 0.0


def synthetic_sensitivities(net, seed=0):
    """Convex loss curves of different steepness, one per prunable group."""
    rng = np.random.default_rng(seed)
    graph = trace(net, SHAPE)
    ratios = [round(0.1 * k, 1) for k in range(1, 10)]
    return {g.name: {r: float(a * r ** 2) for r in ratios}
            for g, a in zip(graph.prunable_groups(), rng.uniform(0.05, 2.0, 99))}


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_sensitive_ratios_hit_the_flops_target_within_one_point(target):
    net = tiny_mobilenet()
    sens = synthetic_sensitivities(net)
    before = snapshot(net)
    ratios = sensitive_ratios(sens, net, SHAPE, target)
    assert same(snapshot(net), before)
    assert abs(pruned_reduction(net, SHAPE, ratios) - target) <= 0.01
    # one loss level for all: every group not at an end of its curve sits at level L
    levels = [float(np.interp(r, [0] + list(sens[g]), [0] + list(sens[g].values())))
              for g, r in ratios.items() if 0 < r < 0.9]
    assert len(levels) > 5 and max(levels) - min(levels) < 1e-9
    steep = sorted(sens, key=lambda g: sens[g][0.5])  # flatter curves are pruned more
    assert ratios.get(steep[0], 0) >= ratios.get(steep[-1], 0)


def test_sensitive_ratios_read_a_sensitivity_file(tmp_path):
    from slim_callbacks.analysis.sensitivity import sensitivity
    net = tiny_mobilenet()
    x = paddle.randn([4] + SHAPE[1:])
    path = str(tmp_path / "sens.json")

    def eval_fn(network):
        with paddle.no_grad():
            return 1.0 + float(network(x).abs().mean())
    sensitivity(net, eval_fn, SHAPE, layers=[POINTWISE], ratios=[0.2, 0.4, 0.6, 0.8],
                file=path, progress=False)
    ratios = resolve_strategy("sensitive", net, SHAPE, sensitivities=path, target_flops_reduction=0.3)
    assert set(ratios) <= {g for g in resolve_ratios(trace(net, SHAPE), {POINTWISE: 0.5})}
    assert abs(pruned_reduction(net, SHAPE, ratios) - 0.3) <= 0.01


def test_sensitive_ratios_refuse_unknown_groups_and_unreachable_targets():
    net = tiny_mobilenet()
    with pytest.raises(ConfigError, match="sensitivities: 'conv9' is not allowed; expected group names"):
        sensitive_ratios({"conv9": {0.5: 0.1}}, net, SHAPE, 0.3)
    with pytest.raises(SlimError, match="out of reach"):
        sensitive_ratios({"conv6._pointwise_conv.0": {0.5: 0.1}}, net, SHAPE, 0.6)


# ------------------------------------------------------------------------ global
def test_global_channel_ratio_is_one_threshold_with_a_per_group_cap():
    net = tiny_mobilenet()
    graph = trace(net, SHAPE)
    ratios = global_ratios(net, SHAPE, channel_ratio=0.4, max_ratio=0.6)
    groups = {g.name: g for g in graph.prunable_groups()}
    removed = {n: round(r * groups[n].num_units) for n, r in ratios.items()}
    total = sum(g.num_units for g in groups.values())
    assert abs(sum(removed.values()) - 0.4 * total) <= 1
    assert max(ratios.values()) <= 0.6
    layers = dict(net.named_sublayers())
    criterion = get_criterion("slim")
    gone, kept = [], []
    for name, group in groups.items():
        s = np.sort(normalized_scores(group, layers, criterion, graph.layer_types, "none"))
        k = removed.get(name, 0)
        gone += list(s[:k])
        if k < round(0.6 * group.num_units):  # uncapped groups keep everything above t
            kept += list(s[k:])
    assert max(gone) <= min(kept)  # one global threshold separates them


def test_global_uses_raw_gamma_for_slim_and_group_means_for_weight_norms():
    net = tiny_mobilenet()
    layers = dict(net.named_sublayers())
    graph = trace(net, SHAPE)
    group = graph.prunable_groups()[3]  # a pointwise conv's BN and the next depthwise conv's BN
    bns = [layers[m.layer].weight.numpy() for m in group.members
           if m.role == "channel" and m.attr == "weight" and "BatchNorm" in graph.layer_types[m.layer]]
    assert len(bns) == 2
    raw = normalized_scores(group, layers, get_criterion("slim"), graph.layer_types, "none")
    assert np.allclose(raw, np.mean(np.abs(bns), axis=0))  # |gamma|, averaged over both BNs
    by_mean = normalized_scores(group, layers, get_criterion("l1_norm"), graph.layer_types, "mean")
    assert by_mean.mean() == pytest.approx(1.0)


def test_global_flops_target_within_one_point():
    net = tiny_mobilenet()
    for criterion in ("slim", "l1_norm"):
        ratios = global_ratios(net, SHAPE, 0.5, criterion=criterion)
        assert abs(pruned_reduction(net, SHAPE, ratios, criterion) - 0.5) <= 0.01


def test_global_refuses_bad_targets_and_opt_slim():
    net = tiny_mobilenet()
    with pytest.raises(ConfigError, match="exactly one of target_flops_reduction and channel_ratio"):
        global_ratios(net, SHAPE, 0.5, channel_ratio=0.3)
    with pytest.raises(ConfigError, match="criterion: 'opt_slim' is not allowed"):
        global_ratios(net, SHAPE, 0.5, criterion="opt_slim")
    with pytest.raises(SlimError, match="out of reach with max_ratio=0.2"):
        global_ratios(net, SHAPE, channel_ratio=0.5, max_ratio=0.2)


# ------------------------------------------------------------------------ custom
def test_custom_ratios_are_validated_and_returned():
    net = tiny_mobilenet()
    assert custom_ratios(net, SHAPE, {POINTWISE: 0.5, "conv1": 0.25}) == {POINTWISE: 0.5, "conv1": 0.25}
    assert custom_ratios(net, SHAPE, 0.3) == 0.3
    with pytest.raises(ConfigError, match="ratios pattern: 'conv9' is not allowed"):
        custom_ratios(net, SHAPE, {"conv9": 0.5})
    with pytest.raises(ConfigError, match=r"ratios\['conv1'\]: 1.5 is not allowed"):
        custom_ratios(net, SHAPE, {"conv1": 1.5})
    with pytest.raises(SlimError, match=r"select no prunable group .* leave out all \d+\); nothing"):
        custom_ratios(net, SHAPE, {"fc": 0.5})


# ------------------------------------------------------------------- entry point
def test_resolve_strategy_dispatches_each_strategy():
    net = tiny_mobilenet()
    uniform = resolve_strategy("uniform", net, SHAPE, target_flops_reduction=0.4, layers=[POINTWISE])
    assert uniform == {POINTWISE: uniform_ratio(net, SHAPE, 0.4, layers=[POINTWISE])}
    assert isinstance(resolve_strategy("uniform", net, SHAPE, target_flops_reduction=0.4), float)
    assert resolve_strategy("global", net, SHAPE, channel_ratio=0.3) == global_ratios(
        net, SHAPE, channel_ratio=0.3)
    assert resolve_strategy("custom", net, SHAPE, ratios={"conv1": 0.5}) == {"conv1": 0.5}
    sens = synthetic_sensitivities(net)
    assert resolve_strategy("sensitive", net, SHAPE, sensitivities=sens,
                            target_flops_reduction=0.4) == sensitive_ratios(sens, net, SHAPE, 0.4)
    assert resolve_strategy(lambda n, s, k: {"conv1": k}, net, SHAPE, k=0.5) == {"conv1": 0.5}


@pytest.mark.parametrize("strategy, options, message", [
    ("uniformm", {}, "strategy: 'uniformm' is not allowed; expected one of uniform, sensitive, "
                     "global, custom"),
    ("uniform", {"target_flop_reduction": 0.5}, "uniform option: 'target_flop_reduction' is not "
                                                "allowed; expected one of target_flops_reduction"),
    ("uniform", {}, "target: {'target_flops_reduction': None, 'ratios': None} is not allowed; "
                    "expected exactly one of target_flops_reduction and ratios (a float)"),
    ("uniform", {"ratios": {"conv1": 0.5}}, "ratios: {'conv1': 0.5} is not allowed; expected a "
                                            "float for strategy uniform"),
    ("uniform", {"target_flops_reduction": 1.5}, "target_flops_reduction: 1.5 is not allowed"),
    ("uniform", {"target_flops_reduction": 0.5, "convention": "gflops"}, "convention: 'gflops'"),
    ("sensitive", {"target_flops_reduction": 0.5}, "sensitive.sensitivities: None"),
    ("global", {"channel_ratio": 0.5, "normalize": "z"}, "normalize: 'z' is not allowed"),
    ("custom", {"ratios": {"conv1": 0.5}, "target_flops_reduction": 0.5}, "custom option"),
])
def test_resolve_strategy_rejects_bad_names_and_options(strategy, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_strategy(strategy, tiny_mobilenet(), SHAPE, **options)


def test_strategies_leave_the_network_unchanged():
    net = tiny_mobilenet()
    net.train()
    net.conv2_1.eval()
    modes = [layer.training for layer in net.sublayers(include_self=True)]
    before = snapshot(net)
    resolve_strategy("uniform", net, SHAPE, target_flops_reduction=0.5)
    resolve_strategy("global", net, SHAPE, target_flops_reduction=0.5)
    resolve_strategy("sensitive", net, SHAPE, sensitivities=synthetic_sensitivities(net),
                     target_flops_reduction=0.5, convention="paddleslim_legacy")
    assert same(snapshot(net), before)
    assert [layer.training for layer in net.sublayers(include_self=True)] == modes


def test_groups_that_jump_together_share_the_target(caplog):
    """Accuracy-like losses move in steps: every group is lossless up to 0.5, so at loss
    level 0 they all jump together from ratio 0 to 0.5."""
    net = tiny_mobilenet()
    graph = trace(net, SHAPE)
    names = [g.name for g in graph.prunable_groups()]
    steps = {n: {0.1: 0.0, 0.2: 0.0, 0.3: 0.0, 0.4: 0.0, 0.5: 0.0, 0.6: 0.125} for n in names}
    target = pruned_reduction(net, SHAPE, {n: 0.5 for n in names}) / 2
    assert target > 0.1  # the jump is much wider than the tolerance
    with caplog.at_level(logging.INFO, logger="slim_callbacks.analysis.strategies"):
        ratios = sensitive_ratios(steps, net, SHAPE, target)
    assert "jump together" in caplog.text
    assert abs(pruned_reduction(net, SHAPE, ratios) - target) <= 0.01
    assert set(ratios) == set(names)
    assert len(set(ratios.values())) == 1 and 0 < next(iter(ratios.values())) < 0.5


def test_uniform_takes_a_float_ratio_checked_against_the_network():
    net = models.mobilenet_v1(scale=0.25, num_classes=10)
    assert resolve_strategy("uniform", net, SHAPE, ratios=0.3) == 0.3
    assert resolve_strategy("uniform", net, SHAPE, ratios=0.3, layers=["conv1"]) == {"conv1": 0.3}
    with pytest.raises(ConfigError, match=r"ratios pattern: 'nope\*' is not allowed"):
        resolve_strategy("uniform", net, SHAPE, ratios=0.3, layers=["nope*"])


def test_strategy_options_maps_a_float_to_each_strategys_target():
    from slim_callbacks.analysis.strategies import strategy_options
    assert strategy_options("uniform", ratios=0.4)["ratios"] == 0.4
    assert strategy_options("global", ratios=0.4)["channel_ratio"] == 0.4
    assert "layers" not in strategy_options("sensitive", target_flops_reduction=0.5,
                                            sensitivities="s.json", layers=["conv*"])
    with pytest.raises(ConfigError, match=r"^target_flops_reduction: 0.5 is not allowed; "
                                          r"expected None for strategy custom"):
        strategy_options("custom", ratios={"conv1": 0.3}, target_flops_reduction=0.5)


def test_a_taylor_flops_target_is_resolved_before_any_training():
    """Taylor scores exist only during fit; the uniform search plans widths with weight
    scores (same selector, same widths), so target_flops_reduction works with taylor."""
    from slim_callbacks.analysis.uniform_strategy import uniform_ratio
    net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    args = (net, [1, 3, 32, 32], 0.5, ["conv*._pointwise_conv*"])
    assert uniform_ratio(*args, criterion="taylor") == uniform_ratio(*args, criterion="l1_norm")
