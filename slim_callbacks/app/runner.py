"""``slim-callbacks run``: a :class:`~slim_callbacks.app.job.Job` (a validated recipe)
run with ``paddle.Model.fit``.

What a recipe builds is in :mod:`slim_callbacks.app.builders`, the run-directory rules
in :mod:`slim_callbacks.app.run_dir`, the printed tables and plots in
:mod:`slim_callbacks.app.report`; ``check`` and ``plan`` are in
:mod:`slim_callbacks.app.planning`, ``sensitivity`` in
:mod:`slim_callbacks.app.sensitivity_command`. The command line
(:mod:`slim_callbacks.app.cli`) is a thin layer over these:

- :func:`run` builds everything, evaluates, fits with :class:`PruneCallback` (and
  BN-L1 sparsity, VisualDL logs, checkpoints), evaluates again and writes
  ``summary.json`` (``{"before": {...}, "after": {...}}``) in the run's output directory;
  the resolved recipe is written first, as ``<output_dir>/recipe.yaml`` (what
  ``slim-callbacks export`` rebuilds the network from). Then the recipe's ``deploy``
  section (:mod:`slim_callbacks.app.deployment`): the final model exported, verified,
  to ``<output_dir>/inference/`` and its batch-1 latency next to the original's.
- :func:`dry_run_recipe` shrinks any recipe to 2 epochs x 2 steps of batch 2 on
  synthetic data of its input shape, with its final pruning one-shot at epoch 0.

Relative paths: ``pruning.sensitivities`` is relative to the directory of the recipe
file (so ``recipes/mobilenetv1/sensitive_*.yaml`` share
``recipes/mobilenetv1/sensitivities/mobilenetv1_l1norm.json`` wherever you run from);
``data.root``, ``data.path``, ``model.pretrained`` and the output directories are
relative to the current directory, as in PaddleClas.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional

import numpy as np
import paddle

from slim_callbacks.app.builders import (
    accuracy_metric,
    build_callbacks,
    build_network,
    build_optimizer,
    check_sensitivities_file,
    load_pretrained,
    needs_trained_scales,
    recipe_pruner,
    seed_from,
    stand_in_bn_scales,
)
from slim_callbacks.app.deployment import (
    check_deploy,
    deploy_run,
    log_latency,
    predicted_vs_measured,
    verification_batch,
)
from slim_callbacks.app.job import Job
from slim_callbacks.app.planning import announcer
from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.app.report import structure, summary_table
from slim_callbacks.app.run_dir import check_finite_data, locked_run_directory, resume_checkpoint
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import is_rank0

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
DRY_EPOCHS, DRY_STEPS, DRY_BATCH = 2, 2, 2


def eval_accuracy(logs: Dict[str, Any]) -> Dict[str, float]:
    """``{"acc": top-1[, "acc_top5": top-5]}`` from ``Model.evaluate`` logs."""
    out = {}
    for key, value in logs.items():
        if key.startswith("acc"):
            value = float(np.asarray(value).reshape(-1)[0])
            out["acc" if key in ("acc", "acc_top1") else key] = value
    return out




# -------------------------------------------------------------------------- run
def dry_run_recipe(job: Job, output_dir: Optional[str] = None) -> Job:
    """The recipe shrunk for a dry run: synthetic data of its input shape, 2 epochs of
    2 steps at batch 2, no pretrained weights, the final pruning one-shot at epoch 0."""
    raw = job.recipe.to_dict()
    notes = []
    out = output_dir or tempfile.mkdtemp(prefix=f"slim-dry-{job.recipe.name}-")
    raw["output_dir"] = out
    raw["logging"]["log_dir"] = os.path.join(out, "logs")
    raw["logging"]["log_freq"] = 1
    raw["checkpoint"]["save_dir"] = os.path.join(out, "checkpoints")
    raw["checkpoint"]["save_freq"] = 1
    if raw["model"].get("pretrained"):
        notes.append(f"dry run: pretrained weights {raw['model']['pretrained']} ignored")
        raw["model"]["pretrained"] = None
    distill = (raw.get("pruning") or {}).get("distill") or {}
    if distill.get("teacher"):
        notes.append("dry run: pruning.distill.teacher ignored (the network right before its "
                     "first pruning event teaches)")
        distill["teacher"] = None
    data = raw["data"]
    raw["data"] = {"source": "synthetic", "num_classes": data["num_classes"],
                   "image_size": data["image_size"], "train_samples": DRY_STEPS * DRY_BATCH,
                   "samples": DRY_BATCH}
    train = raw["train"]
    train.update(epochs=DRY_EPOCHS, batch_size=DRY_BATCH, eval_every=1)
    if train["lr"]["schedule"] == "piecewise":
        train["lr"]["milestones"] = [1]
    pruning = raw.get("pruning")
    if pruning is not None:
        pruning["schedule"] = {"kind": "oneshot", "epoch": 0}
        if pruning["strategy"] == "sensitive" and not os.path.isfile(job.sensitivities_path()):
            notes.append(f"dry run: no sensitivities file {job.sensitivities_path()}; a uniform "
                         f"ratio to the same FLOPs target stands in")
            pruning.update(strategy="uniform", sensitivities=None)
    of = (list(job.recipe.input_shape[1:]) if job.recipe.model.inputs is None else
          ", ".join(f"{e['name']} {e['dtype']}{e['shape'][1:]}" for e in job.recipe.model.inputs))
    notes.append(f"dry run: {DRY_EPOCHS} epochs x {DRY_STEPS} steps of batch {DRY_BATCH} on "
                 f"synthetic {of} data, final pruning one-shot at epoch 0, writing to {out}")
    return Job(load_recipe(raw), job.base_dir, job.source, job.notes + tuple(notes), dry_run=True)


def amp_level(recipe: Recipe) -> Optional[str]:
    """``train.amp`` for ``Model.prepare(amp_configs=...)``; on CPU Paddle's AMP does
    nothing (training stays float32), which is said once here."""
    level = recipe.train.amp
    if level is not None and paddle.get_device().startswith("cpu"):
        logger.warning("train.amp %s has no effect on CPU (Paddle's AMP needs a GPU, XPU or "
                       "custom device): training in float32", level)
    return level


def write_summary(path: str, summary: Dict[str, Any]) -> None:
    from slim_callbacks.core.files import write_atomic
    write_atomic(path, json.dumps(summary, indent=1))


def write_recipe(recipe: Recipe) -> str:
    """``<output_dir>/recipe.yaml``: the resolved recipe of the run."""
    from slim_callbacks.core.files import write_atomic
    path = os.path.join(recipe.output_dir, RECIPE_FILE)
    write_atomic(path, recipe.to_yaml())
    return path


def run(job: Job, *, verbose: int = 2, emit: Callable[[str], None] = print,
        resume: bool = False) -> Dict[str, Any]:
    """Train and prune as the recipe says; returns (and, on rank 0, writes and prints)
    the summary.

    The run directories must be empty unless ``resume``, which continues from the
    newest complete checkpoint; ``<output_dir>/.lock`` is held for the run.
    """
    with locked_run_directory(job.recipe, resume):
        return _run(job, verbose, emit if is_rank0() else (lambda text: None), resume)


def _run(job: Job, verbose: int, emit: Callable[[str], None], resume: bool) -> Dict[str, Any]:
    recipe = job.recipe
    check_sensitivities_file(job)
    check_deploy(recipe)
    resume_from = resume_checkpoint(recipe) if resume else None
    started = time.time()
    for note in job.notes:
        emit(note)
    if resume_from is not None:
        emit(f"resuming from {resume_from}")
    seed_from(recipe)
    from slim_callbacks.app.data import build_datasets
    network = build_network(recipe)
    if recipe.model.pretrained is not None:
        load_pretrained(network, recipe.model.pretrained)
    elif job.dry_run and needs_trained_scales(recipe):
        stand_in_bn_scales(network, recipe.train.seed or 0)
        emit(f"dry run: BatchNorm scales drawn in [0.1, 1) as a stand-in for trained weights "
             f"(criterion {recipe.pruning.criterion} ties on initial scales)")
    prepared = recipe_pruner(job, network, announcer(job, emit))  # resolved and traced once
    callbacks = build_callbacks(job, prepared, verbose, resume_from)
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape, recipe.model.inputs)
    check_finite_data({"x_train": train_data, "x_test": eval_data})
    if is_rank0():
        write_recipe(recipe)
    optimizer = build_optimizer(recipe, network)
    input_spec = ([paddle.static.InputSpec([None, *recipe.input_shape[1:]], "float32", "image")]
                  if recipe.model.inputs is None else
                  as_inputs(recipe.example_inputs).input_specs(network, dynamic_batch=True))
    model = paddle.Model(network, inputs=input_spec)
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), accuracy_metric(recipe.data.num_classes),
                  amp_configs=amp_level(recipe))
    batch, workers = recipe.train.batch_size, recipe.data.num_workers

    before = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                          verbose=0))
    before.update(structure(network, recipe.example_inputs))
    model.fit(train_data, eval_data, epochs=recipe.train.epochs, batch_size=batch,
              eval_freq=recipe.train.eval_every, log_freq=recipe.logging.log_freq,
              save_dir=recipe.checkpoint.save_dir, save_freq=recipe.checkpoint.save_freq,
              verbose=verbose, shuffle=True, num_workers=workers, callbacks=callbacks)
    after = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                         verbose=0))
    after.update(structure(network, recipe.example_inputs))
    summary = {"recipe": recipe.name, "before": before, "after": after,
               "flops_reduction": 1 - after["macs"] / before["macs"],
               "wall_time_s": round(time.time() - started, 1),
               "output_dir": recipe.output_dir}
    budget = budget_summary(callbacks)
    if budget is not None:
        summary["budget"] = budget
        emit(f"max_metric_drop {budget['max_metric_drop']:g}: reached mean target "
             f"{budget['reached']:.4f} of {budget['target']:.4f} ({len(budget['undone'])} "
             f"events undone{', stopped' if budget['stopped'] else ''})")
    if is_rank0():
        summary.update(_deploy(job, network, eval_data, emit))
        pruner = next((cb for cb in callbacks if hasattr(cb, "plan")), None)
        if recipe.pruning is not None and recipe.pruning.round_to == "auto" and pruner:
            summary["round_to_auto"] = pruner.round_to  # the multiple measured for this machine
        if recipe.pruning is not None and recipe.pruning.strategy == "latency" and pruner:
            summary["latency_strategy"] = _latency_strategy(job, pruner, summary.get("latency"))
    path = os.path.join(recipe.output_dir, "summary.json")
    if is_rank0():
        write_summary(path, summary)
    emit(summary_table(summary))
    emit(f"summary written to {path}")
    return summary


def budget_summary(callbacks) -> Optional[Dict[str, Any]]:
    """The accuracy budget's outcome (``PruneCallback.budget_summary``), or None."""
    from slim_callbacks.callbacks import PruneCallback
    for callback in callbacks:
        if isinstance(callback, PruneCallback):
            return callback.budget_summary()
    return None


def _deploy(job: Job, network: paddle.nn.Layer, eval_data, emit) -> Dict[str, Any]:
    """The final model exported (and its latency next to the original's), as the
    recipe's ``deploy`` section says; the summary's ``export`` and ``latency``."""
    recipe = job.recipe

    def original():
        seed_from(recipe)
        fresh = build_network(recipe)
        if recipe.model.pretrained is not None:
            load_pretrained(fresh, recipe.model.pretrained)
        return fresh
    deployed = deploy_run(recipe, network, original,
                          None if recipe.model.inputs else
                          verification_batch(eval_data, int(recipe.input_shape[0])),
                          dry_run=job.dry_run, emit=emit)
    if recipe.logging.visualdl:
        log_latency(recipe.logging.log_dir, deployed["latency"], recipe.train.epochs - 1)
    return deployed


def _latency_strategy(job: Job, pruner, latency) -> Dict[str, Any]:
    """Predicted (the strategy's model) vs measured latency of the final plan."""
    recipe = job.recipe
    seed_from(recipe)
    fresh = build_network(recipe)
    return predicted_vs_measured(recipe, fresh, pruner.plan, pruner.round_to, latency)














