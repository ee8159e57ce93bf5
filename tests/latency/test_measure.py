"""slim_callbacks.latency.measure and `slim-callbacks latency`."""
import os

import numpy as np
import paddle
import pytest

from slim_callbacks.app.cli import main
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.deploy.runtime import save_inference_model
from slim_callbacks.latency import measure as latency
from slim_callbacks.latency.measure import format_latency_table, measure_latency


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("latency")
    paddle.seed(0)
    out = {}
    for name, width in (("wide", 32), ("narrow", 4)):
        net = paddle.nn.Sequential(paddle.nn.Conv2D(3, width, 3), paddle.nn.ReLU())
        os.makedirs(d / name)
        prefix = str(d / name / "model")
        save_inference_model(net, prefix, [1, 3, 8, 8])
        out[name] = prefix
    return out


def test_positive_medians_and_spread(models):
    res = measure_latency(models, warmup=1, rounds=3, runs_per_round=2)
    assert [r.name for r in res] == ["wide", "narrow"]
    for r in res:
        assert r.median_ms > 0 and r.samples == 6
        assert r.min_ms <= r.p25_ms <= r.median_ms <= r.p75_ms <= r.max_ms
    assert "speedup" in format_latency_table(res)


def test_rounds_interleave_with_rotated_order(models, monkeypatch):
    order = []
    real_run = latency.run

    def fake_run(pred, inputs):
        order.append(id(pred))
        return real_run(pred, inputs)

    monkeypatch.setattr(latency, "run", fake_run)
    measure_latency(models, warmup=0, rounds=4, runs_per_round=1)
    assert len(order) == 8
    firsts = order[0::2]               # the first model timed in each round
    assert firsts[0] != firsts[1] and firsts[0] == firsts[2] and firsts[1] == firsts[3]
    for i in range(0, 8, 2):           # every round times both models
        assert order[i] != order[i + 1]


def test_median_from_interleaved_samples(models, monkeypatch):
    """A fake clock: the k-th timed run lasts k ms, so each model's samples show which
    interleaved runs it got."""
    durations = iter(range(1, 100))
    state = {"t": 0.0, "start": True}

    def clock():
        if state["start"]:
            state["start"] = False
            return state["t"]
        state["start"] = True
        state["t"] += next(durations) / 1000.0
        return state["t"]

    monkeypatch.setattr(latency, "_clock", clock)
    res = measure_latency(models, warmup=0, rounds=4, runs_per_round=1)
    # round 0: wide(1) narrow(2); round 1: narrow(3) wide(4); round 2: wide(5) narrow(6);
    # round 3: narrow(7) wide(8)
    wide, narrow = res
    assert wide.median_ms == pytest.approx(4.5) and (wide.min_ms, wide.max_ms) == (1.0, 8.0)
    assert narrow.median_ms == pytest.approx(4.5)
    assert (narrow.min_ms, narrow.max_ms) == pytest.approx((2.0, 7.0))


def test_cli_prints_a_row_per_model(models, capsys):
    dirs = [os.path.dirname(p) for p in models.values()]
    assert main(["latency", dirs[0], models["narrow"], "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert dirs[0] in out and models["narrow"] in out and "speedup" in out
    assert sum(1 for line in out.splitlines() if line.endswith("x")) == 2


def test_cli_missing_model_is_one_line_error(tmp_path, capsys):
    assert main(["latency", str(tmp_path / "nothing"), "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no inference model" in err and len(err.splitlines()) == 1


def test_no_models_refused():
    with pytest.raises(SlimError):
        measure_latency({})


@pytest.mark.parametrize("key,value", [("threads", "two"), ("rounds", 0), ("warmup", 1.5)])
def test_bad_counts_are_config_errors_naming_the_argument(models, key, value):
    with pytest.raises(SlimError, match=key):
        measure_latency(models, **{key: value})


def test_a_dynamic_batch_model_without_input_shape_is_a_clear_error(tmp_path):
    from slim_callbacks import export
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU())
    result = export(net, str(tmp_path), [1, 3, 8, 8], dynamic_batch=True)
    with pytest.raises(SlimError, match="pass input_shape"):
        measure_latency({"m": result.prefix}, rounds=1, warmup=0, runs_per_round=1)
    times = measure_latency({"m": result.prefix}, rounds=1, warmup=0, runs_per_round=1,
                            input_shape=[1, 3, 8, 8])
    assert times[0].median_ms > 0


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory):
    """Three 16-channel 3x3 convs at 32x32: two 64 KiB intermediates between them."""
    paddle.seed(0)
    layers = [paddle.nn.Conv2D(3, 16, 3, padding=1), paddle.nn.ReLU()]
    for _ in range(2):
        layers += [paddle.nn.Conv2D(16, 16, 3, padding=1), paddle.nn.ReLU()]
    prefix = str(tmp_path_factory.mktemp("deep") / "model")
    save_inference_model(paddle.nn.Sequential(*layers), prefix, [1, 3, 32, 32])
    return prefix


def settled_allocation(timeout_s=2.0):
    """Host bytes Paddle holds once its garbage-collector thread has caught up (the
    count has not moved for 50 ms)."""
    import time

    from paddle.base import core
    last, stable_since, start = None, None, time.monotonic()
    while time.monotonic() - start < timeout_s:
        value = core.host_memory_stat_current_value("Allocated", 0)
        if value != last:
            last, stable_since = value, time.monotonic()
        elif time.monotonic() - stable_since >= 0.05:
            break
        time.sleep(0.005)
    return last


def allocated_by_a_run_predictor(prefix, **kwargs):
    """Host bytes Paddle holds, after a run, for a new predictor of ``prefix``."""
    from slim_callbacks.deploy import runtime
    before = settled_allocation()
    pred = runtime.predictor(prefix, **kwargs)
    runtime.run(pred, runtime.zero_inputs(pred, prefix))
    return settled_allocation() - before, pred


def test_keep_intermediates_really_keeps_them(deep_model):
    """Paddle reads the flag when the first run builds the executor, not at creation: code
    that sets it only around ``create_predictor`` keeps nothing, and fails here."""
    from slim_callbacks.deploy import runtime
    allocated_by_a_run_predictor(deep_model)   # the process's one-off allocations first
    freeing, free_pred = allocated_by_a_run_predictor(deep_model)
    keeping, kept_pred = allocated_by_a_run_predictor(deep_model, keep_intermediates=True)
    two_intermediates = 2 * 16 * 32 * 32 * 4
    assert keeping - freeing >= two_intermediates, (keeping, freeing)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype("float32")
    np.testing.assert_array_equal(runtime.run(kept_pred, [x])[0], runtime.run(free_pred, [x])[0])


def flags_at_runs(monkeypatch, fail=False):
    """The eager-deletion flag at every ``runtime.run`` call (which then fails if asked)."""
    from slim_callbacks.deploy import runtime
    seen, real = [], runtime.run

    def recording(pred, inputs):
        seen.append(paddle.get_flags([runtime.EAGER_DELETE_FLAG])[runtime.EAGER_DELETE_FLAG])
        if fail:
            raise RuntimeError("first run failed")
        return real(pred, inputs)
    monkeypatch.setattr(runtime, "run", recording)
    return seen


def test_the_first_run_of_a_keeping_predictor_has_the_flag_set(models, monkeypatch):
    from slim_callbacks.deploy import runtime
    before = paddle.get_flags([runtime.EAGER_DELETE_FLAG])
    seen = flags_at_runs(monkeypatch)
    runtime.predictor(models["wide"], keep_intermediates=True)
    runtime.predictor(models["wide"])
    assert seen == [-1.0]                      # one first run, inside, for the keeping one
    assert paddle.get_flags([runtime.EAGER_DELETE_FLAG]) == before


@pytest.mark.parametrize("failing", ["create_predictor", "first run"])
def test_keep_intermediates_restores_the_flag_also_on_failure(models, monkeypatch, failing):
    from slim_callbacks.deploy import runtime
    before = paddle.get_flags([runtime.EAGER_DELETE_FLAG])
    if failing == "first run":
        flags_at_runs(monkeypatch, fail=True)
    else:
        def no_predictor(config):
            raise RuntimeError("no predictor")
        monkeypatch.setattr(paddle.inference, "create_predictor", no_predictor)
    with pytest.raises((RuntimeError, SlimError)):  # create_predictor: wrapped
        runtime.predictor(models["wide"], keep_intermediates=True)
    assert paddle.get_flags([runtime.EAGER_DELETE_FLAG]) == before


def test_keep_intermediates_on_a_dynamic_batch_model_runs_first_at_input_shape(tmp_path):
    from slim_callbacks import export
    from slim_callbacks.deploy import runtime
    before = paddle.get_flags([runtime.EAGER_DELETE_FLAG])
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU())
    result = export(net, str(tmp_path), [1, 3, 8, 8], dynamic_batch=True)
    with pytest.raises(SlimError, match="pass input_shape"):
        runtime.predictor(result.prefix, keep_intermediates=True)
    assert paddle.get_flags([runtime.EAGER_DELETE_FLAG]) == before
    with pytest.raises(ConfigError, match="input_shape"):
        runtime.predictor(result.prefix, keep_intermediates=True, input_shape=[1, -3, 8, 8])
    pred = runtime.predictor(result.prefix, keep_intermediates=True, input_shape=[1, 3, 8, 8])
    assert runtime.run(pred, [np.ones((2, 3, 8, 8), "float32")])[0].shape == (2, 4, 6, 6)


def test_measure_latency_warms_keeping_predictors_at_its_batch_1_shape(models, monkeypatch):
    made = []
    real = latency.predictor

    def recording(prefix, **kwargs):
        made.append((kwargs["input_shape"], kwargs["batch"]))
        return real(prefix, **kwargs)
    monkeypatch.setattr(latency, "predictor", recording)
    measure_latency({"m": models["wide"]}, warmup=0, rounds=1, runs_per_round=1,
                    input_shape=[1, 3, 8, 8], keep_intermediates=True)
    assert made == [([1, 3, 8, 8], 1)]


class TwoInputs(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 1)

    def forward(self, x, scale):
        return self.conv(x) * scale


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("two") / "model")
    spec = [paddle.static.InputSpec([1, 3, 4, 4], "float32", "x"),
            paddle.static.InputSpec([1, 4, 1, 1], "float32", "scale")]
    net = TwoInputs()
    net.eval()
    paddle.jit.save(net, prefix, input_spec=spec)
    return prefix


def test_every_input_of_a_two_input_model_is_fed(two_input_model):
    from slim_callbacks.deploy import runtime
    for keep in (False, True):
        res = measure_latency({"m": two_input_model}, warmup=0, rounds=1, runs_per_round=1,
                              keep_intermediates=keep)
        assert res[0].median_ms > 0
    pred = runtime.predictor(two_input_model)
    with pytest.raises(SlimError, match="1 input.* given; the model takes 2: x, scale"):
        runtime.run(pred, [np.zeros((1, 3, 4, 4), "float32")])


@pytest.mark.parametrize("keep,match", [("wide", "True, False or a list"),
                                        (["wide", "wdie"], "wdie")])
def test_keep_intermediates_names_are_checked(models, keep, match):
    with pytest.raises(ConfigError, match=match):
        measure_latency(models, rounds=1, keep_intermediates=keep)


def record_keep(monkeypatch, owner, name):
    """``owner.name`` wrapped to record the ``keep_intermediates`` of every call."""
    seen = []
    real = getattr(owner, name)

    def recording(first, **kwargs):
        seen.append(kwargs["keep_intermediates"])
        return real(first, **kwargs)
    monkeypatch.setattr(owner, name, recording)
    return seen


def test_cli_keep_intermediates_reaches_the_predictors(models, monkeypatch, capsys):
    options = record_keep(monkeypatch, latency, "measure_latency")
    assert main(["latency", models["wide"], models["narrow"], "--rounds", "1",
                 "--keep-intermediates"]) == 0
    assert options == [True] and "speedup" in capsys.readouterr().out


def test_keep_intermediates_by_name_times_both_settings_side_by_side(models, monkeypatch):
    made = record_keep(monkeypatch, latency, "predictor")
    res = measure_latency({"free": models["wide"], "kept": models["wide"]}, warmup=0, rounds=1,
                          runs_per_round=1, keep_intermediates=["kept"])
    assert made == [False, True] and [r.name for r in res] == ["free", "kept"]


def test_the_table_names_the_batch_that_was_timed(models):
    res = measure_latency(models, warmup=0, rounds=1, runs_per_round=1, input_shape=[2, 3, 8, 8])
    assert [r.batch for r in res] == [2, 2]
    assert "runs per model, batch 2," in format_latency_table(res)
    assert "batch 1," in format_latency_table(measure_latency(models, rounds=1, warmup=0))
