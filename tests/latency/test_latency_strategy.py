"""Latency-aware pruning: the cached per-layer latency table, the latency
model and strategy, ``round_to="auto"``, and their API / callback / recipe paths.

Timings are real where a test only needs them to exist (small shapes, few runs) and
replaced by a deterministic cost (``fake_timer``) where a test checks a decision; no
test asserts on a measured time."""
import json
import math
import os
from unittest.mock import ANY

import numpy as np
import paddle
import pytest
import yaml
from helpers import SHAPE, TINY_RECIPE, Net, calibrate, dataset, kill_units, outputs

import slim_callbacks
from slim_callbacks import PruneCallback, resolve_strategy
from slim_callbacks.app.cli import main
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.latency import auto_round
from slim_callbacks.latency import table as latency_table
from slim_callbacks.latency.model import LatencyModel, layer_calls
from slim_callbacks.latency.strategy import build_model, latency_ratios
from slim_callbacks.latency.table import LatencyTable, LayerSpec, runtime_key
from slim_callbacks.tracing.tracer import trace

FAST = {"rounds": 1, "runs_per_round": 1, "warmup": 0}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh latency cache directory (also the default through the env var)."""
    folder = tmp_path / "latency-cache"
    monkeypatch.setenv(latency_table.CACHE_ENV, str(folder))
    return str(folder)


@pytest.fixture
def timed(monkeypatch):
    """Counts the models Paddle Inference times (every call of measure_latency)."""
    calls = []
    real = latency_table.measure.measure_latency

    def counting(prefixes, **kwargs):
        calls.append(list(prefixes))
        return real(prefixes, **{**kwargs, **FAST})
    monkeypatch.setattr(latency_table.measure, "measure_latency", counting)
    return calls


def padded(n, block):
    return block * math.ceil(n / block)


def cost_ms(layer, shape, block=1):
    """A deterministic stand-in for a measured time: MACs with channels padded to a
    multiple of ``block`` (as blocked layouts do), plus a fixed cost per run."""
    if isinstance(layer, paddle.nn.Linear):
        fan_in, fan_out = layer.weight.shape
        return 0.01 + 1e-6 * padded(fan_in, block) * padded(fan_out, block) * math.prod(shape[1:-1])
    if isinstance(layer, paddle.nn.Conv2D):
        out = layer(paddle.zeros(shape))
        cout, cin_g, kh, kw = layer.weight.shape
        cin = padded(cin_g * layer._groups, block) // layer._groups if layer._groups > 1 else padded(cin_g, block)
        return 0.01 + 1e-6 * padded(cout, block) * cin * kh * kw * out.shape[2] * out.shape[3]
    # a whole network: its layers' costs, padded alike
    return 0.01 + sum(count * (cost_ms(sub, sub_shape, block) - 0.01)
                      for sub, sub_shape, count in layer_calls(layer, shape).values())


@pytest.fixture
def fake_timer(monkeypatch):
    """LatencyTable._time replaced by :func:`cost_ms`; ``state["block"]`` sets the
    padding (``state["network_block"]``, if set, that of whole networks), ``state["timed"]``
    counts the entries computed."""
    state = {"block": 1, "network_block": None, "timed": 0}

    def fake(self, models, rounds_scale=1):
        for key, make in models.items():
            whole = key.startswith("network ") and state["network_block"] is not None
            self.entries[key] = cost_ms(*make(), state["network_block" if whole else "block"])
        self.measured += len(models)
        state["timed"] += len(models)
        self.save()
    monkeypatch.setattr(LatencyTable, "_time", fake)
    return state


# ---------------------------------------------------------------- the latency table
def test_table_is_cached_as_json_and_reused_without_measuring(cache, timed):
    specs = [LayerSpec("conv", 4, w, (3, 3), padding=1, hw=(8, 8)) for w in (2, 4)]
    first = LatencyTable(**FAST)
    ms = first.lookup(specs)
    assert first.measured == 2 and len(timed) == 1 and len(ms) == 2
    data = json.loads(open(first.path).read())
    assert data["threads"] == 1 and data["onednn"] is True
    assert set(data["entries"]) == {s.key for s in specs}
    second = LatencyTable(**FAST)              # a new process would read the same file
    assert second.lookup(specs) == ms
    assert second.measured == 0 and len(timed) == 1
    second.lookup(specs + [LayerSpec("linear", 4, 3)])  # only the new spec is timed
    assert second.measured == 1 and timed[-1] == ["linear i4 o3 n1"]


def test_table_key_names_runtime_threads_and_machine(cache):
    one, two = LatencyTable(threads=1), LatencyTable(threads=2, onednn=False)
    assert one.path != two.path and os.path.dirname(one.path) == cache
    assert runtime_key(2, False) in two.path and "-native-t2-" in two.path
    assert LatencyTable(directory="/elsewhere").path.startswith("/elsewhere/")


def test_keeping_intermediates_is_a_runtime_of_its_own(cache, monkeypatch):
    seen = []
    real = latency_table.measure.measure_latency

    def recording(prefixes, **kwargs):
        seen.append(kwargs["keep_intermediates"])
        return real(prefixes, **{**kwargs, **FAST})
    monkeypatch.setattr(latency_table.measure, "measure_latency", recording)
    free, keep = LatencyTable(**FAST), LatencyTable(keep_intermediates=True, **FAST)
    assert free.path != keep.path and "-onednn-keep-t1-" in keep.path
    spec = LayerSpec("linear", 4, 3)
    keep.lookup([spec])
    free.lookup([spec])
    assert seen == [True, False]
    assert json.loads(open(keep.path).read())["keep_intermediates"] is True
    with pytest.raises(ConfigError, match="keep_intermediates: 'yes'"):
        LatencyTable(keep_intermediates="yes")


def test_the_latency_strategy_times_where_intermediates_are_kept(cache, fake_timer):
    resolve_strategy("latency", Net(), SHAPE, target_latency_reduction=0.3,
                     keep_intermediates=True, grid=[1.0, 0.5])
    assert [f for f in os.listdir(cache) if "-keep-" in f]
    assert not [f for f in os.listdir(cache) if f.endswith(".json") and "-keep-" not in f]


def test_unreadable_table_and_bad_spec_are_one_line_errors(cache):
    table = LatencyTable()
    os.makedirs(cache, exist_ok=True)
    with open(table.path, "w") as f:
        f.write("{not json")
    with pytest.raises(SlimError, match=r"latency table .* is unreadable .*; delete it") as err:
        LatencyTable()
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="divisible by groups"):
        LatencyTable(directory=os.path.join(cache, "x")).lookup([LayerSpec("conv", 6, 4, groups=4)])
    with pytest.raises(ConfigError, match="threads"):
        LatencyTable(threads=0)


# ---------------------------------------------------------------- model and strategy
def test_model_maps_layers_to_the_groups_that_set_their_channels(cache, fake_timer):
    paddle.seed(0)
    model = LatencyModel(Net(), SHAPE, LatencyTable(), grid=(1.0, 0.5))
    assert sorted(model.groups) == ["c1.0", "c2.0", "c3.0"]
    assert (model.layers["c2.0"].in_group, model.layers["c2.0"].out_group) == ("c1.0", "c2.0")
    assert (model.layers["fc"].in_group, model.layers["fc"].out_group) == ("c3.0", None)
    full = dict(model.groups)
    assert model.predict(full) == pytest.approx(model.base_ms)
    half = {g: w // 2 for g, w in full.items()}
    assert model.predict(half) < model.base_ms
    # c2 sits between c1 and c3's producer: halving both sides quarters its grid cost
    info = model.layers["c2.0"]
    assert info.ms[0, 0] < info.ms[-1, -1] / 3


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_strategy_meets_its_target_when_the_network_is_timed(cache, fake_timer, target):
    """The found widths are timed whole (here: the deterministic stand-in) and the
    search repeats until that measurement is within the tolerance of the target."""
    paddle.seed(0)
    net = Net()
    grid = (1.0, 0.75, 0.5, 0.25)
    ratios = resolve_strategy("latency", net, SHAPE, target_latency_reduction=target, grid=grid)
    model = build_model(net, SHAPE, grid=grid)
    plan = plan_pruning(net, trace(net, SHAPE), ratios)
    measured = model.cached_reduction(model.plan_widths(plan))
    assert measured == pytest.approx(target, abs=0.02)
    true = 1 - cost_ms(*_pruned(net, ratios)) / cost_ms(net, SHAPE)
    assert measured == pytest.approx(true, rel=1e-6)     # what the timer said
    assert all(0 < r <= 0.9 for r in ratios.values())


def _pruned(net, ratios):
    import copy
    pruned = copy.deepcopy(net)
    slim_callbacks.prune(pruned, SHAPE, ratios)
    return pruned, SHAPE


def test_feedback_zero_times_the_result_once(cache, fake_timer):
    paddle.seed(0)
    net = Net()
    latency_ratios(net, SHAPE, 0.4, grid=(1.0, 0.5), feedback=0)
    table = LatencyTable()
    found = [k for k in table.entries if k.startswith("ratio ")]
    groups = 3
    assert len(found) == groups + 2          # per-group calibration, the check copy, the result


def test_strategy_second_call_measures_nothing(cache, fake_timer):
    paddle.seed(0)
    net = Net()
    options = {"target_latency_reduction": 0.3, "grid": (1.0, 0.5)}
    first = resolve_strategy("latency", net, SHAPE, **options)
    count = fake_timer["timed"]
    assert count > 0
    second = resolve_strategy("latency", net, SHAPE, **options)
    assert fake_timer["timed"] == count and second == first


def test_strategy_prunes_where_latency_per_importance_is_cheapest(cache, fake_timer):
    """With equal importance everywhere, the group whose channels cost the most time
    goes first: a c2 channel costs 16*9*64 MACs in c2 and 32*9*64 in c3, a c1 channel
    3*9*256 + 32*9*64, a c3 channel 32*9*64 + 4."""
    paddle.seed(0)
    net = Net()
    for layer in net.sublayers():      # equal importance everywhere
        if isinstance(layer, paddle.nn.Conv2D):
            layer.weight.set_value(np.ones(layer.weight.shape, "float32"))
    ratios = latency_ratios(net, SHAPE, 0.1, grid=(1.0, 0.5, 0.25), steps=8)
    assert max(ratios, key=ratios.get) == "c2.0"


def test_dead_channels_removed_by_the_latency_strategy_prune_exactly(cache, fake_timer):
    paddle.seed(0)
    net = Net()
    calibrate(net, SHAPE)
    kill_units(net, trace(net, SHAPE), ratio=0.5)   # half of every group is dead
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    ratios = latency_ratios(net, SHAPE, 0.3, max_ratio=0.5, grid=(1.0, 0.5))
    plan = slim_callbacks.prune(net, SHAPE, ratios)
    assert len(plan.groups) > 0
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


@pytest.mark.parametrize("options, error, match", [
    ({"target_latency_reduction": 0.0}, ConfigError, "target_latency_reduction"),
    ({"target_latency_reduction": 1.5}, ConfigError, "target_latency_reduction"),
    ({"target_latency_reduction": 0.3, "criterion": "opt_slim"}, ConfigError, "lowest"),
    ({"target_latency_reduction": 0.3, "grid": [0.5]}, ConfigError, "grid"),
    ({"target_latency_reduction": 0.3, "steps": 0}, ConfigError, "steps"),
    ({"target_latency_reduction": 0.95, "max_ratio": 0.1}, SlimError, "out of reach"),
    ({"target_flops_reduction": 0.3}, ConfigError, "latency option"),
    ({}, ConfigError, "target_latency_reduction"),
])
def test_bad_strategy_inputs_are_one_line_errors(cache, fake_timer, options, error, match):
    with pytest.raises(error, match=match) as err:
        resolve_strategy("latency", Net(), SHAPE, **options)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- round_to auto
def test_rounding_gains_find_the_padding_block(cache, fake_timer):
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=0.5, num_classes=10)
    shape = [1, 3, 32, 32]
    fake_timer["block"] = 8
    choice = auto_round.auto_round_to(net, shape)
    assert choice.multiple == 8 and choice.gains[8] > auto_round.MIN_GAIN
    assert len(choice.groups) == 2      # a 1x1 block and a 3x3 one
    fake_timer["block"] = 1             # no padding: rounding buys nothing
    choice = auto_round.auto_round_to(net, shape, cache_dir=os.path.join(cache, "flat"))
    assert choice.multiple == 1


def test_round_to_auto_in_prune_is_measured_once_and_exact(cache, fake_timer):
    fake_timer["block"] = 8
    paddle.seed(0)
    net = Net()
    calibrate(net, SHAPE)
    kill_units(net, trace(net, SHAPE), ratio=0.5)
    x = paddle.randn([2] + SHAPE[1:])
    before = outputs(net, x)
    plan = slim_callbacks.prune(net, SHAPE, 0.3, round_to="auto")   # 0.3 keeps 11/22/22
    assert [g["after"] for g in plan.groups] == [8, 24, 24]
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    timed = fake_timer["timed"]
    assert auto_round.resolve_round_to("auto", Net(), SHAPE, ratios=0.3) == 8
    assert fake_timer["timed"] == timed          # the cache answered


def test_the_whole_network_decides_where_the_layer_probes_see_nothing(cache, fake_timer):
    fake_timer["network_block"] = 8     # layers alone pad nothing, the network pads to 8
    choice = auto_round.auto_round_to(Net(), SHAPE)
    assert max(choice.gains.values()) < auto_round.MIN_GAIN     # the probes alone: 1
    timing = choice.network
    assert choice.multiple == timing.multiple == 8
    assert timing.basis.startswith("uniform -50% MACs") and 32 not in timing.ms  # wider than Net
    assert timing.ms[8] < timing.ms[1] * (1 - auto_round.MIN_GAIN)
    assert abs(timing.macs_reduction[8] - timing.macs_reduction[1]) <= auto_round.MACS_POINTS
    assert auto_round.auto_round_to(Net(), SHAPE, check_network=False).multiple == 1
    timed = fake_timer["timed"]
    again = auto_round.auto_round_to(Net(), SHAPE)
    assert fake_timer["timed"] == timed and again.network.ms == timing.ms   # cached
    fake_timer["network_block"] = 1     # nothing padded anywhere: a fresh cache says 1
    flat = auto_round.auto_round_to(Net(), SHAPE, cache_dir=os.path.join(cache, "flat"))
    assert flat.multiple == 1 and set(flat.network.ms) == {1, 8, 16}


def test_round_to_auto_times_into_the_strategy_cache_dir(cache, fake_timer, tmp_path):
    own = str(tmp_path / "own-cache")
    resolve_strategy("latency", Net(), SHAPE, target_latency_reduction=0.3, round_to="auto",
                     cache_dir=own, grid=[1.0, 0.5])
    assert os.listdir(own) and not os.path.isdir(cache)   # nothing in the default cache


def test_whole_network_check_compares_per_macs_kept_within_two_points():
    timing = auto_round.NetworkTiming({1: 10.0, 8: 7.0, 16: 9.5}, {1: 0.5, 8: 0.53, 16: 0.502},
                                      "test")
    assert timing.compared() == [1, 16] and auto_round.choose_multiple(timing) == 16
    timing.ms[16] = 9.9                 # within MIN_GAIN of round 1: rounding buys nothing
    assert auto_round.choose_multiple(timing) == 1
    # 8 cuts 1.5 points more: 9.5 ms is charged 9.5 * 0.5 / 0.485 = 9.79, under the 3% bar
    timing = auto_round.NetworkTiming({1: 10.0, 8: 9.5}, {1: 0.5, 8: 0.515}, "test")
    assert auto_round.choose_multiple(timing) == 1
    timing.ms[8] = 9.0                  # charged 9.28: fast enough per MACs kept
    assert auto_round.choose_multiple(timing) == 8
    timing.macs_reduction[8] = 0.49     # keeps more MACs and is faster: no credit needed
    assert timing.charged_ms(8) == 9.0 and auto_round.choose_multiple(timing) == 8


@pytest.mark.parametrize("kwargs, match", [
    ({"ratios": {"nothing*": 0.3}}, "nothing"),
    ({"ratios": 1.5}, "ratio"),
])
def test_bad_whole_network_inputs_fail_before_any_timing(cache, fake_timer, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        auto_round.auto_round_to(Net(), SHAPE, **kwargs)
    assert fake_timer["timed"] == 0
    with pytest.raises(ConfigError, match="candidates"):
        auto_round.network_check(Net(), SHAPE, LatencyTable(), candidates=[8, 0])


def test_round_to_auto_reaches_strategies_as_an_int(cache, fake_timer):
    fake_timer["block"] = 8
    ratio = resolve_strategy("uniform", Net(), SHAPE, target_flops_reduction=0.4, round_to="auto")
    assert fake_timer["timed"] > 0
    assert ratio == resolve_strategy("uniform", Net(), SHAPE, target_flops_reduction=0.4, round_to=8)
    net = Net()
    with pytest.raises(ConfigError, match="'auto' is resolved by slim_callbacks.prune"):
        plan_pruning(net, trace(net, SHAPE), {}, round_to="auto")   # the engine takes an int
    with pytest.raises(ConfigError, match="an int >= 1 or 'auto'"):
        slim_callbacks.prune(Net(), SHAPE, 0.5, round_to="fast")


def test_rounding_cost_is_the_macs_difference_of_the_pruned_networks(cache, fake_timer):
    paddle.seed(0)
    net = Net()
    cost = auto_round.rounding_cost(net, SHAPE, 0.3, get_criterion("l1_norm"), (), 8)
    base = slim_callbacks.count_flops(net, SHAPE)
    pruned = {}
    for round_to in (1, 8):   # 0.3 keeps 11/22/22 exactly, 8/24/24 rounded to 8
        copy = Net()
        slim_callbacks.prune(copy, SHAPE, 0.3, round_to=round_to)
        pruned[round_to] = slim_callbacks.count_flops(copy, SHAPE)
    assert cost == pytest.approx((pruned[8] - pruned[1]) / base)
    assert cost != 0


# ---------------------------------------------------------------- callback and recipes
@pytest.mark.parametrize("own_cache", [False, True])
def test_prune_callback_with_latency_target_and_auto_rounding(cache, fake_timer, tmp_path,
                                                              own_cache):
    fake_timer["block"] = 8
    paddle.seed(0)
    net = Net()
    options = {"grid": (1.0, 0.5, 0.25)}
    if own_cache:        # every timing, round_to auto's too, goes to strategy_options.cache_dir
        options["cache_dir"] = str(tmp_path / "own")
    cb = PruneCallback(target_latency_reduction=0.4, round_to="auto", input_shape=SHAPE,
                       prune_epochs=[0], strategy_options=options)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  paddle.nn.CrossEntropyLoss())
    model.fit(dataset(16), epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    assert cb.round_to == 8 and cb.strategy == "latency"
    assert all(g["after"] % 8 == 0 for g in cb.plan.groups) and cb.plan.groups
    assert os.path.isdir(cache) != own_cache
    assert os.path.isdir(tmp_path / "own") == own_cache


@pytest.mark.parametrize("make", [
    lambda: PruneCallback(target_latency_reduction=0.4, input_shape=SHAPE, prune_epochs=[0],
                          strategy_options={"keep_intermediates": "yes"}),
    lambda: resolve_strategy("latency", Net(), SHAPE, target_latency_reduction=0.3,
                             round_to="auto", onednn="false")])
def test_bool_runtime_options_are_checked_before_any_timing(cache, fake_timer, make):
    with pytest.raises(ConfigError, match="a bool"):
        make()
    assert fake_timer["timed"] == 0


def test_a_process_that_keeps_times_into_the_keep_table(cache):
    from slim_callbacks.deploy import runtime
    saved = paddle.get_flags([runtime.EAGER_DELETE_FLAG])
    paddle.set_flags({runtime.EAGER_DELETE_FLAG: -1.0})
    try:
        assert "-keep-" in LatencyTable().path
    finally:
        paddle.set_flags(saved)
    assert "-keep-" not in LatencyTable().path


@pytest.mark.parametrize("kwargs, match", [
    ({"target_latency_reduction": 0.5, "ratios": 0.3}, "target_latency_reduction"),
    ({"target_latency_reduction": 0.5, "strategy": "global"}, "target_latency_reduction"),
    ({"target_latency_reduction": 1.0}, "target_latency_reduction"),
    ({"strategy": "latency"}, "target_latency_reduction"),
    ({"ratios": 0.3, "round_to": "fast"}, "round_to"),
])
def test_prune_callback_bad_latency_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PruneCallback(input_shape=SHAPE, **kwargs)


def recipe(**pruning):
    return {"name": "t", "model": {"name": "lenet"}, "data": {"source": "mnist"},
            "pruning": pruning}


def test_recipe_keys_for_latency_and_auto():
    r = Recipe.from_dict(recipe(strategy="latency", target_latency_reduction=0.5, round_to="auto"))
    assert r.pruning.round_to == "auto" and r.pruning.target_latency_reduction == 0.5
    with pytest.raises(ConfigError, match=r"pruning.target_latency_reduction: None .* \(required "
                                          "for strategy latency"):
        Recipe.from_dict(recipe(strategy="latency"))
    with pytest.raises(ConfigError, match=r"pruning.target_latency_reduction: 0.5 .* \(only "
                                          r"strategy latency uses it\)"):
        Recipe.from_dict(recipe(strategy="uniform", target_latency_reduction=0.5))
    with pytest.raises(ConfigError, match="pruning.ratios: 0.3 .* null when target_latency_reduction"):
        Recipe.from_dict(recipe(strategy="latency", target_latency_reduction=0.5, ratios=0.3))
    with pytest.raises(ConfigError, match="pruning.strategy_options.keep_intermediates: 'false' "
                                          r"is not allowed; expected a bool"):
        Recipe.from_dict(recipe(strategy="latency", target_latency_reduction=0.5,
                                strategy_options={"keep_intermediates": "false"}))


@pytest.mark.parametrize("keep", [False, True])
def test_run_reports_predicted_and_measured_latency(cache, fake_timer, tmp_path, capsys, keep):
    raw = dict(TINY_RECIPE, deploy={"latency": True, "latency_rounds": 1, "keep_intermediates": keep})
    raw["pruning"] = {"strategy": "latency", "target_latency_reduction": 0.3, "round_to": "auto",
                      "schedule": {"kind": "epochs", "epochs": [0]},
                      "strategy_options": {"grid": [1.0, 0.5], "keep_intermediates": keep}}
    raw["train"] = dict(raw["train"], epochs=1)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    out_dir = tmp_path / "out"
    assert main(["run", str(path), "-o", f"output_dir={out_dir}", "--verbose", "0"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())
    entry = summary["latency_strategy"]
    assert entry["target_reduction"] == 0.3 and entry["threads"] == 1
    assert summary["round_to_auto"] == 1     # the stand-in timer pads nothing
    assert entry["predicted_ms"] < entry["base_ms"] and entry["measured_reduction"] is not None
    assert "latency strategy (1 thread): target -30.00%, predicted -" in text
    assert entry["keep_intermediates"] is keep and entry["measured_keep_intermediates"] is keep
    assert "predicted for" not in text            # prediction and measurement in one setting
    assert [f for f in os.listdir(cache) if "-keep-" in f] == ([ANY] if keep else [])
    assert text.splitlines()[0].startswith("strategy: latency with round_to: auto measures on "
                                           "this machine first: ")   # said before training


@pytest.mark.parametrize("conv", [
    lambda: paddle.nn.Conv2D(4, 8, 3, padding=1),
    lambda: paddle.nn.Conv2D(4, 8, 3, stride=(2, 1), padding=[1, 0]),
    lambda: paddle.nn.Conv2D(4, 8, 3, padding="SAME", groups=4),
])
def test_a_layer_spec_rebuilds_the_layer_it_was_read_from(conv):
    from slim_callbacks.latency.model import layer_spec
    layer = conv()
    spec = layer_spec(layer, [1, 4, 16, 10])
    built, shape = spec.build()
    assert shape == [1, 4, 16, 10]
    assert built(paddle.zeros(shape)).shape == layer(paddle.zeros(shape)).shape
    assert list(built.weight.shape) == list(layer.weight.shape)


def latency_recipe(tmp_path, **pruning):
    raw = dict(TINY_RECIPE)
    raw["pruning"] = {"strategy": "latency", "target_latency_reduction": 0.3,
                      "schedule": {"kind": "epochs", "epochs": [0]},
                      "strategy_options": {"grid": [1.0, 0.5]}, **pruning}
    path = tmp_path / "latency.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_check_and_plan_say_up_front_what_they_will_measure(cache, fake_timer, tmp_path, capsys):
    path = latency_recipe(tmp_path, round_to="auto")
    assert main(["check", path]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("strategy: latency with round_to: auto measures on this machine "
                            "first: ") and "--no-measure skips measuring" in first
    assert cache in first and "layer timings" in first and fake_timer["timed"] > 0
    timed = fake_timer["timed"]
    assert main(["plan", path]) == 0       # the cache answers: nothing left to measure
    assert "every latency timing it needs is in the cache" in capsys.readouterr().err
    assert fake_timer["timed"] == timed


def test_no_measure_answers_from_the_cache_only(cache, fake_timer, tmp_path, capsys):
    path = latency_recipe(tmp_path)
    assert main(["check", path, "--no-measure"]) == 0
    err = capsys.readouterr().err
    assert "note: final ratios not resolved: " in err and "measuring is off (--no-measure)" in err
    assert "measures on this machine" not in err and fake_timer["timed"] == 0
    assert main(["plan", path, "--no-measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in the cache" in err and "run once without it" in err
    assert fake_timer["timed"] == 0
    assert main(["plan", path]) == 0 and fake_timer["timed"] > 0
    measured = capsys.readouterr().out
    timed = fake_timer["timed"]
    assert main(["plan", path, "--no-measure"]) == 0 and fake_timer["timed"] == timed
    assert capsys.readouterr().out == measured      # the same plan, from the cache


@pytest.mark.parametrize("predicted_keep, measured_keep, note", [
    (False, False, ""), (True, True, ""),
    (False, True, " (keeping intermediates; predicted for freeing them)"),
    (True, False, " (freeing intermediates; predicted for keeping them)")])
def test_the_strategy_line_says_when_prediction_and_measurement_differ(predicted_keep,
                                                                      measured_keep, note):
    from slim_callbacks.app.report import latency_strategy_line
    entry = {"target_reduction": 0.5, "predicted_reduction": 0.49, "measured_reduction": 0.47,
             "threads": 1, "keep_intermediates": predicted_keep,
             "measured_keep_intermediates": measured_keep}
    assert latency_strategy_line(entry).endswith("measured -47.00%" + note)


@pytest.mark.parametrize("strategy_keep, deploy_keep, noted", [
    (False, False, False), (True, True, False), (False, True, True), (True, False, True)])
def test_check_notes_up_front_when_strategy_and_deploy_time_differently(
        cache, fake_timer, tmp_path, capsys, strategy_keep, deploy_keep, noted):
    raw = yaml.safe_load(open(latency_recipe(
        tmp_path, strategy_options={"grid": [1.0, 0.5], "keep_intermediates": strategy_keep})))
    raw["deploy"] = {"latency": True, "keep_intermediates": deploy_keep}
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert ("the strategy meets its target in the other setting" in err) == noted
    assert ("-keep-" in err.splitlines()[0]) == strategy_keep     # the estimate's table


class ChainModel:
    """A latency model of a chain of layers, each between two groups (or the input)."""

    def __init__(self, widths, seed=0):
        rng = np.random.default_rng(seed)
        self.groups = dict(widths)
        names = list(widths)
        self.layers = {f"l{i}": (names[i - 1] if i else None, g, float(rng.uniform(0.5, 2)))
                       for i, g in enumerate(names)}

    def layer_ms(self, name, widths):
        cin, cout, ms = self.layers[name]
        share = (lambda g: 1.0 if g is None else widths[g] / self.groups[g])
        return ms * share(cin) * share(cout)

    def touching(self, group):
        return [n for n, (cin, cout, _) in self.layers.items() if group in (cin, cout)]


def greedy_by_rescanning(model, cum, lattice, floor, saving_ms):
    """greedy_widths as it was: every group re-priced at every step."""
    from slim_callbacks.latency.strategy import next_keep
    keep = dict(model.groups)
    current = {n: model.layer_ms(n, keep) for n in model.layers}
    saved = 0.0
    while saved < saving_ms:
        best = None
        for name, width in model.groups.items():
            new = next_keep(keep[name], lattice[name])
            if new < floor[name] or new < 1:
                continue
            trial = dict(keep, **{name: new})
            after = {n: model.layer_ms(n, trial) for n in model.touching(name)}
            gain = sum(current[n] - ms for n, ms in after.items())
            if gain <= 1e-12:
                continue
            cost = (cum[name][width - new] - cum[name][width - keep[name]]) / gain
            if best is None or cost < best[0]:
                best = (cost, name, new, after, gain)
        if best is None:
            break
        _, name, new, after, gain = best
        keep[name] = new
        current.update(after)
        saved += gain
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_widths_decides_as_rescanning_every_group_did(seed):
    from slim_callbacks.latency.strategy import greedy_widths
    rng = np.random.default_rng(seed)
    widths = {f"g{i}": int(rng.integers(8, 33)) for i in range(8)}
    model = ChainModel(widths, seed)
    cum = {g: np.concatenate([[0.0], np.cumsum(rng.uniform(0, 1, w))]) for g, w in widths.items()}
    lattice = {g: int(rng.choice([1, 2, 4])) for g in widths}
    floor = {g: 1 for g in widths}
    total = sum(model.layer_ms(n, widths) for n in model.layers)
    for share in (0.2, 0.5, 0.9):
        expected = greedy_by_rescanning(model, cum, lattice, floor, share * total)
        assert greedy_widths(model, cum, lattice, floor, share * total) == expected
        assert expected != widths
