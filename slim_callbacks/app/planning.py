"""The commands that answer without training: ``check`` (the resolved recipe, or its
first error) and ``plan`` (the structure the recipe ends with, on a freshly built
network), and the up-front line before ``strategy: latency`` / ``round_to: auto``
measures on this machine.

Examples:
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
import logging
import os
from typing import Any, Callable, Dict

import paddle

from slim_callbacks.analysis.flops import layer_widths
from slim_callbacks.app.builders import (
    build_callbacks,
    build_network,
    check_schedule,
    check_sensitivities_file,
    load_pretrained,
    missing_sensitivities_message,
    needs_trained_scales,
    recipe_pruner,
    seed_from,
    stand_in_bn_scales,
)
from slim_callbacks.app.deployment import (
    check_deploy,
)
from slim_callbacks.app.job import Job
from slim_callbacks.app.report import structure
from slim_callbacks.latency.table import NotMeasured, measuring_off

logger = logging.getLogger(__name__)


PLAN_KEYS = ("macs", "gflops", "gflops_legacy", "params", "size_mb")


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


def announce_measuring(job: Job, pruner, emit: Callable[[str], None]) -> None:
    """One line, before ``strategy: latency`` or ``round_to: auto`` measures: what is
    not in the latency cache and about how long timing it takes
    (:mod:`~slim_callbacks.latency.estimate`, on the recipe pruner's trace)."""
    from slim_callbacks.latency.estimate import estimate_measuring
    pruning = job.recipe.pruning
    latency = pruning is not None and pruning.strategy == "latency"
    auto = pruning is not None and pruning.round_to == "auto"
    if not (latency or auto):
        return
    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    estimate = estimate_measuring(pruner.network, job.recipe.example_inputs, latency=latency,
                                  round_auto=auto, layers=layers, skip=list(pruning.skip),
                                  round_to=pruning.round_to, options=pruning.strategy_options,
                                  graph=pruner.graph)
    what = " with ".join(w for w, on in (("strategy: latency", latency), ("round_to: auto", auto)) if on)
    emit(estimate.line(what))
    deploy = job.recipe.deploy
    timed_keeping = bool(pruning.strategy_options.get("keep_intermediates", False))
    if latency and deploy.latency and timed_keeping != deploy.keep_intermediates:
        emit(f"note: strategy_options.keep_intermediates is {str(timed_keeping).lower()} but "
             f"deploy.keep_intermediates is {str(deploy.keep_intermediates).lower()}: the "
             f"strategy meets its target in the other setting than the one measured at the end")


def announcer(job: Job, emit: Callable[[str], None], measure: bool = True):
    """``recipe_pruner``'s ``announce``: the measuring line, unless ``measure`` is off."""
    return (lambda pruner: announce_measuring(job, pruner, emit)) if measure else None


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
    with _measuring(measure):
        try:
            pruner = recipe_pruner(job, network, announcer(job, emit, measure))
        except NotMeasured as err:
            emit(f"note: final ratios not resolved: {err}")
            check_schedule(recipe, None)
            return
    build_callbacks(job, pruner)


def plan(job: Job, emit: Callable[[str], None] = lambda s: None,
         measure: bool = True) -> Dict[str, Any]:
    """The recipe's final pruning applied to a freshly built network (no training).
    Measuring for ``strategy: latency`` / ``round_to: auto`` is announced first (one
    line); ``measure=False`` answers from the latency cache only and raises
    :class:`~slim_callbacks.latency.table.NotMeasured` if it lacks a timing.

    Returns ``{"before": {...}, "after": {...}, "flops_reduction", "layers": {name:
    [before, after]}, "ratios", "approximate"}``; ``flops_reduction`` is in MACs;
    ``approximate`` lists the pruned groups whose removal is not exact (LayerNorm).
    """
    from slim_callbacks.engine.planner import warn_approximate
    recipe = job.recipe
    check_sensitivities_file(job)
    for note in job.notes:
        emit(note)
    network = planning_network(job, emit)
    shape = recipe.example_inputs
    before = structure(network, shape, PLAN_KEYS)
    widths_before = layer_widths(network)
    with _measuring(measure):  # strategy and round_to resolved once
        pruner = recipe_pruner(job, network, announcer(job, emit, measure))
    approximate = []
    if pruner is not None:
        done = pruner.prune_to(pruner.group_ratios, record=False)
        warn_approximate(done)
        approximate = [{"group": g["name"], "reason": g["approximate"]}
                       for g in done.groups if g.get("approximate")]
    after = structure(network, shape, PLAN_KEYS)
    widths_after = layer_widths(network)
    return {"before": before, "after": after,
            "flops_reduction": 1 - after["macs"] / before["macs"],
            "layers": {name: [w, widths_after.get(name, 0)] for name, w in widths_before.items()},
            "ratios": None if pruner is None else pruner.ratios, "approximate": approximate}


