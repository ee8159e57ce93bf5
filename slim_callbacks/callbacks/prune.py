"""PruneCallback: progressive, dependency-aware channel pruning inside ``paddle.Model.fit``.

WHAT is pruned: ``ratios`` (a float for every prunable group, or ``{glob pattern:
ratio}``; always the FINAL share of the ORIGINAL channels), or ``target_flops_reduction``
(a uniform ratio found by bisection), minus ``skip``; scored by ``criterion``.

WHEN: a :mod:`slim_callbacks.callbacks.schedules` schedule; built from ``prune_epochs=[2, 4, 6]``,
an explicit ``schedule={epoch: ratio}`` map, or ``schedule="agp"|"linear"|"exp"`` between
``start_epoch`` and ``end_epoch`` every ``frequency`` epochs; the default is one-shot at
``start_epoch``. An event at epoch ``e`` fires in ``on_epoch_end(e)`` (0-based), BEFORE
Paddle's ``ModelCheckpoint`` (appended after user callbacks) saves that epoch, so the
saved checkpoint is the pruned one, with a pruning ledger beside it
(``<save_dir>/<epoch>.pruning.json``, see :mod:`slim_callbacks.callbacks.ledger`).

Each event re-traces the network, plans against the original widths (targets never
compound), shrinks the parameters in place and slices the optimizer state, and logs one
line on logger ``slim_callbacks.callbacks.prune``::

    epoch 3: pruned 12 groups, MACs 568.7M -> 401.2M (-29.5%), params 4.25M -> 3.02M

Arguments are validated in ``__init__`` (types, ratios, criterion, schedule) and in
``on_train_begin`` against ``fit(epochs=...)``, before any weight changes.

Example:
    >>> import paddle
    >>> from slim_callbacks.callbacks import PruneCallback
    >>> nn = paddle.nn
    >>> net = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
    ...                     nn.Conv2D(8, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(8, 10))
    >>> model = paddle.Model(net)
    >>> model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
    ...               nn.CrossEntropyLoss())
    >>> data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]),
    ...                                 paddle.randint(0, 10, [8, 1])])
    >>> cb = PruneCallback(ratios={"0": 0.5}, criterion="fpgm", prune_epochs=[0, 1],
    ...                    input_shape=[1, 3, 8, 8])
    >>> model.fit(data, epochs=3, batch_size=4, verbose=0, callbacks=[cb])
    >>> [h["epoch"] for h in cb.history], net[0].weight.shape[0]
    ([0, 1], 4)
"""
from __future__ import annotations

import logging
import os
import types
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Union

from slim_callbacks.analysis.auto_round import check_round_to_option, resolve_round_to
from slim_callbacks.analysis.bn_recalibration import InputRecorder, check_recalibrate_bn, recalibrate_bn
from slim_callbacks.analysis.sensitivity import check_patterns
from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks import resume
from slim_callbacks.callbacks.bn_l1 import BNScaleL1, check_epoch
from slim_callbacks.callbacks.budget import MetricBudget, Snapshot
from slim_callbacks.callbacks.distill import DistillCallback
from slim_callbacks.callbacks.forwarding import ForwardingCallback
from slim_callbacks.callbacks.guard import FiniteLossGuard
from slim_callbacks.callbacks.ledger import Cursor, Ledger, PruningEvent
from slim_callbacks.callbacks.log_lines import event_line
from slim_callbacks.callbacks.paddle_hooks import install_save_hook, rebuild_reducer, same_on_every_rank
from slim_callbacks.callbacks.pruning_state import PruningState, mean_targets
from slim_callbacks.callbacks.schedule_factory import build_schedule
from slim_callbacks.callbacks.targets import (
    achieved_ratio,
    check_curve_start,
    current_widths,
    group_targets,
    producer_layers,
)
from slim_callbacks.callbacks.taylor import TaylorCallback
from slim_callbacks.core.checks import check_int, check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import fit_evaluates, is_rank0, model_input_shape, unwrap
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import check_fold_bn_shift, plan_pruning
from slim_callbacks.engine.ratios import check_input_shape, check_ratios, check_skip, resolve_ratios
from slim_callbacks.engine.shift_fold import apply_with_folds
from slim_callbacks.tracing.structure import check_structure
from slim_callbacks.tracing.tracer import trace

logger = logging.getLogger(__name__)

def profile(network, input_shape) -> dict:
    """MACs, legacy GFLOPs, params, size (slim_callbacks.analysis.flops.profile)."""
    from slim_callbacks.analysis.flops import profile as _profile
    return _profile(unwrap(network), input_shape)


class PruneCallback(ForwardingCallback):
    """Prunes channels of ``model.network`` at scheduled epochs during ``fit``.

    Args:
        ratios: final share of the ORIGINAL channels to remove: a float for every
            prunable group or ``{glob pattern: ratio}``. ``None`` with an ``{epoch: ratio}``
            schedule (the map's last value) or with ``target_flops_reduction``.
        criterion: ``l1_norm``, ``l2_norm``, ``fpgm``, ``slim`` or ``opt_slim`` (or an alias,
            a registered name, a :class:`~slim_callbacks.engine.criteria.Criterion`).
        input_shape: one example input, batch first, e.g. ``[1, 3, 224, 224]``. Defaults
            to the ``paddle.Model``'s input spec with the batch set to 1.
        target_flops_reduction: instead of ``ratios``, remove this share of FLOPs; the
            ``strategy`` finds the ratios at train begin (over ``layers``).
        target_latency_reduction: instead of ``ratios``, remove this share of the
            batch-1 Paddle Inference latency measured on this machine (strategy
            ``latency``, :mod:`~slim_callbacks.analysis.latency_strategy`).
        layers: patterns the strategy's ratios apply to (not with a ``{pattern: ratio}``
            dict); default every prunable group.
        strategy: a name in :data:`slim_callbacks.analysis.strategies.STRATEGIES`, resolved at train
            begin by :func:`~slim_callbacks.analysis.strategies.resolve_strategy` exactly as recipes
            are: ``uniform`` (default for a float or ``target_flops_reduction``: one ratio,
            bisected for a FLOPs target), ``global`` (a float ``ratios`` is its
            ``channel_ratio``: one score threshold across layers), ``sensitive``
            (``target_flops_reduction`` and ``strategy_options={"sensitivities": file}``)
            or ``custom`` (default for a ``{pattern: ratio}`` dict).
        strategy_options: the strategy's other arguments, e.g. ``{"max_ratio": 0.8}``
            for ``global`` (see :func:`~slim_callbacks.analysis.strategies.resolve_strategy`).
        skip: patterns of layers whose groups stay whole.
        round_to: channels kept are a multiple of this; ``"auto"``: the multiple
            measured for this machine at train begin (:mod:`slim_callbacks.analysis.auto_round`).
        prune_epochs: epochs of the events (the last reaches the target), e.g. [2, 4, 6].
        schedule: ``"oneshot"`` (default, at ``start_epoch``), ``"agp"``, ``"linear"``,
            ``"exp"`` (from ``start_epoch`` to ``end_epoch`` every ``frequency``), an
            ``{epoch: ratio}`` map, a schedule dict or a ``Schedule`` object. With pattern
            ``ratios`` and a map, each pattern reaches ``ratio * map_value / map_final``.
        start_epoch: see ``schedule``.
        end_epoch: see ``schedule``.
        frequency: see ``schedule``.
        bn_l1: if set, a :class:`BNScaleL1` with this coefficient runs (from epoch 0 to
            the last event) - meant for ``slim``/``opt_slim``; warns with other criteria.
        fold_bn_shift: at each event, fold what the removed channels still sent
            (``act(beta)`` with their BatchNorm scale taken as 0) into the consumers'
            biases (:mod:`slim_callbacks.engine.shift_fold`); ``None``: on for ``slim``
            and ``opt_slim``.
        log_dir: if set, a :class:`~slim_callbacks.callbacks.VisualDLLogger` writes there.
        log_freq: steps between train scalars of that logger.
        resume_from: a checkpoint prefix (``"ckpt/3"``) written by an earlier fit with this
            callback, or its directory (``"ckpt"``: the newest complete checkpoint). Its
            ledger is replayed on network and optimizer, the checkpoint's weights and
            optimizer state are loaded, and training carries on at the next epoch. Call
            ``fit(epochs=TOTAL)`` with the same total as the interrupted run: the callback
            stops the fit after the run's last epoch and names the checkpoints it saves
            by global epoch; a checkpoint of an earlier session is never overwritten.
        reset_optimizer: when resuming from a checkpoint without ``.pdopt``, start the
            optimizer state afresh instead of refusing.
        distill: knowledge distillation while pruning (a trailing
            :class:`~slim_callbacks.callbacks.DistillCallback`): ``True`` (alpha 0.5,
            T 4; the network as it is right before the first event teaches, the loss is
            the task loss until then), a dict of its options (``teacher``, ``alpha``,
            ``temperature``) or a ``DistillCallback``. When resuming after the first
            event, that copy is of the resumed (pruned) network; a warning says so.
        max_metric_drop: the accuracy budget (:mod:`slim_callbacks.callbacks.budget`): an
            event whose eval metric falls more than this below the last accepted eval
            is undone (weights, optimizer state, plan, bit for bit) and retried at the
            next epoch with half the refused step; when half the step is below
            ``budget_min_step`` (a share of the original channels, default 0.02)
            pruning stops advancing. ``budget_metric``: the eval log key (default: the
            first metric); ``budget_mode``: ``max`` (higher is better), ``min``, or
            None (``min`` for ``loss``/``error`` names). Refused at train begin, before
            any event, when the fit has no eval data or does not log the metric.
        recalibrate_bn: after each event, re-estimate the BatchNorm running statistics
            of the pruned network on the last ``N`` training batches of the epoch
            (their inputs, kept as detached copies by a forward pre-hook during the
            training batches; see :mod:`slim_callbacks.analysis.bn_recalibration`),
            before the event's eval. No gradient step; parameters are untouched.
            ``0`` (default) turns it off.
        structure: what a unit spans where layers allow several shapes, e.g.
            ``{"attention": "heads"}`` (see :mod:`slim_callbacks.tracing.structure`).

    Attributes:
        plan: the cumulative :class:`PruningPlan` (relative to the original network).
        history: one dict per event (see :mod:`slim_callbacks.callbacks.ledger`).
        original_widths: group name -> width before any pruning.
        epoch_offset: global epoch of this fit's epoch 0 (non-zero when resuming).
        total_epochs: the global number of epochs of the run (``fit(epochs=...)``).

    Raises:
        ConfigError: a bad argument (at construction) or an event/pattern that does not
            fit the network or ``fit(epochs=...)`` (in ``on_train_begin``, before any
            weight changes).
        SlimError: a resume source that is damaged, incomplete or already finished
            (before any weight changes); a save that would overwrite a checkpoint of an
            earlier session (before writing); a non-finite training loss.
    """

    def __init__(self, ratios: Union[float, Mapping[str, float], None] = None, criterion="l1_norm",
                 *, input_shape: Optional[Sequence[int]] = None,
                 target_flops_reduction: Optional[float] = None,
                 layers: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                 round_to: int = 1, prune_epochs: Optional[Sequence[int]] = None,
                 schedule=None, start_epoch: int = 0, end_epoch: Optional[int] = None,
                 frequency: int = 1, bn_l1: Optional[float] = None,
                 fold_bn_shift: Optional[bool] = None, log_dir: Optional[str] = None, log_freq: int = 10,
                 resume_from: Optional[str] = None, reset_optimizer: bool = False,
                 strategy: Optional[str] = None, strategy_options: Optional[Mapping] = None,
                 distill=None, recalibrate_bn: int = 0,
                 max_metric_drop: Optional[float] = None, budget_metric: Optional[str] = None,
                 budget_min_step: float = 0.02, budget_mode: Optional[str] = None,
                 target_latency_reduction: Optional[float] = None, structure=None):
        super().__init__()
        self.structure = check_structure(structure)
        self.budget = None if max_metric_drop is None else MetricBudget(
            max_metric_drop, budget_metric, budget_min_step, budget_mode)
        # (epoch, Snapshot, targets) of an event awaiting its eval
        self._pending: Optional[tuple] = None
        # with a budget, checkpoints saved at an epoch's end get their ledger once the
        # epoch's eval has judged it (a resume from them then decides as the run did)
        self._awaiting_eval = False
        self._unjudged: List[str] = []
        self.distill = DistillCallback.from_option(distill)
        self.recalibrate_bn = check_recalibrate_bn(recalibrate_bn)
        self._recorder: Optional[InputRecorder] = None
        self.criterion = get_criterion(criterion)
        self.round_to = check_round_to_option(round_to)
        self.fold_bn_shift = check_fold_bn_shift(fold_bn_shift, self.criterion)
        start_epoch = check_epoch("start_epoch", start_epoch)
        end_epoch = check_epoch("end_epoch", end_epoch, allow_none=True)
        frequency = check_int("frequency", frequency, 1)
        self.schedule = build_schedule(schedule, prune_epochs, start_epoch, end_epoch, frequency)
        if target_latency_reduction is not None:
            if strategy not in (None, "latency") or ratios is not None or target_flops_reduction is not None:
                raise ConfigError("target_latency_reduction", target_latency_reduction,
                                  "None unless strategy is 'latency' with no ratios and no "
                                  "target_flops_reduction")
            check_number("target_latency_reduction", target_latency_reduction, 0.0, 1.0,
                         low_open=True, high_open=True)
            strategy = "latency"
        elif strategy == "latency":
            raise ConfigError("target_latency_reduction", None,
                              "a float in (0, 1) for strategy 'latency'")
        if target_flops_reduction is not None:
            if ratios is not None:
                raise ConfigError("ratios", ratios, "None when target_flops_reduction is given")
            check_number("target_flops_reduction", target_flops_reduction, 0.0, 1.0,
                         low_open=True, high_open=True)
        elif layers is not None and isinstance(ratios, Mapping):
            raise ConfigError("layers", layers, "None with a {pattern: ratio} dict (its "
                                                "patterns choose the layers)")
        map_final = self.schedule.final_ratio
        if ratios is None and target_flops_reduction is None and target_latency_reduction is None:
            if map_final is None:
                raise ConfigError("ratios", ratios, "a float in [0, 1) or a {pattern: ratio} dict "
                                  "(or target_flops_reduction, or an {epoch: ratio} schedule)")
            ratios = map_final
        self.ratios = None if ratios is None else check_ratios(ratios)
        if map_final is not None and isinstance(self.ratios, float) and self.ratios != map_final:
            raise ConfigError("ratios", ratios, f"None or {map_final} (the final ratio of the "
                              f"{{epoch: ratio}} schedule)")
        check_curve_start(self.schedule, self.ratios)
        self.target_flops_reduction = target_flops_reduction
        self.target_latency_reduction = target_latency_reduction
        self.layers = check_patterns("layers", layers)
        self.skip = check_skip(skip)
        self.input_shape = None if input_shape is None else check_input_shape(input_shape)
        self.strategy = strategy or ("custom" if isinstance(self.ratios, dict) else "uniform")
        self.strategy_arguments = self._strategy_arguments(strategy_options)
        self.resume_from = resume_from
        if resume_from is not None and not isinstance(resume_from, (str, os.PathLike)):
            raise ConfigError("resume_from", resume_from, "a checkpoint prefix such as 'ckpt/3'")
        self.reset_optimizer = bool(reset_optimizer)
        self.bn_l1 = None
        if bn_l1 is not None:
            if self.criterion.source != "bn_scale":
                warnings.warn(f"bn_l1 is set but criterion {self.criterion.name!r} ignores "
                              f"BatchNorm scales; use 'slim' or 'opt_slim'", UserWarning, stacklevel=2)
            self.bn_l1 = BNScaleL1(bn_l1, start_epoch=0, end_epoch=self.schedule.last_epoch + 1)
        self.finite_guard = FiniteLossGuard()
        self.taylor = TaylorCallback() if self.criterion.source == "taylor" else None
        self.logger_cb = None
        if log_dir is not None:
            from slim_callbacks.callbacks.visualdl import VisualDLLogger
            self.logger_cb = VisualDLLogger(log_dir, log_freq=log_freq, pruner=self)
        self.plan = PruningPlan()
        self.history: List[dict] = []
        self.original_widths: Dict[str, int] = {}
        self.group_ratios: Dict[str, float] = {}
        self.targets: Dict[int, Dict[str, float]] = {}
        self.epoch_offset = 0
        self.total_epochs: Optional[int] = None
        self.last_epoch = -1
        self._written: set = set()
        self.fingerprint = None
        self.uniform_ratio: Optional[float] = None
        self._started = False
        self._network = None

    def _strategy_arguments(self, strategy_options) -> dict:
        """The options of ``resolve_strategy`` (checked now, used at train begin), built
        by the same :func:`~slim_callbacks.analysis.strategies.strategy_options` as recipes."""
        from slim_callbacks.analysis.strategies import check_option_values, strategy_option_names
        from slim_callbacks.analysis.strategies import strategy_options as build
        names = strategy_option_names(self.strategy)
        if strategy_options is not None and not isinstance(strategy_options, Mapping):
            raise ConfigError("strategy_options", strategy_options, "None or a {option: value} dict")
        options = dict(strategy_options or {})
        for key, value in options.items():
            if key not in names:
                raise ConfigError(f"strategy_options[{key!r}]", value,
                                  f"an option of strategy {self.strategy}: {', '.join(names)}")
        check_option_values(options, lambda key: f"strategy_options[{key!r}]")
        return build(self.strategy, ratios=self.ratios,
                     target_flops_reduction=self.target_flops_reduction, layers=self.layers,
                     target_latency_reduction=self.target_latency_reduction,
                     skip=self.skip, criterion=self.criterion, round_to=self.round_to,
                     sensitivities=options.pop("sensitivities", None), options=options)

    def _check_same_network(self) -> None:
        """A callback holds one network's plan and original widths: reusing it on
        another network would prune that one with the first one's plan."""
        if self._network is not None and self.network is not self._network:
            raise SlimError(f"this PruneCallback already pruned a {type(self._network).__name__} "
                            f"(another network than this fit's {type(self.network).__name__}); "
                            f"expected a new PruneCallback for each network")

    # -- helpers ---------------------------------------------------------------
    @property
    def network(self):
        return self.model.network

    @property
    def optimizer(self):
        return getattr(self.model, "_optimizer", None)

    def leading_callbacks(self):
        """The loss guard: it sees every hook first (an epoch's weights are checked
        before that epoch's pruning event)."""
        return [self.finite_guard]

    def trailing_callbacks(self):
        """BN-scale L1, Taylor accumulation, distillation and the VisualDL logger, when
        set: they see every hook after the callback's own work (the logger records the
        epoch's pruned model; Taylor scores start afresh after an event; the teacher is
        copied after a resume has replayed the ledger)."""
        return [cb for cb in (self.bn_l1, self.taylor, self.distill, self.logger_cb) if cb is not None]

    def _default_shape(self):
        shape = model_input_shape(self.model)
        if shape is None:
            raise ConfigError("input_shape", None, "the example input shape, e.g. [1, 3, 224, 224] "
                              "(the paddle.Model has no InputSpec to take it from)")
        return shape

    @property
    def pruning_state(self) -> PruningState:
        """A read-only snapshot of the run for observers such as the VisualDL logger."""
        return PruningState(
            epoch_offset=self.epoch_offset,
            input_shape=None if self.input_shape is None else tuple(self.input_shape),
            planned=mean_targets(self.targets), achieved_ratio=self.achieved_ratio(),
            original_widths=types.MappingProxyType(dict(self.original_widths)),
            targeted_groups=tuple(self.group_ratios), pruned_layers=tuple(producer_layers(self.plan)))

    def planned_ratio(self, epoch: int) -> float:
        """Mean target ratio (over pruned groups) in force after global ``epoch``."""
        return PruningState(planned=mean_targets(self.targets)).planned_ratio(epoch)

    def achieved_ratio(self) -> float:
        """Share of the original channels of the targeted groups that is gone."""
        return achieved_ratio(self.plan, self.original_widths, self.group_ratios)

    def current_widths(self) -> Dict[str, int]:
        """Group name -> current width, from the cumulative plan (no trace needed)."""
        return current_widths(self.plan)

    # -- callback hooks ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        """Validates against the fit, records original widths, or replays a ledger."""
        self._check_same_network()
        if self.budget is not None:
            self.budget.check_fit(self.params.get("metrics"), fit_evaluates(self.model))
        if self.input_shape is None:
            self.input_shape = self._default_shape()
        epochs = self.params.get("epochs")
        resumed = None
        if self.resume_from is not None and not self._started:
            self.resume_from = resume.resolve_source(self.resume_from)
            resumed = resume.load_source(self.resume_from, self.network, epochs=epochs,
                                         need_optimizer=self.optimizer is not None
                                         and not self.reset_optimizer)
            self.epoch_offset = resumed["cursor"]["epoch"] + 1
        if epochs is not None:
            self.schedule.validate(epochs if resumed is not None else self.epoch_offset + epochs)
            self.total_epochs = epochs if resumed is not None else self.epoch_offset + epochs
        self.finite_guard.epoch_offset = self.epoch_offset
        if self.bn_l1 is not None:
            self.bn_l1.epoch_offset = self.epoch_offset
            self.bn_l1.validate(None if self.total_epochs is None
                                else self.total_epochs - self.epoch_offset)
        if not self._started:
            self._setup(resumed)
            if resumed is not None and self.history and self.distill is not None:
                self._resumed_teacher()
        self._started = True
        self._network = self.network
        self._install_save_hook()
        if self.recalibrate_bn and self._recorder is None:
            self._recorder = InputRecorder(self.network, self.recalibrate_bn)

    def _resumed_teacher(self) -> None:
        """A run resumed after its first event: the default teacher is the resumed network."""
        if self.distill.given_teacher is None:
            logger.warning("distill: resuming after a pruning event, so the teacher is a copy "
                           "of the resumed (already pruned) network, not the unpruned one; "
                           "pass distill={'teacher': ...} to keep the original teacher")
        self.distill.take_teacher()

    def on_train_batch_begin(self, step, logs=None):
        if self._recorder is not None:
            self._recorder.armed = True

    def on_train_batch_end(self, step, logs=None):
        if self._recorder is not None:
            self._recorder.armed = False

    def on_train_end(self, logs=None):
        self._close_unevaluated_epoch()
        if self._recorder is not None:
            self._recorder.remove()
            self._recorder = None
        summary = self.budget_summary()
        if summary is not None and summary["undone"] and is_rank0():
            logger.info("max_metric_drop: reached mean target %.4f of %.4f (%d events undone%s)",
                        summary["reached"], summary["target"], len(summary["undone"]),
                        ", stopped" if summary["stopped"] else "")

    def budget_summary(self) -> Optional[dict]:
        """Which target the accuracy budget let the run reach (None without a budget):
        ``target`` and ``reached`` are mean shares of the original channels over the
        pruned groups; ``undone`` lists the refused events."""
        if self.budget is None:
            return None
        ratios = self.group_ratios
        return {"max_metric_drop": self.budget.max_drop, "metric": self.budget.metric,
                "target": sum(ratios.values()) / len(ratios) if ratios else 0.0,
                "reached": self.budget.reached(), "stopped": self.budget.stopped,
                "undone": list(self.budget.undone)}

    def _setup(self, resumed: Optional[dict]) -> None:
        net = self.network
        if resumed is None:
            self.fingerprint = ledger_mod.fingerprint(net)
            graph = trace(net, self.input_shape, self.structure)
            self.original_widths = {g.name: g.num_units for g in graph.groups}
        else:
            self.fingerprint = resumed["fingerprint"]
            self.original_widths = dict(resumed["original_widths"])
            graph = None
        if self.round_to == "auto":
            if graph is None:  # resumed: the units of this structure, as a fresh start has
                graph = trace(net, self.input_shape, self.structure)
            self.round_to = resolve_round_to("auto", net, self.input_shape, skip=self.skip,
                                             graph=graph,
                                             cache_dir=self.strategy_arguments.get("cache_dir"))
            if "round_to" in self.strategy_arguments:
                self.strategy_arguments["round_to"] = self.round_to
            logger.info("round_to auto -> %d", self.round_to)
        ratios = self._strategy_ratios()
        if graph is None:  # resolve patterns on a fresh trace of the unpruned network
            graph = trace(net, self.input_shape, self.structure)
        self.group_ratios = resolve_ratios(graph, ratios, self.skip)
        if not self.group_ratios:
            raise ConfigError("ratios", ratios, "ratios that select at least one prunable group")
        self.targets = group_targets(self.schedule, self.group_ratios)
        if resumed is not None:
            self._replay(resumed)

    def _strategy_ratios(self):
        """The final ratios, decided by the strategies registry as for recipes."""
        from slim_callbacks.analysis.strategies import resolve_strategy
        ratios = resolve_strategy(self.strategy, self.network, self.input_shape,
                                  structure=self.structure, **self.strategy_arguments)
        if self.strategy == "uniform" and self.target_flops_reduction is not None:
            self.uniform_ratio = ratios if isinstance(ratios, float) else next(iter(ratios.values()))
            logger.info("target_flops_reduction %.3f -> uniform ratio %.4f",
                        self.target_flops_reduction, self.uniform_ratio)
        return ratios

    def _replay(self, ledger: dict) -> None:
        """Ledger plan on network and optimizer, then the checkpoint's weights/optimizer."""
        record = Ledger.from_dict(ledger)
        resume.check_same_events(record.cursor, self.targets, self.resume_from)
        if self.budget is not None and record.budget:
            self.budget.load(record.budget)
        prefix = str(self.resume_from)
        self.history = [h.to_dict() for h in record.history]
        self.last_epoch = record.cursor.epoch
        self.plan, loaded = resume.restore(self.model, prefix, ledger)
        if self.optimizer is not None and not loaded:
            logger.warning("resumed from %s without %s: the optimizer state starts afresh "
                           "(reset_optimizer=True)", prefix, ledger_mod.OPTIMIZER)
        logger.info("resumed from %s: %d pruning events replayed, next epoch %d", prefix,
                    len(self.history), self.epoch_offset)

    def on_epoch_end(self, epoch, logs=None):
        """Fires the event scheduled at this (global) epoch, if any (weights finite)."""
        glob = epoch + self.epoch_offset
        targets = self.targets.get(glob)
        if self.budget is not None:
            attempt = self.budget.attempt(targets, self._in_force(glob))
            if targets and self.budget.stopped:
                logger.info("epoch %d: pruning event skipped (stopped by max_metric_drop)", glob)
            if attempt:
                state = {"plan": self.plan, "history": self.history}
                snapshot = Snapshot.take(self.network, self.optimizer, state)
                self._pending = (glob, snapshot, attempt)
                self.prune_now(glob, attempt)
        elif targets:
            self.prune_now(glob, targets)
        self.last_epoch = glob
        self._awaiting_eval = self.budget is not None
        if self.epoch_offset and self.total_epochs is not None and glob >= self.total_epochs - 1:
            self.model.stop_training = True  # a resumed fit(epochs=TOTAL) ends on time

    def on_epoch_begin(self, epoch, logs=None):
        self._close_unevaluated_epoch()

    def _close_unevaluated_epoch(self) -> None:
        """The last epoch had no eval: its event is kept unchecked (with a warning) and
        its checkpoints get their ledgers."""
        if self._pending is not None:
            logger.warning("epoch %d: the pruning event had no eval after it (eval_freq > 1?): "
                           "max_metric_drop did not check it", self._pending[0])
            self.budget.keep(self._pending[2])
            self._pending = None
        self._close_epoch()

    def on_eval_end(self, logs=None):
        """Judges the event of this epoch by its eval (``max_metric_drop``), then writes
        the ledgers of the epoch's checkpoints."""
        if self.budget is None or not logs:
            return
        if self._pending is None:
            self.budget.observe(logs)
        else:
            epoch, snapshot, targets = self._pending
            self._pending = None
            before = self.budget.reference
            if self.budget.accepts(logs):
                self.budget.keep(targets)
            else:
                self._undo(epoch, snapshot, targets, before, self.budget.value(logs))
        self._close_epoch()

    def _close_epoch(self) -> None:
        """Writes the ledgers of the checkpoints saved since the epoch's end."""
        self._awaiting_eval = False
        for path in self._unjudged:
            self._write_ledger(path)
        self._unjudged = []

    def _in_force(self, epoch: int) -> Optional[Dict[str, float]]:
        """The targets of the schedule's latest event at or before global ``epoch``."""
        past = [e for e in self.targets if e <= epoch]
        return self.targets[max(past)] if past else None

    def _undo(self, epoch: int, snapshot: Snapshot, targets: Mapping[str, float],
              before: float, after: float) -> None:
        state = snapshot.restore()
        self.plan, self.history = state["plan"], state["history"]
        rebuild_reducer(self.model)
        retry = self.budget.refuse(dict(targets))
        self.budget.undone.append({"epoch": epoch, "metric": self.budget.metric,
                                   "before": before, "after": after,
                                   "target": mean_targets({0: targets})[0][1]})
        then = (f"retry at the next epoch with mean target {mean_targets({0: retry})[0][1]:.4f}"
                if retry else f"pruning stops at {len(self.history)} events, mean target "
                              f"{self.budget.reached():.4f}")
        logger.warning("epoch %d: pruning event undone: %s fell %.4f -> %.4f, more than "
                       "max_metric_drop=%g; %s", epoch, self.budget.metric, before, after,
                       self.budget.max_drop, then)
        original = getattr(self.model.save, "_slim_original", self.model.save)
        for path in self._unjudged:  # saved between the event and its eval: saved again
            original(path, True)

    # -- the event ---------------------------------------------------------------
    def prune_now(self, epoch: int, targets: Mapping[str, float]) -> PruningPlan:
        """Prunes every targeted group to ``targets`` (of its original width) now."""
        if self.distill is not None:  # the default teacher: the network before its first event
            self.distill.take_teacher()
        net, opt = self.network, self.optimizer
        graph = trace(net, self.input_shape, self.structure)
        live = {g.name for g in graph.prunable_groups()}
        ratios = {g: r for g, r in targets.items() if g in live}
        plan = plan_pruning(net, graph, ratios, self.criterion, self.round_to,
                            original_widths=self.original_widths)
        plan = same_on_every_rank(plan)
        before = profile(net, self.input_shape)
        if len(plan):
            if self.fold_bn_shift:
                apply_with_folds(net, graph, plan, self.input_shape, opt)
            else:
                plan.apply(net, opt, input_shape=self.input_shape)
            rebuild_reducer(self.model)
            self._recalibrate(epoch)
        after = profile(net, self.input_shape) if len(plan) else before
        self.plan = self.plan.then(plan)
        record = PruningEvent(epoch=epoch, target=max(targets.values()) if targets else 0.0,
                              groups=len(plan), macs=[before["macs"], after["macs"]],
                              params=[before["params"], after["params"]], plan=plan.to_dict())
        self.history.append(record.to_dict())
        # every rank prunes, only rank 0 reports at INFO (the others at DEBUG)
        level = logging.INFO if is_rank0() else logging.DEBUG
        logger.log(level, event_line(epoch, len(plan), (before["macs"], after["macs"]),
                                     (before["params"], after["params"])))
        return plan

    def _recalibrate(self, epoch: int) -> None:
        """BatchNorm statistics of the pruned network from the recorded batches."""
        if self._recorder is None or not self._recorder.batches:
            return
        used = recalibrate_bn(self.network, list(self._recorder.batches))
        logger.debug("epoch %d: BatchNorm statistics re-estimated on %d batches", epoch, used)

    # -- ledger ------------------------------------------------------------------
    def ledger(self) -> dict:
        """The pruning ledger for the network as it is now."""
        return Ledger(fingerprint=self.fingerprint, input_shape=self.input_shape,
                      criterion=self.criterion.name, original_widths=self.original_widths,
                      param_names=ledger_mod.tensor_names(self.network), plan=self.plan.to_dict(),
                      history=[PruningEvent.from_dict(h) for h in self.history],
                      epochs=self.total_epochs,
                      cursor=Cursor.at(self.last_epoch, self.history, self.targets),
                      schedule=self.schedule.to_dict(),
                      budget=None if self.budget is None else self.budget.to_dict()).to_dict()

    def checkpoint_path(self, path: str) -> str:
        """``<dir>/<local epoch>`` (ModelCheckpoint's name) -> ``<dir>/<global epoch>``."""
        head, tail = os.path.split(os.fspath(path))
        if self.epoch_offset and tail.isdigit():
            return os.path.join(head, str(int(tail) + self.epoch_offset))
        return os.fspath(path)

    def _check_not_earlier_session(self, path: str) -> None:
        if path not in self._written and os.path.exists(ledger_mod.ledger_path(path)):
            raise SlimError(f"{path} holds a checkpoint of an earlier run (its ledger "
                            f"{ledger_mod.ledger_path(path)} exists): save to an empty "
                            f"save_dir, or resume that run with resume_from")

    def _install_save_hook(self) -> None:
        """Makes every ``model.save(path)`` (ModelCheckpoint's too) write the ledger,
        under the global epoch's name, never over an earlier session's checkpoint."""
        install_save_hook(self.model, self, self.checkpoint_path, self._check_not_earlier_session,
                          self._write_ledger)

    def _write_ledger(self, path: str) -> None:
        self._written.add(path)
        if self._awaiting_eval:
            self._unjudged.append(path)  # a checkpoint without a ledger is not resumed from
            return
        ledger_mod.save_ledger(path, self.ledger())
