"""PruneCallback: progressive, dependency-aware channel pruning inside ``paddle.Model.fit``.

WHAT, WHERE and HOW are a :class:`~slim_callbacks.pruning.PruningSpec` (its fields are
this callback's first arguments) that a :class:`~slim_callbacks.pruning.Pruner` carries
out; WHEN is a :mod:`slim_callbacks.pruning.schedules` schedule. An event at epoch ``e``
fires in ``on_epoch_end(e)`` (0-based), BEFORE Paddle's ``ModelCheckpoint`` saves that
epoch, so the saved checkpoint is the pruned one, with a pruning ledger beside it
(:mod:`slim_callbacks.callbacks.checkpoint_ledgers`). Each event logs one line on logger
``slim_callbacks.callbacks.prune``::

    epoch 3: pruned 12 groups, MACs 568.7M -> 401.2M (-29.5%), params 4.25M -> 3.02M

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
import warnings
from typing import Dict, Mapping, Optional, Sequence, Union

from slim_callbacks.analysis.bn_recalibration import InputRecorder, check_recalibrate_bn, recalibrate_bn
from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks import resume
from slim_callbacks.callbacks.bn_l1 import BNScaleL1
from slim_callbacks.callbacks.budget import MetricBudget
from slim_callbacks.callbacks.budget_events import BudgetedEvents
from slim_callbacks.callbacks.checkpoint_ledgers import CheckpointLedgers, run_ledger
from slim_callbacks.callbacks.distill import DistillCallback
from slim_callbacks.callbacks.forwarding import ForwardingCallback
from slim_callbacks.callbacks.guard import FiniteLossGuard
from slim_callbacks.callbacks.log_lines import event_line
from slim_callbacks.callbacks.paddle_hooks import rebuild_reducer
from slim_callbacks.callbacks.taylor import TaylorCallback
from slim_callbacks.core.checks import check_epoch, check_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import check_forward_fn, given_inputs, model_inputs
from slim_callbacks.core.paddle_utils import fit_evaluates, is_rank0, require_dygraph
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.pruning.pruner import Pruner
from slim_callbacks.pruning.schedule_factory import build_schedule
from slim_callbacks.pruning.spec import PruningSpec
from slim_callbacks.pruning.state import PruningState, mean_targets
from slim_callbacks.pruning.targets import check_curve_start, final_ratios

logger = logging.getLogger(__name__)

class PruneCallback(ForwardingCallback):
    """Prunes channels of ``model.network`` at scheduled epochs during ``fit``.

    Args:
        ratios, criterion, target_flops_reduction, target_latency_reduction, layers,
            strategy, strategy_options, skip, round_to, fold_bn_shift, structure: the
            :class:`~slim_callbacks.pruning.PruningSpec` of the run (what, where, how),
            checked together here. ``ratios`` is always the FINAL share of the ORIGINAL
            channels; ``None`` with an ``{epoch: ratio}`` schedule takes the map's last
            value. Strategy and ``round_to="auto"`` are resolved once, at train begin.
        example_inputs, input_shape, forward_fn: inputs of any structure, the shorthand
            for one float32 input (``[1, 3, 224, 224]``), how to call the network (see
            :class:`~slim_callbacks.Pruner`); default: the ``paddle.Model``'s InputSpecs
            (every input, with its dtype) with the batch and unknown dims set to 1.
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
        log_dir: if set, a :class:`~slim_callbacks.callbacks.VisualDLLogger` writes there.
        log_freq: steps between train scalars of that logger.
        resume_from: a checkpoint prefix (``"ckpt/3"``) of an earlier fit with this
            callback, or its directory (the newest complete one): its ledger, weights
            and optimizer state are restored and training carries on at the next epoch
            of ``fit(epochs=TOTAL)`` (the interrupted run's total; :mod:`~slim_callbacks.callbacks.resume`).
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
        graph: the network's trace if it has one (a prepared Pruner's, as ``run`` has
            from its plan): a fresh run's pruner uses it instead of tracing again.

    Attributes:
        spec: the :class:`~slim_callbacks.pruning.PruningSpec`.
        pruner: the run's :class:`~slim_callbacks.pruning.Pruner` (from train begin).
        plan: the cumulative :class:`PruningPlan` (relative to the original network).
        history: one dict per event (see :mod:`slim_callbacks.callbacks.ledger`).
        original_widths: group name -> width before any pruning.
        epoch_offset: global epoch of this fit's epoch 0 (non-zero when resuming).
        total_epochs: the global number of epochs of the run (``fit(epochs=...)``).

    Raises:
        ConfigError: a bad argument (at construction) or one that does not fit the
            network or the fit (at train begin), before any weight changes.
        SlimError: a damaged or finished resume source, a save over an earlier
            session's checkpoint, a non-finite training loss; nothing is changed.
    """

    def __init__(self, ratios: Union[float, Mapping[str, float], None] = None, criterion="l1_norm",
                 *, example_inputs=None, input_shape: Optional[Sequence[int]] = None,
                 forward_fn=None,
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
                 target_latency_reduction: Optional[float] = None, structure=None,
                 graph=None):
        super().__init__()
        self.budget = None if max_metric_drop is None else MetricBudget(
            max_metric_drop, budget_metric, budget_min_step, budget_mode)
        self.budgeted = None if self.budget is None else BudgetedEvents(self)
        self.distill = DistillCallback.from_option(distill)
        self.recalibrate_bn = check_recalibrate_bn(recalibrate_bn)
        self._recorder: Optional[InputRecorder] = None
        start_epoch = check_epoch("start_epoch", start_epoch)
        end_epoch = check_epoch("end_epoch", end_epoch, allow_none=True)
        frequency = check_int("frequency", frequency, 1)
        self.schedule = build_schedule(schedule, prune_epochs, start_epoch, end_epoch, frequency)
        self.spec = PruningSpec(
            ratios=final_ratios(self.schedule, ratios, target_flops_reduction,
                                target_latency_reduction),
            target_flops_reduction=target_flops_reduction,
            target_latency_reduction=target_latency_reduction, criterion=criterion,
            strategy=strategy, strategy_options=strategy_options, layers=layers, skip=skip,
            structure=structure, round_to=round_to, fold_bn_shift=fold_bn_shift)
        check_curve_start(self.schedule, self.spec.ratios)
        self.forward_fn = check_forward_fn(forward_fn)
        self.example_inputs = (None if example_inputs is None and input_shape is None
                               else given_inputs(example_inputs, input_shape, forward_fn))
        self.resume_from = resume_from
        if resume_from is not None and not isinstance(resume_from, (str, os.PathLike)):
            raise ConfigError("resume_from", resume_from, "a checkpoint prefix such as 'ckpt/3'")
        self.reset_optimizer = bool(reset_optimizer)
        self.bn_l1 = None
        if bn_l1 is not None:
            if self.criterion.needs != "bn_scales":
                warnings.warn(f"bn_l1 is set but criterion {self.criterion.name!r} ignores "
                              f"BatchNorm scales; use 'slim' or 'opt_slim'", UserWarning, stacklevel=2)
            self.bn_l1 = BNScaleL1(bn_l1, start_epoch=0, end_epoch=self.schedule.last_epoch + 1)
        self.finite_guard = FiniteLossGuard()
        self.taylor = TaylorCallback() if self.criterion.needs == "gradients" else None
        self.logger_cb = None
        if log_dir is not None:
            from slim_callbacks.callbacks.visualdl import VisualDLLogger
            self.logger_cb = VisualDLLogger(log_dir, log_freq=log_freq, pruner=self)
        self.pruner: Optional[Pruner] = None
        self._traced = graph
        self.epoch_offset = 0
        self.total_epochs: Optional[int] = None
        self.last_epoch = -1
        self.checkpoints = CheckpointLedgers(self.ledger)
        self.fingerprint = None
        self._started = False
        self._network = None

    # -- the spec's fields, and the pruner's state once training began -----------
    criterion = property(lambda self: self.spec.criterion)
    ratios = property(lambda self: self.spec.ratios)
    strategy = property(lambda self: self.spec.strategy)
    skip = property(lambda self: self.spec.skip)
    structure = property(lambda self: self.spec.structure)
    fold_bn_shift = property(lambda self: self.spec.fold_bn_shift)
    target_flops_reduction = property(lambda self: self.spec.target_flops_reduction)

    @property
    def round_to(self):
        """The multiple channels are rounded to (``"auto"`` until train begin)."""
        return self.spec.round_to if self.pruner is None else self.pruner.round_to

    #: the cumulative plan, relative to the original network
    plan = property(lambda self: PruningPlan() if self.pruner is None else self.pruner.plan)
    #: one record per event (:class:`~slim_callbacks.pruning.state.PruningEvent`)
    history = property(lambda self: [] if self.pruner is None else self.pruner.history)
    original_widths = property(lambda self: {} if self.pruner is None else self.pruner.original_widths)
    group_ratios = property(lambda self: {} if self.pruner is None else self.pruner.group_ratios)
    targets = property(lambda self: {} if self.pruner is None else self.pruner.targets)
    uniform_ratio = property(lambda self: None if self.pruner is None else self.pruner.uniform_ratio)

    def _check_fit(self) -> None:
        """A dygraph fit (not paddle.enable_static()), of the network this callback holds
        the plan and original widths of (another one would get the first one's plan)."""
        require_dygraph("the paddle.Model")
        if self._network is not None and self.network is not self._network:
            raise SlimError(f"this PruneCallback already pruned a {type(self._network).__name__} "
                            f"(another network than this fit's {type(self.network).__name__}); "
                            f"expected a new PruneCallback for each network")

    # -- helpers ---------------------------------------------------------------
    network = property(lambda self: self.model.network)
    optimizer = property(lambda self: getattr(self.model, "_optimizer", None))

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

    #: the shape of the one float32 example input, else None
    input_shape = property(lambda self: getattr(self.example_inputs, "shape", None))

    @property
    def pruning_state(self) -> PruningState:
        """A read-only snapshot of the run for observers such as the VisualDL logger."""
        if self.pruner is None:
            return PruningState(epoch_offset=self.epoch_offset)
        return self.pruner.state(self.epoch_offset)

    def planned_ratio(self, epoch: int) -> float:
        """Mean target ratio (over pruned groups) in force after global ``epoch``."""
        return PruningState(planned=mean_targets(self.targets)).planned_ratio(epoch)

    def achieved_ratio(self) -> float:
        """Share of the original channels of the targeted groups that is gone."""
        return 0.0 if self.pruner is None else self.pruner.achieved_ratio()

    def current_widths(self) -> Dict[str, int]:
        """Group name -> current width, from the cumulative plan (no trace needed)."""
        return {} if self.pruner is None else self.pruner.current_widths()

    # -- callback hooks ----------------------------------------------------------
    def on_train_begin(self, logs=None):
        """Validates against the fit, records original widths, or replays a ledger."""
        self._check_fit()
        if self.budget is not None:
            self.budget.check_fit(self.params.get("metrics"), fit_evaluates(self.model))
        if self.example_inputs is None:
            self.example_inputs = model_inputs(self.model, self.forward_fn)
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
        self.finite_guard.epoch_offset = self.checkpoints.epoch_offset = self.epoch_offset
        if self.bn_l1 is not None:
            self.bn_l1.epoch_offset = self.epoch_offset
            self.bn_l1.validate(None if self.total_epochs is None
                                else self.total_epochs - self.epoch_offset)
        if not self._started:
            self._setup(resumed)
            if resumed is not None and self.history and self.distill is not None:
                resume.resumed_teacher(self.distill)
        self._started = True
        self._network = self.network
        self.checkpoints.install(self.model, self)
        if self.recalibrate_bn and self._recorder is None:
            self._recorder = InputRecorder(self.network, self.recalibrate_bn)

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
        """Which target the accuracy budget let the run reach (None without a budget;
        :meth:`BudgetedEvents.summary <slim_callbacks.callbacks.budget_events.BudgetedEvents.summary>`)."""
        return None if self.budgeted is None else self.budgeted.summary()

    def _setup(self, resumed: Optional[dict]) -> None:
        """The run's :class:`Pruner`: the original widths are the network's, or the
        resumed run's; strategy and ``round_to`` are resolved once, on the unpruned
        network."""
        net = self.network
        self.fingerprint = ledger_mod.fingerprint(net) if resumed is None else resumed["fingerprint"]
        widths = None if resumed is None else resumed["original_widths"]
        self.pruner = Pruner(net, self.example_inputs, self.spec, schedule=self.schedule,
                             optimizer=self.optimizer, original_widths=widths,
                             graph=self._traced if resumed is None else None).prepare()
        self._traced = None
        if resumed is not None:
            resume.replay(self, resumed)

    def on_epoch_end(self, epoch, logs=None):
        """Fires the event scheduled at this (global) epoch, if any (weights finite)."""
        glob = epoch + self.epoch_offset
        targets = self.targets.get(glob)
        if self.budgeted is not None:
            self.budgeted.epoch_end(glob, targets)
        elif targets:
            self.prune_now(glob, targets)
        self.last_epoch = glob
        self.checkpoints.awaiting_eval = self.budget is not None
        if self.epoch_offset and self.total_epochs is not None and glob >= self.total_epochs - 1:
            self.model.stop_training = True  # a resumed fit(epochs=TOTAL) ends on time

    def on_epoch_begin(self, epoch, logs=None):
        self._close_unevaluated_epoch()

    def _close_unevaluated_epoch(self) -> None:
        """The last epoch had no eval: its event is kept unchecked (with a warning) and
        its checkpoints get their ledgers."""
        if self.budgeted is not None:
            self.budgeted.unevaluated()
        self.checkpoints.close_epoch()

    def on_eval_end(self, logs=None):
        """Judges the event of this epoch by its eval (``max_metric_drop``), then writes
        the ledgers of the epoch's checkpoints."""
        if self.budgeted is None or not logs:
            return
        self.budgeted.eval_end(logs)
        self.checkpoints.close_epoch()

    # -- the event ---------------------------------------------------------------
    def prune_now(self, epoch: int, targets: Mapping[str, float], *,
                  undoable: bool = False) -> PruningPlan:
        """Prunes every targeted group to ``targets`` (of its original width) now
        (:meth:`Pruner.prune_to <slim_callbacks.pruning.Pruner.prune_to>`), then
        rebuilds DataParallel's buckets and re-estimates BatchNorm statistics."""
        if self.distill is not None:  # the default teacher: the network before its first event
            self.distill.take_teacher()
        plan = self.pruner.prune_to(targets, epoch, undoable=undoable)
        if len(plan):
            rebuild_reducer(self.model)
            self._recalibrate(epoch)
        # every rank prunes, only rank 0 reports at INFO (the others at DEBUG)
        event = self.history[-1]
        level = logging.INFO if is_rank0() else logging.DEBUG
        logger.log(level, event_line(epoch, len(plan), tuple(event["macs"]), tuple(event["params"])))
        return plan

    def _recalibrate(self, epoch: int) -> None:
        """BatchNorm statistics of the pruned network from the recorded batches."""
        if self._recorder is None or not self._recorder.batches:
            return
        used = recalibrate_bn(self.network, list(self._recorder.batches))
        logger.debug("epoch %d: BatchNorm statistics re-estimated on %d batches", epoch, used)

    def ledger(self) -> dict:
        """The pruning ledger for the network as it is now."""
        return run_ledger(self)
