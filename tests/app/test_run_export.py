"""`slim-callbacks run` exports the final model (and measures latency), and
`slim-callbacks export` rebuilds a run's model from its recipe and ledger; bad inputs are
one-line errors. The tiny recipe of helpers.py, in-process through ``main``."""
import json
import os
import sys

import numpy as np
import paddle
import pytest
import yaml
from helpers import TINY_RECIPE

from slim_callbacks.app.cli import main
from slim_callbacks.app.deployment import latency_scalars
from slim_callbacks.app.report import summary_table
from slim_callbacks.deploy.runtime import predictor, run


def call(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def errors(err):
    return [line for line in err.splitlines() if line.startswith("slim-callbacks: error:")]


def recipe_file(tmp_path, **deploy):
    raw = dict(TINY_RECIPE, deploy={**TINY_RECIPE["deploy"], **deploy})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run with latency measured: its output directory."""
    tmp = tmp_path_factory.mktemp("run")
    out = tmp / "out"
    code = main(["run", recipe_file(tmp, latency=True), "-o", f"output_dir={out}",
                 "--verbose", "0"])
    assert code == 0
    return out


def read_scalars(log_dir):
    """{tag: [(step, value)]} of every record file below ``log_dir``."""
    from visualdl import LogReader
    found = {}
    for path in sorted(os.path.join(d, f) for d, _, files in os.walk(log_dir) for f in files):
        reader = LogReader(file_path=path)
        for path, kind in reader.tags().items():
            if kind == "scalar":
                tag = path.split(".log/", 1)[1].replace("%", "/")
                found[tag] = [(r.id, r.value) for r in reader.get_data("scalar", tag)]
    return found


def network_of(out):
    """The run's final network, rebuilt by hand: recipe + ledger + weights."""
    from helpers import Net

    from slim_callbacks import load_pruned
    return load_pruned(Net(), str(out / "checkpoints" / "final"))


def test_run_exports_the_final_model_and_measures_latency_side_by_side(finished_run):
    out = finished_run
    assert sorted(os.listdir(out / "inference")) == ["model.json", "model.pdiparams", "original"]
    assert sorted(os.listdir(out / "inference" / "original")) == ["model.json", "model.pdiparams"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"]["dir"] == str(out / "inference")
    assert summary["export"]["max_abs_diff"]["paddle"] < 1e-5
    latency = summary["latency"]
    assert latency["batch"] == 1 and latency["onednn"] is True
    assert latency["keep_intermediates"] is False
    settings = ["1_thread"] + (["all_cores"] if (os.cpu_count() or 1) > 1 else [])
    for setting in settings:
        entry = latency[setting]
        assert entry["samples"] == 20 * 5
        assert entry["before_p25_ms"] <= entry["before_ms"] <= entry["before_p75_ms"]
        assert entry["speedup"] == pytest.approx(entry["before_ms"] / entry["after_ms"])
    assert latency["1_thread"]["threads"] == 1
    # the exported model is the pruned network with the final weights
    net = network_of(out)
    x = np.random.default_rng(0).standard_normal([1, 3, 16, 16]).astype("float32")
    net.eval()
    expected = net(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(run(predictor(str(out / "inference" / "model")), [x])[0],
                               expected, atol=1e-5)
    # the original is the unpruned architecture: wider first conv
    from slim_callbacks.deploy.runtime import model_files
    pruned, original = (os.path.getsize(model_files(str(p))[1])
                        for p in (out / "inference" / "model", out / "inference" / "original" / "model"))
    assert pruned < original
    # the latency rows and the VisualDL scalars carry the same numbers
    table = summary_table(summary)
    assert f"latency ms, 1 thread   {latency['1_thread']['before_ms']:.3f}" in table
    assert f"latency speedup: {latency['1_thread']['speedup']:.2f}x (1 thread)" in table
    scalars = read_scalars(out / "logs")
    for tag, value in latency_scalars(latency).items():
        assert scalars[tag] == [(2, pytest.approx(value))]     # step: the last epoch
    assert (out / "recipe.yaml").exists()


def test_deploy_keep_intermediates_measures_both_models_keeping(capsys, tmp_path, monkeypatch):
    from slim_callbacks.app import deployment
    seen = []
    real = deployment.measure_latency

    def recording(prefixes, **options):
        seen.append(options["keep_intermediates"])
        return real(prefixes, **options)
    monkeypatch.setattr(deployment, "measure_latency", recording)
    out = tmp_path / "out"
    code, _, err = call(capsys, "run", recipe_file(tmp_path, latency=True), "-o",
                        f"output_dir={out}", "-o", "deploy.keep_intermediates=true",
                        "-o", "deploy.latency_rounds=1", "--verbose", "0")
    assert code == 0, err[-2000:]
    assert seen and all(seen)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["latency"]["keep_intermediates"] is True


def test_no_latency_flag_exports_only_the_pruned_model(capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = call(capsys, "run", recipe_file(tmp_path, latency=True), "-o",
                             f"output_dir={out}", "-o", "deploy.keep_intermediates=true",
                             "--verbose", "0", "--no-latency")
    assert code == 0, err[-2000:]
    assert "note: deploy.keep_intermediates is unused: latency is not measured" in stdout
    assert sorted(os.listdir(out / "inference")) == ["model.json", "model.pdiparams"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["latency"] is None and "latency ms" not in stdout
    assert "exported the pruned model to" in stdout


def test_deploy_export_false_writes_no_inference_directory(capsys, tmp_path):
    out = tmp_path / "out"
    code, _, err = call(capsys, "run", recipe_file(tmp_path), "-o", f"output_dir={out}",
                        "-o", "deploy.export=false", "--verbose", "0")
    assert code == 0, err[-2000:]
    assert not (out / "inference").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["export"] is None and summary["latency"] is None


def test_export_command_rebuilds_the_run_and_writes_onnx_too(capsys, finished_run, tmp_path):
    target = tmp_path / "both"
    code, stdout, err = call(capsys, "export", str(finished_run), "--format", "paddle",
                             "--format", "onnx", "--out", str(target))
    assert code == 0, err[-2000:]
    assert sorted(os.listdir(target)) == ["model.json", "model.onnx", "model.pdiparams"]
    assert f"exported {finished_run / 'checkpoints' / 'final'} (helpers:Net" in stdout
    assert "verified on 8 eval images" in stdout
    import onnxruntime
    session = onnxruntime.InferenceSession(str(target / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    x = np.ones([1, 3, 16, 16], "float32")
    net = network_of(finished_run)
    net.eval()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0],
                               net(paddle.to_tensor(x)).numpy(), atol=1e-5)


def test_export_of_an_earlier_checkpoint_goes_beside_the_final_export(capsys, finished_run):
    code, stdout, err = call(capsys, "export", str(finished_run / "checkpoints" / "1.pruning.json"))
    assert code == 0, err[-2000:]
    assert sorted(os.listdir(finished_run / "inference-1")) == ["model.json", "model.pdiparams"]
    x = np.ones([1, 3, 16, 16], "float32")
    final = run(predictor(str(finished_run / "inference" / "model")), [x])[0]
    earlier = run(predictor(str(finished_run / "inference-1" / "model")), [x])[0]
    assert not np.allclose(final, earlier)          # epoch 1's weights, not the final ones


def test_export_errors_are_one_line_and_name_what_to_do(capsys, finished_run, tmp_path,
                                                         monkeypatch):
    def error(*args):
        code, _, err = call(capsys, "export", *args)
        assert code == 2
        return errors(err)

    assert error(str(tmp_path / "missing")) == [
        f"slim-callbacks: error: {tmp_path / 'missing'}: no such run directory or checkpoint "
        f"(give a run's output directory, e.g. output/quickstart, or a checkpoint prefix such "
        f"as output/quickstart/checkpoints/final)"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error(str(empty)) == [
        f"slim-callbacks: error: no checkpoint in {empty} (no final.pdparams, no "
        f"<epoch>.pruning.json): has the run saved one yet?"]
    assert error(str(finished_run), "--format", "tflite") == [
        "slim-callbacks: error: --format: ['tflite'] is not allowed; expected a non-empty "
        "list of distinct formats from paddle, onnx"]
    # an older run without recipe.yaml
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    for name in os.listdir(finished_run / "checkpoints"):
        if name.startswith("final."):
            (old / "checkpoints" / name).write_bytes((finished_run / "checkpoints" / name).read_bytes())
    assert error(str(old)) == [
        f"slim-callbacks: error: no recipe.yaml in {old} (runs before slim_callbacks stored "
        f"their recipe): pass the run's recipe with --recipe FILE"]
    code, _, err = call(capsys, "export", str(old), "--recipe", str(finished_run / "recipe.yaml"))
    assert code == 0, err[-2000:]
    assert (old / "inference" / "model.json").exists()
    # weights without their ledger
    os.remove(old / "checkpoints" / "final.pruning.json")
    (old / "recipe.yaml").write_bytes((finished_run / "recipe.yaml").read_bytes())
    assert error(str(old / "checkpoints" / "final")) == [
        f"slim-callbacks: error: no pruning ledger at {old / 'checkpoints' / 'final'}"
        f".pruning.json: was the checkpoint written by a fit with a PruneCallback?"]
    monkeypatch.setitem(sys.modules, "paddle2onnx", None)
    assert error(str(finished_run), "--format", "onnx") == [
        'slim-callbacks: error: format onnx needs paddle2onnx, which is not installed: '
        'pip install "slim_callbacks[onnx]"']


def test_a_recipe_exporting_onnx_without_the_tools_fails_before_training(capsys, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out = tmp_path / "out"
    code, _, err = call(capsys, "run", recipe_file(tmp_path, formats=["paddle", "onnx"]),
                        "-o", f"output_dir={out}", "--verbose", "0")
    assert code == 2
    assert errors(err) == ['slim-callbacks: error: format onnx needs onnxruntime, which is not '
                           'installed: pip install "slim_callbacks[onnx]"']
    assert not (out / "checkpoints").exists() or not os.listdir(out / "checkpoints")


@pytest.mark.parametrize("deploy, message", [
    ({"export": False, "latency": True}, "deploy.latency: True is not allowed; expected false "
                                         "when deploy.export is false"),
    ({"formats": ["onnx"], "latency": True}, "deploy.formats: ['onnx'] is not allowed; expected "
                                             "a list with paddle when deploy.latency is true"),
    ({"formats": ["tflite"]}, "deploy.formats[0]: 'tflite' is not allowed; expected one of "
                              "paddle, onnx"),
    ({"latency_rounds": 0}, "deploy.latency_rounds: 0 is not allowed; expected an int >= 1"),
])
def test_bad_deploy_keys_are_recipe_errors(capsys, tmp_path, deploy, message):
    code, _, err = call(capsys, "check", recipe_file(tmp_path, **deploy))
    assert code == 2
    assert errors(err)[0].startswith(f"slim-callbacks: error: {message}")


@pytest.mark.parametrize("images", [2, 5, 8, 20])
def test_the_verification_batch_fits_a_fixed_export_batch(tmp_path, images):
    """8 eval images cannot verify a model exported for batches of 3: the batch is cut
    (or its images repeated) to a multiple of the export's batch."""
    from slim_callbacks import export
    from slim_callbacks.app.deployment import verification_batch
    data = [(np.full((1, 8, 8), i, dtype="float32"), 0) for i in range(images)]
    batch = verification_batch(data, 3)
    assert len(batch) % 3 == 0 and len(batch) <= 8
    net = paddle.nn.Sequential(paddle.nn.Conv2D(1, 2, 3))
    result = export(net, str(tmp_path / "m"), [3, 1, 8, 8], inputs=batch)
    assert result.max_abs_diff["paddle"] < 1e-5


def test_export_refuses_a_safetensors_that_is_not_the_checkpoints_weights(capsys, finished_run,
                                                                           tmp_path):
    import shutil

    from slim_callbacks.core.weights import save_safetensors
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    checkpoints = run_dir / "checkpoints"
    save_safetensors(paddle.load(str(checkpoints / "1.pdparams")),
                     str(checkpoints / "final.safetensors"))  # another epoch's weights
    code, _, err = call(capsys, "export", str(run_dir), "--out", str(tmp_path / "inf2"))
    assert code == 2
    assert errors(err) == [
        f"slim-callbacks: error: {checkpoints / 'final.safetensors'} holds other weights than "
        f"{checkpoints / 'final.pdparams'}, the ones its ledger "
        f"{checkpoints / 'final.pruning.json'} was written with: delete or move "
        f"{checkpoints / 'final.safetensors'} (or write it again from this checkpoint with "
        f"save_safetensors)"]
    assert not (tmp_path / "inf2").exists()


def test_a_run_without_pruning_refuses_a_safetensors_other_than_its_pdparams(tmp_path):
    from helpers import Net

    from slim_callbacks import SlimError
    from slim_callbacks.app.deployment import rebuild
    from slim_callbacks.app.recipe import load_recipe
    from slim_callbacks.core.weights import save_safetensors
    recipe = load_recipe(dict(TINY_RECIPE, pruning=None, output_dir=str(tmp_path)))
    prefix = str(tmp_path / "final")
    paddle.save(Net().state_dict(), prefix + ".pdparams")
    save_safetensors(Net(), prefix + ".safetensors")  # other initial weights
    with pytest.raises(SlimError, match=r"final.safetensors holds other weights than "
                                        r".*final.pdparams, which the run saved"):
        rebuild(recipe, prefix)
    save_safetensors(paddle.load(prefix + ".pdparams"), prefix + ".safetensors")
    net = rebuild(recipe, prefix)
    np.testing.assert_array_equal(net.fc.weight.numpy(),
                                  paddle.load(prefix + ".pdparams")["fc.weight"].numpy())
