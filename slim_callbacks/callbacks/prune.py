"""PruneCallback: progressive, dependency-aware channel pruning inside ``paddle.Model.fit``.

WHAT, WHERE, HOW and WHEN are a :class:`~slim_callbacks.pruning.PruningSpec` (its
fields are this callback's first arguments, or ``spec=``) that a
:class:`~slim_callbacks.pruning.Pruner` carries out; the callback maps the fit's epochs
onto the pruner's schedule. The training aids are callbacks of their own that find this
one in the same ``fit`` (:mod:`slim_callbacks.callbacks.aid`): ``DistillCallback``,
``BNRecalibration``, ``AccuracyBudget``, ``BNScaleL1``, ``VisualDLLogger``; a spec with
aids switched on (``PruningSpec(aids=...)``) makes the callback add them itself.

An event at epoch ``e`` fires in ``on_epoch_end(e)`` (0-based), BEFORE Paddle's
``ModelCheckpoint`` saves that epoch, so the saved checkpoint is the pruned one, with a
pruning ledger beside it (:mod:`slim_callbacks.callbacks.checkpoint_ledgers`). Each event
logs one line on logger ``slim_callbacks.callbacks.prune``::

    epoch 3: pruned 12 groups, MACs 568.7M -> 401.2M (-29.5%), params 4.25M -> 3.02M

Examples:
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
from typing import List, Mapping, Optional, Sequence, Union

from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks import resume
from slim_callbacks.callbacks.accuracy_budget import AccuracyBudget
from slim_callbacks.callbacks.aid import PruningAid, meet
from slim_callbacks.callbacks.bn_l1 import BNScaleL1
from slim_callbacks.callbacks.checkpoint_ledgers import CheckpointLedgers, run_ledger
from slim_callbacks.callbacks.distill import DistillCallback
from slim_callbacks.callbacks.forwarding import ForwardingCallback
from slim_callbacks.callbacks.guard import FiniteLossGuard
from slim_callbacks.callbacks.log_lines import event_line
from slim_callbacks.callbacks.paddle_hooks import rebuild_reducer
from slim_callbacks.callbacks.prune_arguments import aid_callbacks, callback_spec
from slim_callbacks.callbacks.prune_view import PrunerView
from slim_callbacks.callbacks.taylor import TaylorCallback
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import check_forward_fn, given_inputs, model_inputs
from slim_callbacks.core.paddle_utils import is_rank0, require_dygraph
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.pruning.pruner import Pruner
from slim_callbacks.pruning.spec import PruningSpec

logger = logging.getLogger(__name__)


class PruneCallback(PrunerView, ForwardingCallback):
    """Prunes channels of ``model.network`` at scheduled epochs during ``fit``.

    ``ratios`` to ``round_to`` are the fields of the run's
    :class:`~slim_callbacks.pruning.PruningSpec` (what, where, how; see it for each),
    checked together here; ``strategy`` and ``round_to="auto"`` are resolved once, at
    train begin.

    Args:
        ratios: the FINAL share of the ORIGINAL channels to remove (a float or
            ``{pattern: ratio}``); ``None`` with an ``{epoch: ratio}`` schedule takes
            the map's last value.
        criterion: how channels are ranked.
        target_flops_reduction: instead of ``ratios``, the share of the MACs to remove.
        target_latency_reduction: instead of ``ratios``, the share of the latency to remove.
        layers: patterns of the layers to prune (default: all).
        skip: patterns of the layers to leave whole.
        strategy: how the ratios are spread over the groups.
        round_to: channels kept are a multiple of this (``"auto"``: measured).
        prune_epochs: epochs of the events (the last reaches the target), e.g. [2, 4, 6].
        schedule: ``"oneshot"`` (default, at ``start_epoch``), ``"agp"``, ``"linear"``,
            ``"exp"`` (from ``start_epoch`` to ``end_epoch`` every ``frequency``, given
            as keywords), an ``{epoch: ratio}`` map, a schedule dict or a ``Schedule``.
            With pattern ``ratios`` and a map, each pattern reaches
            ``ratio * map_value / map_final``.
        example_inputs: inputs of any structure (see :class:`~slim_callbacks.Pruner`);
            default: the ``paddle.Model``'s InputSpecs (every input, with its dtype)
            with the batch and unknown dims set to 1.
        input_shape: the shorthand for one float32 input (``[1, 3, 224, 224]``).
        forward_fn: how to call the network with the inputs.
        resume_from: a checkpoint prefix (``"ckpt/3"``) of an earlier fit with this
            callback, or its directory (the newest complete one): its ledger, weights
            and optimizer state are restored and training carries on at the next epoch
            of ``fit(epochs=TOTAL)`` (the interrupted run's total; :mod:`~slim_callbacks.callbacks.resume`).
        spec: a whole :class:`~slim_callbacks.pruning.PruningSpec` instead of its fields
            (schedule and training aids included); then no field is given as a keyword.
        **options: the rare cases: ``strategy_options``, ``structure``,
            ``fold_bn_shift``, ``coupled_scoring`` (spec fields), ``start_epoch``,
            ``end_epoch``, ``frequency`` (a curve ``schedule``), ``reset_optimizer``
            (resuming from a checkpoint without ``.pdopt``: start the optimizer state
            afresh instead of refusing). Deprecated (one release, with a warning):
            ``distill``, ``recalibrate_bn``, ``max_metric_drop``, ``budget_metric``,
            ``budget_min_step``, ``budget_mode``, ``bn_l1``, ``log_dir``, ``log_freq`` -
            put ``DistillCallback``, ``BNRecalibration``, ``AccuracyBudget``,
            ``BNScaleL1``, ``VisualDLLogger`` beside this callback instead. Internal:
            ``graph``, the network's trace if the caller has one (a prepared Pruner's,
            as ``run`` has from its plan): a fresh run's pruner uses it instead of
            tracing again.

    Attributes:
        spec: the :class:`~slim_callbacks.pruning.PruningSpec`.
        pruner: the run's :class:`~slim_callbacks.pruning.Pruner` (from train begin).
        aids: the aid callbacks working with this one (its own and the fit's).
        budget: the :class:`~slim_callbacks.callbacks.AccuracyBudget` among them, or None.
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
                 *, target_flops_reduction: Optional[float] = None,
                 target_latency_reduction: Optional[float] = None,
                 layers: Optional[Sequence[str]] = None, skip: Sequence[str] = (),
                 strategy: Optional[str] = None, round_to: Union[int, str] = 1,
                 prune_epochs: Optional[Sequence[int]] = None, schedule=None,
                 example_inputs=None, input_shape: Optional[Sequence[int]] = None,
                 forward_fn=None, resume_from: Optional[str] = None,
                 spec: Optional[PruningSpec] = None, **options):
        super().__init__()
        self.spec, extras = callback_spec(spec, dict(
            ratios=ratios, criterion=criterion, target_flops_reduction=target_flops_reduction,
            target_latency_reduction=target_latency_reduction, layers=layers, skip=skip,
            strategy=strategy, round_to=round_to, prune_epochs=prune_epochs,
            schedule=schedule), options)
        self.schedule = self.spec.schedule
        self.forward_fn = check_forward_fn(forward_fn)
        self.example_inputs = (None if example_inputs is None and input_shape is None
                               else given_inputs(example_inputs, input_shape, forward_fn))
        self.resume_from = resume_from
        if resume_from is not None and not isinstance(resume_from, (str, os.PathLike)):
            raise ConfigError("resume_from", resume_from, "a checkpoint prefix such as 'ckpt/3'")
        self.reset_optimizer = extras["reset_optimizer"]
        self.finite_guard = FiniteLossGuard()
        self.taylor = TaylorCallback() if self.criterion.needs == "gradients" else None
        self.own_aids = aid_callbacks(self.spec.aids)
        if extras.get("distill") is not None:
            self.own_aids.append(DistillCallback.from_option(extras["distill"]))
        if extras.get("log_dir") is not None:
            from slim_callbacks.callbacks.visualdl import VisualDLLogger
            self.own_aids.append(VisualDLLogger(extras["log_dir"], log_freq=extras.get("log_freq", 10),
                                                pruner=self))
        self.aids: List[PruningAid] = []
        self.budget: Optional[AccuracyBudget] = None
        self._reset_aids()
        self.pruner: Optional[Pruner] = None
        self._traced = extras["graph"]
        self.epoch_offset = 0
        self.total_epochs: Optional[int] = None
        self.last_epoch = -1
        self.checkpoints = CheckpointLedgers(self.ledger)
        self.fingerprint = None
        self._started = False
        self._network = None

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
        """Taylor accumulation and the aids of the spec: they see every hook after the
        callback's own work (the logger records the epoch's pruned model; Taylor
        scores start afresh after an event)."""
        return ([self.taylor] if self.taylor is not None else []) + self.own_aids

    # -- the aids ----------------------------------------------------------------
    def _reset_aids(self) -> None:
        self.aids, self.budget = [], None
        for aid in self.own_aids:
            self.attach(aid)

    def attach(self, aid: PruningAid) -> None:
        """Makes ``aid`` (a callback of the same fit) work with this callback."""
        if any(a is aid for a in self.aids):
            return
        if isinstance(aid, AccuracyBudget):
            if self.budget is not None:
                raise ConfigError("callbacks", aid, "one AccuracyBudget per PruneCallback")
            self.budget = aid
        self.aids.append(aid)
        aid.attach(self)

    def _aid(self, cls):
        return next((aid for aid in self.aids if isinstance(aid, cls)), None)

    distill = property(lambda self: self._aid(DistillCallback))
    bn_l1 = property(lambda self: self._aid(BNScaleL1))
    budgeted = property(lambda self: self.budget)  # the old name

    @property
    def logger_cb(self):
        from slim_callbacks.callbacks.visualdl import VisualDLLogger
        return self._aid(VisualDLLogger)

    # -- callback hooks ----------------------------------------------------------
    def set_params(self, params):
        """Meets the aids of the fit (:func:`~slim_callbacks.callbacks.aid.meet`)."""
        self.params = params
        self._reset_aids()
        meet(params, prune_callback=self)

    def on_train_begin(self, logs=None):
        """Validates against the fit, records original widths, or replays a ledger."""
        self._check_fit()
        if self.budget is not None:
            self.budget.check_fit()
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
        if not self._started:
            self._setup(resumed)
        self._started = True
        self._network = self.network
        self.checkpoints.install(self.model, self)
        for aid in self.aids:
            aid.pruning_started(resumed is not None)

    def on_train_end(self, logs=None):
        self._close_unevaluated_epoch()
        if self.budget is not None:
            self.budget.log_summary()

    def budget_summary(self) -> Optional[dict]:
        """Which target the accuracy budget let the run reach (None without a budget;
        :meth:`AccuracyBudget.summary <slim_callbacks.callbacks.AccuracyBudget.summary>`)."""
        return None if self.budget is None else self.budget.summary()

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
        if self.budget is not None:
            self.budget.epoch_end(glob, targets)
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
        if self.budget is not None:
            self.budget.unevaluated()
        self.checkpoints.close_epoch()

    def on_eval_end(self, logs=None):
        """Judges the event of this epoch by its eval (``max_metric_drop``), then writes
        the ledgers of the epoch's checkpoints."""
        if self.budget is None or not logs:
            return
        self.budget.eval_end(logs)
        self.checkpoints.close_epoch()

    # -- the event ---------------------------------------------------------------
    def prune_now(self, epoch: int, targets: Mapping[str, float], *,
                  undoable: bool = False) -> PruningPlan:
        """Prunes every targeted group to ``targets`` (of its original width) now
        (:meth:`Pruner.prune_to <slim_callbacks.pruning.Pruner.prune_to>`), then
        rebuilds DataParallel's buckets; the aids hear of it before and after."""
        for aid in self.aids:
            aid.before_event(epoch)
        plan = self.pruner.prune_to(targets, epoch, undoable=undoable)
        if len(plan):
            rebuild_reducer(self.model)
            for aid in self.aids:
                aid.after_event(epoch, plan)
        # every rank prunes, only rank 0 reports at INFO (the others at DEBUG)
        event = self.history[-1]
        level = logging.INFO if is_rank0() else logging.DEBUG
        logger.log(level, event_line(epoch, len(plan), tuple(event["macs"]), tuple(event["params"])))
        return plan

    def ledger(self) -> dict:
        """The pruning ledger for the network as it is now."""
        return run_ledger(self)
