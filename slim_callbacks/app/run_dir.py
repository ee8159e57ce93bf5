"""The run directory of a recipe: what must hold before a run writes to it.

A run writes to ``output_dir`` (and the checkpoint and log directories, if elsewhere):
they must be writable and, unless the run resumes, hold no earlier run; rank 0 holds an
exclusive lock on ``<output_dir>/.lock`` for the whole run. Also: which checkpoint a
``--resume`` continues from, and that in-memory data holds no NaN/Inf.

Examples:
    >>> import tempfile
    >>> from slim_callbacks.app.schema import Recipe
    >>> out = tempfile.mkdtemp()
    >>> recipe = Recipe(name="r", output_dir=out, model={"name": "lenet"},
    ...                 data={"source": "mnist"})
    >>> with locked_run_directory(recipe, resume=False):
    ...     sorted(os.listdir(out))
    ['.lock', 'checkpoints', 'logs']
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any, Dict, List

import numpy as np

from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.files import make_writable_dir
from slim_callbacks.core.paddle_utils import is_rank0

LOCK_FILE = ".lock"


def run_directories(recipe: Recipe) -> List[str]:
    """The output directory, and the checkpoint and log directories if elsewhere."""
    dirs = [recipe.output_dir, recipe.checkpoint.save_dir]
    if recipe.logging.visualdl:
        dirs.append(recipe.logging.log_dir)
    return list(dict.fromkeys(os.path.normpath(d) for d in dirs))


def check_writable(directory: str) -> None:
    """Creates ``directory`` and writes a probe file in it; SlimError if it cannot."""
    make_writable_dir(directory, "output directory", "choose another with -o output_dir=DIR")


def holds_files(path: str) -> bool:
    return not os.path.isdir(path) or any(holds_files(os.path.join(path, n)) for n in os.listdir(path))


def check_fresh(recipe: Recipe) -> None:
    """SlimError if a run directory already holds files (of an earlier run)."""
    check_fresh_dirs(run_directories(recipe), "-o output_dir=DIR")


def check_fresh_dirs(directories: List[str], elsewhere: str) -> None:
    """SlimError if one of ``directories`` holds files (besides the lock): continue with
    ``--resume`` or write ``elsewhere`` (how the command names another directory)."""
    for directory in filter(os.path.isdir, directories):
        found = sorted(n for n in os.listdir(directory)
                       if n != LOCK_FILE and holds_files(os.path.join(directory, n)))
        if found:
            raise SlimError(f"{directory} already holds a run ({', '.join(found[:3])}"
                            f"{', ...' if len(found) > 3 else ''}): continue it with --resume, "
                            f"or write elsewhere with {elsewhere} (or delete {directory})")


@contextlib.contextmanager
def locked_run_directory(recipe: Recipe, resume: bool):
    """On rank 0: checks the run directories are writable (and, unless ``resume``,
    empty), then holds an exclusive lock on ``<output_dir>/.lock`` for the run."""
    if not is_rank0():
        yield
        return
    with locked_directory(recipe.output_dir, run_directories(recipe), resume,
                          "-o output_dir=DIR"):
        yield


@contextlib.contextmanager
def locked_directory(output_dir: str, directories: List[str], resume: bool, elsewhere: str):
    """Checks ``directories`` (``output_dir`` first) are writable and, unless ``resume``,
    empty, then holds an exclusive lock on ``<output_dir>/.lock`` for the run."""
    make_writable_dir(output_dir, "output directory", f"choose another with {elsewhere}")
    lock_path = os.path.join(output_dir, LOCK_FILE)
    with open(lock_path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SlimError(f"{output_dir} is in use by another run (it holds "
                            f"{lock_path}): wait for it, or write elsewhere with "
                            f"{elsewhere}") from None
        if not resume:
            check_fresh_dirs(directories, elsewhere)
        for directory in directories:
            make_writable_dir(directory, "output directory", f"choose another with {elsewhere}")
        yield


def resume_checkpoint(recipe: Recipe) -> str:
    """The newest complete checkpoint of the recipe's run, for ``--resume``."""
    from slim_callbacks.callbacks.ledger import latest_checkpoint
    if recipe.pruning is None:
        raise ConfigError("--resume", True, "a recipe with a pruning section (the pruning "
                          "ledger is what a run resumes from)")
    summary = os.path.join(recipe.output_dir, "summary.json")
    if os.path.exists(summary):
        raise SlimError(f"the run in {recipe.output_dir} is finished ({summary} exists): "
                        f"nothing to resume")
    return latest_checkpoint(recipe.checkpoint.save_dir)


def check_finite_data(datasets: Dict[str, Any]) -> None:
    """ConfigError naming the array and the first image with NaN/Inf in in-memory data."""
    for name, dataset in datasets.items():
        images = getattr(dataset, "images", None)
        if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
            continue
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise ConfigError("data", f"{name}[{int(np.argmax(bad))}] holds NaN/Inf",
                              f"finite pixel values in every image ({int(bad.sum())} "
                              f"bad images in {name})")
