"""``slim-callbacks sensitivity``: the sensitivities file that ``strategy: sensitive``
recipes read, measured on the recipe's network and eval data (top-1 per pruned group
and ratio), with VisualDL curves and a PNG."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Sequence

import paddle

from slim_callbacks.analysis.sensitivity import DEFAULT_RATIOS
from slim_callbacks.app.builders import (
    build_network,
    load_pretrained,
    seed_from,
)
from slim_callbacks.app.job import Job
from slim_callbacks.app.report import plot_curves, write_curves
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.pruner import Pruner

logger = logging.getLogger(__name__)


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

    bn_data = None
    if pruning.recalibrate_bn:  # adaptive BN: statistics from the first training batches
        bn_data = (images for images, _ in paddle.io.DataLoader(
            train_data, batch_size=recipe.train.batch_size, shuffle=False))
        emit(f"BatchNorm statistics re-estimated on {pruning.recalibrate_bn} training "
             f"batches before every evaluation (pruning.recalibrate_bn)")
    started = time.time()
    pruner = Pruner(network, recipe.example_inputs, pruning.spec(job.sensitivities_path()))
    result = pruner.sensitivity(eval_fn, list(ratios), file=path, workers=workers,
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


