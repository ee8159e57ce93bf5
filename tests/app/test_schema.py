"""The recipe schema: defaults, overrides, round trip and every error message."""
import dataclasses
import logging
import re

import pytest
import yaml
from helpers import BASE_RECIPE

from slim_callbacks.app.overrides import apply_override, parse_override
from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.app.schema import DATA_SOURCES, Recipe
from slim_callbacks.core.errors import ConfigError, SlimError

BASE = BASE_RECIPE


def message(key, value, allowed):
    """The exact ConfigError message, as a regex for ``pytest.raises(match=...)``."""
    return "^" + re.escape(f"{key}: {value!r} is not allowed; expected {allowed}") + "$"


def load(*overrides, base=BASE):
    return load_recipe(base, overrides=overrides)


# ------------------------------------------------------------------ defaults


def test_minimal_recipe_resolves_every_default():
    assert load().to_dict() == {
        "name": "mbv1_digits",
        "output_dir": "output/mbv1_digits",
        "model": {"name": "mobilenet_v1", "kwargs": {}, "pretrained": None},
        "data": {"source": "digits", "root": None, "path": None, "image_size": 32,
                 "num_classes": 10, "num_workers": 0, "samples": None,
                 "train_samples": None},
        "input_shape": [1, 3, 32, 32],
        "train": {"epochs": 10, "batch_size": 32,
                  "optimizer": {"name": "momentum", "momentum": 0.9, "weight_decay": 0.0},
                  "lr": {"base": 0.1, "schedule": "cosine", "milestones": [], "gamma": 0.1},
                  "eval_every": 1, "seed": 0, "amp": None},
        "pruning": {"criterion": "l1_norm", "strategy": "uniform", "strategy_options": {},
                        "ratios": 0.5,
                    "target_flops_reduction": None, "target_latency_reduction": None, "layers": ["*"], "skip": [],
                    "round_to": 1, "sensitivities": None, "schedule": None, "bn_l1": None,
                    "fold_bn_shift": None, "distill": None, "recalibrate_bn": 0,
                    "max_metric_drop": None, "budget_min_step": 0.02, "structure": {}},
        "logging": {"log_dir": "output/mbv1_digits/logs", "log_freq": 10, "visualdl": True},
        "checkpoint": {"save_dir": "output/mbv1_digits/checkpoints", "save_freq": 1},
        "deploy": {"export": True, "formats": ["paddle"], "latency": True, "latency_rounds": 20,
                   "keep_intermediates": False},
    }


def test_no_pruning_section_is_a_plain_training_run():
    base = {k: v for k, v in BASE.items() if k != "pruning"}
    assert load(base=base).pruning is None
    assert load("pruning=null").pruning is None


@pytest.mark.parametrize("source, size", [("digits", 32), ("mnist", 28), ("synthetic", 32)])
def test_input_shape_follows_the_source(source, size):
    recipe = load(f"data.source={source}")
    assert recipe.input_shape == (1, 3, size, size) and recipe.data.image_size == size


def test_image_size_and_input_shape_derive_each_other():
    assert load("data.image_size=48").input_shape == (1, 3, 48, 48)
    assert load("input_shape=[4, 1, 40, 40]").data.image_size == 40
    assert load("input_shape=[1, 3, 64, 48]").data.image_size == (64, 48)
    assert load("data.image_size=[64, 48]").input_shape == (1, 3, 64, 48)


def test_derived_defaults():
    recipe = load("output_dir=/tmp/run", "train.optimizer.name=adam")
    assert recipe.logging.log_dir == "/tmp/run/logs"
    assert recipe.checkpoint.save_dir == "/tmp/run/checkpoints"
    assert recipe.train.lr.base == 0.001 and recipe.train.optimizer.momentum is None
    assert load("data.source=synthetic", "model.kwargs.num_classes=7").data.num_classes == 7


def test_empty_sections_mean_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: {name: lenet}\ndata: {source: mnist}\n"
                    "train:\nlogging:\ncheckpoint:\n")
    recipe = load_recipe(path)
    assert recipe.train.epochs == 10 and recipe.logging.visualdl and recipe.pruning is None


def test_docstring_examples_run():
    import doctest

    import slim_callbacks.app.recipe as module
    assert doctest.testmod(module).failed == 0


def test_recipe_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load().train.epochs = 3


# ------------------------------------------------------------------ overrides


@pytest.mark.parametrize("text, key, value", [
    ("train.epochs=3", "train.epochs", 3),
    ("train.lr.base=0.05", "train.lr.base", 0.05),
    ("train.optimizer.weight_decay=3e-5", "train.optimizer.weight_decay", "3e-5"),
    ("logging.visualdl=false", "logging.visualdl", False),
    ("input_shape=[1, 3, 32, 32]", "input_shape", [1, 3, 32, 32]),
    ("pruning.ratios={conv1: 0.3}", "pruning.ratios", {"conv1": 0.3}),
    ("model.pretrained=", "model.pretrained", None),
    ("model.pretrained=null", "model.pretrained", None),
    ("name = spaced", "name", "spaced"),
    ("data.root=a=b", "data.root", "a=b"),
])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("overrides, getter, expected", [
    (["train.epochs=3"], lambda r: r.train.epochs, 3),
    (["train.lr.base=0.05"], lambda r: r.train.lr.base, 0.05),
    (["train.lr.base=1"], lambda r: r.train.lr.base, 1.0),
    (["train.optimizer.weight_decay=3e-5"], lambda r: r.train.optimizer.weight_decay, 3e-5),
    (["logging.visualdl=false"], lambda r: r.logging.visualdl, False),
    (["input_shape=[2, 3, 40, 40]"], lambda r: r.input_shape, (2, 3, 40, 40)),
    (["pruning.layers=['features.*', fc]"], lambda r: r.pruning.layers, ("features.*", "fc")),
    (["model.kwargs={scale: 0.25, num_classes: 10}"], lambda r: r.model.kwargs,
     {"scale": 0.25, "num_classes": 10}),
    (["model.kwargs.scale=0.25", "model.kwargs.extra.depth=2"], lambda r: r.model.kwargs,
     {"scale": 0.25, "extra": {"depth": 2}}),
    (["pruning.schedule={kind: linear, start_epoch: 0, end_epoch: 3}"],
     lambda r: r.pruning.schedule, {"kind": "linear", "start_epoch": 0, "end_epoch": 3}),
    (["pruning.schedule.kind=oneshot", "pruning.schedule.epoch=4"],
     lambda r: r.pruning.schedule, {"kind": "oneshot", "epoch": 4}),
    (["pruning.strategy=custom", "pruning.ratios=null", "pruning.ratios.features.0.conv=0.3",
      "pruning.ratios.fc*=0.1"], lambda r: r.pruning.ratios,
     {"features.0.conv": 0.3, "fc*": 0.1}),
    (["train.epochs=3", "train.epochs=4"], lambda r: r.train.epochs, 4),
    (["pruning.criterion=fpgm"], lambda r: r.pruning.criterion, "fpgm"),
    (["pruning.ratios=null", "pruning.schedule={kind: map, ratios: {1: 0.2, 2: 0.4}}"],
     lambda r: r.pruning.spec().ratios, 0.4),
])
def test_overrides_reach_the_recipe(overrides, getter, expected):
    assert getter(load(*overrides)) == expected


def test_override_creates_missing_sections():
    base = {k: v for k, v in BASE.items() if k != "pruning"}
    recipe = load("pruning.target_flops_reduction=0.5", "train.optimizer.name=sgd", base=base)
    assert recipe.pruning.target_flops_reduction == 0.5
    assert recipe.train.optimizer.name == "sgd"


def test_override_does_not_touch_the_input():
    raw = {"name": "x", "model": {"name": "lenet"}, "data": {"source": "mnist"}}
    load_recipe(raw, ["model.kwargs.num_classes=10", "data.num_workers=2"])
    assert raw == {"name": "x", "model": {"name": "lenet"}, "data": {"source": "mnist"}}


def test_validation_runs_after_overrides():
    base = dict(BASE, train={"epochs": 0})
    assert load("train.epochs=2", base=base).train.epochs == 2


def test_single_string_is_one_override():
    assert load_recipe(BASE, "train.epochs=2").train.epochs == 2


def test_apply_override_in_place():
    raw = {}
    apply_override(raw, "train.lr.milestones=[3, 6]")
    assert raw == {"train": {"lr": {"milestones": [3, 6]}}}


@pytest.mark.parametrize("text, key, value, allowed", [
    ("train.epoch=3", "train.epoch", 3,
     "a key of train: epochs, batch_size, optimizer, lr, eval_every, seed, amp"),
    ("trian.epochs=3", "trian", 3,
     "a key of the recipe: name, output_dir, model, data, input_shape, train, pruning, "
     "logging, checkpoint, deploy"),
    ("train.optimizer.nesterov=true", "train.optimizer.nesterov", True,
     "a key of train.optimizer: name, momentum, weight_decay"),
    ("pruning.ratio=0.3", "pruning.ratio", 0.3,
     "a key of pruning: criterion, strategy, strategy_options, ratios, "
     "target_flops_reduction, target_latency_reduction, layers, skip, round_to, "
     "sensitivities, schedule, bn_l1, "
     "fold_bn_shift, distill, recalibrate_bn, max_metric_drop, budget_min_step, structure"),
    ("train.epochs.max=3", "train.epochs.max", 3,
     "a key path ending at train.epochs (it holds a value)"),
    ("pruning.ratios.conv1=0.3", "pruning.ratios", 0.5,
     "a mapping (to set pruning.ratios.conv1 inside it)"),
    ("train.epochs", "override", "train.epochs", "'section.key=value', e.g. 'train.epochs=3'"),
    ("=3", "override", "=3", "'section.key=value', e.g. 'train.epochs=3'"),
    ("train..epochs=3", "override", "train..epochs=3",
     "'section.key=value', e.g. 'train.epochs=3'"),
    ("train.epochs=[1, 2", "train.epochs", "[1, 2",
     "a YAML value, e.g. 3, 0.5, true, [1, 2], {a: 1}"),
])
def test_bad_overrides(text, key, value, allowed):
    with pytest.raises(ConfigError, match=message(key, value, allowed)):
        load(text)


@pytest.mark.parametrize("text", ["train=", "train=null", "train={}", "data=", "pruning=",
                                  "train.optimizer=", "train.lr= "])
def test_empty_section_override_is_an_error(text):
    """``-o train=`` used to reset the whole section to its defaults, silently."""
    key = text.partition("=")[0]
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: .* not empty; set keys with "
                                          rf"-o {re.escape(key)}\.KEY=VALUE"):
        load(text)


def test_pruning_null_still_means_no_pruning():
    assert load("pruning=null").pruning is None


def test_strategy_options_are_checked_against_the_strategy():
    recipe = load("pruning.strategy=global", "pruning.strategy_options.max_ratio=0.8")
    assert recipe.pruning.strategy_options == {"max_ratio": 0.8}
    with pytest.raises(ConfigError, match=message(
            "pruning.strategy_options.max_ratoi", 0.8, "an option of strategy global: "
            "max_ratio, normalize, tolerance, convention")):
        load("pruning.strategy=global", "pruning.strategy_options.max_ratoi=0.8")
    with pytest.raises(ConfigError, match=message(
            "pruning.strategy_options.max_ratio", 0.8, "an option of strategy uniform: "
            "tolerance, convention")):
        load("pruning.strategy_options.max_ratio=0.8")
    with pytest.raises(ConfigError, match=message(
            "pruning.strategy_options.channel_ratio", 0.3, "an option the recipe does not "
            "set itself (use pruning.ratios)")):
        load("pruning.strategy=global", "pruning.strategy_options.channel_ratio=0.3")


def test_empty_layers_list_is_an_error():
    with pytest.raises(ConfigError, match=r"^pruning\.layers: \[\] is not allowed; expected a "
                                          r"non-empty list"):
        load("pruning.layers=[]")


def test_override_never_evaluates_python():
    with pytest.raises(ConfigError, match=r"^train\.epochs: '__import__\(\"os\"\)"):
        load('train.epochs=__import__("os")')


# ------------------------------------------------------------------ round trip

ROUND_TRIP = [
    BASE,
    {k: v for k, v in BASE.items() if k != "pruning"},
    {"name": "mbv1_imagenet", "output_dir": "/runs/mbv1",
     "model": {"name": "mobilenet_v1", "kwargs": {"num_classes": 1000},
               "pretrained": "weights/mbv1.pdparams"},
     "data": {"source": "imagenet", "root": "/data/ILSVRC2012", "num_workers": 2,
              "samples": 500},
     "train": {"epochs": 120, "batch_size": 256,
               "optimizer": {"name": "momentum", "momentum": 0.9, "weight_decay": "3e-5"},
               "lr": {"base": 0.1, "schedule": "piecewise", "milestones": [30, 60, 90]}},
     "pruning": {"criterion": "fpgm", "target_flops_reduction": 0.5,
                 "layers": ["*conv*"], "skip": ["conv1"], "round_to": 8,
                 "schedule": {"kind": "linear", "start_epoch": 0, "end_epoch": 3}},
     "logging": {"log_freq": 50, "visualdl": False}},
    {"name": "custom", "model": {"name": "mypkg.nets:build"},
     "data": {"source": "npz", "path": "data/x.npz", "image_size": [24, 32]},
     "train": {"optimizer": {"name": "adamw", "weight_decay": 0.01}, "seed": None},
     "pruning": {"strategy": "custom", "criterion": "opt_slim", "bn_l1": 1e-4,
                 "ratios": {"features.0.*": 0.3, "features.1.*": 0}}},
    {"name": "sens", "model": {"name": "resnet18"}, "data": {"source": "synthetic"},
     "input_shape": [2, 3, 64, 64],
     "pruning": {"strategy": "sensitive", "sensitivities": "s.pkl",
                 "target_flops_reduction": 0.3}},
    {"name": "glob", "model": {"name": "vgg11"},
     "data": {"source": "imagefolder", "root": "imgs", "num_classes": 5},
     "pruning": {"strategy": "global", "criterion": "bn_scale", "ratios": 0.4}},
]


@pytest.mark.parametrize("raw", ROUND_TRIP, ids=lambda raw: raw["name"])
def test_round_trip(raw):
    recipe = load_recipe(raw)
    again = load_recipe(recipe.to_dict())
    assert again == recipe
    assert again.to_dict() == recipe.to_dict()
    assert load_recipe(recipe) == recipe


@pytest.mark.parametrize("raw", ROUND_TRIP, ids=lambda raw: raw["name"])
def test_round_trip_through_yaml_text(raw, tmp_path):
    recipe = load_recipe(raw)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(path) == recipe
    assert yaml.safe_load(recipe.to_yaml()) == recipe.to_dict()


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    recipe = load_recipe(str(path), ["train.epochs=3"])
    assert recipe.train.epochs == 3 and recipe.name == "mbv1_digits"


# ------------------------------------------------------------------ file errors


def test_missing_file(tmp_path):
    with pytest.raises(SlimError, match="recipe file not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SlimError, match="bad.yaml is not valid YAML"):
        load_recipe(path)


@pytest.mark.parametrize("content, byte", [
    ("name: caf\u00e9\n".encode("latin-1"), 9),            # Latin-1, not UTF-8
    (b"\x89PNG\r\n\x1a\n\x00\x00", 0),                     # a binary file
])
def test_binary_or_non_utf8_recipe_is_one_line(tmp_path, content, byte):
    path = tmp_path / "r.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^recipe: '{re.escape(str(path))}' is not allowed; "
                                          rf"expected a UTF-8 YAML text file \(byte {byte} is "):
        load_recipe(path)


def test_a_directory_is_not_a_recipe(tmp_path):
    with pytest.raises(SlimError, match=rf"^recipe {re.escape(str(tmp_path))} cannot be read: "):
        load_recipe(tmp_path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"^recipe: \['a', 'b'\] is not allowed"):
        load_recipe(path)


def test_empty_file_reports_the_first_required_key(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match=r"^name: <missing> is not allowed; .*\(required\)$"):
        load_recipe(path)


def test_config_error_carries_key_and_value():
    with pytest.raises(ConfigError) as info:
        load("train.batch_size=0")
    assert (info.value.key, info.value.value) == ("train.batch_size", 0)
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------ every error path

SOURCES = "one of " + ", ".join(DATA_SOURCES)

RECALIBRATE_BN = ("an int in [0, 128] (training batches, each kept in memory, to re-estimate "
                  "BatchNorm statistics on; 0 turns it off)")
TEMPERATURE = "a number in [0.1, 100] (the softmax temperature; Hinton et al. use 1-20)"
ERRORS = [
    # top level
    (["name=a/b"], "name", "a/b",
     "a name of letters, digits, '_', '-', '.' (e.g. mbv1_digits)"),
    (["name=3"], "name", 3, "a name of letters, digits, '_', '-', '.' (e.g. mbv1_digits)"),
    (["output_dir=''"], "output_dir", "", "null or a non-empty path string"),
    (["input_shape=[1, 3, 32]"], "input_shape", [1, 3, 32],
     "null or a list of 4 positive ints [N, C, H, W]"),
    (["input_shape=[1, 3, 32, 0]"], "input_shape[3]", 0, "an int >= 1"),
    (["input_shape=[1, 3, 32.5, 32]"], "input_shape[2]", 32.5, "an int >= 1"),
    (["input_shape=1x3x32x32"], "input_shape", "1x3x32x32",
     "null or a list of 4 positive ints [N, C, H, W]"),
    (["model=resnet"], "model", "resnet",
     "a mapping with keys name, kwargs, pretrained, inputs"),
    # model
    (["model.name=null"], "model.name", None,
     "a paddle.vision.models function name (e.g. mobilenet_v1) or 'module:callable'"),
    (["model.name=my-net"], "model.name", "my-net",
     "a paddle.vision.models function name (e.g. mobilenet_v1) or 'module:callable'"),
    (["model.kwargs=[1]"], "model.kwargs", [1], "a mapping"),
    (["model.kwargs={1: 2}"], "model.kwargs.1", 2, "string keys"),
    (["model.pretrained=w.pdopt"], "model.pretrained", "w.pdopt",
     "null or a path to a .safetensors file (or a .pdparams pickle you trust)"),
    (["model.kwargs.num_classes=1000"], "model.kwargs.num_classes", 1000,
     "10 (the classes of data source digits)"),
    # data
    (["data.source=cifar100"], "data.source", "cifar100", SOURCES),
    (["data.source=null"], "data.source", None, SOURCES),
    (["data.source=imagenet"], "data.root", None,
     "the image directory (required for source imagenet)"),
    (["data.root=/x"], "data.root", "/x",
     "null for source digits (only imagenet, imagefolder read data.root)"),
    (["data.source=npz"], "data.path", None, "the .npz file (required for source npz)"),
    (["data.path=x.npz"], "data.path", "x.npz",
     "null for source digits (only npz, cifar10, mnist read data.path)"),
    (["data.image_size=0"], "data.image_size", 0,
     "null or an int >= 1 or a list [height, width]"),
    (["data.image_size=[32, 32, 3]"], "data.image_size", [32, 32, 3],
     "null or an int >= 1 or a list [height, width]"),
    (["data.image_size=48", "input_shape=[1, 3, 32, 32]"], "data.image_size", 48,
     "the H, W of input_shape (32, 32)"),
    (["data.num_classes=100"], "data.num_classes", 100, "10 for source digits"),
    (["data.num_workers=-1"], "data.num_workers", -1, "an int >= 0"),
    (["data.samples=0"], "data.samples", 0, "null or an int >= 1"),
    (["data.train_samples=true"], "data.train_samples", True, "null or an int >= 1"),
    # train
    (["train.epochs=0"], "train.epochs", 0, "an int >= 1"),
    (["train.epochs=2.0"], "train.epochs", 2.0, "an int >= 1"),
    (["train.epochs='3'"], "train.epochs", "3", "an int >= 1"),
    (["train.batch_size=true"], "train.batch_size", True, "an int >= 1"),
    (["train.eval_every=0"], "train.eval_every", 0, "an int >= 1"),
    (["train.seed=-1"], "train.seed", -1, "null or an int >= 0"),
    (["train.optimizer.name=rmsprop"], "train.optimizer.name", "rmsprop",
     "one of momentum, sgd, adam, adamw"),
    (["train.optimizer.momentum=1.0"], "train.optimizer.momentum", 1.0,
     "null or a float in [0, 1)"),
    (["train.optimizer.name=adam", "train.optimizer.momentum=0.9"],
     "train.optimizer.momentum", 0.9, "null for optimizer adam (only momentum uses it)"),
    (["train.optimizer.weight_decay=-1e-4"], "train.optimizer.weight_decay", "-1e-4",
     "a float >= 0"),
    (["train.optimizer.weight_decay=.inf"], "train.optimizer.weight_decay", float("inf"),
     "a float >= 0"),
    (["train.optimizer.weight_decay=lots"], "train.optimizer.weight_decay", "lots",
     "a float >= 0"),
    (["train.lr.base=0"], "train.lr.base", 0, "null or a float > 0"),
    (["train.lr.schedule=step"], "train.lr.schedule", "step",
     "one of constant, piecewise, cosine"),
    (["train.lr.schedule=piecewise"], "train.lr.milestones", [],
     "a non-empty list of epochs for schedule piecewise"),
    (["train.lr.milestones=[3]"], "train.lr.milestones", [3],
     "[] for schedule cosine (only piecewise uses it)"),
    (["train.lr.schedule=piecewise", "train.lr.milestones=[6, 3]"], "train.lr.milestones",
     [6, 3], "strictly increasing epochs"),
    (["train.lr.milestones=[0]"], "train.lr.milestones[0]", 0, "an int >= 1"),
    (["train.lr.milestones=3"], "train.lr.milestones", 3, "a list of epochs (ints >= 1)"),
    (["train.lr.gamma=0"], "train.lr.gamma", 0, "a float in (0, 1]"),
    # pruning
    (["pruning.criterion=l3"], "pruning.criterion", "l3",
     "one of l1_norm, l2_norm, fpgm, geometry_median, slim, bn_scale, opt_slim, taylor"),
    (["pruning.strategy=auto"], "pruning.strategy", "auto",
     "one of uniform, sensitive, global, custom, latency"),
    (["pruning.ratios=1.0"], "pruning.ratios", 1.0,
     "null or a float in [0, 1) or a non-empty mapping {sublayer pattern: ratio}"),
    (["pruning.ratios=-0.1"], "pruning.ratios", -0.1,
     "null or a float in [0, 1) or a non-empty mapping {sublayer pattern: ratio}"),
    (["pruning.ratios={}"], "pruning.ratios", {},
     "null or a float in [0, 1) or a non-empty mapping {sublayer pattern: ratio}"),
    (["pruning.strategy=custom", "pruning.ratios={conv1: 1.5}"], "pruning.ratios.conv1", 1.5,
     "a float in [0, 1)"),
    (["pruning.target_flops_reduction=0.5"], "pruning.ratios", 0.5,
     "null when target_flops_reduction is given (the targets are exclusive)"),
    (["pruning.ratios=null", "pruning.target_flops_reduction=1"],
     "pruning.target_flops_reduction", 1, "null or a float in (0, 1)"),
    (["pruning.ratios=null", "pruning.target_flops_reduction=0"],
     "pruning.target_flops_reduction", 0, "null or a float in (0, 1)"),
    (["pruning.strategy=custom"], "pruning.ratios", 0.5,
     "a {sublayer pattern: ratio} dict for strategy custom"),
    (["pruning.strategy=sensitive", "pruning.ratios=null",
      "pruning.target_flops_reduction=0.5"], "pruning.sensitivities", None,
     "a sensitivities file path (required for strategy sensitive)"),
    (["pruning.strategy=sensitive", "pruning.ratios=null", "pruning.sensitivities=s.pkl"],
     "pruning.target_flops_reduction", None,
     "a float in (0, 1) (required for strategy sensitive)"),
    (["pruning.strategy=uniform", "pruning.ratios={conv1: 0.3}"], "pruning.ratios", {"conv1": 0.3},
     "a float in [0, 1) for strategy uniform (use strategy custom for per-layer ratios)"),
    (["pruning.ratios=null"], "pruning.ratios", None,
     "a float in [0, 1) or a {pattern: ratio} dict "
     "(or target_flops_reduction, or target_latency_reduction)"),
    (["pruning.strategy=global", "pruning.ratios=null"], "pruning.ratios", None,
     "a float in [0, 1) or target_flops_reduction (one is required for strategy global)"),
    (["pruning.layers=conv*"], "pruning.layers", "conv*",
     "a non-empty list of glob patterns over sublayer names ([] matches nothing; "
     "'*' is every layer)"),
    (["pruning.skip=[fc, '']"], "pruning.skip[1]", "", "a non-empty glob pattern string"),
    (["pruning.round_to=0"], "pruning.round_to", 0,
     "an int >= 1 or 'auto' (the multiple measured for this machine)"),
    (["pruning.schedule=linear"], "pruning.schedule", "linear",
     "null or a mapping with a string 'kind' (see slim_callbacks.pruning.schedules)"),
    (["pruning.schedule={start: 0}"], "pruning.schedule.kind", "<missing>",
     "a schedule kind name (string)"),
    (["pruning.schedule={kind: 3}"], "pruning.schedule.kind", 3,
     "a schedule kind name (string)"),
    (["pruning.schedule={kind: cubic}"], "pruning.schedule.kind", "cubic",
     "one of oneshot, epochs, map, agp, linear, exp"),
    (["pruning.schedule={kind: linear, start: 0, end_epoch: 3}"], "pruning.schedule.start", 0,
     "one of the keys of kind 'linear': start_epoch, end_epoch, frequency, initial_ratio "
     "(did you mean 'start_epoch'?)"),
    (["pruning.schedule={kind: map, ratios: {1: 0.2, 2: 0.4}}"], "pruning.ratios", 0.5,
     "null or 0.4 (the final ratio of the {epoch: ratio} schedule)"),
    (["pruning.bn_l1=-1e-4"], "pruning.bn_l1", "-1e-4", "null or a float > 0"),
    (["pruning.bn_l1=0"], "pruning.bn_l1", 0, "null or a float > 0"),
    (["pruning.max_metric_drop=.inf"], "pruning.max_metric_drop", float("inf"),
     "null or a float > 0"),
    (["pruning=0.5"], "pruning", 0.5,
     "null or a mapping with keys criterion, strategy, strategy_options, ratios, "
     "target_flops_reduction, target_latency_reduction, "
     "layers, skip, round_to, sensitivities, schedule, bn_l1, fold_bn_shift, distill, "
     "recalibrate_bn, max_metric_drop, budget_min_step, structure"),
    (["pruning.max_metric_drop=0"], "pruning.max_metric_drop", 0, "null or a float > 0"),
    (["pruning.budget_min_step=0"], "pruning.budget_min_step", 0, "a float in (0, 1]"),
    (["pruning.recalibrate_bn=-1"], "pruning.recalibrate_bn", -1, RECALIBRATE_BN),
    (["pruning.recalibrate_bn=1000000000000"], "pruning.recalibrate_bn", 10 ** 12, RECALIBRATE_BN),
    (["pruning.distill={alpha: 2}"], "pruning.distill.alpha", 2, "a float in [0, 1]"),
    (["pruning.distill={temperature: 0}"], "pruning.distill.temperature", 0, TEMPERATURE),
    (["pruning.distill={temperature: .inf}"], "pruning.distill.temperature", float("inf"), TEMPERATURE),
    (["pruning.distill={temperature: 1e-30}"], "pruning.distill.temperature", 1e-30, TEMPERATURE),
    (["pruning.distill={beta: 1}"], "pruning.distill.beta", 1,
     "a key of pruning.distill: alpha, temperature, teacher"),
    (["pruning.distill={teacher: 3}"], "pruning.distill.teacher", 3,
     "null or a weights path of the recipe's model (.safetensors, or a .pdparams pickle you "
     "trust) or a mapping with keys name, kwargs, pretrained"),
    (["pruning.distill={teacher: t.ckpt}"], "pruning.distill.teacher.pretrained", "t.ckpt",
     "a path to a .safetensors file (or a .pdparams pickle you trust)"),
    (["pruning.distill={teacher: {name: resnet18}}"], "pruning.distill.teacher.pretrained",
     "<missing>", "a path to a .safetensors file (or a .pdparams pickle you trust) (required)"),
    (["pruning.distill={teacher: {pretrained: t.pdparams, model: x}}"],
     "pruning.distill.teacher.model", "x", "a key of pruning.distill.teacher: name, kwargs, pretrained"),
    # logging, checkpoint
    (["logging.log_freq=0"], "logging.log_freq", 0, "an int >= 1"),
    (["logging.visualdl=yes please"], "logging.visualdl", "yes please", "true or false"),
    (["logging.visualdl=1"], "logging.visualdl", 1, "true or false"),
    (["checkpoint.save_freq=0"], "checkpoint.save_freq", 0, "an int >= 1"),
    (["checkpoint.save_dir=[a]"], "checkpoint.save_dir", ["a"],
     "null or a non-empty path string"),
    # deploy
    (["deploy.export=3"], "deploy.export", 3, "true or false"),
    (["deploy.formats=[]"], "deploy.formats", [],
     "a non-empty list of distinct formats from paddle, onnx"),
    (["deploy.formats=[paddle, paddle]"], "deploy.formats", ["paddle", "paddle"],
     "a non-empty list of distinct formats from paddle, onnx"),
    (["deploy.latency_rounds=0"], "deploy.latency_rounds", 0, "an int >= 1"),
]


@pytest.mark.parametrize("overrides, key, value, allowed", ERRORS,
                         ids=[" ".join(case[0]) for case in ERRORS])
def test_error_messages(overrides, key, value, allowed):
    if value == "<missing>":
        pattern = "^" + re.escape(f"{key}: <missing> is not allowed; expected {allowed}") + "$"
    else:
        pattern = message(key, value, allowed)
    with pytest.raises(ConfigError, match=pattern):
        load(*overrides)


@pytest.mark.parametrize("raw, key, value, allowed", [
    (dict(BASE, train={"epoch": 3}), "train.epoch", 3,
     "a key of train: epochs, batch_size, optimizer, lr, eval_every, seed, amp"),
    (dict(BASE, extra=1), "extra", 1,
     "a key of the recipe: name, output_dir, model, data, input_shape, train, pruning, "
     "logging, checkpoint, deploy"),
    (dict(BASE, data={"source": "digits", "rot": "/x"}), "data.rot", "/x",
     "a key of data: source, root, path, image_size, num_classes, num_workers, samples, "
     "train_samples"),
    (dict(BASE, train={"lr": {"decay": 0.1}}), "train.lr.decay", 0.1,
     "a key of train.lr: base, schedule, milestones, gamma"),
    (dict(BASE, logging={"tensorboard": True}), "logging.tensorboard", True,
     "a key of logging: log_dir, log_freq, visualdl"),
    (dict(BASE, checkpoint={"every": 2}), "checkpoint.every", 2,
     "a key of checkpoint: save_dir, save_freq"),
    (dict(BASE, model={"arch": "x"}), "model.arch", "x",
     "a key of model: name, kwargs, pretrained, inputs"),
])
def test_unknown_keys_in_the_recipe(raw, key, value, allowed):
    with pytest.raises(ConfigError, match=message(key, value, allowed)):
        load_recipe(raw)


@pytest.mark.parametrize("raw, key, allowed", [
    ({"model": {"name": "x"}, "data": {"source": "digits"}}, "name",
     "a name of letters, digits, '_', '-', '.' (e.g. mbv1_digits) (required)"),
    ({"name": "x", "data": {"source": "digits"}}, "model.name",
     "a paddle.vision.models function name (e.g. mobilenet_v1) or 'module:callable' "
     "(required)"),
    ({"name": "x", "model": {"name": "x"}}, "data.source", SOURCES + " (required)"),
])
def test_missing_required_keys(raw, key, allowed):
    pattern = "^" + re.escape(f"{key}: <missing> is not allowed; expected {allowed}") + "$"
    with pytest.raises(ConfigError, match=pattern):
        load_recipe(raw)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match=message("train.epochs", -1, "an int >= 1")):
        Recipe(name="x", model={"name": "lenet"}, data={"source": "mnist"},
               train={"epochs": -1})


def test_late_milestones_warn_but_load(caplog):
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.app.schema"):
        recipe = load("train.lr.schedule=piecewise", "train.lr.milestones=[30, 60]",
                      "train.epochs=3")
    assert recipe.train.lr.milestones == (30, 60)
    assert "train.lr.milestones [30, 60] are not below train.epochs=3" in caplog.text


def test_a_registered_criterion_is_accepted_by_recipes():
    from slim_callbacks.engine.criteria import CRITERIA, l1_norm, register_criterion
    with pytest.raises(ConfigError, match="pruning.criterion: 'mine' is not allowed; expected one of "
                                          "l1_norm, l2_norm, fpgm, geometry_median, slim, bn_scale, opt_slim, taylor$"):
        load("pruning.criterion=mine")
    register_criterion("mine", l1_norm)
    try:
        assert load("pruning.criterion=mine").pruning.criterion == "mine"
    finally:
        CRITERIA.pop("mine")


def test_distill_and_recalibrate_bn_reach_the_prune_callback():
    from slim_callbacks.app.builders import build_callbacks
    from slim_callbacks.app.job import Job
    recipe = load("pruning.distill={temperature: 2}", "pruning.recalibrate_bn=4",
                  "logging.visualdl=false", "model.pretrained=base.pdparams")
    assert recipe.to_dict()["pruning"]["distill"] == {"alpha": 0.5, "temperature": 2.0,
                                                      "teacher": None}
    prune = build_callbacks(Job(recipe), 0.5)[-1]
    assert (prune.distill.alpha, prune.distill.temperature) == (0.5, 2.0)
    assert prune.distill.given_teacher is None  # pretrained: the network before the first event
    assert prune.spec.aids.recalibrate_bn == 4
    plain = build_callbacks(Job(load("logging.visualdl=false")), 0.5)[-1]
    assert plain.distill is None and plain.spec.aids.recalibrate_bn == 0


def test_default_teacher_is_refused_when_the_network_trains_from_scratch():
    from slim_callbacks.app.job import load_job
    with pytest.raises(ConfigError, match=r"^pruning\.distill\.teacher: .*a trained teacher.*"
                                          r"model\.pretrained is null"):
        load_job(BASE, ["pruning.distill={alpha: 0.5}"])
    assert load_job(BASE, ["pruning.distill={alpha: 0.5}", "model.pretrained=base.pdparams"])
    given = load("pruning.distill={teacher: base.pdparams}")
    assert given.to_dict()["pruning"]["distill"]["teacher"]["pretrained"] == "base.pdparams"
    assert load("pruning.distill={alpha: 0.3}", "model.pretrained=base.pdparams").pruning.distill.teacher is None


def test_structure_reaches_the_prune_callback_and_bad_values_name_the_key():
    from slim_callbacks.app.builders import build_callbacks
    from slim_callbacks.app.job import Job
    recipe = load("pruning.structure={attention: heads}", "logging.visualdl=false")
    assert recipe.to_dict()["pruning"]["structure"] == {"attention": "heads"}
    assert build_callbacks(Job(recipe), 0.5)[-1].structure.attention == "heads"
    with pytest.raises(ConfigError, match=r"pruning\.structure\.attention: 'all'.*'head_dim', 'heads'"):
        load("pruning.structure={attention: all}")
    with pytest.raises(ConfigError, match=r"pruning\.structure\.heads: .*a key of attention"):
        load("pruning.structure={heads: 2}")


# ------------------------------------------------------- pruning.distill.teacher
def _teacher_callback(*overrides):
    from slim_callbacks.app.builders import build_callbacks
    from slim_callbacks.app.job import Job
    recipe = load("model.kwargs={scale: 0.25}", "logging.visualdl=false", *overrides)
    return build_callbacks(Job(recipe), 0.5)[-1].distill


def _saved(tmp_path, network, name):
    import paddle
    path = str(tmp_path / name)
    paddle.save(network.state_dict(), path)
    return path


def test_a_teacher_checkpoint_of_the_recipes_model_teaches(tmp_path):
    import numpy as np
    import paddle
    paddle.seed(3)
    trained = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    path = _saved(tmp_path, trained, "teacher.pdparams")
    distill = _teacher_callback(f"pruning.distill={{teacher: {path}, alpha: 0.3}}")
    teacher = distill.given_teacher
    assert type(teacher).__name__ == "MobileNetV1" and distill.alpha == 0.3
    own = trained.state_dict()
    assert all(np.array_equal(v.numpy(), own[k].numpy()) for k, v in teacher.state_dict().items())


def test_a_teacher_model_spec_builds_another_network(tmp_path):
    import paddle
    wide = paddle.vision.models.mobilenet_v1(scale=0.5, num_classes=10)
    path = _saved(tmp_path, wide, "wide.pdparams")
    distill = _teacher_callback(
        f"pruning.distill={{teacher: {{name: mobilenet_v1, kwargs: {{scale: 0.5}}, pretrained: {path}}}}}")
    assert distill.given_teacher.conv1[0].weight.shape[0] == wide.conv1[0].weight.shape[0] == 16


@pytest.mark.parametrize("teacher, key", [
    ("{pretrained: missing.pdparams}", "pruning.distill.teacher.pretrained: missing.pdparams not found"),
    ("{name: resnet18, pretrained: PATH}", "pruning.distill.teacher.pretrained: PATH does not fit ResNet"),
    ("{name: mobilenet_v1, kwargs: {width: 2}, pretrained: PATH}",
     "pruning.distill.teacher.kwargs.width: 2 is not allowed"),
    ("{name: nonet, pretrained: PATH}", "pruning.distill.teacher.name: 'nonet' is not allowed"),
])
def test_teacher_errors_name_the_key(tmp_path, teacher, key):
    import paddle
    path = _saved(tmp_path, paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10),
                  "t.pdparams")
    with pytest.raises((ConfigError, SlimError)) as err:
        _teacher_callback(f"pruning.distill={{teacher: {teacher.replace('PATH', path)}}}")
    assert str(err.value).startswith(key.replace("PATH", path))


def test_a_dry_run_ignores_the_teacher():
    from slim_callbacks.app.job import Job
    from slim_callbacks.app.runner import dry_run_recipe
    recipe = load("pruning.distill={teacher: missing.pdparams}")
    dry = dry_run_recipe(Job(recipe))
    assert dry.recipe.pruning.distill.teacher is None
    assert any("pruning.distill.teacher ignored" in note for note in dry.notes)


def test_budget_keys_reach_the_prune_callback():
    from slim_callbacks.app.builders import build_callbacks
    from slim_callbacks.app.job import Job
    recipe = load("pruning.max_metric_drop=0.05", "pruning.budget_min_step=0.1",
                  "logging.visualdl=false")
    budget = build_callbacks(Job(recipe), 0.5)[-1].budget
    assert (budget.max_drop, budget.min_step) == (0.05, 0.1)
