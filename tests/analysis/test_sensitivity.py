"""sensitivity(): masking equals physical pruning, resume, restoring the network, errors."""
import copy
import json
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.vision.models as models
import pytest
from helpers import ConcatNet, SENet, same, snapshot

from slim_callbacks import ConfigError, SlimError, trace
from slim_callbacks.analysis.maskers import GroupMask, GroupPrune
from slim_callbacks.analysis.sensitivity import sensitivity
from slim_callbacks.analysis.sensitivity_file import load_sensitivities
from slim_callbacks.engine.criteria import CRITERIA, get_criterion
from slim_callbacks.engine.planner import plan_pruning, select_units

SHAPE = [1, 3, 32, 32]


def randomize_bn(net, seed=0, stats=True):
    """BatchNorm affine parameters (and statistics) far from the identity, so a masked
    channel that still produced output (a wrong mask) would change the result."""
    rng = np.random.default_rng(seed)
    for layer in net.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            values = [(layer.weight, rng.uniform(0.2, 1.5, c)), (layer.bias, rng.normal(0, 0.2, c))]
            if stats:
                values += [(layer._mean, rng.normal(0, 0.2, c)), (layer._variance, rng.uniform(0.5, 2.0, c))]
            for param, value in values:
                param.set_value(value.astype("float32"))
    net.eval()
    return net


def calibrate_exactly(net, seed=0):
    """BatchNorm running statistics = the statistics of one batch of 16 (momentum 0),
    so activations stay of order one and the output depends on the input."""
    bns = [layer for layer in net.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    momenta = [bn._momentum for bn in bns]
    for bn in bns:
        bn._momentum = 0.0
    paddle.seed(seed)
    net.train()
    with paddle.no_grad():
        net(paddle.randn([16] + SHAPE[1:]))
    net.eval()
    for bn, momentum in zip(bns, momenta):
        bn._momentum = momentum
    return net


def tiny_mobilenet(seed=0):
    """MobileNetV1 x0.25 with BN scales and shifts of a trained network (not 1 and 0)."""
    paddle.seed(seed)
    return calibrate_exactly(randomize_bn(models.mobilenet_v1(scale=0.25, num_classes=10),
                                          seed, stats=False))


def batch(seed=1, n=4):
    paddle.seed(seed)
    return paddle.randn([n] + SHAPE[1:]), paddle.randint(0, 10, [n, 1])


def neg_loss(x, y):
    def eval_fn(network):
        with paddle.no_grad():
            return -float(nn.functional.cross_entropy(network(x), y))
    return eval_fn


def physical(net, graph, group, ratio, criterion="l1_norm", round_to=1, with_plan=False):
    pruned = copy.deepcopy(net)
    plan = plan_pruning(pruned, graph, {group: ratio}, criterion, round_to).apply(pruned)
    return (pruned, plan) if with_plan else pruned


# --------------------------------------------------------------- masking is exact
EXACT_MODELS = {
    "mobilenet_v2": lambda: models.mobilenet_v2(scale=0.35, num_classes=10),  # residuals + depthwise
    "resnet18": lambda: models.resnet18(num_classes=10),  # residual stages = one group
    "se_net": SENet,  # squeeze-excitation multiply, then a residual add
    "concat_net": ConcatNet,  # concat, flatten -> Linear
}


def run_recording(net, x, names):
    """Network output and the outputs of the layers ``names``."""
    layers = dict(net.named_sublayers())
    seen = {}
    handles = [layers[n].register_forward_post_hook(
        lambda layer, inputs, out, n=n: seen.__setitem__(n, out.numpy())) for n in names]
    try:
        with paddle.no_grad():
            return net(x).numpy(), seen
    finally:
        for handle in handles:
            handle.remove()


def kept_channels(group, plan, layer):
    """Maps a full-width output of ``layer`` to what physical pruning keeps of it: all of
    it, unless the consumer is also a producer of the group (a residual branch)."""
    if layer not in group.producers:
        return lambda array: array
    axis = next(m.axis for m in group.members if m.layer == layer and m.role == "out")
    kept = plan.params[(layer, "weight")].kept[axis]
    return lambda array: np.take(array, kept, axis=1 if axis == 0 else -1)


@pytest.mark.parametrize("name", sorted(EXACT_MODELS))
def test_masked_outputs_equal_physically_pruned_outputs(name):
    """Every consumer of the group (and so the network output) computes what it
    computes after physical pruning, for both in-place methods."""
    paddle.seed(0)
    net = calibrate_exactly(randomize_bn(EXACT_MODELS[name](), stats=False))
    graph = trace(net, SHAPE)
    layers = dict(net.named_sublayers())
    x, _ = batch()
    base_out, _ = run_recording(net, x, [])
    criterion = get_criterion("l1_norm")
    cases = []
    for group in graph.prunable_groups():
        consumers = sorted({m.layer for m in group.members if m.role == "in"})
        _, base = run_recording(net, x, consumers)
        scores = criterion(group, layers, graph.layer_types)
        for ratio in (0.3, 0.7):
            units = select_units(group, scores, ratio, criterion)
            pruned, plan = physical(net, graph, group.name, ratio, with_plan=True)
            want_out, want = run_recording(pruned, x, consumers)
            for remover in (GroupMask, GroupPrune):
                with remover(group, layers).applied(units):
                    out, got = run_recording(net, x, consumers)
                for layer in consumers:
                    full_width = kept_channels(group, plan, layer)  # base, and got if masked
                    scale = np.abs(want[layer]).max()
                    mine = full_width(got[layer]) if remover is GroupMask else got[layer]
                    assert np.allclose(mine, want[layer], rtol=0, atol=1e-5 * scale), (
                        remover.__name__, group.name, ratio, layer)
                    # did the removal matter? (if not, a wrong mask could pass unnoticed)
                    cases.append(np.abs(full_width(base[layer]) - want[layer]).max() > 1e-3 * scale)
                # float noise of ~50 layers
                assert np.allclose(out, want_out, rtol=0, atol=1e-4 * np.abs(want_out).max())
    assert np.array_equal(run_recording(net, x, [])[0], base_out)  # every removal was undone
    assert np.mean(cases) > 0.8, np.mean(cases)  # nearly every removal changed its consumers


def test_sensitivities_equal_the_physical_pruning_baseline():
    paddle.seed(0)
    net = calibrate_exactly(randomize_bn(models.mobilenet_v2(scale=0.35, num_classes=10), stats=False))
    x, y = batch(n=8)
    eval_fn = neg_loss(x, y)
    ratios = [0.2, 0.5, 0.8]
    sens = sensitivity(net, eval_fn, SHAPE, ratios=ratios, progress=False)
    graph = trace(net, SHAPE)
    base = eval_fn(net)
    assert list(sens) == [g.name for g in graph.prunable_groups()]
    worst, biggest = 0.0, 0.0
    for group, losses in sens.items():
        assert list(losses) == ratios
        for ratio, loss in losses.items():
            want = (base - eval_fn(physical(net, graph, group, ratio))) / abs(base)
            worst, biggest = max(worst, abs(loss - want)), max(biggest, abs(want))
    assert worst < 1e-5 and biggest > 0.05


def test_mask_zeroes_exactly_the_consumer_slices_plan_pruning_removes():
    from slim_callbacks.engine.taylor import TaylorImportance
    net = tiny_mobilenet()
    graph = trace(net, SHAPE)
    layers = dict(net.named_sublayers())
    taylor = TaylorImportance(net).attach()  # gradient scores for the taylor criterion
    net(paddle.randn([2] + SHAPE[1:])).square().mean().backward()
    for name in sorted(CRITERIA):
        criterion = get_criterion(name)
        for group in graph.prunable_groups():
            scores = criterion(group, layers, graph.layer_types)
            units = select_units(group, scores, 0.4, criterion)
            plan = plan_pruning(net, graph, {group.name: 0.4}, criterion)
            for (layer, attr), cuts in GroupMask(group, layers).slices(units).items():
                cut = plan.params[(layer, attr)]
                for axis, hit in cuts:
                    gone = set(range(cut.shape[axis])) - set(cut.kept[axis])
                    assert set(hit.tolist()) == gone, (name, group.name, layer)
    taylor.detach()


# ------------------------------------------------------------------ loss and skips
def test_loss_is_relative_drop_and_sign_follows_higher_is_better():
    net = tiny_mobilenet()
    for base, pruned, loss in ((2.0, 1.5, 0.25), (-2.0, -3.0, 0.5), (-2.0, -1.0, -0.5)):
        values = iter([base, pruned])
        sens = sensitivity(net, lambda n: next(values), SHAPE, layers=["conv6"], ratios=[0.5],
                           progress=False)
        assert sens == {"conv6._pointwise_conv.0": {0.5: loss}}


def test_empty_and_repeated_selections_are_not_evaluated():
    net = tiny_mobilenet()  # conv1 has 8 channels: 0.05 removes 0, 0.1 and 0.15 remove 1
    calls = []
    x, y = batch()
    inner = neg_loss(x, y)

    def eval_fn(network):
        calls.append(1)
        return inner(network)
    sens = sensitivity(net, eval_fn, SHAPE, layers=["conv1"], ratios=[0.05, 0.1, 0.15, 0.5],
                       progress=False)["conv1.0"]
    assert len(calls) == 1 + 2  # base, 0.1 (= 0.15), 0.5
    assert sens[0.05] == 0.0 and sens[0.1] == sens[0.15] and sens[0.5] != sens[0.1]


def test_patterns_skip_and_round_to_follow_the_pruner():
    net = tiny_mobilenet()
    x, y = batch()
    sens = sensitivity(net, neg_loss(x, y), SHAPE, layers=["conv5*"], skip=["conv5_2"],
                       ratios=[0.5], round_to=8, progress=False)
    assert list(sens) == ["conv5_1._pointwise_conv.0", "conv5_3._pointwise_conv.0",
                          "conv5_4._pointwise_conv.0", "conv5_5._pointwise_conv.0",
                          "conv5_6._pointwise_conv.0"]


# ----------------------------------------------------------------- file and resume
class Interrupt(Exception):
    pass


def counting(eval_fn, fail_after=None):
    calls = []

    def wrapped(network):
        if fail_after is not None and len(calls) == fail_after:
            raise Interrupt
        calls.append(1)
        return eval_fn(network)
    return wrapped, calls


def test_resumed_run_writes_the_same_file_as_an_uninterrupted_one(tmp_path):
    net = tiny_mobilenet()
    x, y = batch()
    kwargs = dict(layers=["conv2*", "conv3*"], ratios=[0.25, 0.5, 0.75], progress=False)
    whole = tmp_path / "whole.json"
    full_fn, full_calls = counting(neg_loss(x, y))
    expected = sensitivity(net, full_fn, SHAPE, file=str(whole), **kwargs)

    part = tmp_path / "part.json"
    first, _ = counting(neg_loss(x, y), fail_after=6)
    with pytest.raises(Interrupt):
        sensitivity(net, first, SHAPE, file=str(part), **kwargs)
    saved = json.loads(part.read_text())
    assert sum(len(v) for v in saved["sensitivities"].values()) == 5  # base + 5 saved

    second, second_calls = counting(neg_loss(x, y))
    assert sensitivity(net, second, SHAPE, file=str(part), **kwargs) == expected
    assert len(second_calls) == len(full_calls) - 5  # base again, then only what was missing
    assert part.read_bytes() == whole.read_bytes()
    assert load_sensitivities(str(part)) == expected
    assert not (tmp_path / "part.json.tmp").exists()


def test_file_records_settings_and_refuses_a_mismatch(tmp_path):
    net = tiny_mobilenet()
    x, y = batch()
    path = str(tmp_path / "s.json")
    kwargs = dict(layers=["conv6"], ratios=[0.5], progress=False, file=path)
    sensitivity(net, neg_loss(x, y), SHAPE, **kwargs)
    data = json.loads(open(path).read())
    assert data["format"] == "slim_callbacks.analysis.sensitivity/1"
    assert (data["criterion"], data["ratios"], data["round_to"]) == ("l1_norm", [0.5], 1)
    assert data["base"] == neg_loss(x, y)(net)
    assert list(data["sensitivities"]["conv6._pointwise_conv.0"]) == ["0.5"]

    with pytest.raises(SlimError, match="criterion='l1_norm', this run asks for criterion='fpgm'"):
        sensitivity(net, neg_loss(x, y), SHAPE, criterion="fpgm", **kwargs)
    with pytest.raises(SlimError, match=r"ratios=\[0.5\], this run asks for ratios=\[0.4\]"):
        sensitivity(net, neg_loss(x, y), SHAPE, **{**kwargs, "ratios": [0.4]})
    with pytest.raises(SlimError, match="base metric .* the network's weights or the evaluation changed"):
        sensitivity(net, neg_loss(*batch(seed=7)), SHAPE, **kwargs)
    other = models.mobilenet_v1(scale=0.5, num_classes=10)
    with pytest.raises(SlimError, match="with 256 channels, the network has 512"):
        sensitivity(other, neg_loss(x, y), [1, 3, 32, 32], **kwargs)
    (tmp_path / "bad.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(SlimError, match="is not a sensitivity file"):
        sensitivity(net, neg_loss(x, y), SHAPE, **{**kwargs, "file": str(tmp_path / "bad.json")})


# ------------------------------------------------------- the network stays as it was
@pytest.mark.parametrize("method", ["mask", "prune"])
@pytest.mark.parametrize("fail_after", [0, 1, 4])
def test_eval_fn_raising_leaves_network_and_optimizer_unchanged(method, fail_after):
    net = tiny_mobilenet()
    x, y = batch()
    optimizer = paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=net.parameters())
    net.train()
    nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
    optimizer.clear_grad()
    net.conv2_1.eval()  # mixed train/eval flags must come back as they were
    modes = [layer.training for layer in net.sublayers(include_self=True)]
    before = snapshot(net, optimizer)
    attrs = [(l._in_channels, l._out_channels, l._groups) for l in net.sublayers() if isinstance(l, nn.Conv2D)]
    inner = neg_loss(x, y)

    def eval_fn(network):
        network.eval()  # evaluation code flips modes ...
        return inner(network)
    wrapped, _ = counting(eval_fn, fail_after=fail_after)
    with pytest.raises(Interrupt):
        sensitivity(net, wrapped, SHAPE, layers=["conv2*", "conv3*"], method=method, progress=False)
    assert same(snapshot(net, optimizer), before)
    assert [layer.training for layer in net.sublayers(include_self=True)] == modes
    assert attrs == [(l._in_channels, l._out_channels, l._groups) for l in net.sublayers()
                     if isinstance(l, nn.Conv2D)]


def test_a_completed_run_leaves_the_network_unchanged_and_undoes_eval_fn_changes(caplog):
    net = tiny_mobilenet()
    x, y = batch()
    before = snapshot(net)

    def train_mode_eval(network):  # updates BatchNorm running statistics
        network.train()
        with paddle.no_grad():
            return -float(nn.functional.cross_entropy(network(x), y))
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.analysis.sensitivity"):
        sensitivity(net, train_mode_eval, SHAPE, layers=["conv6"], ratios=[0.5], progress=False)
    assert same(snapshot(net), before)
    assert not net.training
    assert "eval_fn changed" in caplog.text and "_mean" in caplog.text


# ------------------------------------------------------------------- worker processes
WORKER_KWARGS = dict(layers=["conv2*", "conv3*", "conv4*"], ratios=[0.25, 0.5, 0.75], progress=False)


@pytest.mark.parametrize("method", ["mask", "prune"])
def test_workers_give_the_same_losses_and_file_as_one_process(tmp_path, method):
    net = tiny_mobilenet()
    x, y = batch()
    before = snapshot(net)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    expected = sensitivity(net, neg_loss(x, y), SHAPE, file=str(one), method=method, **WORKER_KWARGS)
    got = sensitivity(net, neg_loss(x, y), SHAPE, file=str(two), method=method, workers=2,
                      **WORKER_KWARGS)
    assert got == expected and list(got) == list(expected)
    assert two.read_bytes() == one.read_bytes()
    assert same(snapshot(net), before)


def test_workers_failing_leave_the_network_and_a_resumable_file(tmp_path):
    net = tiny_mobilenet()
    x, y = batch()
    whole = tmp_path / "whole.json"
    expected = sensitivity(net, neg_loss(x, y), SHAPE, file=str(whole), **WORKER_KWARGS)
    before = snapshot(net)
    part = tmp_path / "part.json"
    first, _ = counting(neg_loss(x, y), fail_after=4)  # each worker: base (before the fork) + 3
    with pytest.raises(Interrupt):
        sensitivity(net, first, SHAPE, file=str(part), workers=2, **WORKER_KWARGS)
    assert same(snapshot(net), before)
    saved = sum(map(len, json.loads(part.read_text())["sensitivities"].values()))
    assert 3 <= saved < 3 * 6
    second, calls = counting(neg_loss(x, y))
    assert sensitivity(net, second, SHAPE, file=str(part), workers=2, **WORKER_KWARGS) == expected
    assert part.read_bytes() == whole.read_bytes()
    assert len(calls) == 1  # the base; the rest ran in the workers


class ArrayData(paddle.io.Dataset):
    def __init__(self, n=32, seed=3):
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(n, 3, 32, 32)).astype("float32")
        self.y = rng.integers(0, 10, (n, 1)).astype("int64")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("how", ["dataloader", "model.evaluate"])
def test_workers_run_eval_fns_that_use_paddle_data_loaders(how):
    """Paddle keeps the last DataLoader iterator in a global; a worker that freed its
    inherited copy would join threads it does not have and abort."""
    net = tiny_mobilenet()
    data = ArrayData()
    if how == "dataloader":
        loader = paddle.io.DataLoader(data, batch_size=8, shuffle=False)

        def eval_fn(network):
            network.eval()
            with paddle.no_grad():
                return -sum(float(nn.functional.cross_entropy(network(x), y)) for x, y in loader)
    else:
        model = paddle.Model(net)
        model.prepare(loss=nn.CrossEntropyLoss())

        def eval_fn(network):
            return -model.evaluate(data, batch_size=8, verbose=0)["loss"][0]
    kwargs = dict(layers=["conv5_1", "conv5_2", "conv6"], ratios=[0.3, 0.6], progress=False)
    assert sensitivity(net, eval_fn, SHAPE, workers=2, **kwargs) == sensitivity(net, eval_fn, SHAPE, **kwargs)


@pytest.mark.parametrize("workers, message", [
    (0, "workers: 0 is not allowed; expected an int >= 1"),
    (1.5, "workers: 1.5 is not allowed"),
    (True, "workers: True is not allowed"),
])
def test_bad_workers_fail_before_any_evaluation(workers, message):
    calls = []
    with pytest.raises(ConfigError, match=message):
        sensitivity(tiny_mobilenet(), lambda n: calls.append(1) or 1.0, SHAPE, workers=workers)
    assert calls == []


# ------------------------------------------------------------ progress and errors
def test_progress_bar_counts_layers_times_ratios(capsys):
    net = tiny_mobilenet()
    x, y = batch()
    sensitivity(net, neg_loss(x, y), SHAPE, layers=["conv5_1", "conv6"], ratios=[0.3, 0.6],
                progress=True)
    err = capsys.readouterr().err
    assert "sensitivity" in err and "4/4" in err
    sensitivity(net, neg_loss(x, y), SHAPE, layers=["conv6"], ratios=[0.3])  # stderr is no tty
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, error, message", [
    ({"ratios": [0.5, 1.0]}, ConfigError, r"ratios: 1.0 is not allowed; expected numbers in \(0, 1\)"),
    ({"ratios": []}, ConfigError, "a non-empty list"),
    ({"ratios": [0.5, 0.5]}, ConfigError, "distinct ratios"),
    ({"method": "reshape"}, ConfigError, "method: 'reshape' is not allowed; expected one of mask, prune"),
    ({"criterion": "l3"}, ConfigError, "criterion: 'l3'"),
    ({"layers": ["nope*"]}, ConfigError, "layers pattern: 'nope\\*' is not allowed"),
    ({"layers": ["fc"]}, SlimError, "no prunable group matches"),
    ({"round_to": 0}, ConfigError, "round_to: 0"),
    ({"progress": "yes"}, ConfigError, "progress: 'yes'"),
])
def test_bad_arguments_fail_before_any_evaluation(kwargs, error, message):
    calls = []
    with pytest.raises(error, match=message):
        sensitivity(tiny_mobilenet(), lambda n: calls.append(1) or 1.0, SHAPE, **kwargs)
    assert calls == []


@pytest.mark.parametrize("value, message", [
    ({"acc": 0.5}, "one finite number"), (float("nan"), "one finite number"),
    ([0.1, 0.2], "one finite number"), (0.0, "returned 0 for the unpruned network"),
])
def test_bad_metrics_are_refused(value, message):
    net = tiny_mobilenet()
    before = snapshot(net)
    with pytest.raises(SlimError, match=message):
        sensitivity(net, lambda n: value, SHAPE, layers=["conv6"], progress=False)
    assert same(snapshot(net), before)


def test_metric_may_be_a_tensor_or_a_one_element_list():
    net = tiny_mobilenet()
    for value in (paddle.to_tensor([0.75]), [0.75], np.float32(0.75)):
        sens = sensitivity(net, lambda n: value, SHAPE, layers=["conv6"], ratios=[0.5], progress=False)
        assert sens["conv6._pointwise_conv.0"][0.5] == 0.0


# ------------------------------------------------------------------ prefix caching
def two_batches(net_name):
    paddle.seed(0)
    net = calibrate_exactly(randomize_bn(EXACT_MODELS[net_name](), stats=False))
    data = [batch(seed=s, n=4) for s in (1, 2)]

    def eval_fn(network):
        network.eval()
        with paddle.no_grad():
            return -sum(float(nn.functional.cross_entropy(network(x), y)) for x, y in data)
    return net, eval_fn


def replayed(caplog):
    return sum(int(r.getMessage().split(", ")[1].split()[0]) for r in caplog.records
               if r.getMessage().startswith("prefix cache of") and "replayed" in r.getMessage())


@pytest.mark.parametrize("method", ["mask", "prune"])
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_prefix_cache_gives_the_losses_of_full_evaluations(name, method, caplog):
    net, eval_fn = two_batches(name)
    kwargs = dict(ratios=[0.25, 0.5, 0.75], method=method, progress=False)
    before = snapshot(net)
    plain = sensitivity(net, eval_fn, SHAPE, cache=False, **kwargs)
    with caplog.at_level(logging.DEBUG, logger="slim_callbacks.analysis.sensitivity"):
        cached = sensitivity(net, eval_fn, SHAPE, **kwargs)
    assert list(cached) == list(plain)
    worst = max(abs(cached[g][r] - plain[g][r]) for g in plain for r in plain[g])
    assert worst <= 1e-6, worst
    assert max(abs(v) for losses in plain.values() for v in losses.values()) > 0.01
    assert replayed(caplog) > 0  # the cache was really used
    assert not any("another input" in r.getMessage() for r in caplog.records)
    assert same(snapshot(net), before)
    assert not [n for n, layer in net.named_sublayers(include_self=True) if "forward" in vars(layer)]


def test_prefix_cache_recomputes_when_eval_fn_draws_new_data(caplog):
    net = tiny_mobilenet()
    kwargs = dict(layers=["conv3*", "conv5_1*"], ratios=[0.25, 0.5, 0.75], progress=False)

    def run(cache):
        rng = np.random.default_rng(7)  # a different batch at every call, same sequence per run

        def eval_fn(network):
            x = paddle.to_tensor(rng.normal(size=[4] + SHAPE[1:]).astype("float32"))
            y = paddle.to_tensor(rng.integers(0, 10, (4, 1)).astype("int64"))
            with paddle.no_grad():
                return -float(nn.functional.cross_entropy(network(x), y))
        return sensitivity(net, eval_fn, SHAPE, cache=cache, **kwargs)

    plain = run(False)
    with caplog.at_level(logging.DEBUG, logger="slim_callbacks.analysis.sensitivity"):
        cached = run(True)
    assert cached == plain
    assert any("another input" in r.getMessage() for r in caplog.records)
    assert replayed(caplog) == 0


@pytest.mark.parametrize("fail_after", [1, 2, 3])
def test_prefix_cache_puts_every_forward_back_when_eval_fn_raises(fail_after):
    net = tiny_mobilenet()
    x, y = batch()
    base_out = net(x).numpy()
    before = snapshot(net)
    calls = []

    def eval_fn(network):
        with paddle.no_grad():
            metric = -float(nn.functional.cross_entropy(network(x), y))
        calls.append(1)
        if len(calls) > fail_after:  # after the network ran with forwards patched
            raise Interrupt
        return metric

    with pytest.raises(Interrupt):
        sensitivity(net, eval_fn, SHAPE, layers=["conv4*"], ratios=[0.25, 0.5, 0.75], progress=False)
    assert not [n for n, layer in net.named_sublayers(include_self=True) if "forward" in vars(layer)]
    assert same(snapshot(net), before)
    assert np.array_equal(net(x).numpy(), base_out)
    assert np.array_equal(net(x * 2).numpy(), net(x * 2).numpy())


@pytest.mark.parametrize("cache", ["yes", -1, 1.5])
def test_cache_must_be_a_bool_or_a_byte_limit(cache):
    net = tiny_mobilenet()
    with pytest.raises(ConfigError, match="cache"):
        sensitivity(net, lambda n: 1.0, SHAPE, cache=cache, progress=False)


def test_prefix_cache_limit_keeps_the_answer(caplog):
    net, eval_fn = two_batches("mobilenet_v2")
    kwargs = dict(layers=["features.1*", "features.4*", "features.9*"], ratios=[0.25, 0.5, 0.75],
                  progress=False)
    plain = sensitivity(net, eval_fn, SHAPE, cache=False, **kwargs)
    with caplog.at_level(logging.DEBUG, logger="slim_callbacks.analysis.sensitivity"):
        small = sensitivity(net, eval_fn, SHAPE, cache=100_000, **kwargs)
    assert any("limit reached" in r.getMessage() for r in caplog.records)
    assert max(abs(small[g][r] - plain[g][r]) for g in plain for r in plain[g]) <= 1e-6
