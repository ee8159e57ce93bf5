"""``slim-callbacks prune-model`` and ``prune_model``: an exported model pruned to a
target, fine-tuned without labels, exported verified with a summary."""
import copy
import json
import os

import numpy as np
import paddle
import pytest
from helpers import exported
from nets import Blocks
from PIL import Image

from slim_callbacks import SlimError
from slim_callbacks.app.cli import main
from slim_callbacks.app.image_inputs import ImageInputs, Preprocessing, image_files
from slim_callbacks.app.prune_model import parse_target, prune_model
from slim_callbacks.app.prune_model_ratios import output_metric
from slim_callbacks.app.prune_model_run import PruneRun
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.deploy.runtime import predictor, run, save_inference_model
from slim_callbacks.program import load_inference_model
from slim_callbacks.pruning import prune

SHAPE = [1, 3, 16, 16]


@pytest.fixture
def images(tmp_path):
    """Smooth random images (a few blobs), so the pruned network's outputs move."""
    folder = tmp_path / "images" / "any_subfolder"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        small = rng.integers(0, 255, (4, 4, 3)).astype("uint8")
        Image.fromarray(small).resize((20, 20)).save(folder / f"{i}.png")
    return str(tmp_path / "images")


@pytest.fixture
def model_dir(tmp_path, images):
    """A network whose BatchNorm statistics come from these images, as a trained
    network's come from its data, exported."""
    net = Blocks()
    exported(net, SHAPE, tmp_path / "model")  # random weights
    batch = paddle.to_tensor(ImageInputs(image_files(images), SHAPE[1:]).batch(20))
    net.train()
    with paddle.no_grad():
        for _ in range(20):
            net(batch)
    net.eval()
    save_inference_model(net, str(tmp_path / "model" / "model"), SHAPE)
    return str(tmp_path / "model")


def test_the_command_prunes_fine_tunes_and_exports_with_a_summary(model_dir, images, tmp_path, capsys):
    out = str(tmp_path / "pruned")
    code = main(["prune-model", model_dir, "--target", "macs=0.5", "--data", images,
                 "--epochs", "1", "--out", out, "--no-latency", "-q"])
    assert code == 0
    assert sorted(os.listdir(out)) == [".lock", "checkpoints", "model.json", "model.pdiparams",
                                       "summary.json"]
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == ["1.json", "1.pdopt",
                                                                    "1.pdparams", "plan.json"]
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    for key in ("macs", "params", "size_mb"):
        assert summary["after"][key] < summary["before"][key]
    assert summary["flops_reduction"] > 0.3
    assert summary["fine_tune"]["images"] == 16 and summary["fidelity"]["images"] == 4
    assert 0 <= summary["fidelity"]["top1_agreement"] <= 1
    assert summary["export"]["max_abs_diff"]["paddle"] < 1e-4
    assert "FLOPs reduction" in capsys.readouterr().out
    x = np.zeros(SHAPE, dtype="float32")
    assert run(predictor(out), [x])[0].shape == (1, 4)


def test_the_label_free_fine_tune_moves_the_student_toward_the_teacher(model_dir, images, tmp_path):
    paddle.seed(0)
    summary = prune_model(model_dir, tmp_path / "pruned", "macs=0.5", data=images, epochs=5,
                          lr=0.01, latency=True, latency_rounds=2, emit=lambda text: None)
    losses = summary["fine_tune"]["loss"]
    assert losses[-1] < losses[0]
    assert summary["fidelity"]["mean_abs_diff"] < summary["fidelity_pruned"]["mean_abs_diff"]
    assert summary["latency"]["1_thread"]["after_ms"] > 0


def test_prune_only_without_images_measures_fidelity_on_random_inputs(model_dir, tmp_path):
    summary = prune_model(model_dir, tmp_path / "pruned", "macs=0.3", strategy="global",
                          criterion="fpgm", latency=False, emit=lambda text: None)
    assert summary["strategy"] == "global" and summary["flops_reduction"] > 0.2
    assert "fine_tune" not in summary
    assert summary["fidelity"]["on"].startswith("random inputs")


@pytest.mark.parametrize("argv, message", [
    (["--target", "flops=0.5"], "target: 'flops=0.5' is not allowed"),
    (["--target", "macs=1.5"], "target: 'macs=1.5' is not allowed"),
    (["--epochs", "2"], "data: None is not allowed; expected a folder of images"),
    (["--data", "/nowhere"], "data: '/nowhere' is not allowed")])
def test_bad_arguments_are_one_line_errors_before_any_work(model_dir, tmp_path, capsys, argv, message):
    out = str(tmp_path / "pruned")
    assert main(["prune-model", model_dir, "--out", out, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out)


def test_an_out_directory_with_files_is_refused(model_dir, tmp_path):
    with pytest.raises(SlimError, match="already holds a run .*continue it with --resume, or "
                                        "write elsewhere with --out DIR"):
        prune_model(model_dir, model_dir, latency=False)
    with pytest.raises(SlimError, match="no inference model"):
        prune_model(tmp_path / "nothing", tmp_path / "pruned", latency=False)


def test_parse_target_names_both_kinds():
    assert parse_target("latency=0.25") == ("latency", 0.25)


def test_the_exports_inference_yml_gives_the_preprocessing(model_dir):
    with open(os.path.join(model_dir, "inference.yml"), "w") as f:
        f.write("PreProcess:\n  transform_ops:\n  - ResizeImage: {resize_short: 16}\n"
                "  - NormalizeImage: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
                "  - ToCHWImage: null\n")
    assert Preprocessing.from_export(model_dir) == Preprocessing((0.5,) * 3, (0.25,) * 3, crop=False)


class Interrupted(Exception):
    pass


def interrupt_after_epoch_1(text):
    if text.startswith("fine-tune epoch 1/"):
        raise Interrupted(text)


def test_a_resumed_fine_tune_ends_exactly_as_an_uninterrupted_one(model_dir, images, tmp_path):
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    options = dict(data=images, epochs=2, batch_size=4, latency=False)
    expected = prune_model(model_dir, whole, "macs=0.5", emit=lambda text: None, **options)
    with pytest.raises(Interrupted):
        prune_model(model_dir, cut, "macs=0.5", emit=interrupt_after_epoch_1, **options)
    assert PruneRun(cut).latest() == 1 and not os.path.exists(os.path.join(cut, "summary.json"))
    notes = []
    resumed = prune_model(model_dir, cut, "macs=0.5", resume=True, emit=notes.append, **options)
    assert any("resuming the fine-tune after epoch 1" in note for note in notes)
    assert resumed["fine_tune"]["loss"] == expected["fine_tune"]["loss"]
    x = np.random.default_rng(1).standard_normal(SHAPE).astype("float32")
    np.testing.assert_array_equal(run(predictor(cut), [x])[0], run(predictor(whole), [x])[0])
    assert resumed["fidelity"] == expected["fidelity"]


def test_a_run_stopped_before_its_ratios_are_known_resumes(model_dir, images, tmp_path,
                                                           monkeypatch):
    from slim_callbacks.app import prune_model as module
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    options = dict(strategy="sensitive", data=images, latency=False, emit=lambda text: None)
    expected = prune_model(model_dir, whole, "macs=0.4", **options)

    def stopped(*args):
        raise Interrupted("in the sensitivity analysis")
    with monkeypatch.context() as patch:
        patch.setattr(module, "student_pruner", stopped)
        with pytest.raises(Interrupted):
            prune_model(model_dir, cut, "macs=0.4", **options)
    resumed = prune_model(model_dir, cut, "macs=0.4", resume=True, **options)
    assert resumed["after"] == expected["after"] and resumed["fidelity"] == expected["fidelity"]


def test_resume_needs_an_unfinished_run_with_the_same_plan(model_dir, images, tmp_path, capsys):
    out = str(tmp_path / "pruned")
    with pytest.raises(ConfigError, match="out: .* a directory holding a prune-model run to "
                                          "resume \\(no checkpoints/plan.json"):
        prune_model(model_dir, out, resume=True, latency=False)
    with pytest.raises(Interrupted):
        prune_model(model_dir, out, "macs=0.5", data=images, epochs=2, latency=False,
                    emit=interrupt_after_epoch_1)
    with pytest.raises(ConfigError, match="target: .* expected \\{'macs': 0.5\\}, what the run"):
        prune_model(model_dir, out, "macs=0.3", data=images, epochs=2, latency=False, resume=True)
    prune_model(model_dir, out, "macs=0.5", data=images, epochs=1, latency=False, resume=True,
                emit=lambda text: None)  # epoch 1 is done: exports and finishes
    with pytest.raises(SlimError, match="is finished .*nothing to resume"):
        prune_model(model_dir, out, "macs=0.5", latency=False, resume=True)
    assert main(["prune-model", model_dir, "--out", out, "--resume", "-q"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_the_fine_tune_shows_a_progress_bar_unless_quiet(model_dir, images, tmp_path, capsys):
    prune_model(model_dir, tmp_path / "a", data=images, epochs=1, latency=False, progress=True,
                emit=lambda text: None)
    assert "fine-tune 1/1" in capsys.readouterr().err
    assert main(["prune-model", model_dir, "--data", images, "--epochs", "1", "--out",
                 str(tmp_path / "b"), "--no-latency", "-q"]) == 0
    assert "fine-tune" not in capsys.readouterr().err  # warnings only


def test_label_free_sensitivity_is_the_relative_output_distance(model_dir, images, tmp_path):
    teacher = load_inference_model(model_dir)
    batch = ImageInputs(image_files(images), SHAPE[1:]).batch(4)
    metric = output_metric(teacher, batch)
    assert metric(copy.deepcopy(teacher)) == 1.0
    pruned = copy.deepcopy(teacher)
    prune(pruned, SHAPE, 0.5)
    with paddle.no_grad():
        t, s = (net(paddle.to_tensor(batch)).numpy() for net in (teacher, pruned))
    assert metric(pruned) == pytest.approx(1 - np.abs(s - t).mean() / np.abs(t).mean(), rel=1e-5)
    assert metric(pruned) < 1


def test_the_sensitive_strategy_needs_no_labels_and_keeps_the_structure_option(
        model_dir, images, tmp_path, capsys):
    out = str(tmp_path / "pruned")
    assert main(["prune-model", model_dir, "--target", "macs=0.4", "--strategy", "sensitive",
                 "--structure", "attention=heads", "--data", images, "--out", out,
                 "--no-latency", "-q"]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["strategy"] == "sensitive" and summary["structure"] == {"attention": "heads"}
    assert summary["flops_reduction"] > 0.3
    with open(os.path.join(out, "checkpoints", "sensitivities.json")) as f:
        losses = json.load(f)["sensitivities"]
    assert losses and all(loss > 0 for group in losses.values() for loss in group.values())


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "sensitive", "--target", "latency=0.3"],
     "strategy: 'sensitive' is not allowed; expected one of latency for a latency target"),
    (["--structure", "attention=rows"], "structure.attention: 'rows' is not allowed"),
    (["--structure", "heads"], "structure: 'heads' is not allowed; expected KEY=VALUE")])
def test_bad_strategy_and_structure_options_are_refused_first(model_dir, tmp_path, capsys, argv,
                                                              message):
    out = str(tmp_path / "pruned")
    assert main(["prune-model", model_dir, "--out", out, *argv]) == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out)
