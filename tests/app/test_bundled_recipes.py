"""Every recipe in recipes/ passes `check` and `run --dry-run`; the MobileNetV1 recipes
carry the seed table's hyperparameters, layers and numbers."""
import glob
import json
import os

import paddle
import pytest
import yaml
from helpers import ROOT

from slim_callbacks.app.cli import main
from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.engine.ratios import resolve_ratios
from slim_callbacks.pruning import PruningSpec
from slim_callbacks.pruning.schedule_factory import schedule_from_dict
from slim_callbacks.tracing.tracer import trace

RECIPES = sorted(glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True))
MBV1 = sorted(p for p in RECIPES if os.sep + "mobilenetv1" + os.sep in p)
TABLE = json.load(open("/work/shared/reference/mobilenetv1_table.json")) \
    if os.path.exists("/work/shared/reference/mobilenetv1_table.json") else None
MBV1_NAMES = {"baseline", "uniform_l1norm_f50", "uniform_fpgm_f50", "sensitive_l1norm_f30",
              "sensitive_l1norm_f50", "slim_f50", "optslim_f50"}


def rid(path):
    return os.path.relpath(path, os.path.join(ROOT, "recipes"))


def test_all_recipes_present():
    names = {os.path.splitext(os.path.basename(p))[0] for p in MBV1}
    assert names == MBV1_NAMES
    assert os.path.join(ROOT, "recipes", "quickstart.yaml") in RECIPES
    assert os.path.join(ROOT, "recipes", "nlp", "ernie_tiny.yaml") in RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=rid)
def test_check(capsys, path):
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert load_recipe(yaml.safe_load(out)) == load_recipe(path)


@pytest.mark.parametrize("path", RECIPES, ids=rid)
def test_dry_run(capsys, tmp_path, path):
    out_dir = tmp_path / "dry"
    assert main(["run", path, "--dry-run", "--output-dir", str(out_dir)]) == 0
    out, err = capsys.readouterr()
    summary = json.load(open(out_dir / "summary.json"))
    for side in ("before", "after"):
        assert {"acc", "macs", "gflops", "params", "size_mb"} <= set(summary[side])
    recipe = load_recipe(path)
    if recipe.pruning is None:
        assert summary["after"]["macs"] == summary["before"]["macs"]
    else:   # the final target, reached one-shot at epoch 0
        assert abs(summary["flops_reduction"] - recipe.pruning.target_flops_reduction) <= 0.011
        assert err.count("INFO slim_callbacks.callbacks.prune: epoch 0: pruned ") == 1
        if "mobilenet_v1" == recipe.model.name:
            assert "INFO slim_callbacks.callbacks.prune: epoch 0: pruned 13 groups" in err
    assert (out_dir / "checkpoints" / "final.pdparams").exists()
    assert (out_dir / "checkpoints" / "1.pdparams").exists()
    assert any(f.startswith("vdlrecords") for f in os.listdir(out_dir / "logs" / "train"))
    assert "dry run: 2 epochs x 2 steps of batch 2 on synthetic" in out


@pytest.mark.parametrize("path", [p for p in RECIPES if "pruning" in yaml.safe_load(open(p))],
                         ids=rid)
def test_a_recipes_pruning_section_is_a_spec(path):
    section = yaml.safe_load(open(path))["pruning"]
    spec = PruningSpec.from_dict(section)
    assert spec == load_recipe(path).pruning.spec()
    if "schedule" in section:  # the recipe's schedule is the spec's, not the default
        assert spec.schedule == schedule_from_dict(section["schedule"])


@pytest.mark.parametrize("path", MBV1, ids=rid)
def test_mobilenetv1_seed_hyperparameters(path):
    r = load_recipe(path)
    assert (r.model.name, r.model.kwargs) == ("mobilenet_v1", {"scale": 1.0, "num_classes": 1000})
    assert r.input_shape == (1, 3, 224, 224)
    assert (r.data.source, r.data.root) == ("imagenet", "data/ILSVRC2012")
    t = r.train
    assert (t.epochs, t.batch_size) == (120, 256)
    assert (t.optimizer.name, t.optimizer.momentum, t.optimizer.weight_decay) == \
        ("momentum", 0.9, 3e-5)
    assert (t.lr.base, t.lr.schedule, t.lr.milestones, t.lr.gamma) == \
        (0.1, "piecewise", (30, 60, 90), 0.1)
    header = open(path).read().split("\nname:")[0]
    if os.path.basename(path) != "baseline.yaml":
        assert r.model.pretrained.endswith(".pdparams")
        assert "-o model.pretrained=null" in open(path).read()
        assert "ONE-SHOT" in header or "PROGRESSIVE" in header


@pytest.mark.skipif(TABLE is None, reason="seed table not available")
@pytest.mark.parametrize("row", TABLE["rows"] if TABLE else [], ids=lambda r: r["name"])
def test_headers_quote_the_seed_row(row):
    path = os.path.join(ROOT, "recipes", "mobilenetv1", row["name"] + ".yaml")
    header = open(path).read().split("\nname:")[0]
    assert f"top-1 {row['top1']}" in header and f"top-5 {row['top5']}" in header
    assert f"{row['gflops_legacy']} GFLOPs" in header
    assert f"{row['paddlelite_ms_1_2_4_threads'][0]:.2f}" in header
    r = load_recipe(path)
    assert (r.pruning.criterion, r.pruning.strategy) == (row["criterion"], row["strategy"])
    assert r.pruning.target_flops_reduction == row["target_flops_reduction"]


def test_pointwise_pattern_selects_exactly_the_13_pointwise_convs():
    net = paddle.vision.models.mobilenet_v1(scale=1.0, num_classes=1000)
    graph = trace(net, [1, 3, 224, 224])
    for path in MBV1:
        r = load_recipe(path)
        if r.pruning is None:
            continue
        chosen = resolve_ratios(graph, {p: 0.5 for p in r.pruning.layers})
        assert len(chosen) == 13 and all("._pointwise_conv." in g for g in chosen), path
        assert "conv1.0" not in chosen


def test_sensitive_recipes_share_a_file_relative_to_themselves():
    for name in ("sensitive_l1norm_f30", "sensitive_l1norm_f50"):
        r = load_recipe(os.path.join(ROOT, "recipes", "mobilenetv1", name + ".yaml"))
        assert r.pruning.sensitivities == "sensitivities/mobilenetv1_l1norm.json"


@pytest.mark.parametrize("name", ["slim_f50", "optslim_f50"])
def test_slim_recipes_train_sparsity_then_prune_by_bn_scale(name):
    path = os.path.join(ROOT, "recipes", "mobilenetv1", name + ".yaml")
    r = load_recipe(path)
    assert r.pruning.bn_l1 == 1e-4
    assert r.pruning.criterion in ("slim", "opt_slim")
    assert r.pruning.schedule == {"kind": "oneshot", "epoch": 9}
    assert "NO PUBLISHED NUMBERS" in open(path).read()
