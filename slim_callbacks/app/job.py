"""A job: a validated recipe plus where it came from, what every command works on.

:func:`load_job` loads a recipe file or mapping with ``-o`` overrides; the job keeps
the directory that the recipe's relative ``pruning.sensitivities`` path is resolved
against, and notes to show the user (a class count inferred from the data, what a dry
run changed).

Examples:
    >>> job = load_job({"name": "j", "model": {"name": "lenet"},
    ...                 "data": {"source": "mnist"}}, ["train.epochs=2"])
    >>> job.recipe.train.epochs, job.sensitivities_path(), job.notes
    (2, None, ())
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Job:
    """A validated recipe plus the directory its relative ``sensitivities`` path
    is resolved against, and notes to show the user (e.g. what a dry run changed)."""

    recipe: Recipe
    base_dir: str = "."
    source: Optional[str] = None
    notes: tuple = ()
    dry_run: bool = False

    def sensitivities_path(self) -> Optional[str]:
        """``pruning.sensitivities`` resolved against the recipe file's directory."""
        pruning = self.recipe.pruning
        if pruning is None or pruning.sensitivities is None:
            return None
        return os.path.normpath(os.path.join(self.base_dir, pruning.sensitivities))


def load_job(path_or_dict, overrides: Sequence[str] = (), *,
             untrained_teacher: bool = False) -> Job:
    """Load and validate a recipe (file or mapping) with ``-o`` style overrides; an
    ``npz`` recipe without ``num_classes`` takes it from its labels (a note says so).
    ``untrained_teacher=True`` lets distillation's default teacher teach a network
    trained from scratch (benchmarks measure what that costs; see
    :func:`check_default_teacher`)."""
    recipe = load_recipe(path_or_dict, overrides)
    if not untrained_teacher:
        check_default_teacher(recipe)
    recipe, notes = infer_num_classes(recipe)
    if isinstance(path_or_dict, (str, os.PathLike)):
        path = os.fspath(path_or_dict)
        return Job(recipe, os.path.dirname(os.path.abspath(path)), path, notes)
    return Job(recipe, os.getcwd(), notes=notes)


def check_default_teacher(recipe: Recipe) -> None:
    """Distillation's default teacher is the network right before the first pruning
    event; trained from scratch it has not finished learning then (on MNIST it cost 3.1
    points of top-1, see the accuracy guide), so such a recipe must name a teacher.
    (A dry run drops the teacher and the weights after this check.)

    Examples:
        >>> load_job({"name": "j", "model": {"name": "lenet"}, "data": {"source": "mnist"},
        ...           "pruning": {"ratios": 0.5, "distill": {"alpha": 0.5}}})
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.ConfigError: pruning.distill.teacher: None is not allowed; ...
    """
    pruning = recipe.pruning
    distill = pruning.distill if pruning is not None else None
    if distill is None or distill.teacher is not None or recipe.model.pretrained is not None:
        return
    raise ConfigError("pruning.distill.teacher", None,
                      "a trained teacher (e.g. teacher: output/base/checkpoints/final.pdparams) "
                      "when model.pretrained is null: the default teacher, the network right "
                      "before the first pruning event, has not finished learning when the "
                      "network trains from scratch")


def infer_num_classes(recipe: Recipe):
    """``(recipe, notes)``: for ``data.source: npz`` with no ``data.num_classes`` (nor
    ``model.kwargs.num_classes``), the class count is the largest label + 1, so the
    model's head fits the data instead of the model's default (1000)."""
    from slim_callbacks.app.array_data import npz_num_classes
    data = recipe.data
    if data.source != "npz" or data.num_classes is not None or not os.path.isfile(data.path):
        return recipe, ()
    classes, largest = npz_num_classes(data.path)
    raw = recipe.to_dict()
    raw["data"]["num_classes"] = classes
    note = f"data: {classes} classes inferred from labels 0..{largest} of {data.path}"
    return load_recipe(raw), (note,)
