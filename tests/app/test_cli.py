"""The slim-callbacks command: plan numbers, check output, error paths, sensitivity, the
quickstart end to end. In-process (``main([...])``) except one console-script test."""
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

from slim_callbacks.app.cli import find_recipe, main
from slim_callbacks.app.recipe import load_recipe

RECIPES = os.path.join(ROOT, "recipes")
MBV1 = os.path.join(RECIPES, "mobilenetv1")
QUICKSTART = os.path.join(RECIPES, "quickstart.yaml")


def call(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(capsys, recipe, *overrides):
    args = ["plan", recipe, "--json"] + [a for o in overrides for a in ("-o", o)]
    code, out, _ = call(capsys, *args)
    assert code == 0
    return json.loads(out)


# ----------------------------------------------------------------------------- plan
@pytest.mark.parametrize("name", ["uniform_l1norm_f50", "uniform_fpgm_f50"])
def test_plan_json_reproduces_the_seed_row(capsys, name):
    result = plan_json(capsys, os.path.join(MBV1, f"{name}.yaml"))
    assert set(result) == {"before", "after", "flops_reduction", "layers"}
    after = result["after"]
    assert set(after) == {"macs", "gflops", "gflops_legacy", "params", "size_mb"}
    assert after["params"] == 2_251_204
    assert after["macs"] == 285_137_632
    assert round(result["flops_reduction"] * 100, 2) == 49.87
    assert round(after["gflops_legacy"], 3) == 0.552
    assert round(after["size_mb"], 1) == 9.0
    assert result["before"]["macs"] == 568_740_352
    layers = result["layers"]
    assert layers["conv2_1._pointwise_conv.0"] == [64, 44]          # 64 - round(64 * 0.3125)
    assert layers["conv6._pointwise_conv.0"] == [1024, 704]
    assert layers["conv2_2._depthwise_conv.0"] == [64, 44]           # shrinks by coupling
    assert layers["conv1.0"] == [32, 32]                             # first conv untouched
    assert layers["fc"] == [1000, 1000]


def test_plan_json_baseline(capsys):
    result = plan_json(capsys, os.path.join(MBV1, "baseline.yaml"))
    before, after = result["before"], result["after"]
    assert before == after
    assert before["macs"] == 568_740_352
    assert round(before["gflops_legacy"], 2) == 1.11
    assert round(before["size_mb"], 1) == 17.0
    assert before["params"] == 4_253_864
    assert result["flops_reduction"] == 0


def test_plan_text_table(capsys):
    code, out, _ = call(capsys, "plan", os.path.join(MBV1, "uniform_l1norm_f50.yaml"))
    assert code == 0
    assert "285,137,632" in out and "-49.87%" in out and "-50.42%" in out
    assert "25 of 28 conv/linear layers change width" in out


def test_plan_sensitive_without_file_says_how_to_make_it(capsys):
    recipe = os.path.join(MBV1, "sensitive_l1norm_f30.yaml")
    code, out, err = call(capsys, "plan", recipe, "--json")
    assert code == 2 and out == ""
    path = os.path.join(MBV1, "sensitivities", "mobilenetv1_l1norm.json")
    assert err.strip().splitlines() == [
        f"slim-callbacks: error: pruning.sensitivities: {path} not found; make it with "
        f"`slim-callbacks sensitivity {recipe}` (paths are relative to the recipe file)"]


def fake_sensitivities(path, ratios=(0.1, 0.3, 0.5, 0.7, 0.9)):
    """A sensitivity file for MobileNetV1's 13 pointwise convs: later layers are less
    sensitive (as in the seed's analysis)."""
    names = ["conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1",
             "conv5_2", "conv5_3", "conv5_4", "conv5_5", "conv5_6", "conv6"]
    sens = {f"{n}._pointwise_conv.0": {repr(r): round(r * r * (13 - i) / 13, 6) for r in ratios}
            for i, n in enumerate(names)}
    with open(path, "w") as f:
        json.dump({"format": "slim_callbacks.analysis.sensitivity/1", "criterion": "l1_norm",
                   "ratios": list(ratios), "round_to": 1, "base": 0.7, "widths": {},
                   "sensitivities": sens}, f)
    return path


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_plan_sensitive_with_file_meets_target(capsys, tmp_path, target):
    path = fake_sensitivities(str(tmp_path / "sens.json"))
    recipe = os.path.join(MBV1, f"sensitive_l1norm_f{int(target * 100)}.yaml")
    result = plan_json(capsys, recipe, f"pruning.sensitivities={path}")
    assert abs(result["flops_reduction"] - target) <= 0.01
    pw = {n: w for n, w in result["layers"].items() if "_pointwise" in n}
    kept = [after / before for before, after in pw.values()]
    assert len(set(kept)) > 1                      # per-layer, not uniform
    assert kept[0] > kept[-1]                      # the sensitive first layer keeps more


def test_sensitivities_path_is_relative_to_the_recipe_file(capsys, tmp_path, monkeypatch):
    recipe = tmp_path / "r" / "sens.yaml"
    os.makedirs(recipe.parent / "sensitivities")
    fake_sensitivities(str(recipe.parent / "sensitivities" / "s.json"))
    raw = yaml.safe_load(open(os.path.join(MBV1, "sensitive_l1norm_f50.yaml")))
    raw["pruning"]["sensitivities"] = "sensitivities/s.json"
    recipe.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(ROOT)   # anywhere but the recipe's directory
    result = plan_json(capsys, str(recipe))
    assert abs(result["flops_reduction"] - 0.5) <= 0.01


def test_plan_global_float_ratio_is_the_global_strategy(capsys):
    """``strategy: global, ratios: 0.4`` used to prune uniformly (same widths as uniform)."""
    import paddle

    from slim_callbacks import resolve_strategy
    tiny = ["model.kwargs.scale=0.25", "pruning.target_flops_reduction=null",
            "pruning.ratios=0.4", "pruning.schedule=null"]
    uniform = plan_json(capsys, QUICKSTART, *tiny)
    global_ = plan_json(capsys, QUICKSTART, *tiny, "pruning.strategy=global")
    assert global_["layers"] != uniform["layers"]
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    ratios = resolve_strategy("global", net, [1, 3, 32, 32], channel_ratio=0.4,
                              layers=["conv*._pointwise_conv*"], criterion="l1_norm")
    expected = {g: round(w * (1 - ratios.get(g, 0))) for g, (w, _) in global_["layers"].items()
                if g in ratios}
    assert len(expected) == len(ratios) > 1
    assert {g: global_["layers"][g][1] for g in expected} == expected
    capped = plan_json(capsys, QUICKSTART, *tiny, "pruning.strategy=global",
                       "pruning.strategy_options.max_ratio=0.5")
    assert all(after >= before / 2 for before, after in capped["layers"].values())
    assert capped["layers"] != global_["layers"]


@pytest.mark.parametrize("command", ["check", "plan", "run"])
def test_a_recipe_cannot_call_os_system(capsys, tmp_path, command):
    marker = tmp_path / "pwned"
    args = [command, QUICKSTART, "-o", "model.name=os:system",
            "-o", f"model.kwargs={{command: 'touch {marker}'}}"]
    code, _, err = call(capsys, *args + (["--dry-run"] if command == "run" else []))
    assert code == 2
    assert err.strip().splitlines() == [
        "slim-callbacks: error: model.name: 'os:system' is not allowed; expected a "
        "paddle.nn.Layer subclass, a paddle.vision.models function or a function registered "
        "with slim_callbacks.register_model"]
    assert not marker.exists()


def test_layer_subclasses_and_registered_factories_are_models(capsys, tmp_path):
    import paddle

    from slim_callbacks import register_model

    def small_net(num_classes=10):
        return paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=num_classes)
    register_model("small_net_for_test", small_net)
    code, out, _ = call(capsys, "plan", QUICKSTART, "--json", "-o", "model.kwargs={}",
                        "-o", "model.name=small_net_for_test")
    assert code == 0 and json.loads(out)["layers"]["fc"] == [10, 10]
    code, out, _ = call(capsys, "plan", QUICKSTART, "--json",
                        "-o", "model.name=paddle.vision.models:MobileNetV1")
    assert code == 0 and json.loads(out)["layers"]["fc"] == [10, 10]


def test_safetensors_pretrained_weights_load(capsys, tmp_path):
    import paddle

    from slim_callbacks.core.weights import save_safetensors
    paddle.seed(1)
    net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    path = save_safetensors(net, str(tmp_path / "w.safetensors"))
    from slim_callbacks.app.job import load_job
    from slim_callbacks.app.planning import planning_network
    job = load_job(QUICKSTART, [f"model.pretrained={path}"])
    loaded = planning_network(job, emit=print)
    for key, value in net.state_dict().items():
        assert (loaded.state_dict()[key].numpy() == value.numpy()).all(), key


@pytest.mark.parametrize("suffix", ["pdparams", "safetensors"])
def test_a_pretrained_file_that_is_not_weights_is_one_line(capsys, tmp_path, suffix):
    bad = tmp_path / f"w.{suffix}"
    bad.write_text("not weights")
    code, _, err = call(capsys, "check", QUICKSTART, "-o", f"model.pretrained={bad}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"slim-callbacks: error: model.pretrained: '{bad}' is not allowed; "
                          f"expected a readable .{suffix} state dict")


# ---------------------------------------------------------------------------- check
def test_check_prints_the_resolved_recipe(capsys):
    code, out, _ = call(capsys, "check", QUICKSTART, "-o", "train.epochs=12",
                        "-o", "pruning.criterion=fpgm")
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["train"]["epochs"] == 12
    assert resolved["pruning"]["criterion"] == "fpgm"
    assert resolved["logging"]["log_dir"] == "output/quickstart/logs"
    assert resolved["input_shape"] == [1, 3, 32, 32]
    assert load_recipe(resolved) == load_recipe(QUICKSTART, ["train.epochs=12",
                                                             "pruning.criterion=fpgm"])


def test_bundled_names_resolve_from_anywhere(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("quickstart") == QUICKSTART
    assert find_recipe("mobilenetv1/baseline") == os.path.join(MBV1, "baseline.yaml")
    code, out, _ = call(capsys, "check")           # no RECIPE: the quickstart
    assert code == 0 and yaml.safe_load(out)["name"] == "quickstart"


def test_check_refuses_a_schedule_that_never_fires(capsys):
    code, out, err = call(capsys, "check", QUICKSTART, "-o", "train.epochs=5")
    assert code == 2 and out == ""
    assert err.startswith("slim-callbacks: error: ") and "end_epoch" in err
    assert len(err.strip().splitlines()) == 1


ERRORS = [
    (["check", "/nonexistent/r.yaml"],
     "recipe file not found: /nonexistent/r.yaml (a YAML path, or a bundled name such as "
     "quickstart or mobilenetv1/uniform_l1norm_f50)"),
    (["check", QUICKSTART, "-o", "train.epoch=3"],
     "train.epoch: 3 is not allowed; expected a key of train: epochs, batch_size, optimizer, "
     "lr, eval_every, seed, amp"),
    (["check", QUICKSTART, "-o", "pruning.criterion=l3"],
     "pruning.criterion: 'l3' is not allowed; expected one of l1_norm, l2_norm, fpgm, "
     "geometry_median, slim, bn_scale, opt_slim, taylor"),
    (["check", QUICKSTART, "-o", "train.epochs"],
     "override: 'train.epochs' is not allowed; expected 'section.key=value', e.g. "
     "'train.epochs=3'"),
    (["check", QUICKSTART, "-o", "model.name=nosuch:thing"],
     "model.name: 'nosuch:thing' is not allowed; expected an importable module "
     "(No module named 'nosuch')"),
    (["run", QUICKSTART, "-o", "model.kwargs.widht=2", "--dry-run"],
     "model.kwargs.widht: 2 is not allowed; expected an argument that mobilenet_v1 accepts "
     "(MobileNetV1.__init__() got an unexpected keyword argument 'widht')"),
    (["check", QUICKSTART, "-o", "model.kwargs.foo=1"],
     "model.kwargs.foo: 1 is not allowed; expected an argument that mobilenet_v1 accepts "
     "(MobileNetV1.__init__() got an unexpected keyword argument 'foo')"),
    (["check", QUICKSTART, "-o", "model.kwargs.scale=big"],
     "model.kwargs.scale: 'big' is not allowed; expected a float like its default 1.0"),
    (["check", QUICKSTART, "-o", "pruning.layers=[]"],
     "pruning.layers: [] is not allowed; expected a non-empty list of glob patterns over "
     "sublayer names ([] matches nothing; '*' is every layer)"),
    (["plan", QUICKSTART, "-o", "pruning.schedule.kind=cubic", "--no-measure"],
     "pruning.schedule.kind: 'cubic' is not allowed; expected one of oneshot, epochs, map, "
     "agp, linear, exp"),
    (["check", QUICKSTART, "-o", "pruning.schedule.initial_ratio=0.9"],
     "pruning.schedule.initial_ratio: 0.9 is not allowed; expected at most 0.34375, the "
     "smallest final ratio this recipe prunes to (targets never decrease)"),
    (["check", QUICKSTART, "-o", "pruning.strategy=global",
      "-o", "pruning.strategy_options.max_ratio=2"],
     "pruning.strategy_options.max_ratio: 2 is not allowed; expected a number in (0, 1), e.g. 0.5"),
    (["check", QUICKSTART, "-o", "train="],
     "train: '' is not allowed; expected a mapping with keys epochs, batch_size, optimizer, lr, "
     "eval_every, seed, amp, not empty; set keys with -o train.KEY=VALUE (an empty override would "
     "reset the section to its defaults)"),
    (["run", os.path.join(MBV1, "uniform_l1norm_f50.yaml")],
     "model.pretrained: pretrained/mobilenetv1_1.0.pdparams not found (download the "
     "weights, or -o model.pretrained=null to train from scratch)"),
    (["sensitivity", QUICKSTART, "--samples", "0"],
     "--samples: 0 is not allowed; expected an int >= 1"),
    (["sensitivity", QUICKSTART, "--workers", "0"],
     "--workers: 0 is not allowed; expected an int >= 1"),
    (["dashboard", "nosuchdir"],
     "nosuchdir is not a directory (give the output directory of your runs, e.g. output)"),
    (["dashboard", ".", "--port", "0"], "--port: 0 is not allowed; expected 1..65535"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[" ".join(a[:1] + a[2:4]) for a, _ in ERRORS])
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(capsys, *argv)
    assert code == 2
    assert err.strip().splitlines() == [f"slim-callbacks: error: {message}"]
    assert "Traceback" not in err


def test_invalid_yaml_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = call(capsys, "check", str(bad))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"slim-callbacks: error: recipe {bad} is not "
                                                   f"valid YAML: ")


def test_missing_imagenet_is_a_clean_error(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(capsys, "run", os.path.join(MBV1, "baseline.yaml"))
    assert code == 2
    assert err.startswith("slim-callbacks: error: ") and "data/ILSVRC2012" in err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- sensitivity
def test_sensitivity_writes_file_curves_and_plot(capsys, tmp_path):
    out_file = tmp_path / "s" / "digits.json"
    logs = tmp_path / "logs"
    code, out, _ = call(capsys, "sensitivity", QUICKSTART, "--samples", "48",
                        "--output", str(out_file), "-o", f"logging.log_dir={logs}",
                        "-o", "model.kwargs.scale=0.25")
    assert code == 0, out
    data = json.load(open(out_file))
    assert data["format"] == "slim_callbacks.analysis.sensitivity/1"
    assert len(data["sensitivities"]) == 13
    assert all(len(curve) == 9 for curve in data["sensitivities"].values())
    assert data["base"] > 0
    assert (tmp_path / "s" / "digits.png").stat().st_size > 1000
    assert any(name.startswith("vdlrecords") for name in os.listdir(logs / "sensitivity"))
    assert "sensitivities of 13 layers x 9 ratios on 48 samples" in out


def test_sensitivity_rerun_without_pretrained_weights_resumes_the_file(capsys, tmp_path):
    """Weights built from scratch are seeded by train.seed: a rerun gets the same base
    metric and finds every loss already in the file (before, it refused the file)."""
    sens = tmp_path / "s.json"
    args = ["sensitivity", QUICKSTART, "--samples", "48", "--output", str(sens),
            "-o", f"logging.log_dir={tmp_path / 'logs'}", "-o", "pruning.layers=[conv6]"]
    assert call(capsys, *args)[0] == 0
    first = sens.read_bytes()
    code, out, err = call(capsys, *args)
    assert code == 0, err
    assert sens.read_bytes() == first
    # each run's VisualDL curves in a directory of their own (VisualDL shows one file each)
    assert sorted(os.listdir(tmp_path / "logs")) == ["sensitivity", "sensitivity-2"]


def test_sensitivity_with_recalibrate_bn_uses_training_batches(capsys, tmp_path, monkeypatch):
    """pruning.recalibrate_bn: adaptive-BN evaluation on the first training batches."""
    from slim_callbacks.pruning import pruner as module  # the command runs Pruner.sensitivity
    real, seen = module.sensitivity, {}

    def spy(*args, **kwargs):
        kwargs["bn_data"] = [next(kwargs["bn_data"]) for _ in range(3)]
        seen.update(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, "sensitivity", spy)
    sens = tmp_path / "s.json"
    code, out, err = call(capsys, "sensitivity", QUICKSTART, "--samples", "48",
                          "--output", str(sens), "-o", f"logging.log_dir={tmp_path / 'logs'}",
                          "-o", "pruning.layers=[conv6]", "-o", "pruning.recalibrate_bn=2")
    assert code == 0, err
    assert "re-estimated on 2 training batches" in out
    assert seen["recalibrate_bn"] == 2
    assert [list(b.shape) for b in seen["bn_data"]] == [[32, 3, 32, 32]] * 3  # images only


def test_sensitivity_then_sensitive_dry_run(capsys, tmp_path):
    """The file the sensitivity command writes is what a sensitive recipe reads."""
    sens = tmp_path / "q.json"
    code, *_ = call(capsys, "sensitivity", QUICKSTART, "--samples", "48", "--output", str(sens),
                    "--workers", "2", "-o", f"logging.log_dir={tmp_path / 'logs'}")
    assert code == 0
    raw = yaml.safe_load(open(QUICKSTART))
    data = json.load(open(sens))
    # untrained network: make the curves informative so the bisection has something to do
    for i, curve in enumerate(data["sensitivities"].values()):
        for r in curve:
            curve[r] = float(r) ** 2 * (i + 1) / 13
    json.dump(data, open(sens, "w"))
    raw["pruning"].update(strategy="sensitive", sensitivities=str(sens), layers=["*"],
                          target_flops_reduction=0.4)
    recipe = tmp_path / "sens.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    code, out, _ = call(capsys, "run", str(recipe), "--dry-run", "--output-dir",
                        str(tmp_path / "run"))
    assert code == 0
    assert "uniform ratio to the same FLOPs target stands in" not in out
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert abs(summary["flops_reduction"] - 0.4) <= 0.01


# ------------------------------------------------------------------------ quickstart
def test_quickstart_end_to_end(capsys, tmp_path):
    """The README's first command, unchanged but for the output directory."""
    out_dir = tmp_path / "quickstart"
    code, out, err = call(capsys, "run", QUICKSTART, "--output-dir", str(out_dir))
    assert code == 0, err[-2000:]
    summary = json.load(open(out_dir / "summary.json"))
    before, after = summary["before"], summary["after"]
    print(f"quickstart: top-1 {before['acc']:.4f} -> {after['acc']:.4f}, MACs {before['macs']} "
          f"-> {after['macs']}, {summary['wall_time_s']} s", file=sys.__stderr__)
    assert 0.45 <= summary["flops_reduction"] <= 0.55
    assert after["acc"] >= 0.85            # measured 0.9389 on 2 CPU cores
    assert after["params"] < 0.5 * before["params"]
    assert "top-1 accuracy" in out and "FLOPs reduction: 49.29%" in out
    assert err.count("INFO slim_callbacks.callbacks.prune: epoch") == 4     # AGP: 2, 4, 6, 8
    assert (out_dir / "checkpoints" / "final.pdparams").exists()
    assert (out_dir / "checkpoints" / "final.pruning.json").exists()
    assert any(f.startswith("vdlrecords") for f in os.listdir(out_dir / "logs" / "train"))
    # deploy: the final model exported to inference/, latency of original vs pruned
    assert sorted(os.listdir(out_dir / "inference")) == ["model.json", "model.pdiparams",
                                                         "original"]
    assert summary["export"]["max_abs_diff"]["paddle"] < 1e-4
    one = summary["latency"]["1_thread"]
    print(f"quickstart latency, 1 thread: {one['before_ms']:.3f} -> {one['after_ms']:.3f} ms "
          f"({one['speedup']:.2f}x)", file=sys.__stderr__)
    assert one["samples"] == 100 and one["before_ms"] > 0 and one["after_ms"] > 0
    assert "latency ms, 1 thread" in out and "latency speedup:" in out


def test_console_script_subprocess(tmp_path):
    exe = shutil.which("slim-callbacks")
    cmd = [exe] if exe else [sys.executable, "-m", "slim_callbacks"]
    done = subprocess.run(cmd + ["check", "quickstart", "-o", "train.epochs=12"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["train"]["epochs"] == 12
    done = subprocess.run([sys.executable, "-m", "slim_callbacks", "check", "quickstart",
                           "-o", "train.batch_size=0"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [  # one line: no warnings from Paddle's import
        "slim-callbacks: error: train.batch_size: 0 is not allowed; expected an int >= 1"]
    assert "Traceback" not in done.stderr


def test_main_leaves_the_package_logger_as_it_found_it(capsys):
    log = logging.getLogger("slim_callbacks")
    before = (list(log.handlers), log.level, log.propagate)
    call(capsys, "check", QUICKSTART)
    assert (list(log.handlers), log.level, log.propagate) == before
