"""The general rule for bad input: every bad argument, file or state is one short
SlimError/ConfigError line naming what is wrong and what to do, raised before anything
changes - for recipes and ``-o`` values, run directories, export and latency, and
pruning of shared layers."""
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import paddle
import paddle.nn as nn
import pytest

import slim_callbacks.deploy.export as export_module
from slim_callbacks import PruneCallback, export, prune
from slim_callbacks.app.cli import main
from slim_callbacks.app.recipe import MAX_RECIPE_BYTES, load_recipe
from slim_callbacks.app.run_dir import check_writable
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.deploy.runtime import save_inference_model
from slim_callbacks.pruning.schedule_factory import schedule_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "name: r\nmodel: {name: lenet}\ndata: {source: mnist}\n"
SHAPE = [1, 3, 8, 8]


def alias_bomb(levels):
    """A YAML list whose last item expands to 9 ** levels strings (6 levels: half a
    million, a 7 MB error message unbounded; 9 levels: 387 million)."""
    items = ["&a0 [" + ", ".join(["xxxxxxxxxx"] * 9) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


def one_short_line(err, limit=400):
    text = str(err)
    assert "\n" not in text and len(text) < limit, text[:1000]
    return text


# ------------------------------------------------------------------ recipes and -o values
RECIPE_CASES = {
    "alias bomb 6": (f"input_shape: {alias_bomb(6)}\n", r"more than 100,000 values .*aliases"),
    "alias bomb 9": (f"input_shape: {alias_bomb(9)}\n", r"more than 100,000 values .*aliases"),
    "deep nesting": ("input_shape: " + "[" * 5000 + "]" * 5000 + "\n", r"nested deeper than 64"),
    "self alias": ("input_shape: &s [1, *s]\n", r"alias inside its own anchor"),
    "section twice": ("train: {epochs: 2}\npruning: {ratios: 0.5}\ntrain:\n  epochs: 3\n",
                      r"^train: 'set twice \(lines 4 and 6\)'"),
    "key twice": ("train:\n  epochs: 2\n  epochs: 3\n", r"^train.epochs: 'set twice \(lines 5 and 6\)'"),
    "huge seed": ("train: {seed: 99999999999999999999}\n", r"^train.seed: .*at most 2147483647"),
    "huge epochs": ("train: {epochs: 4294967296}\n", r"^train.epochs: .*at most 2147483647"),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_a_bad_recipe_file_is_one_short_line_quickly(tmp_path, case):
    text, message = RECIPE_CASES[case]
    path = tmp_path / "r.yaml"
    path.write_text(BASE + text)
    start = time.perf_counter()
    with pytest.raises(SlimError) as info:
        load_recipe(str(path))
    assert time.perf_counter() - start < 2.0
    assert info.type is ConfigError
    assert re.search(message, one_short_line(info.value))


@pytest.mark.parametrize("override, message", [
    (f"train.epochs={alias_bomb(6)}", r"^train.epochs.\d+: 'more than 100,000 values"),
    (f"train.epochs={alias_bomb(9)}", r"^train.epochs.\d+: 'more than 100,000 values"),
    ("input_shape=" + "[" * 3000 + "]" * 3000, r"nested deeper than 64"),
    ("train={epochs: 2, epochs: 3}", r"^train.epochs: 'set twice"),
    ("train.seed=4294967296", r"^train.seed: 4294967296 .*at most 2147483647"),
], ids=["alias bomb 6", "alias bomb 9", "deep nesting", "key twice", "huge seed"])
def test_a_bad_override_value_is_one_short_line_quickly(override, message):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(BASE_DICT, overrides=[override])
    assert time.perf_counter() - start < 2.0
    one_short_line(info.value)


BASE_DICT = {"name": "r", "model": {"name": "lenet"}, "data": {"source": "mnist"}}


def test_the_cli_prints_an_alias_bomb_as_one_short_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BASE + f"input_shape: {alias_bomb(6)}\n")
    assert main(["check", str(path)]) == 2
    assert main(["check", "quickstart", "-o", f"train.epochs={alias_bomb(6)}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(len(line) < 400 for line in lines), lines


@pytest.mark.parametrize("make", [
    lambda: PruneCallback(input_shape=SHAPE, ratios=0.5, schedule="agp", start_epoch=0,
                          end_epoch=10 ** 20),
    lambda: schedule_from_dict({"kind": "agp", "start_epoch": 0, "end_epoch": 10 ** 20,
                                "frequency": 2}, "pruning.schedule"),
], ids=["PruneCallback", "recipe schedule"])
def test_a_huge_epoch_is_refused_naming_the_bound(make):
    with pytest.raises(ConfigError, match=r"end_epoch: 100000000000000000000 .*at most 2147483647"):
        make()


def test_a_recipe_file_larger_than_the_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "# " + "x" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(ConfigError, match="at most 1,048,576 characters"):
        load_recipe(str(path))


def test_a_config_error_shows_a_huge_value_shortened():
    value = [[list(range(100))] * 100] * 100
    text = one_short_line(ConfigError("k", value, "a number"), limit=300)
    assert text.startswith("k: [[[0, 1, 2") and "(cut)" in text and text.endswith("a number")


# ------------------------------------------------------------------ directories
def blocked_paths(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    link = tmp_path / "link"
    os.symlink(tmp_path / "gone", link)
    return {"under a regular file": (str(afile / "out"), "is a regular file"),
            "a dangling symlink": (str(link), "is a symlink to .*gone, which does not exist"),
            "under a dangling symlink": (str(link / "logs"), "is a symlink to")}


@pytest.mark.parametrize("case", ["under a regular file", "a dangling symlink",
                                  "under a dangling symlink"])
def test_an_output_directory_that_cannot_exist_says_why(tmp_path, case):
    path, why = blocked_paths(tmp_path)[case]
    with pytest.raises(SlimError, match=f"^output directory .* is not writable \\(.*{why}"):
        check_writable(path)


@pytest.mark.parametrize("case", ["under a regular file", "a dangling symlink"])
def test_export_to_a_directory_that_cannot_exist_is_refused_unwritten(tmp_path, case):
    path, why = blocked_paths(tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SlimError, match=f"^export directory .*{why}") as info:
        export(nn.Conv2D(3, 4, 3), path, SHAPE)
    one_short_line(info.value)
    assert sorted(os.listdir(tmp_path)) == before


# ------------------------------------------------------------------ export faults
def staged(directory):
    return [n for n in os.listdir(directory) if n.startswith(".export-")]


def fails_after_saving(kind):
    real = export_module.save_inference_model

    def save(network, prefix, shape, **options):
        if kind == "no space":
            raise OSError(28, "No space left on device")
        real(network, prefix, shape, **options)
        if kind == "truncated weights":  # what a full disk left behind
            params = prefix + ".pdiparams"
            data = open(params, "rb").read()
            open(params, "wb").write(data[:len(data) // 2])
        if kind == "Ctrl-C":
            raise KeyboardInterrupt
    return save


@pytest.mark.parametrize("kind, error, message", [
    ("no space", SlimError, "^export: cannot write the model in .*No space left on device"),
    ("truncated weights", SlimError, "model.pdiparams is truncated .*a full disk"),
    ("Ctrl-C", KeyboardInterrupt, ""),
])
def test_a_fault_while_saving_leaves_nothing_behind(tmp_path, monkeypatch, kind, error, message):
    out = tmp_path / "inference"
    os.makedirs(out)
    monkeypatch.setattr(export_module, "save_inference_model", fails_after_saving(kind))
    with pytest.raises(error, match=message) as info:
        export(nn.Conv2D(3, 4, 3), str(out), SHAPE)
    if error is SlimError:
        one_short_line(info.value)
    assert os.listdir(out) == []


def test_a_sigint_during_the_save_is_held_until_it_ends_then_cleaned_up(tmp_path, monkeypatch):
    real = export_module.save_inference_model
    saved = []

    def save(network, prefix, shape, **options):
        os.kill(os.getpid(), signal.SIGINT)   # arrives while Paddle saves
        real(network, prefix, shape, **options)
        saved.append(os.path.exists(prefix + ".pdiparams"))
    monkeypatch.setattr(export_module, "save_inference_model", save)
    with pytest.raises(KeyboardInterrupt):
        export(nn.Conv2D(3, 4, 3), str(tmp_path), SHAPE)
    assert saved == [True] and os.listdir(tmp_path) == []


def test_sigterm_during_the_save_deletes_the_staging_directory(tmp_path):
    """In a child process (SIGTERM would end the test run): the export is interrupted,
    its hidden staging directory deleted."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import paddle
        import slim_callbacks.deploy.export as export_module
        real = export_module.save_inference_model
        def save(network, prefix, shape, **options):
            os.kill(os.getpid(), signal.SIGTERM)
            real(network, prefix, shape, **options)
        export_module.save_inference_model = save
        try:
            export_module.export(paddle.nn.Conv2D(3, 4, 3), {str(tmp_path)!r}, [1, 3, 8, 8])
        except KeyboardInterrupt:
            sys.exit(143)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)
    assert done.returncode == 143, done.stderr.decode()[-2000:]
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ latency inputs
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A good exported model and broken copies of it."""
    d = tmp_path_factory.mktemp("models")
    paddle.seed(0)
    for name, width in (("good", 4), ("wider", 6)):
        os.makedirs(d / name)
        save_inference_model(nn.Sequential(nn.Conv2D(3, width, 3), nn.ReLU()),
                             str(d / name / "model"), SHAPE)
    for name in ("corrupt program", "truncated weights", "other weights"):
        shutil.copytree(d / "good", d / name)
    (d / "corrupt program" / "model.json").write_text('{"base_code": garbage')
    weights = (d / "good" / "model.pdiparams").read_bytes()
    (d / "truncated weights" / "model.pdiparams").write_bytes(weights[:len(weights) // 2])
    shutil.copy(d / "wider" / "model.pdiparams", d / "other weights" / "model.pdiparams")
    return d


@pytest.mark.parametrize("model, extra, message", [
    ("corrupt program", [], "model.json is not a readable inference program"),
    ("truncated weights", [], "model.pdiparams is truncated or not a weights file"),
    ("other weights", [], r"does not hold the weights .*model.json declares .*\[6, 3, 3, 3\]"),
    ("good", ["--threads", "2147483648"], "threads: 2147483648 is not allowed; .*at most"),
    ("good", ["--threads", str(4 * (os.cpu_count() or 1) + 1)], "threads: .*at most"),
    ("good", ["--input-shape", "1", "3", "8"], r"input_shape \[1, 3, 8\] does not fit .*\[N, 3, 8, 8\]"),
    ("good", ["--input-shape", "1", "5", "8", "8"], r"input_shape \[1, 5, 8, 8\] does not fit"),
])
def test_latency_of_a_bad_model_or_argument_is_one_line(model_dirs, capsys, model, extra,
                                                          message):
    assert main(["latency", str(model_dirs / model), "--rounds", "1", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert re.search(message, err), err


def test_latency_takes_a_model_file_for_its_prefix(model_dirs, capsys):
    assert main(["latency", str(model_dirs / "good" / "model.json"), "--rounds", "1"]) == 0
    assert "model.json" in capsys.readouterr().out


# ------------------------------------------------------------------ shared layers, nothing to prune
class UsedTwice(nn.Layer):
    def __init__(self, twice_registered):
        super().__init__()
        self.stem = nn.Conv2D(3, 8, 3, padding=1)
        self.a = nn.Conv2D(8, 8, 3, padding=1)
        if twice_registered:
            self.b = self.a
        self.head = nn.Conv2D(8, 4, 1)

    def forward(self, x):
        return self.head(self.a(self.a(self.stem(x))))


class Tied(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 6), nn.Linear(6, 8)
        self.c.weight = self.a.weight

    def forward(self, x):
        return self.c(self.b(self.a(x)))


@pytest.mark.parametrize("make, shape, message", [
    (lambda: UsedTwice(True), SHAPE, r"layer a is used twice \(also as b\)"),
    (lambda: UsedTwice(False), SHAPE, "layer a is called 2 times in one forward pass"),
    (Tied, [2, 6], "parameter .* is shared by a.weight and c.weight"),
])
def test_pruning_a_shared_layer_is_refused_naming_it(make, shape, message):
    paddle.seed(0)
    net = make()
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    with pytest.raises(SlimError, match=f"^{message}; pruning shared layers is not supported"):
        prune(net, shape, 0.5)
    after = net.state_dict()
    assert all(np.array_equal(after[k].numpy(), v) for k, v in before.items())


def test_pruning_a_network_with_nothing_prunable_says_so():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    with pytest.raises(SlimError, match=r"no prunable channel group \(1 groups, 1 blocked: 1 - "
                                        r"reaches a network output\); "
                                        r"nothing was changed"):
        prune(net, SHAPE, 0.5)
    assert len(prune(net, SHAPE, 0.0)) == 0   # nothing asked: nothing to say
    assert net[1].weight.shape == [3 * 8 * 8, 1]
