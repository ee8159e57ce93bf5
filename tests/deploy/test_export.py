"""export(): pruned networks round-trip dygraph -> Paddle Inference -> ONNX Runtime with the
same outputs; a mismatch is refused and leaves no files; bad arguments write nothing."""
import os
import sys

import numpy as np
import onnxruntime
import paddle
import paddle.vision.models as models
import pytest
from helpers import SHAPE, Net, calibrate, outputs

import slim_callbacks
import slim_callbacks.deploy.export as export_module
from slim_callbacks import ConfigError, SlimError, export, prune
from slim_callbacks.deploy.runtime import predictor, run


def pruned_net(ratio=0.5):
    paddle.seed(0)
    net = Net()
    calibrate(net, SHAPE)
    prune(net, SHAPE, ratio)
    return net


def listing(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else None


def test_pruned_network_round_trips_through_paddle_inference_and_onnx_runtime(tmp_path):
    net = pruned_net()
    assert net.c2[0].weight.shape[0] == 16          # really pruned: 32 -> 16 channels
    net.train()
    result = export(net, tmp_path / "inf", SHAPE, formats=("paddle", "onnx"))
    assert net.training and net.c1[1].training    # compared in eval mode, modes restored
    out = str(tmp_path / "inf")
    assert listing(out) == ["model.json", "model.onnx", "model.pdiparams"]
    assert result.prefix == os.path.join(out, "model")
    assert result.files == {"paddle": (f"{out}/model.json", f"{out}/model.pdiparams"),
                            "onnx": (f"{out}/model.onnx",)}
    assert set(result.max_abs_diff) == {"paddle", "onnx"}
    # the saved files, loaded independently, give the dygraph outputs on a new input
    x = np.random.default_rng(1).standard_normal(SHAPE).astype("float32")
    expected = outputs(net, paddle.to_tensor(x))
    assert np.abs(expected).max() > 0.1               # a real signal, not all zeros
    got_paddle = run(predictor(result.prefix), [x])[0]
    session = onnxruntime.InferenceSession(f"{out}/model.onnx",
                                           providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got_paddle, expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_onnx, expected, atol=1e-5, rtol=1e-5)
    assert all(d < 1e-5 for d in result.max_abs_diff.values())


def test_verification_uses_the_given_batch_in_chunks_of_the_fixed_batch(tmp_path, monkeypatch):
    net = pruned_net()
    seen = []
    real_run = export_module.run
    monkeypatch.setattr(export_module, "run", lambda p, xs: seen.append(xs[0].copy())
                        or real_run(p, xs))
    batch = np.random.default_rng(2).standard_normal([3, 3, 16, 16]).astype("float32")
    export(net, tmp_path / "a", SHAPE, inputs=batch)
    assert [s.shape for s in seen] == [(1, 3, 16, 16)] * 3
    assert all(np.array_equal(s[0], b) for s, b in zip(seen, batch))
    seen.clear()
    export(net, tmp_path / "b", SHAPE, inputs=paddle.to_tensor(batch), dynamic_batch=True)
    assert [s.shape for s in seen] == [(3, 3, 16, 16)]
    x5 = np.ones([5, 3, 16, 16], "float32")                # any batch size now
    np.testing.assert_allclose(run(predictor(str(tmp_path / "b" / "model")), [x5])[0],
                               outputs(net, paddle.to_tensor(x5)), atol=1e-5)


@pytest.mark.parametrize("fmt", ["paddle", "onnx"])
def test_a_mismatch_is_refused_and_leaves_no_files(tmp_path, monkeypatch, fmt):
    net = pruned_net()
    if fmt == "paddle":
        real = export_module.run
        monkeypatch.setattr(export_module, "run", lambda p, xs: [o + 0.5 for o in real(p, xs)])
    else:
        real = export_module._onnx_outputs
        monkeypatch.setattr(export_module, "_onnx_outputs",
                            lambda *a: [o + 0.5 for o in real(*a)])
    new = tmp_path / "new"
    with pytest.raises(SlimError, match=rf"^export {fmt}: output 0 differs from the dygraph "
                       r"network by 0\.5 \(max abs; allowed .*\); the export is refused"):
        export(net, new, SHAPE, formats=("paddle", "onnx"))
    assert not new.exists()                               # created by export: removed
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "model.json").write_text("an earlier export")
    with pytest.raises(SlimError, match="refused"):
        export(net, kept, SHAPE, formats=("paddle", "onnx"))
    assert listing(kept) == ["model.json"]                # nothing added, nothing replaced
    assert (kept / "model.json").read_text() == "an earlier export"


def test_tolerance_is_absolute_plus_relative_to_the_largest_output(tmp_path, monkeypatch):
    net = pruned_net()
    scale = float(np.abs(outputs(net, paddle.to_tensor(
        np.random.default_rng(0).standard_normal(SHAPE).astype("float32")))).max())
    real = export_module.run
    monkeypatch.setattr(export_module, "run", lambda p, xs: [o + 1e-3 for o in real(p, xs)])
    with pytest.raises(SlimError, match=r"by 0\.001 .*allowed 0\.0001\d* = atol 0\.0001 \+ rtol"):
        export(net, tmp_path / "a", SHAPE, rtol=0.0)
    result = export(net, tmp_path / "b", SHAPE, rtol=2e-3 / scale)   # 1e-4 + 2e-3 > 1e-3
    assert abs(result.max_abs_diff["paddle"] - 1e-3) < 1e-5


@pytest.mark.parametrize("kwargs, message", [
    ({"formats": ("tflite",)}, "formats: ('tflite',) is not allowed; expected a non-empty list "
                               "of distinct formats from paddle, onnx"),
    ({"formats": ()}, "formats: () is not allowed"),
    ({"formats": ("paddle", "paddle")}, "formats: ('paddle', 'paddle') is not allowed"),
    ({"input_shape": [1, 3, 0, 16]}, "input_shape: [1, 3, 0, 16] is not allowed; expected a "
                                     "list of positive ints, batch first"),
    ({"inputs": np.zeros([2, 3, 8, 8], "float32")},
     "inputs: [2, 3, 8, 8] is not allowed; expected None or a batch (array or tensor) of "
     "shape [N, 3, 16, 16]"),
    ({"input_shape": [2, 3, 16, 16], "inputs": np.zeros([3, 3, 16, 16], "float32")},
     "inputs: [3, 3, 16, 16] is not allowed; expected None or a batch (array or tensor) of "
     "shape [N (a multiple of 2), 3, 16, 16]"),
    ({"atol": -1}, "atol: -1 is not allowed"),
    ({"network": "net"}, "network: 'str' is not allowed; expected a paddle.nn.Layer"),
])
def test_bad_arguments_are_config_errors_before_anything_is_written(tmp_path, kwargs, message):
    args = {"network": pruned_net(), "path": tmp_path / "out", "input_shape": SHAPE, **kwargs}
    with pytest.raises(ConfigError) as err:
        export(**args)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "out").exists()


def test_a_file_as_path_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match="path: .* expected a directory"):
        export(pruned_net(), tmp_path / "f", SHAPE)


def test_onnx_without_its_tools_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)     # import raises ImportError
    with pytest.raises(SlimError) as err:
        export(pruned_net(), tmp_path / "out", SHAPE, formats=("paddle", "onnx"))
    assert str(err.value) == ('format onnx needs paddle2onnx, which is not installed: '
                              'pip install "slim_callbacks[onnx]"')
    assert not (tmp_path / "out").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(SlimError, match="needs paddle2onnx and onnxruntime, which are not"):
        export(pruned_net(), tmp_path / "out", SHAPE, formats="onnx")


def test_networks_with_several_outputs_are_compared_output_by_output(tmp_path):
    class TwoHeads(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.body = Net()

        def forward(self, x):
            y = self.body(x)
            return y, paddle.nn.functional.softmax(y)

    paddle.seed(0)
    net = TwoHeads()
    calibrate(net, SHAPE)
    prune(net, SHAPE, 0.5)
    result = export(net, tmp_path / "out", SHAPE, formats=["paddle", "onnx"])
    assert len(run(predictor(result.prefix), [np.ones(SHAPE, "float32")])) == 2
    assert all(d < 1e-5 for d in result.max_abs_diff.values())


def test_export_is_public_api():
    assert slim_callbacks.export is export and "export" in slim_callbacks.__all__


# ---------------------------------------------------------------------------- the zoo
ZOO = [name for name in models.__all__ if name[0].islower()]
# Smallest square input each architecture accepts (fixed-size flatten -> Linear), as in
# test_tracer.py.
INPUT_SIZE = {"alexnet": 224, "googlenet": 224, "inception_v3": 96}
# ONNX too for the smallest member of each family (all 38 with ONNX take ~5 min here).
# The deeper members (resnet101, densenet264, ...) take 10-50 s each on 2 shared cores:
# they run with SLIM_FULL_ZOO=1 (all 38 passed, 8 min, on 2026-12-03).
FULL_ZOO = os.environ.get("SLIM_FULL_ZOO") == "1"
ONNX_TOO = {"resnet18", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v1", "mobilenet_v2",
            "mobilenet_v3_small", "densenet121", "alexnet", "inception_v3", "squeezenet1_1",
            "googlenet", "shufflenet_v2_x0_25", "shufflenet_v2_swish"}


FAST = ONNX_TOO | {"vgg11", "resnet34", "mobilenet_v3_large", "shufflenet_v2_x1_0"}


@pytest.mark.parametrize("name", [
    n if n in FAST else pytest.param(n, marks=pytest.mark.skipif(
        not FULL_ZOO, reason="deep zoo member: set SLIM_FULL_ZOO=1")) for n in ZOO])
def test_every_vision_model_pruned_at_0_3_exports_and_passes_the_check(tmp_path, name):
    paddle.seed(0)
    net = getattr(models, name)(num_classes=10)
    size = INPUT_SIZE.get(name, 32)
    shape = [1, 3, size, size]
    calibrate(net, shape)
    prune(net, shape, 0.3)
    formats = ("paddle", "onnx") if name in ONNX_TOO else ("paddle",)
    result = export(net, tmp_path / "m", shape, formats=formats)
    assert set(result.max_abs_diff) == set(formats)
    assert all(d <= 1e-4 for d in result.max_abs_diff.values()), result.max_abs_diff


def test_vgg_at_32x32_is_refused_for_onnx_with_the_runtime_error(tmp_path):
    """paddle2onnx turns VGG's AdaptiveAvgPool2D(7) over a 1x1 map into an AveragePool
    with stride 0, which ONNX Runtime rejects: a SlimError, nothing left behind."""
    paddle.seed(0)
    net = models.vgg11(num_classes=10)
    with pytest.raises(SlimError, match=r"^export onnx: ONNX Runtime cannot run the model "
                       r"paddle2onnx wrote \(.*AveragePool.*\); the export is refused"):
        export(net, tmp_path / "m", [1, 3, 32, 32], formats=("paddle", "onnx"))
    assert not (tmp_path / "m").exists()


def test_an_earlier_export_of_another_format_is_warned_about(tmp_path, caplog):
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3))
    export(net, str(tmp_path), [1, 3, 8, 8], formats=("paddle", "onnx"))
    with caplog.at_level("WARNING", logger="slim_callbacks.deploy"):
        export(net, str(tmp_path), [1, 3, 8, 8], formats=("paddle",))
    assert "model.onnx left from an earlier export" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="slim_callbacks.deploy"):
        export(net, str(tmp_path / "fresh"), [1, 3, 8, 8])
    assert "earlier export" not in caplog.text


def test_a_failed_move_leaves_the_earlier_export_whole(tmp_path, monkeypatch):
    net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3))
    first = export(net, str(tmp_path), [1, 3, 8, 8])
    before = {f: open(f, "rb").read() for f in first.files["paddle"]}
    real, calls = os.replace, []

    def second_move_fails(src, dst):
        calls.append(dst)
        if len(calls) == 4:   # 2 files set aside, the first new one moved, the second fails
            raise OSError("disk full")
        return real(src, dst)
    monkeypatch.setattr(export_module.os, "replace", second_move_fails)
    with pytest.raises(SlimError, match="cannot write the model in .*disk full"):
        export(paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3)), str(tmp_path), [1, 3, 8, 8])
    monkeypatch.setattr(export_module.os, "replace", real)
    assert calls[:4] == [f + ".replaced" for f in first.files["paddle"]] + list(first.files["paddle"])
    assert {f: open(f, "rb").read() for f in first.files["paddle"]} == before
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.pdiparams"]
