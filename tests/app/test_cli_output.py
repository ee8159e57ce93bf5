"""The command's own output: no repeated Paddle warnings, --quiet and -v, --version, an
example in every subcommand's --help."""
import os
import subprocess
import sys
import warnings

import pytest
import yaml
from helpers import ROOT, TINY_RECIPE

from slim_callbacks.app.cli import COMMANDS, main
from slim_callbacks.core.quiet import OMP_LINES, PADDLE_WARNINGS
from slim_callbacks.core.version import package_version

FILTERED = (*PADDLE_WARNINGS, *OMP_LINES)
# The quickstart recipe on a tiny override: 64 training images, 3 epochs, two AGP events.
TINY_QUICKSTART = ["-o", "data.train_samples=64", "-o", "data.samples=32",
                   "-o", "train.epochs=3", "-o", "train.batch_size=16",
                   "-o", "pruning.schedule={kind: agp, start_epoch: 0, end_epoch: 1, frequency: 1}",
                   "-o", "checkpoint.save_freq=1", "--no-latency"]


def command(*argv, omp_threads="2"):
    env = {**os.environ, "OMP_NUM_THREADS": omp_threads, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "slim_callbacks", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_quickstart_command_prints_none_of_the_filtered_paddle_lines(tmp_path):
    done = command("run", "quickstart", *TINY_QUICKSTART, "--output-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FLOPs reduction:" in done.stdout
    assert "INFO slim_callbacks.callbacks.prune: epoch 1: pruned" in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(FILTERED) or
            any(text in line for text in FILTERED)] == []
    # what the same Python prints outside the command (so the check above can fail)
    outside = subprocess.run([sys.executable, "-c", "import slim_callbacks"], cwd=ROOT,
                             env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": ROOT},
                             capture_output=True, text=True, timeout=120)
    assert [line for line in outside.stderr.splitlines() if line.startswith(OMP_LINES)] != []


def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_RECIPE, "output_dir": str(tmp_path / "out")}))
    return str(path)


def run_recording(capsys, *argv):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err, [str(w.message) for w in caught]


def test_quiet_run_prints_only_the_final_table(capsys, tmp_path):
    code, out, err, shown = run_recording(capsys, "run", tiny_recipe(tmp_path), "-q")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["before", "after"] and lines[-1].startswith("FLOPs reduction:")
    assert "save checkpoint" not in out and "Epoch" not in out
    assert "INFO" not in err
    assert not any(message.startswith(PADDLE_WARNINGS) for message in shown)


def test_debug_shows_debug_lines_and_paddles_warnings(capsys, tmp_path):
    code, _, err, shown = run_recording(capsys, "run", tiny_recipe(tmp_path), "-v",
                                        "--verbose", "0")
    assert code == 0, err
    assert "DEBUG slim_callbacks." in err
    assert any(message.startswith(PADDLE_WARNINGS[0]) for message in shown)


def test_quiet_and_debug_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check", "-q", "-v"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"slim-callbacks {package_version()} (paddle ")
    assert package_version() != "not installed"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_help_has_an_example(capsys, name):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    example = out.split("Example:\n", 1)[1]
    assert example.strip().startswith(f"slim-callbacks {name}")
    assert "--quiet" in out and "--debug" in out
