"""``slim-callbacks prune-model``: prune a model known only by its exported inference
program, fine-tune it without labels, export it verified.

:func:`prune_model` rebuilds the network from ``model.json`` + ``model.pdiparams``
(:func:`~slim_callbacks.program.load_inference_model`), prunes a copy to a MACs or
latency target (``uniform`` or ``latency`` strategy), fine-tunes it by distillation
from the unpruned network on a folder of images (no labels: the teacher's outputs are
the targets), exports it to ``out`` (checked by Paddle Inference) and writes
``out/summary.json``: ``before``/``after`` (``macs``, ``gflops``, ``params``,
``size_mb``), ``flops_reduction``, ``fidelity`` on held-out images (top-1 agreement
with the original for a classifier, output differences always), ``export`` and
``latency`` as ``slim-callbacks run`` writes them. ``out`` is a run directory as
``run``'s is (:mod:`slim_callbacks.app.prune_model_run`): each fine-tune epoch is saved
there, and ``resume=True`` continues an interrupted run to the same result.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from slim_callbacks.app.deployment import measure_both
from slim_callbacks.app.image_inputs import ImageInputs, Preprocessing, image_files, split_held_out
from slim_callbacks.app.prune_model_ratios import check_strategy, first_output, parse_structure, student_pruner
from slim_callbacks.app.prune_model_run import ELSEWHERE, SUMMARY, PruneRun, check_out, widths
from slim_callbacks.app.report import latency_rows, table
from slim_callbacks.app.report import structure as measure
from slim_callbacks.app.run_dir import locked_directory
from slim_callbacks.callbacks.distill import kd_loss
from slim_callbacks.core.checks import check_int, check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.files import write_atomic
from slim_callbacks.core.progress import progress_bar
from slim_callbacks.deploy.export import export
from slim_callbacks.deploy.runtime import model_prefix
from slim_callbacks.engine.planner import warn_approximate
from slim_callbacks.program import load_inference_model

TARGETS = ("macs", "latency")
STRUCTURE_KEYS = ("macs", "gflops", "params", "size_mb")
FIDELITY_IMAGES = 64
CLIP_NORM = 5.0


def parse_target(text: str) -> Tuple[str, float]:
    """``("macs", 0.5)`` for ``"macs=0.5"`` (remove half the MACs); ``latency=0.3`` too.

    Examples:
        >>> parse_target("macs=0.5"), parse_target("latency=0.3")
        (('macs', 0.5), ('latency', 0.3))
    """
    kind, _, value = str(text).partition("=")
    try:
        share = float(value)
    except ValueError:
        share = None
    if kind not in TARGETS or share is None or not 0 < share < 1:
        raise ConfigError("target", text, "macs=R or latency=R with R in (0, 1), the share "
                                          "to remove, e.g. macs=0.5")
    return kind, share


def prune_model(model, out, target: str = "macs=0.5", *, data=None, epochs: int = 0,
                batch_size: int = 16, lr: float = 0.01, temperature: float = 4.0,
                criterion: str = "l1_norm", strategy: Optional[str] = None,
                structure: Optional[Sequence[str]] = None,
                held_out: float = 0.2,
                input_shape: Optional[Sequence[int]] = None,
                preprocessing: Optional[Preprocessing] = None, latency: bool = True,
                latency_rounds: int = 20, resume: bool = False, progress: Optional[bool] = None,
                emit: Callable[[str], None] = print) -> Dict[str, Any]:
    """Prunes the exported model ``model`` (its directory or prefix) to ``target`` and
    writes the pruned model and ``summary.json`` to the new directory ``out``.

    Args:
        data: a folder of images (any layout, no labels): ``held_out`` of them measure
            fidelity, the rest fine-tune. Without it fidelity is measured on seeded
            random inputs and ``epochs`` must be 0.
        epochs: label-free fine-tune epochs (distillation from the original, at
            ``lr`` with Momentum 0.9, ``temperature`` for classifiers; 0: prune only).
        criterion: which channels go (``l1_norm``, ``fpgm``, ...).
        strategy: how the target becomes ratios; default ``uniform`` for a MACs target
            (one ratio everywhere), ``latency`` for a latency target; ``global`` takes a
            MACs target too (one score threshold across layers); ``sensitive`` (MACs)
            measures each group's sensitivity without labels first (the relative output
            distance to the original on the held-out images, see
            :mod:`~slim_callbacks.app.prune_model_ratios`).
        structure: ``["attention=heads"]``-style options: what a pruning unit spans.
        input_shape: the input shape with batch 1 (needed if the export's is dynamic
            beyond the batch).
        preprocessing: how images become inputs; default: what the export's
            ``inference.yml`` says, else ImageNet evaluation (resize, center crop,
            ImageNet mean and std).
        latency: measure both models' batch-1 latency (Paddle Inference, oneDNN).
        resume: continue the unfinished run in ``out`` from its last saved epoch (same
            target, criterion and strategy; ``epochs`` may grow).
        progress: a progress bar per fine-tune epoch on stderr; None: only on a terminal.

    Returns:
        The summary (also in ``out/summary.json``; :func:`summary_text` is its table).

    Raises:
        ConfigError: a bad argument, or ``out`` holding no run to resume; before
            anything is done.
        SlimError: ``out`` holds files (unless ``resume``) or is in use by another run.
        SlimError: the model cannot be rebuilt or the target cannot be met.
    """
    started = time.time()
    kind, share = parse_target(target)
    epochs = check_int("epochs", epochs, 0, "an int >= 0")
    batch_size = check_int("batch_size", batch_size, 1, "an int >= 1")
    lr = check_number("lr", lr, 0.0)
    if epochs and data is None:
        raise ConfigError("data", None, "a folder of images to fine-tune on (epochs > 0)")
    files = image_files(data) if data is not None else []
    out = check_out(out, resume)
    plan = {"target": {kind: share}, "criterion": criterion,
            "strategy": check_strategy(strategy, kind), "structure": parse_structure(structure)}
    saved = PruneRun(out).load_plan(plan) if resume else None
    prefix = model_prefix(model)
    with locked_directory(out, [out], resume, ELSEWHERE):
        run = PruneRun(out)
        if saved is None:
            run.save_plan(plan)  # out holds a prune-model run from now on
        teacher = load_inference_model(prefix, input_shape)
        shape = list(teacher.input_shape)
        prep = preprocessing or Preprocessing.from_export(prefix)
        train, held = split_held_out(files, held_out) if len(files) > 1 else (files, files)
        probe = ImageInputs(held, shape[1:], prep).batch(FIDELITY_IMAGES) if held else \
            np.random.default_rng(0).standard_normal([8, *shape[1:]]).astype("float32")

        student = copy.deepcopy(teacher)
        pruner = student_pruner(plan["strategy"], kind, share, student, teacher, shape, probe,
                                criterion, plan["structure"], run.file("sensitivities.json"),
                                progress, saved.get("ratios") if saved else None)
        ratios = pruner.ratios
        warn_approximate(pruner.prune_to(pruner.group_ratios, record=False))
        if saved and "widths" in saved:
            run.check_widths(student, saved)
        else:
            run.save_plan({**plan, "ratios": ratios, "widths": widths(student)})
        summary: Dict[str, Any] = {"model": prefix, **plan,
                                   "preprocessing": dataclasses.asdict(prep),
                                   "before": measure(teacher, shape, STRUCTURE_KEYS),
                                   "after": measure(student, shape, STRUCTURE_KEYS)}
        summary["flops_reduction"] = 1 - summary["after"]["macs"] / summary["before"]["macs"]
        emit(f"pruned {prefix}: {summary['flops_reduction']:.1%} fewer MACs "
             f"({kind} target {share:g})")
        on = f"{len(held)} held-out images" if held else "random inputs (no --data)"
        summary["fidelity_pruned"] = fidelity(student, teacher, probe, on)
        if epochs:
            summary["fine_tune"] = fine_tune(student, teacher, ImageInputs(train, shape[1:], prep),
                                             epochs, batch_size, lr, temperature, emit, run=run,
                                             progress=progress)
        summary["fidelity"] = fidelity(student, teacher, probe, on)
        checked = probe[:max(1, len(probe) // shape[0] * shape[0])]
        result = export(student, out, shape, inputs=checked)
        summary["export"] = {"dir": os.fspath(out), "formats": ["paddle"],
                             "max_abs_diff": result.max_abs_diff}
        summary["latency"] = measure_both(prefix, result.prefix, input_shape=shape,
                                          rounds=latency_rounds) if latency else None
        summary["wall_time_s"] = round(time.time() - started, 1)
        path = os.path.join(out, SUMMARY)
        write_atomic(path, json.dumps(summary, indent=1))
        emit(f"pruned model and {SUMMARY} written to {out}")
        return summary


def distill_loss(student_out, teacher_out, temperature: float) -> paddle.Tensor:
    """``kd_loss`` for logits (``[N, classes]``), mean squared error otherwise."""
    if student_out.ndim == 2 and student_out.shape[1] > 1:
        return kd_loss(student_out, teacher_out, temperature)
    return F.mse_loss(student_out, teacher_out.detach())


def fine_tune(student, teacher, images: ImageInputs, epochs: int, batch_size: int, lr: float,
              temperature: float, emit, *, run: Optional[PruneRun] = None,
              progress: Optional[bool] = None, seed: int = 0) -> Dict[str, Any]:
    """Label-free fine-tune: the student learns the teacher's outputs on ``images`` in
    train mode (its BatchNorm statistics follow the pruned network's activations), with
    gradients clipped to a global norm of :data:`CLIP_NORM`; the mean loss of each
    epoch. Epoch ``e`` visits the images in an order drawn from ``(seed, e)``, so a run
    continued from ``run``'s newest saved epoch ends as an uninterrupted one; each epoch
    is saved to ``run``. SlimError if the loss stops being finite."""
    if len(images) == 0:
        raise SlimError("data: no images left to fine-tune on after holding some out")
    optimizer = paddle.optimizer.Momentum(lr, momentum=0.9, parameters=student.parameters(),
                                          grad_clip=paddle.nn.ClipGradByGlobalNorm(CLIP_NORM))
    start, losses = run.restore(student, optimizer) if run else (0, [])
    if start:
        emit(f"resuming the fine-tune after epoch {start} (saved in {run.dir})")
    teacher.eval()
    for epoch in range(start, epochs):
        student.train()
        total = count = 0
        order = np.random.default_rng([seed, epoch]).permutation(len(images))
        steps = range(0, len(order), batch_size)
        with progress_bar(progress, total=len(steps), desc=f"fine-tune {epoch + 1}/{epochs}",
                          unit="batch") as bar:
            for step in steps:
                chosen = order[step:step + batch_size]
                batch = paddle.to_tensor(np.stack([images[i] for i in chosen]))
                loss = _step(student, teacher, batch, optimizer, temperature, epoch, lr)
                total, count = total + loss * len(batch), count + len(batch)
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
        losses.append(total / count)
        if run is not None:
            run.save_epoch(epoch + 1, student, optimizer, losses)
        emit(f"fine-tune epoch {epoch + 1}/{epochs}: distillation loss {losses[-1]:.4f}")
    student.eval()
    return {"epochs": epochs, "images": len(images), "lr": lr, "loss": losses}


def _step(student, teacher, batch, optimizer, temperature: float, epoch: int, lr: float) -> float:
    """One distillation step on ``batch``; its loss."""
    with paddle.no_grad():
        target = first_output(teacher(batch))
    loss = distill_loss(first_output(student(batch)), target, temperature)
    if not np.isfinite(float(loss)):
        raise SlimError(f"fine-tune: the distillation loss is {float(loss)} in epoch "
                        f"{epoch + 1}; lower the learning rate (lr {lr:g}, CLI --lr)")
    loss.backward()
    optimizer.step()
    optimizer.clear_grad()
    return float(loss)


def fidelity(student, teacher, batch: np.ndarray, on: str) -> Dict[str, Any]:
    """How close the student's outputs are to the teacher's on ``batch`` (eval mode):
    top-1 agreement for a classifier, the largest and mean absolute differences."""
    with paddle.no_grad():
        x = paddle.to_tensor(batch)
        teacher.eval()
        student.eval()
        t, s = first_output(teacher(x)).numpy(), first_output(student(x)).numpy()
    out = {"on": on, "images": len(batch), "max_abs_diff": float(np.abs(s - t).max()),
           "mean_abs_diff": float(np.abs(s - t).mean())}
    if t.ndim == 2 and t.shape[1] > 1:
        out["top1_agreement"] = float((s.argmax(1) == t.argmax(1)).mean())
    return out


def summary_text(summary: Dict[str, Any]) -> str:
    """The before/after table ``prune-model`` ends with."""
    b, a = summary["before"], summary["after"]
    rows = [("MACs", f"{b['macs']:,}", f"{a['macs']:,}"),
            ("params", f"{b['params']:,}", f"{a['params']:,}"),
            ("size MB (float32)", f"{b['size_mb']:.1f}", f"{a['size_mb']:.1f}")]
    rows += latency_rows(summary.get("latency"))
    text = table(rows, ("", "original", "pruned"))
    text += f"\nFLOPs reduction: {summary['flops_reduction']:.2%}"
    fid = summary["fidelity"]
    if "top1_agreement" in fid:
        text += (f"\ntop-1 agreement with the original on {fid['on']}: "
                 f"{fid['top1_agreement']:.1%} (after pruning, before any fine-tune: "
                 f"{summary['fidelity_pruned']['top1_agreement']:.1%})")
    return text + f"\nlargest output difference to the original: {fid['max_abs_diff']:.3g}"
