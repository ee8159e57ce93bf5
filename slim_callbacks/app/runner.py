"""The commands: a :class:`~slim_callbacks.app.job.Job` (a validated recipe) run with
``paddle.Model.fit``, checked, planned without training, or analysed for sensitivity.

What a recipe builds is in :mod:`slim_callbacks.app.builders`, the run-directory rules
in :mod:`slim_callbacks.app.run_dir`, the printed tables and plots in
:mod:`slim_callbacks.app.report`. The command line (:mod:`slim_callbacks.app.cli`) is a
thin layer over this module:

- :func:`run` builds everything, evaluates, fits with :class:`PruneCallback` (and
  BN-L1 sparsity, VisualDL logs, checkpoints), evaluates again and writes
  ``summary.json`` (``{"before": {...}, "after": {...}}``) in the run's output directory;
  the resolved recipe is written first, as ``<output_dir>/recipe.yaml`` (what
  ``slim-callbacks export`` rebuilds the network from). Then the recipe's ``deploy``
  section (:mod:`slim_callbacks.app.deployment`): the final model exported, verified,
  to ``<output_dir>/inference/`` and its batch-1 latency next to the original's.
- :func:`dry_run_recipe` shrinks any recipe to 2 epochs x 2 steps of batch 2 on
  synthetic data of its input shape, with its final pruning one-shot at epoch 0.
- :func:`plan` applies the recipe's final pruning to a freshly built network.
- :func:`run_sensitivity` writes the sensitivities file that ``strategy: sensitive``
  recipes read.

Relative paths: ``pruning.sensitivities`` is relative to the directory of the recipe
file (so ``recipes/mobilenetv1/sensitive_*.yaml`` share
``recipes/mobilenetv1/sensitivities/mobilenetv1_l1norm.json`` wherever you run from);
``data.root``, ``data.path``, ``model.pretrained`` and the output directories are
relative to the current directory, as in PaddleClas.

Example:
    >>> from slim_callbacks.app.job import load_job
    >>> job = load_job({"name": "tiny", "model": {"name": "mobilenet_v1",
    ...                 "kwargs": {"scale": 0.25}}, "data": {"source": "synthetic"},
    ...                 "pruning": {"target_flops_reduction": 0.5,
    ...                             "layers": ["conv*._pointwise_conv*"]}})
    >>> result = plan(job)
    >>> abs(result["flops_reduction"] - 0.5) < 0.02
    True
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops import layer_widths, profile
from slim_callbacks.analysis.sensitivity import DEFAULT_RATIOS
from slim_callbacks.app.builders import (
    accuracy_metric,
    build_callbacks,
    build_network,
    build_optimizer,
    check_schedule,
    check_sensitivities_file,
    final_ratios,
    load_pretrained,
    missing_sensitivities_message,
    needs_trained_scales,
    resolved_round_to,
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
from slim_callbacks.app.recipe import load_recipe
from slim_callbacks.app.report import plot_curves, summary_table, write_curves
from slim_callbacks.app.run_dir import check_finite_data, locked_run_directory, resume_checkpoint
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.paddle_utils import is_rank0
from slim_callbacks.deploy.latency_table import NotMeasured, measuring_off

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("acc", "macs", "gflops", "params", "size_mb")
RECIPE_FILE = "recipe.yaml"
PLAN_KEYS = ("macs", "gflops", "gflops_legacy", "params", "size_mb")
DRY_EPOCHS, DRY_STEPS, DRY_BATCH = 2, 2, 2


def eval_accuracy(logs: Dict[str, Any]) -> Dict[str, float]:
    """``{"acc": top-1[, "acc_top5": top-5]}`` from ``Model.evaluate`` logs."""
    out = {}
    for key, value in logs.items():
        if key.startswith("acc"):
            value = float(np.asarray(value).reshape(-1)[0])
            out["acc" if key in ("acc", "acc_top1") else key] = value
    return out


def structure(network: paddle.nn.Layer, input_shape, keys=SUMMARY_KEYS) -> Dict[str, Any]:
    numbers = profile(network, list(input_shape))
    return {k: numbers[k] for k in keys if k in numbers}


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
    notes.append(f"dry run: {DRY_EPOCHS} epochs x {DRY_STEPS} steps of batch {DRY_BATCH} on "
                 f"synthetic {list(job.recipe.input_shape[1:])} data, final pruning one-shot "
                 f"at epoch 0, writing to {out}")
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
    announce_measuring(job, network, emit)
    ratios = final_ratios(job, network)
    callbacks = build_callbacks(job, ratios, verbose, resume_from)
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape)
    check_finite_data({"x_train": train_data, "x_test": eval_data})
    if is_rank0():
        write_recipe(recipe)
    optimizer = build_optimizer(recipe, network)
    input_spec = [paddle.static.InputSpec([None, *recipe.input_shape[1:]], "float32", "image")]
    model = paddle.Model(network, inputs=input_spec)
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), accuracy_metric(recipe.data.num_classes),
                  amp_configs=amp_level(recipe))
    batch, workers = recipe.train.batch_size, recipe.data.num_workers

    before = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                          verbose=0))
    before.update(structure(network, recipe.input_shape))
    model.fit(train_data, eval_data, epochs=recipe.train.epochs, batch_size=batch,
              eval_freq=recipe.train.eval_every, log_freq=recipe.logging.log_freq,
              save_dir=recipe.checkpoint.save_dir, save_freq=recipe.checkpoint.save_freq,
              verbose=verbose, shuffle=True, num_workers=workers, callbacks=callbacks)
    after = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                         verbose=0))
    after.update(structure(network, recipe.input_shape))
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
    return predicted_vs_measured(recipe, fresh, pruner.plan, resolved_round_to(job, fresh), latency)


# ------------------------------------------------------------------------- plan
def planning_network(job: Job, emit: Callable[[str], None]) -> paddle.nn.Layer:
    """The recipe's network as ``run`` starts it: seeded, with the pretrained weights
    when the file exists (else, for ``opt_slim``, stand-in BatchNorm scales)."""
    recipe = job.recipe
    seed_from(recipe)
    network = build_network(recipe)
    pretrained = recipe.model.pretrained
    if pretrained is not None and os.path.isfile(pretrained):
        load_pretrained(network, pretrained)
    elif needs_trained_scales(recipe):
        stand_in_bn_scales(network, recipe.train.seed or 0)
        emit("note: BatchNorm scales drawn in [0.1, 1) as a stand-in for trained weights "
             "(opt_slim ties on initial scales); the structure is illustrative only")
    return network


def announce_measuring(job: Job, network: paddle.nn.Layer, emit: Callable[[str], None]) -> None:
    """One line, before ``strategy: latency`` or ``round_to: auto`` measures: what is
    not in the latency cache and about how long timing it takes
    (:mod:`~slim_callbacks.analysis.latency_estimate`)."""
    from slim_callbacks.analysis.latency_estimate import estimate_measuring
    pruning = job.recipe.pruning
    latency = pruning is not None and pruning.strategy == "latency"
    auto = pruning is not None and pruning.round_to == "auto"
    if not (latency or auto):
        return
    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    estimate = estimate_measuring(network, list(job.recipe.input_shape), latency=latency,
                                  round_auto=auto, layers=layers, skip=list(pruning.skip),
                                  round_to=pruning.round_to, options=pruning.strategy_options)
    what = " with ".join(w for w, on in (("strategy: latency", latency), ("round_to: auto", auto)) if on)
    emit(estimate.line(what))
    deploy = job.recipe.deploy
    timed_keeping = bool(pruning.strategy_options.get("keep_intermediates", False))
    if latency and deploy.latency and timed_keeping != deploy.keep_intermediates:
        emit(f"note: strategy_options.keep_intermediates is {str(timed_keeping).lower()} but "
             f"deploy.keep_intermediates is {str(deploy.keep_intermediates).lower()}: the "
             f"strategy meets its target in the other setting than the one measured at the end")


def _measuring(measure: bool):
    """A block where latency tables may time (``measure``) or answer from the cache only."""
    return contextlib.nullcontext() if measure else measuring_off("--no-measure")


def check(job: Job, emit: Callable[[str], None] = lambda s: None, measure: bool = True) -> None:
    """Builds what :func:`run` builds before loading data: the network (and pretrained
    weights if present), the final ratios and the pruning callback with its schedule,
    so every recipe error ``run`` would meet comes first, before any work. Missing
    files that only ``run`` needs (weights, the sensitivities file) are notes.

    ``strategy: latency`` and ``round_to: auto`` measure on this machine unless the
    latency cache has every timing: a line says how long first; with ``measure=False``
    (``--no-measure``) the cache alone answers, and the final ratios are a note when it
    lacks timings."""
    recipe = job.recipe
    for note in job.notes:
        emit(note)
    pretrained = recipe.model.pretrained
    if pretrained is not None and not os.path.isfile(pretrained):
        emit(f"note: model.pretrained: {pretrained} not found (run needs it)")
    check_deploy(recipe)
    network = planning_network(job, emit)
    path = job.sensitivities_path()
    if path is not None and not os.path.isfile(path):
        emit(f"note: {missing_sensitivities_message(job)}")
        check_schedule(recipe, None)
        return
    if measure:
        announce_measuring(job, network, emit)
    with _measuring(measure):
        try:
            ratios = final_ratios(job, network)
        except NotMeasured as err:
            emit(f"note: final ratios not resolved: {err}")
            check_schedule(recipe, None)
            return
    build_callbacks(job, ratios)


def plan(job: Job, emit: Callable[[str], None] = lambda s: None,
         measure: bool = True) -> Dict[str, Any]:
    """The recipe's final pruning applied to a freshly built network (no training).
    Measuring for ``strategy: latency`` / ``round_to: auto`` is announced first (one
    line); ``measure=False`` answers from the latency cache only and raises
    :class:`~slim_callbacks.deploy.latency_table.NotMeasured` if it lacks a timing.

    Returns ``{"before": {...}, "after": {...}, "flops_reduction", "layers": {name:
    [before, after]}, "ratios", "approximate"}``; ``flops_reduction`` is in MACs;
    ``approximate`` lists the pruned groups whose removal is not exact (LayerNorm).
    """
    from slim_callbacks.engine.planner import prune
    recipe = job.recipe
    check_sensitivities_file(job)
    for note in job.notes:
        emit(note)
    network = planning_network(job, emit)
    shape = list(recipe.input_shape)
    before = structure(network, shape, PLAN_KEYS)
    widths_before = layer_widths(network)
    if measure:
        announce_measuring(job, network, emit)
    with _measuring(measure):
        ratios = final_ratios(job, network)
        round_to = resolved_round_to(job, network) if ratios is not None else None
    approximate = []
    if ratios is not None:
        pruning = recipe.pruning
        done = prune(network, shape, ratios, pruning.criterion, skip=list(pruning.skip),
                     round_to=round_to, fold_bn_shift=pruning.fold_bn_shift,
                     structure=dict(pruning.structure))
        approximate = [{"group": g["name"], "reason": g["approximate"]}
                       for g in done.groups if g.get("approximate")]
    after = structure(network, shape, PLAN_KEYS)
    widths_after = layer_widths(network)
    return {"before": before, "after": after,
            "flops_reduction": 1 - after["macs"] / before["macs"],
            "layers": {name: [w, widths_after.get(name, 0)] for name, w in widths_before.items()},
            "ratios": ratios, "approximate": approximate}


# ------------------------------------------------------------------ sensitivity
def top1_accuracy(network: paddle.nn.Layer, loader) -> float:
    """Share of ``(images, labels)`` batches of ``loader`` whose argmax is the label (eval
    mode, no gradient; the network is left in eval mode)."""
    network.eval()
    correct = total = 0
    with paddle.no_grad():
        for images, labels in loader:
            pred = network(images).argmax(axis=1).numpy()
            correct += int((pred == labels.numpy().reshape(-1)).sum())
            total += len(pred)
    return correct / max(total, 1)


def run_sensitivity(job: Job, *, samples: Optional[int] = None, output: Optional[str] = None,
                    ratios: Sequence[float] = DEFAULT_RATIOS, workers: int = 1,
                    emit: Callable[[str], None] = print) -> Dict[str, Any]:
    """Writes the sensitivities JSON of the recipe's pruned layers (top-1 accuracy on
    the eval data, or ``samples`` of it; with ``pruning.recalibrate_bn: N``, after
    re-estimating BatchNorm statistics on the first N training batches), VisualDL
    curves and a PNG plot; ``workers``
    processes evaluate side by side (see :func:`~slim_callbacks.analysis.sensitivity.sensitivity`)."""
    from slim_callbacks.analysis.sensitivity import sensitivity
    from slim_callbacks.app.data import build_datasets, cap
    recipe, pruning = job.recipe, job.recipe.pruning
    if pruning is None:
        raise ConfigError("pruning", None, "a pruning section (its layers, criterion and "
                          "round_to are what the analysis uses)")
    path = output or job.sensitivities_path() or os.path.join(recipe.output_dir,
                                                               "sensitivities.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    seed_from(recipe)  # initial weights the same each time: a rerun resumes the file
    network = build_network(recipe)
    if recipe.model.pretrained is not None:
        load_pretrained(network, recipe.model.pretrained)
    else:
        emit("note: no model.pretrained: the analysis runs on initial weights")
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape)
    if samples is not None:
        eval_data = cap(eval_data, samples)
    loader = paddle.io.DataLoader(eval_data, batch_size=recipe.train.batch_size, shuffle=False,
                                  num_workers=recipe.data.num_workers)

    def eval_fn(net):
        return top1_accuracy(net, loader)

    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    bn_data = None
    if pruning.recalibrate_bn:  # adaptive BN: statistics from the first training batches
        bn_data = (images for images, _ in paddle.io.DataLoader(
            train_data, batch_size=recipe.train.batch_size, shuffle=False))
        emit(f"BatchNorm statistics re-estimated on {pruning.recalibrate_bn} training "
             f"batches before every evaluation (pruning.recalibrate_bn)")
    started = time.time()
    result = sensitivity(network, eval_fn, list(recipe.input_shape), layers=layers,
                         ratios=list(ratios), criterion=pruning.criterion, file=path,
                         skip=list(pruning.skip), round_to=resolved_round_to(job, network),
                         workers=workers,
                         recalibrate_bn=pruning.recalibrate_bn, bn_data=bn_data)
    emit(f"sensitivities of {len(result)} layers x {len(ratios)} ratios on "
         f"{len(eval_data)} samples in {time.time() - started:.1f} s -> {path}")
    from slim_callbacks.callbacks.visualdl import new_session_dir
    log_dir = new_session_dir(recipe.logging.log_dir, "sensitivity")  # sensitivity-2 on a rerun
    write_curves(result, log_dir)
    emit(f"VisualDL curves (one chart per layer) -> {log_dir}")
    png = os.path.splitext(path)[0] + ".png"
    if plot_curves(result, png):
        emit(f"plot -> {png}")
    else:
        emit("note: matplotlib is not installed: no PNG plot (pip install matplotlib)")
    return {"file": path, "log_dir": log_dir, "sensitivities": result}
