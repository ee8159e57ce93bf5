"""PruneCallback under paddle.distributed.launch with two CPU (gloo) processes."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import TESTS


def launch(out_dir, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(TESTS), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(out_dir / "log"), os.path.join(TESTS, "dp_prune_script.py"), str(out_dir), *extra]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"paddle.distributed.launch could not run: {err}")


def worker_log(out_dir, rank):
    path = out_dir / "log" / f"workerlog.{rank}"
    return path.read_text(errors="replace") if path.exists() else ""


def launched(tmp_path, *args):
    """Runs the two-rank script; skips if two CPU ranks cannot start here. Returns the
    workers' logs."""
    proc = launch(tmp_path, *args)
    logs = worker_log(tmp_path, 0) + worker_log(tmp_path, 1)
    if proc.returncode != 0 and "pruned" not in logs:
        pytest.skip("the launcher could not start two CPU ranks here:\n"
                    + (proc.stdout + proc.stderr + logs)[-1500:])
    assert proc.returncode == 0, (proc.stdout + proc.stderr + logs)[-3000:]
    return logs


def test_two_ranks_prune_identically_and_keep_synchronizing(tmp_path):
    logs = launched(tmp_path)
    meta = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert meta[0]["world"] == meta[1]["world"] == 2
    assert meta[0]["events"] == meta[1]["events"] == [0, 1]
    assert meta[0]["widths"] == meta[1]["widths"] == {"c1.0": 8, "c2.0": 16, "c3.0": 16}
    assert meta[0]["plan"] == meta[1]["plan"]  # same kept indices on every rank
    # gradients through DataParallel are the mean of the ranks' gradients, new shapes
    assert meta[0]["grad_error"] < 1e-5 and meta[1]["grad_error"] < 1e-5
    w0, w1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert set(w0) == set(w1)
    for key in w0:
        assert w0[key].shape == w1[key].shape, key
        if not key.endswith(("_mean", "_variance")):  # BN statistics stay per-rank in Paddle
            # each rank saw a different shard for an epoch after the last prune: equal
            # weights mean the gradients were all-reduced with the new shapes
            np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    assert w0["c2.0.weight"].shape == (16, 8, 3, 3)
    # only rank 0 writes VisualDL records and checkpoints with ledgers
    assert len(os.listdir(tmp_path / "vdl")) == 1
    assert "final.pruning.json" in os.listdir(tmp_path / "ckpt")
    assert logs.count("epoch 1: pruned 3 groups") == 1  # both pruned, rank 0 reports


def test_two_ranks_distill_and_recalibrate_and_stay_in_sync(tmp_path):
    """Each rank distils from its own teacher; the weights stay equal across ranks."""
    launched(tmp_path, "distill")
    meta = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 128 samples, 2 ranks, batch 16: 4 steps per epoch per rank; the teacher is taken
    # at the first event (end of epoch 0), so epochs 1 and 2 distil
    assert meta[0]["distill_steps"] == meta[1]["distill_steps"] == 8
    assert meta[0]["loss_restored"] and meta[1]["loss_restored"]
    assert meta[0]["widths"] == meta[1]["widths"] == {"c1.0": 8, "c2.0": 16, "c3.0": 16}
    assert meta[0]["grad_error"] < 1e-5 and meta[1]["grad_error"] < 1e-5
    w0, w1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    for key in w0:
        if not key.endswith(("_mean", "_variance")):
            np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)


def test_cli_run_under_two_ranks_writes_and_prints_on_rank_0_only(tmp_path):
    """`python -m paddle.distributed.launch --nproc_per_node 2 $(which slim-callbacks) run
    RECIPE` on a tiny --dry-run recipe."""
    import yaml
    from helpers import TINY_RECIPE as TINY
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(TESTS), TESTS, os.environ.get("PYTHONPATH", "")]))
    main = shutil.which("slim-callbacks")   # the console script; the same two lines if absent
    if main is None:
        main = tmp_path / "slim_callbacks_cli.py"
        main.write_text("import sys\nfrom slim_callbacks.app.cli import main\nsys.exit(main())\n")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "log"), str(main), "run", str(recipe), "--dry-run",
           "--output-dir", str(out_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"paddle.distributed.launch could not run: {err}")
    logs = [worker_log(tmp_path, r) for r in (0, 1)]
    assert proc.returncode == 0, (proc.stdout + proc.stderr + "".join(logs))[-3000:]
    assert "FLOPs reduction" in logs[0] and "summary written to" in logs[0]
    assert "FLOPs reduction" not in logs[1] and "summary written" not in logs[1]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["after"]["params"] < summary["before"]["params"]
    assert len(os.listdir(out_dir / "logs")) == 1
    assert "final.pruning.json" in os.listdir(out_dir / "checkpoints")
