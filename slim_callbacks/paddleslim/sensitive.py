"""The sensitivity analysis of PaddleSlim's ``FilterPruner.sensitive()``, keyed by
parameter name, run by the engine's analysis
(:class:`~slim_callbacks.analysis.sensitivity.GroupAnalysis`: masking, prefix cache),
and the ratios that reach a FLOPs target from it
(:func:`~slim_callbacks.analysis.sensitive_strategy.sensitive_ratios`).

Each target parameter (the weight of a conv whose output channels can be pruned) is
analysed as PaddleSlim does: its coupled group, ranked by that parameter alone
(``coupled_scoring="named"``), at ratios 0.1 ... 0.9; the loss is
``(base - metric) / |base|`` (PaddleSlim divides by ``base + 1e-3``). The table is
saved as JSON (:class:`~slim_callbacks.paddleslim.status.Status`) after every
evaluation, and a run resumes from what the file already holds.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from slim_callbacks.analysis.maskers import NetworkState
from slim_callbacks.analysis.sensitive_strategy import sensitive_ratios
from slim_callbacks.analysis.sensitivity import DEFAULT_RATIOS, GroupAnalysis, evaluate, run_groups
from slim_callbacks.analysis.sensitivity_file import Record
from slim_callbacks.engine.criteria import Criterion
from slim_callbacks.engine.planner import scored_by
from slim_callbacks.paddleslim.status import Status
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph


def conv_targets(graph: DependencyGraph, layers) -> Dict[str, Tuple[str, ChannelGroup]]:
    """Weight name -> (conv layer, its group) for every conv producer of a prunable group,
    in network order: what PaddleSlim's ``sensitive()`` analyses by default."""
    out = {}
    for group in graph.prunable_groups():
        for layer in group.producers:
            if "Conv" in graph.layer_types.get(layer, "") and "weight" in layers[layer]._parameters:
                out[layers[layer].weight.name] = (layer, group)
    return out


class StatusRecord(Record):
    """The engine's record (keyed by layer) that saves itself as a :class:`Status`
    (keyed by weight name) after every evaluation."""

    def __init__(self, criterion: str, ratios: List[float], round_to: int,
                 status: Optional[Status] = None, names: Optional[Dict[str, str]] = None):
        super().__init__(criterion, ratios, round_to)
        self.status, self.names = status or Status(), dict(names or {})  # layer -> weight name

    def save(self, path: Optional[str]) -> None:
        for layer, losses in self.losses.items():
            self.status.sensitivies.setdefault(self.names[layer], {}).update(losses)
        self.status.save(path)


def analyse(model, eval_func: Callable[[], float], graph: DependencyGraph, layers,
            status: Status, criterion: Criterion, targets: Sequence[str],
            sen_file: Optional[str], round_to: int = 1) -> None:
    """Fills ``status`` with the losses of every weight of ``targets`` it lacks."""
    convs = conv_targets(graph, layers)
    ratios = list(DEFAULT_RATIOS)
    views, names = [], {}
    for name in targets:
        layer, group = convs[name]
        others = tuple(p for p in group.producers if p != layer)
        views.append(dataclasses.replace(scored_by(group, [layer]), producers=(layer,) + others))
        names[layer] = name
    record = StatusRecord(criterion.name, ratios, round_to, status, names)
    for layer, name in names.items():
        record.losses[layer] = {r: l for r, l in status.sensitivies.get(name, {}).items() if r in ratios}
    views = [v for v in views if len(record.losses[v.name]) < len(ratios)]
    if not views:
        return
    state = NetworkState(model)
    run = lambda network: eval_func()  # noqa: E731  (PaddleSlim's eval_func takes nothing)
    try:
        record.base = evaluate(run, model, state)
        state.restore()
        analysis = GroupAnalysis(model, run, graph, record, criterion, state, "mask")
        run_groups(analysis, views, sen_file, progress=False)
    finally:
        state.restore()


def group_curves(graph: DependencyGraph, layers, sensitivities,
                 skip_vars: Sequence[str]) -> Tuple[Dict[str, dict], Dict[str, str]]:
    """``({group: {ratio: loss}}, {group: weight name})`` from a table keyed by weight
    name: a group takes the curve of its first analysed weight."""
    convs = conv_targets(graph, layers)
    curves, names = {}, {}
    for name, losses in sensitivities.items():
        if name in skip_vars or name not in convs or not losses:
            continue
        group = convs[name][1].name
        if group not in curves:
            curves[group], names[group] = dict(losses), name
    return curves, names


def ratios_by_sensitivity(model, input_shape, graph: DependencyGraph, layers, sensitivities,
                          pruned_flops: float, criterion, skip_vars: Sequence[str],
                          align: Optional[int]) -> Dict[str, float]:
    """``{weight name: ratio}`` that removes ``pruned_flops`` of the MACs."""
    curves, names = group_curves(graph, layers, sensitivities, skip_vars)
    ratios = sensitive_ratios(curves, model, input_shape, pruned_flops, criterion,
                              round_to=align or 1, tolerance=0.005, graph=graph)
    return {names[group]: ratio for group, ratio in ratios.items()}
