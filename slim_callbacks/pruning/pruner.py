"""Pruner: one network's pruning, usable in any training loop.

A :class:`Pruner` is built from a network, its example inputs (of any structure, see
:mod:`slim_callbacks.core.example_inputs`; a shape is one float32 input) and a
:class:`~slim_callbacks.pruning.spec.PruningSpec` (or the spec's fields as keywords),
plus an optional schedule and optimizer. On first use it traces the network once,
resolves ``round_to: auto`` and the strategy once, and fixes each group's final ratio
(:attr:`Pruner.group_ratios`) and the targets of every scheduled event
(:attr:`Pruner.targets`). Then:

- :meth:`Pruner.step` prunes if the schedule has an event at that epoch;
- :meth:`Pruner.prune_to` prunes every named group to a share of its ORIGINAL width
  (targets never compound), slicing the optimizer state, and returns the event's
  :class:`~slim_callbacks.PruningPlan`;
- :meth:`Pruner.undo` puts back the last event taken with ``undoable=True``;
- :attr:`Pruner.plan` and :attr:`Pruner.history` are the cumulative plan and one record
  per event; :meth:`Pruner.state` a read-only view for loggers;
- :meth:`Pruner.sensitivity` is the sensitivity analysis on the pruner's trace.

:func:`prune` is the one-call form; :class:`~slim_callbacks.PruneCallback` drives a
pruner from ``paddle.Model.fit``.

Example (a hand-written loop pruning at epochs 1 and 2):
    >>> import paddle
    >>> nn = paddle.nn
    >>> net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.ReLU(),
    ...                     nn.Conv2D(8, 8, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 4))
    >>> opt = paddle.optimizer.Momentum(0.01, parameters=net.parameters())
    >>> pruner = Pruner(net, [1, 3, 8, 8], ratios=0.5, schedule={1: 0.25, 2: 0.5},
    ...                 optimizer=opt)
    >>> for epoch in range(3):
    ...     loss = net(paddle.randn([4, 3, 8, 8])).mean()
    ...     loss.backward(); opt.step(); opt.clear_grad()
    ...     plan = pruner.step(epoch)
    >>> [e["epoch"] for e in pruner.history], net[0].weight.shape[0]
    ([1, 2], 4)
"""
from __future__ import annotations

import logging
import types
from typing import Dict, List, Mapping, Optional, Sequence

import paddle

from slim_callbacks.analysis.flops import profile
from slim_callbacks.analysis.sensitivity import DEFAULT_RATIOS, sensitivity
from slim_callbacks.analysis.strategies import check_something_to_prune, resolve_strategy
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.example_inputs import given_inputs
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning, warn_approximate
from slim_callbacks.engine.ratios import check_network, check_optimizer, named_producers, resolve_ratios
from slim_callbacks.engine.shift_fold import apply_with_folds
from slim_callbacks.latency.auto_round import AUTO, resolve_round_to, rounding_cost
from slim_callbacks.pruning.schedule_factory import build_schedule
from slim_callbacks.pruning.schedules import OneShot, Schedule
from slim_callbacks.pruning.snapshot import Snapshot
from slim_callbacks.pruning.spec import PruningSpec
from slim_callbacks.pruning.state import PruningEvent, PruningState, mean_targets
from slim_callbacks.pruning.targets import achieved_ratio, current_widths, group_targets, producer_layers
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger(__name__)


def same_on_every_rank(plan: PruningPlan) -> PruningPlan:
    """Under data parallel, every rank takes rank 0's plan (the plan itself otherwise)."""
    if paddle.distributed.get_world_size() <= 1:
        return plan
    box = [plan.to_dict()]
    paddle.distributed.broadcast_object_list(box, src=0)
    return PruningPlan.from_dict(box[0])


def as_spec(spec: Optional[PruningSpec], fields: Mapping) -> PruningSpec:
    """``spec`` itself, or a spec built from keyword ``fields`` (not both)."""
    if spec is None:
        return PruningSpec(**fields)
    if fields:
        raise ConfigError(next(iter(fields)), next(iter(fields.values())),
                          "no spec field as a keyword when a PruningSpec is given")
    if not isinstance(spec, PruningSpec):
        raise ConfigError("spec", spec, "a PruningSpec (or its fields as keywords)")
    return spec


def as_schedule(schedule) -> Schedule:
    """A :class:`Schedule` (default: one shot at epoch 0) from anything
    :func:`~slim_callbacks.pruning.schedule_factory.build_schedule` takes."""
    if schedule is None:
        return OneShot(epoch=0)
    return build_schedule(schedule, None, 0, None, 1)


class Pruner:
    """Prunes one network, event by event (see the module docstring).

    Args:
        network: a dygraph ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        example_inputs: inputs of any structure: a shape, batch first, e.g.
            ``[1, 3, 224, 224]`` (one float32 tensor), a tensor, a tuple or list
            (positional arguments), a dict (keywords), InputSpecs with dtypes, a real
            batch (see :mod:`slim_callbacks.core.example_inputs`).
        spec: a :class:`PruningSpec`; or pass its fields as keywords instead.
        schedule: when to prune, for :meth:`step`: a
            :class:`~slim_callbacks.pruning.schedules.Schedule`, an ``{epoch: ratio}``
            map, a schedule dict; default the spec's, else one shot at epoch 0.
        optimizer: the optimizer training ``network``; its state is sliced with it.
        original_widths: group -> width before any pruning (a resumed run's).
        input_shape: the shorthand of ``example_inputs`` for one float32 input.
        forward_fn: ``callable(network, inputs) -> outputs``: how every forward pass
            calls the network (a detector's loss forward with targets in train mode).
        graph: the trace of ``network`` as it is now, with these inputs and the spec's
            structure, when the caller has one (another pruner's :attr:`graph`): used
            instead of tracing again.

    Raises:
        ConfigError: a bad argument, before anything is traced or changed.
    """

    def __init__(self, network: paddle.nn.Layer, example_inputs=None,
                 spec: Optional[PruningSpec] = None, *, schedule=None, optimizer=None,
                 original_widths: Optional[Mapping[str, int]] = None,
                 input_shape: Optional[Sequence[int]] = None, forward_fn=None,
                 graph: Optional[DependencyGraph] = None, **spec_fields):
        check_network(network)
        check_optimizer(optimizer)
        self.network = network
        self.example_inputs = given_inputs(example_inputs, input_shape, forward_fn)
        self.spec = as_spec(spec, spec_fields)
        self.schedule = as_schedule(schedule if schedule is not None else self.spec.schedule)
        self.optimizer = optimizer
        self.plan = PruningPlan()
        self.history: List[dict] = []
        self.original_widths: Dict[str, int] = dict(original_widths or {})
        self.ratios = None  # the strategy's answer: a float or {pattern or group: ratio}
        self.group_ratios: Dict[str, float] = {}
        self.scored_layers: Dict[str, List[str]] = {}  # coupled_scoring="named"
        self.targets: Dict[int, Dict[str, float]] = {}
        self.round_to: Optional[int] = None if self.spec.round_to == AUTO else self.spec.round_to
        self.uniform_ratio: Optional[float] = None
        self.traces = 0  # how often the network was traced (each structure once)
        self._graph: Optional[DependencyGraph] = graph
        self._undo: Optional[Snapshot] = None
        self._ready = False

    @property
    def input_shape(self) -> Optional[List[int]]:
        """The shape of the one float32 example input (the shorthand), else None."""
        return self.example_inputs.shape

    # -- the traced structure ----------------------------------------------------
    @property
    def graph(self) -> DependencyGraph:
        """The groups of the network as it is now: traced once per structure."""
        if self._graph is None:
            self._graph = trace(self.network, self.example_inputs, self.spec.structure)
            self.traces += 1
        return self._graph

    def prepare(self) -> "Pruner":
        """Traces, resolves ``round_to`` and the strategy, fixes the targets (once)."""
        if self._ready:
            return self
        graph = self.graph
        if not self.original_widths:
            self.original_widths = {g.name: g.num_units for g in graph.groups}
        self.ratios = ratios = resolve_strategy(
            self.spec.strategy, self.network, self.example_inputs, structure=self.spec.structure,
            graph=graph, **self.spec.strategy_arguments(self.rounding()))
        if self.spec.strategy == "uniform" and self.spec.target_flops_reduction is not None:
            self.uniform_ratio = ratios if isinstance(ratios, float) else next(iter(ratios.values()))
            logger.info("target_flops_reduction %.3f -> uniform ratio %.4f",
                        self.spec.target_flops_reduction, self.uniform_ratio)
        self.group_ratios = resolve_ratios(graph, ratios, self.spec.skip)
        if self.spec.coupled_scoring == "named":
            self.scored_layers = named_producers(graph, ratios)
        check_something_to_prune(graph, ratios, self.group_ratios)
        self.targets = group_targets(self.schedule, self.group_ratios)
        self._ready = True
        return self

    def rounding(self) -> int:
        """``round_to`` as an int (:attr:`round_to`): the spec's, or ``auto`` measured
        once (:meth:`prepare` calls it; the sensitivity analysis needs only this)."""
        if self.round_to is None:
            self.round_to = self._measure_round_to(self.graph)
        return self.round_to

    def sensitivity(self, eval_fn, ratios: Sequence[float] = DEFAULT_RATIOS, **options):
        """:func:`~slim_callbacks.analysis.sensitivity.sensitivity` of this network with
        the spec's layers, skip, criterion and ``round_to``, on this pruner's trace
        (changes nothing; ``options``: the function's other keywords, e.g. ``file``)."""
        return sensitivity(self.network, eval_fn, self.example_inputs, layers=self.spec.layers,
                           ratios=ratios, criterion=self.spec.criterion, skip=self.spec.skip,
                           round_to=self.rounding(), graph=self.graph, **options)

    def _measure_round_to(self, graph: DependencyGraph) -> int:
        """``round_to: auto``: timed at the spec's ratios when it has them, else at a
        representative cut; the MACs it costs against ``round_to=1`` is logged."""
        ratios = self.spec.ratios if self.spec.explicit_ratios else None
        multiple = resolve_round_to(AUTO, self.network, self.example_inputs, skip=self.spec.skip,
                                    graph=graph, ratios=ratios,
                                    cache_dir=self.spec.strategy_options.get("cache_dir"))
        if multiple > 1 and ratios is not None:
            cost = rounding_cost(self.network, self.example_inputs, ratios, self.spec.criterion,
                                 self.spec.skip, multiple, graph)
            logger.info("round_to auto = %d costs %+.2f%% of the MACs against round_to=1",
                        multiple, 100 * cost)
        logger.info("round_to auto -> %d", multiple)
        return multiple

    # -- events --------------------------------------------------------------------
    def step(self, epoch: int) -> Optional[PruningPlan]:
        """Prunes if the schedule has an event at ``epoch``; the event's plan or None."""
        targets = self.prepare().targets.get(epoch)
        return self.prune_to(targets, epoch) if targets else None

    def prune_to(self, targets: Mapping[str, float], epoch: int = 0, *,
                 undoable: bool = False, record: bool = True) -> PruningPlan:
        """Prunes each group of ``targets`` to that share of its ORIGINAL width now.

        ``undoable``: keep a :class:`Snapshot` so that :meth:`undo` can put it back.
        ``record``: append the event to :attr:`history`, with the MACs and parameters
        counted before and after (two counting passes; :func:`prune` skips them).
        Returns the event's plan (empty when every group is already there).
        """
        net, graph = self.network, self.prepare().graph
        plan = same_on_every_rank(self.plan_to(targets))
        self._undo = (Snapshot.take(net, self.optimizer, {"plan": self.plan, "history": self.history})
                      if undoable else None)
        before = profile(unwrap(net), self.example_inputs) if record else None
        if len(plan):
            if self.spec.fold_bn_shift:
                apply_with_folds(net, graph, plan, self.example_inputs, self.optimizer)
            else:
                plan.apply(net, self.optimizer, example_inputs=self.example_inputs)
            self._graph = None  # the structure changed
        self.plan = self.plan.then(plan)
        if record:
            self._record(epoch, targets, plan, before)
        return plan

    def plan_to(self, targets: Mapping[str, float]) -> PruningPlan:
        """What :meth:`prune_to` would remove for ``targets``, changing nothing."""
        graph = self.prepare().graph
        live = {g.name for g in graph.prunable_groups()}
        ratios = {g: r for g, r in targets.items() if g in live}
        return plan_pruning(self.network, graph, ratios, self.spec.criterion, self.round_to,
                            original_widths=self.original_widths, scored_layers=self.scored_layers)

    def _record(self, epoch: int, targets: Mapping[str, float], plan: PruningPlan, before: dict) -> None:
        after = profile(unwrap(self.network), self.example_inputs) if len(plan) else before
        self.history.append(PruningEvent(
            epoch=epoch, target=max(targets.values()) if targets else 0.0, groups=len(plan),
            macs=[before["macs"], after["macs"]], params=[before["params"], after["params"]],
            plan=plan.to_dict()).to_dict())

    def undo(self) -> None:
        """Puts back the network, optimizer state, plan and history as they were
        before the last ``prune_to(..., undoable=True)``."""
        if self._undo is None:
            raise ConfigError("undo", None, "a prune_to(..., undoable=True) before it "
                              "(nothing to undo)")
        state = self._undo.restore()
        self.plan, self.history, self._undo, self._graph = state["plan"], state["history"], None, None

    def drop_undo(self) -> None:
        """Keeps the last undoable event for good: frees the copy :meth:`undo` would
        need (a whole copy of the weights and optimizer state, held until the next
        event otherwise)."""
        self._undo = None

    def adopt(self, plan: PruningPlan, history: Sequence[dict]) -> None:
        """Takes the plan and history of a run whose structure was replayed on the
        network (resuming from a checkpoint)."""
        self.plan, self.history, self._graph = plan, [dict(h) for h in history], None

    # -- what an observer reads ----------------------------------------------------
    def current_widths(self) -> Dict[str, int]:
        """Group name -> current width of the pruned groups (no trace needed)."""
        return current_widths(self.plan)

    def achieved_ratio(self) -> float:
        """Share of the original channels of the targeted groups that is gone."""
        return achieved_ratio(self.plan, self.original_widths, self.group_ratios)

    def state(self, epoch_offset: int = 0) -> PruningState:
        """A read-only snapshot for loggers (:class:`PruningState`)."""
        return PruningState(
            epoch_offset=epoch_offset, example_inputs=self.example_inputs,
            planned=mean_targets(self.targets), achieved_ratio=self.achieved_ratio(),
            original_widths=types.MappingProxyType(dict(self.original_widths)),
            targeted_groups=tuple(self.group_ratios), pruned_layers=tuple(producer_layers(self.plan)))


def prune(network: paddle.nn.Layer, example_inputs=None, ratios=None, criterion="l1_norm", *,
          skip: Sequence[str] = (), optimizer=None, round_to=1,
          fold_bn_shift: Optional[bool] = None, structure=None,
          coupled_scoring: str = "sum", input_shape: Optional[Sequence[int]] = None,
          forward_fn=None) -> PruningPlan:
    """Prunes ``network`` in place, once, and returns what was removed.

    Args:
        network: a dygraph ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        example_inputs: inputs of any structure (see :class:`Pruner`), e.g. the shape
            of one float32 input ``[1, 3, 224, 224]``, ``(image, ids)``, a dict.
        ratios: share of channels to remove: a float for every prunable group, or
            ``{glob pattern: ratio}`` (see :mod:`slim_callbacks.engine.ratios`).
        criterion: ``l1_norm``, ``l2_norm``, ``fpgm``, ``slim``, ``opt_slim`` or a name
            added with ``register_criterion``.
        skip: patterns of layers whose groups stay whole.
        optimizer: the optimizer training ``network``; its state is sliced to match.
        round_to: channels kept are a multiple of this; ``"auto"``: the multiple
            measured for this machine at these ratios (1 thread, oneDNN).
        fold_bn_shift: fold what removed channels with a zero BatchNorm scale still
            sent into their consumers' biases; ``None``: on for ``slim``/``opt_slim``.
        structure: what a unit spans where layers allow several shapes, e.g.
            ``{"attention": "heads"}``.
        coupled_scoring: ``"sum"`` ranks coupled channels by every producer's scores,
            ``"named"`` by the producers the ratios name only (PaddleSlim's way).
        input_shape: the shorthand of ``example_inputs`` for one float32 input.
        forward_fn: ``callable(network, inputs) -> outputs``, how to call the network.

    Returns:
        The :class:`PruningPlan` that was applied.

    Raises:
        ConfigError: a bad argument; nothing is changed.
        SlimError: the network rejects the inputs; nothing is changed.

    Examples:
        >>> import paddle
        >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
        >>> len(prune(net, [1, 3, 32, 32], {"conv*._pointwise_conv*": 0.5}))
        13
    """
    if ratios is None:
        raise ConfigError("ratios", None, "a float for every prunable group or "
                          "{glob pattern: ratio}, e.g. 0.5")
    pruner = Pruner(network, example_inputs, ratios=ratios, criterion=criterion, skip=skip,
                    round_to=round_to, fold_bn_shift=fold_bn_shift, structure=structure,
                    coupled_scoring=coupled_scoring, optimizer=optimizer, input_shape=input_shape,
                    forward_fn=forward_fn)
    plan = pruner.prune_to(pruner.prepare().group_ratios, record=False)
    warn_approximate(plan)
    return plan
