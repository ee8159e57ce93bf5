"""VisualDLLogger: records read back with visualdl.LogReader."""
import os
import sys

import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, Net, aided, dataset, read_visualdl

from slim_callbacks.callbacks import TAGS, PruneCallback, VisualDLLogger
from slim_callbacks.core.errors import ConfigError


def fit(callbacks, epochs=3, steps_data=64):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    model.fit(dataset(steps_data), dataset(32, seed=1), epochs=epochs, batch_size=16,
              verbose=0, shuffle=False, callbacks=callbacks)
    return model


def test_the_logger_beside_a_prune_callback_writes_every_tag(tmp_path):
    log_dir = str(tmp_path / "vdl")
    cb = aided(0.5, "slim", bn_l1=1e-2, prune_epochs=[1], input_shape=SHAPE)
    fit([cb, VisualDLLogger(log_dir, log_freq=2)], epochs=3)
    scalars, hists = read_visualdl(log_dir)
    expected = {"train/loss", "train/acc", "eval/loss", "eval/acc", "model/gflops",
                "model/gflops_legacy", "model/params", "model/size_mb", "pruning/planned_ratio",
                "pruning/achieved_ratio", "widths/c1.0", "widths/c2.0", "widths/c3.0",
                "bn/gamma_below_1e-2"}
    assert expected <= set(scalars), expected - set(scalars)
    assert "eval/step" not in scalars  # Paddle's eval step counter is no metric
    assert set(hists) == {"bn/gamma"} and len(hists["bn/gamma"]) == 3
    # 4 steps per epoch, 3 epochs, every 2nd step
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6, 8, 10, 12]
    assert [s for s, _ in scalars["eval/acc"]] == [0, 1, 2]
    assert [v for _, v in scalars["widths/c2.0"]] == [16, 16]  # logged once pruned
    params = [v for _, v in scalars["model/params"]]
    assert params[0] > params[1] == params[2]
    gflops = dict(scalars["model/gflops"])
    assert gflops[1] < 0.6 * gflops[0]
    assert dict(scalars["pruning/planned_ratio"]) == pytest.approx({0: 0.0, 1: 0.5, 2: 0.5})
    assert dict(scalars["pruning/achieved_ratio"]) == pytest.approx({0: 0.0, 1: 0.5, 2: 0.5})
    assert cb.logger_cb._writer is None  # closed at train end


def test_standalone_logger_after_the_pruner(tmp_path):
    cb = PruneCallback(0.5, prune_epochs=[0], input_shape=SHAPE)
    vdl = VisualDLLogger(str(tmp_path), log_freq=1, pruner=cb)
    assert not os.listdir(tmp_path)  # lazily opened
    fit([cb, vdl], epochs=2)
    scalars, _ = read_visualdl(str(tmp_path))
    assert len(scalars["train/loss"]) == 8
    assert dict(scalars["widths/c1.0"]) == {0: 8, 1: 8}
    assert dict(scalars["pruning/achieved_ratio"])[0] == pytest.approx(0.5)


def test_logger_without_pruner_logs_model_and_bn(tmp_path):
    fit([VisualDLLogger(str(tmp_path), log_freq=4, input_shape=SHAPE)], epochs=1)
    scalars, hists = read_visualdl(str(tmp_path))
    assert "model/gflops" in scalars and "bn/gamma" in hists
    assert not any(t.startswith(("pruning/", "widths/")) for t in scalars)


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(paddle.distributed, "get_rank", lambda *a, **k: 1)
    fit([VisualDLLogger(str(tmp_path / "r1"), log_freq=1, input_shape=SHAPE)], epochs=1)
    assert not os.path.exists(tmp_path / "r1") or not os.listdir(tmp_path / "r1")


@pytest.mark.parametrize("kwargs", [dict(log_dir=""), dict(log_dir="x", log_freq=0),
                                    dict(log_dir=3)])
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        VisualDLLogger(**kwargs)


def test_tag_list_is_documented():
    import slim_callbacks.callbacks.visualdl as module
    for tag in TAGS:
        assert f"``{tag}" in module.__doc__


def test_each_session_writes_a_directory_of_its_own_and_keeps_the_earlier_ones(tmp_path, monkeypatch):
    import time
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)   # both sessions in one second
    log_dir = str(tmp_path / "logs")
    fit([VisualDLLogger(log_dir, log_freq=1)], epochs=1)
    first, _ = read_visualdl(log_dir)
    fit([VisualDLLogger(log_dir, log_freq=1)], epochs=1)
    assert sorted(os.listdir(log_dir)) == ["train", "train-2"]
    assert read_visualdl(log_dir)[0] == first and read_visualdl(log_dir, "train-2")[0]["train/loss"]


def test_the_flops_profile_is_counted_once_per_structure(tmp_path, monkeypatch):
    from slim_callbacks.analysis import flops
    counted = []
    real = flops.profile

    def profile(net, shape):  # the logger's calls (the pruner's event record has its own)
        counted.append(sys._getframe(1).f_globals["__name__"])
        return real(net, shape)
    monkeypatch.setattr(flops, "profile", profile)
    log_dir = str(tmp_path / "vdl")
    cb = PruneCallback(0.5, "l1_norm", prune_epochs=[1], input_shape=SHAPE)
    fit([cb, VisualDLLogger(log_dir)], epochs=4)
    gflops = [v for _, v in read_visualdl(log_dir)[0]["model/gflops"]]
    assert len(gflops) == 4 and len(set(gflops)) == 2 and gflops[0] > gflops[-1]  # one event
    assert counted.count(VisualDLLogger.__module__) == 2  # before the event and after it
