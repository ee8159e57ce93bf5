"""`slim-callbacks run` and its run directory: refusal of a rerun, --resume, the lock,
writability, NaN/Inf data, train.amp on CPU. A tiny recipe (the 3-conv test network on
synthetic 16x16 data), in-process through ``main``."""
import fcntl
import json
import os

import numpy as np
import paddle
import pytest
import yaml
from helpers import TINY_RECIPE

from slim_callbacks.app.cli import main
from slim_callbacks.callbacks.ledger import load_ledger

TINY = TINY_RECIPE


def recipe_file(tmp_path, **changes):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(path)


def run(capsys, recipe, out_dir, *extra):
    code = main(["run", recipe, "-o", f"output_dir={out_dir}", "--verbose", "0", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def errors(err):
    return [line for line in err.splitlines() if line.startswith("slim-callbacks: error:")]


def listing(directory):
    return sorted(os.path.relpath(os.path.join(d, f), directory)
                  for d, _, files in os.walk(directory) for f in files)


def test_rerun_into_a_used_directory_is_refused_naming_it_and_the_ways_out(capsys, tmp_path):
    recipe, out_dir = recipe_file(tmp_path), tmp_path / "out"
    assert run(capsys, recipe, out_dir)[0] == 0
    before = listing(out_dir)
    code, _, err = run(capsys, recipe, out_dir)
    assert code == 2
    assert errors(err) == [f"slim-callbacks: error: {out_dir} already holds a run ("
                           f"checkpoints, inference, logs, ...): continue it with --resume, or "
                           f"write elsewhere with -o output_dir=DIR (or delete {out_dir})"]
    assert listing(out_dir) == before   # no stale checkpoint mixed in, no second record file


def test_resume_continues_from_the_newest_complete_checkpoint(capsys, tmp_path):
    recipe, out_dir = recipe_file(tmp_path), tmp_path / "out"
    assert run(capsys, recipe, out_dir)[0] == 0
    ckpt = out_dir / "checkpoints"
    for name in os.listdir(ckpt):       # as if killed during epoch 2
        if name.startswith(("2.", "final.")):
            os.remove(ckpt / name)
    os.remove(out_dir / "summary.json")
    kept = {n: (ckpt / n).read_bytes() for n in os.listdir(ckpt)}
    code, out, err = run(capsys, recipe, out_dir, "--resume")
    assert code == 0, err[-2000:]
    assert f"resuming from {ckpt / '1'}" in out
    assert {n: (ckpt / n).read_bytes() for n in kept} == kept       # nothing overwritten
    final = load_ledger(str(ckpt / "final"))
    assert final["cursor"]["epoch"] == 2 and [h["epoch"] for h in final["history"]] == [0, 1]
    assert load_ledger(str(ckpt / "2"))["cursor"]["epoch"] == 2
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["after"]["params"] < summary["before"]["params"]
    assert sorted(os.listdir(out_dir / "logs")) == ["train", "train-2"]  # one dir per session
    # a finished run has nothing to resume
    code, _, err = run(capsys, recipe, out_dir, "--resume")
    assert code == 2 and "is finished" in errors(err)[0] and "nothing to resume" in err


def test_resume_without_a_checkpoint_is_a_clear_error(capsys, tmp_path):
    code, _, err = run(capsys, recipe_file(tmp_path), tmp_path / "out", "--resume")
    assert code == 2
    assert errors(err) == [f"slim-callbacks: error: no checkpoint with a pruning ledger in "
                           f"{tmp_path / 'out' / 'checkpoints'} to resume from"]


def test_a_second_concurrent_run_is_refused(capsys, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with open(out_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)     # a run in progress
        code, _, err = run(capsys, recipe_file(tmp_path), out_dir)
    assert code == 2
    assert errors(err) == [f"slim-callbacks: error: {out_dir} is in use by another run (it "
                           f"holds {out_dir / '.lock'}): wait for it, or write elsewhere with "
                           f"-o output_dir=DIR"]
    assert os.listdir(out_dir) == [".lock"]


def test_an_unwritable_output_directory_fails_before_training(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out, err = run(capsys, recipe_file(tmp_path), blocker / "out")
    assert code == 2 and out == ""
    assert errors(err)[0].startswith(f"slim-callbacks: error: output directory {blocker / 'out'} "
                                     f"is not writable (")


def test_non_finite_images_are_refused_before_training(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, 16, 16)).astype("float32")
    x[5, 1, 2, 3] = np.inf
    y = np.arange(8) % 4
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:4] * 0, y_test=y[:4])
    recipe = recipe_file(tmp_path, data={"source": "npz", "path": str(tmp_path / "d.npz"),
                                         "num_classes": 4, "image_size": 16})
    code, _, err = run(capsys, recipe, tmp_path / "out")
    assert code == 2
    assert errors(err) == ["slim-callbacks: error: data: 'x_train[5] holds NaN/Inf' is not "
                           "allowed; expected finite pixel values in every image (1 bad images "
                           "in x_train)"]
    assert not (tmp_path / "out" / "summary.json").exists()
    assert listing(tmp_path / "out") == [".lock"]   # nothing trained, nothing written


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_train_amp_on_cpu_is_a_warned_no_op(capsys, tmp_path, level):
    code, _, err = run(capsys, recipe_file(tmp_path), tmp_path / "out", "-o", f"train.amp={level}")
    assert code == 0, err[-2000:]
    assert f"train.amp {level} has no effect on CPU" in err
    weights = paddle.load(str(tmp_path / "out" / "checkpoints" / "final.pdparams"))
    assert {str(v.dtype) for v in weights.values()} == {"paddle.float32"}


def test_train_amp_accepts_only_o1_o2_or_null(capsys, tmp_path):
    code, _, err = run(capsys, recipe_file(tmp_path), tmp_path / "out", "-o", "train.amp=O3")
    assert code == 2
    assert errors(err) == ["slim-callbacks: error: train.amp: 'O3' is not allowed; expected "
                           "null or one of O1, O2"]
