"""Sensitivity analysis: how much the metric drops when one group alone is pruned.

For every chosen group and every ratio, the units that :func:`~slim_callbacks.engine.planner.plan_pruning`
would remove are taken out, the network is evaluated, and

    loss = (base - metric) / |base|

is recorded (``base`` = the unpruned metric; higher metrics are better, so a positive
loss is a drop; ``|base|`` keeps the sign right for metrics such as a negative loss).
Results are saved after every evaluation and an interrupted run resumes from its file.

    >>> import paddle
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> x = paddle.randn([4, 3, 32, 32])
    >>> def eval_fn(network):
    ...     network.eval()
    ...     with paddle.no_grad():
    ...         return -float(network(x).square().mean())
    >>> sens = sensitivity(net, eval_fn, [1, 3, 32, 32], layers=["conv1"],
    ...                    ratios=[0.25, 0.5], progress=False)
    >>> list(sens), list(sens["conv1.0"])
    (['conv1.0'], [0.25, 0.5])

How it is fast without changing the answer (``method="mask"``, the default):

- No copy and no surgery per evaluation. The selected units are removed by zeroing
  the consumer input slices (``in``-role members: the input columns of the convs and
  Linears that read the group). Every path of a prunable group's channels ends in such
  a slice: the tracer blocks any channel that reaches an op it cannot map or a
  network output, and BatchNorms, depthwise convs, activations, pooling, residual adds
  and squeeze-excitation multiplies only carry the channel on to a consumer. So the
  consumers compute exactly what they compute after physical pruning (up to float
  summation order; a masked channel holding inf or NaN would give NaN), and
  ``tests/analysis/test_sensitivity.py`` checks it layer by layer against physical pruning on
  MobileNetV2, ResNet-18, a squeeze-excitation and a concat network. The zeroed
  slices are restored from saved copies after each evaluation.
- The network is traced once, and each group is scored once (the scores do not change
  between ratios).
- A ratio that removes no unit is recorded as loss 0 without evaluating, and ratios
  that select the same units (narrow layers) are evaluated once (both exact for a
  deterministic ``eval_fn``).
- Prefix caching (``cache=True``, the default; :class:`PrefixCache`): everything that
  runs before the group's first changed layer (for masking: the first consumer, so the
  producer conv, its BatchNorm and a depthwise conv are in the prefix) gives the same
  outputs for every ratio. The first evaluation of a group records the outputs of the
  top-most sublayers that finish before it; later evaluations return them instead of
  computing, but only while each layer's input is exactly the recorded one (otherwise
  the cache is switched off for the group, logged at debug level), so the answer is
  the uncached one even for an ``eval_fn`` that draws new data on every call. The
  first evaluation of a group replays the previous group's cache the same way. Cost:
  the prefix activations of the whole eval set for one group (two during a group's
  first evaluation); ``cache=False`` turns it off. Deep groups gain most.

Worker processes (``workers=N``): groups are handed out in network order to ``N``
processes forked from this one, each with its own prefix cache; losses come back to
this process, which writes the file after each. Paddle's CPU kernels gain little from
more threads, so on a machine with ``N`` free cores this divides the time by almost
``N``, and the losses are bit-identical to ``workers=1``.

``method="prune"`` removes the units physically but in place, and puts parameters and
layer attributes back after each evaluation (no deep copy). It evaluates the smaller
network, so it wins when evaluations are long; masking never changes a shape, which
evaluation code that captured shapes (``paddle.jit.to_static``) needs.

Adaptive-BN evaluation (``recalibrate_bn=N``): before every evaluation - the base one
included, so a loss measures the pruning and not the re-estimation - the BatchNorm
running statistics of the (masked or pruned) network are re-estimated on ``N`` batches
of ``bn_data`` (:func:`~slim_callbacks.analysis.bn_recalibration.recalibrate_bn`: train
mode for BatchNorms only, no gradient, cumulative averages), so the sensitivities of a
BN network measure the pruned structure, not statistics estimated for channels that
are gone. The statistics are put back at the end. It stays exact with the prefix
cache: layers that run before a group's first changed layer see the same batches
whatever is masked, so their re-estimated statistics are the same for every ratio.

``benchmarks/bench_sensitivity.py`` compares the time and the losses with PaddleSlim's
``L1NormFilterPruner.sensitive()`` (results in BENCHMARKS.md). The evaluation
dominates: limit its data (a few hundred samples) to make the analysis fast.

The parts live beside this module: the file format (and
:func:`~slim_callbacks.analysis.sensitivity_file.load_sensitivities`) in
:mod:`~slim_callbacks.analysis.sensitivity_file`, the maskers and the network state
in :mod:`~slim_callbacks.analysis.maskers`, the prefix cache in
:mod:`~slim_callbacks.analysis.prefix_cache`, the worker processes in
:mod:`~slim_callbacks.analysis.workers`; the groups that ``layers`` and ``skip``
choose come from :func:`~slim_callbacks.engine.ratios.chosen_groups`. This module
owns the arguments, the group loop and the worker hand-out.
"""
from __future__ import annotations

import itertools
import logging
import os
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.analysis import bn_recalibration
from slim_callbacks.analysis.bn_recalibration import InputRecorder, as_inputs, check_recalibrate_bn
from slim_callbacks.analysis.maskers import GroupMask, GroupPrune, NetworkState
from slim_callbacks.analysis.prefix_cache import DEFAULT_CACHE_BYTES, PrefixCache
from slim_callbacks.analysis.sensitivity_file import Record, Sensitivities
from slim_callbacks.analysis.workers import check_workers, run_forked
from slim_callbacks.core.checks import check_choice, check_int, check_number
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import given_inputs
from slim_callbacks.core.paddle_utils import layer_table, unwrap
from slim_callbacks.core.progress import progress_bar
from slim_callbacks.engine.criteria import Criterion, get_criterion
from slim_callbacks.engine.planner import select_units
from slim_callbacks.engine.ratios import check_patterns, check_round_to, chosen_groups
from slim_callbacks.tracing.groups import IN, ChannelGroup
from slim_callbacks.tracing.tracer import DependencyGraph, trace

logger = logging.getLogger(__name__)

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
METHODS = ("mask", "prune")


# --------------------------------------------------------------------------- checks
def check_ratio_list(ratios) -> List[float]:
    """Distinct numbers in (0, 1), in the order given."""
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise ConfigError("ratios", ratios, "a non-empty list of numbers in (0, 1)")
    out = [check_number("ratios", r, 0.0, 1.0, low_open=True, high_open=True,
                        allowed="numbers in (0, 1), e.g. [0.1, 0.2, ..., 0.9]") for r in ratios]
    if len(set(out)) != len(out):
        raise ConfigError("ratios", list(ratios), "distinct ratios")
    return out


def as_metric(value) -> float:
    """One finite number from what ``eval_fn`` returned (a float, 0-d array or tensor,
    or a one-element list such as ``paddle.Model.evaluate``'s ``[loss]``)."""
    try:
        if isinstance(value, paddle.Tensor):
            value = value.numpy()
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.size != 1 or not np.isfinite(array).all():
        raise SlimError(f"eval_fn must return one finite number (higher is better), "
                        f"got {value!r}")
    return float(array.reshape(()))


def evaluate(eval_fn: Callable, network, state: NetworkState) -> float:
    """``eval_fn(network)`` as a float; every sublayer's train/eval flag is put back."""
    try:
        return as_metric(eval_fn(network))
    finally:
        state.restore_modes()


def calibration_batches(bn_data, count: int) -> Optional[List[tuple]]:
    """The first ``count`` batches of ``bn_data`` as input tuples (None: take them
    from ``eval_fn`` later, or no recalibration when ``count`` is 0)."""
    if not count:
        return None
    if bn_data is None:
        return None
    if isinstance(bn_data, (str, bytes, paddle.Tensor)) or not isinstance(bn_data, Iterable):
        raise ConfigError("bn_data", bn_data, "None or an iterable of input batches (tensors)")
    batches = [as_inputs(b) for b in itertools.islice(iter(bn_data), count)]
    if not batches:
        raise ConfigError("bn_data", bn_data, f"at least one batch (recalibrate_bn={count})")
    return batches


def record_calibration(eval_fn: Callable, network, state: NetworkState, count: int) -> List[tuple]:
    """The first ``count`` inputs ``eval_fn`` gives the network (one evaluation)."""
    recorder = InputRecorder(network, count, first=True)
    recorder.armed = True
    try:
        evaluate(eval_fn, network, state)
    finally:
        recorder.remove()
        state.restore()
    batches = list(recorder.batches)
    if not batches:
        raise SlimError("recalibrate_bn: eval_fn never called the network, so there is no "
                        "batch to re-estimate BatchNorm statistics on; pass bn_data")
    return batches


# ----------------------------------------------------------------------- the run
def sensitivity(network: paddle.nn.Layer, eval_fn: Callable, example_inputs=None,
                layers: Optional[Sequence[str]] = None, ratios: Sequence[float] = DEFAULT_RATIOS,
                criterion="l1_norm", *, file: Optional[str] = None, skip: Sequence[str] = (),
                round_to: int = 1, method: str = "mask", cache=True, workers: int = 1,
                progress: Optional[bool] = None, recalibrate_bn: int = 0,
                bn_data: Optional[Iterable] = None, input_shape: Optional[Sequence[int]] = None,
                forward_fn: Optional[Callable] = None,
                graph: Optional[DependencyGraph] = None) -> Sensitivities:
    """Loss of the metric when each group alone is pruned at each ratio.

    Args:
        network: a dygraph ``paddle.nn.Layer`` (or ``paddle.DataParallel``).
        eval_fn: ``eval_fn(network) -> metric``, higher is better (accuracy, or a
            negative loss). Limit its data to save time: every (group, ratio) pair
            runs it once.
        example_inputs: inputs of any structure (:class:`~slim_callbacks.Pruner`);
            ``input_shape``: the shorthand for one float32 input, ``[1, 3, 224, 224]``;
            ``forward_fn``: how to call the network.
        layers: patterns of the layers to analyse (see :mod:`slim_callbacks.engine.ratios`);
            None analyses every prunable group.
        ratios: shares of channels to remove, each in (0, 1).
        criterion: which channels a ratio removes, as in :func:`~slim_callbacks.prune`.
        file: JSON file to save after every evaluation and to resume from. It records
            criterion, ratios, round_to, the base metric and group widths; a file made
            with other settings or for another network is refused.
        skip: patterns of layers to leave out.
        round_to: as in :func:`~slim_callbacks.prune`, so the analysis removes what a
            later prune would.
        method: ``"mask"`` (default) or ``"prune"``; see the module docstring. Both
            give the physical-pruning answer.
        cache: compute the part of the network that runs before a group's first
            changed layer once per group and replay it for the group's other ratios
            (see :class:`PrefixCache`; exact, replayed only while its input is the
            same). Holds that prefix's outputs over the eval set for one group at a
            time, at most 1 GiB (True) or the number of bytes given (an int): calls
            beyond the limit are computed. ``False`` turns it off. MobileNetV1 at
            224x224 needs about 13 MB per eval image for its deepest group.
        workers: processes that evaluate groups side by side (forked from this one, so
            ``eval_fn`` and its data need not be picklable; each holds its own prefix
            cache). Paddle computes on one core per process, so ``workers`` up to the
            number of cores divides the time almost by ``workers``. The answer is the
            same; this process writes the file. CPU only, where ``os.fork`` exists.
        progress: show a tqdm bar (layers x ratios, with ETA); None shows it only when
            stderr is a terminal.
        recalibrate_bn: re-estimate the BatchNorm statistics on this many batches of
            ``bn_data`` before every evaluation (adaptive-BN evaluation, see the module
            docstring); 0 (default) evaluates with the network's own statistics.
        bn_data: the batches for ``recalibrate_bn``: an iterable of network inputs (a
            tensor, or a tuple of the positional inputs, per batch), e.g. training
            images; its first ``recalibrate_bn`` items are kept in memory. ``None``
            takes the first ``recalibrate_bn`` inputs that ``eval_fn`` passes to the
            network in the base evaluation (the eval data then sets the statistics).
        graph: the network's trace when the caller has one (a
            :class:`~slim_callbacks.pruning.Pruner`'s, see :meth:`Pruner.sensitivity
            <slim_callbacks.pruning.Pruner.sensitivity>`): not traced again.

    Returns:
        ``{group name: {ratio: loss}}`` for the chosen groups, in network order. A
        group's name is its first producer's structural name, e.g.
        ``"conv2_1._pointwise_conv.0"``.

    Raises:
        ConfigError: a bad argument; nothing is evaluated.
        SlimError: the network rejects the inputs, eval_fn returns no finite
            number or a zero base metric, or ``file`` does not fit this run.
        Exception: whatever ``eval_fn`` raises, after the network is put back exactly
            as it was (weights, buffers, shapes, train/eval flags).
    """
    if not callable(eval_fn):
        raise ConfigError("eval_fn", eval_fn, "a callable: eval_fn(network) -> metric")
    ratios = check_ratio_list(ratios)
    criterion = get_criterion(criterion)
    round_to = check_round_to(round_to)
    layers = check_patterns("layers", layers)
    check_choice("method", method, METHODS)
    if isinstance(cache, bool):
        cache = DEFAULT_CACHE_BYTES if cache else 0
    else:
        cache = check_int("cache", cache, 0, "True, False or a limit in bytes, e.g. 2**30")
    check_workers(workers)
    if progress is not None and not isinstance(progress, bool):
        raise ConfigError("progress", progress, "True, False or None (only on a terminal)")
    if file is not None and not isinstance(file, (str, os.PathLike)):
        raise ConfigError("file", file, "a path or None")
    file = None if file is None else os.fspath(file)
    recalibrate_bn = check_recalibrate_bn(recalibrate_bn)
    calibration = calibration_batches(bn_data, recalibrate_bn)

    if graph is None:
        graph = trace(network, given_inputs(example_inputs, input_shape, forward_fn))
    groups = chosen_groups(graph, layers, skip)
    record = Record(criterion.name, ratios, round_to)
    if file is not None and os.path.exists(file):
        record = Record.load(file)
        record.check_settings(file, criterion.name, ratios, round_to)
        record.check_widths(file, groups)
    record.widths.update({g.name: g.num_units for g in groups})

    state = NetworkState(network)
    try:
        if recalibrate_bn and calibration is None:
            calibration = record_calibration(eval_fn, network, state, recalibrate_bn)
        reference = state
        if calibration:
            bn_recalibration.recalibrate_bn(network, calibration)
            reference = NetworkState(network)  # what eval_fn must leave unchanged
        base = evaluate(eval_fn, network, state)
        if file is not None:
            record.check_base(file, base)
        if base == 0:
            raise SlimError("eval_fn returned 0 for the unpruned network: the relative loss "
                            "(base - metric) / |base| is undefined; use a metric that is not 0")
        changed = reference.changed()
        state.restore()
        if changed:
            logger.warning("eval_fn changed %d tensors of the network (%s...); they are put "
                           "back after every run, but evaluations that update BatchNorm "
                           "statistics (train mode) make sensitivities noisy",
                           len(changed), ", ".join(changed[:3]))
        record.base = base
        record.save(file)
        analysis = GroupAnalysis(network, eval_fn, graph, record, criterion, state, method, cache,
                                 calibration)
        run_groups(analysis, groups, file, progress, workers)
    finally:
        changed = state.restore()
        if changed:
            logger.warning("put back %d tensors that eval_fn changed: %s", len(changed),
                           ", ".join(changed[:5]))
    return {g.name: {r: record.losses[g.name][r] for r in ratios} for g in groups}


class GroupAnalysis:
    """Evaluates the ratios of one group at a time; the serial loop and every worker
    process each hold one (with the prefix cache of the last group they analysed)."""

    def __init__(self, network, eval_fn: Callable, graph: DependencyGraph, record: Record,
                 criterion: Criterion, state: NetworkState, method: str,
                 cache: int = DEFAULT_CACHE_BYTES, calibration: Optional[List[tuple]] = None):
        self.network, self.eval_fn, self.graph, self.record = network, eval_fn, graph, record
        self.calibration = calibration
        self.criterion, self.state, self.method, self.cache = criterion, state, method, int(cache)
        self.by_name = layer_table(network)
        self.previous: Optional[PrefixCache] = None

    def pending(self, group: ChannelGroup) -> List[float]:
        losses = self.record.losses.get(group.name, {})
        return [r for r in self.record.ratios if r not in losses]

    def losses(self, group: ChannelGroup) -> Iterator[Tuple[str, float, float]]:
        """``(group name, ratio, loss)`` for each ratio the record lacks."""
        scores = self.criterion(group, self.by_name, self.graph.layer_types)
        remover = (GroupMask if self.method == "mask" else GroupPrune)(group, self.by_name)
        changed = ([m.layer for m in group.members if m.role == IN] if self.method == "mask"
                   else list(group.layers()))
        prefix = (PrefixCache(unwrap(self.network), changed, group.name, self.cache)
                  if self.cache else None)
        run = lambda: evaluate(self.eval_fn, self.network, self.state)  # noqa: E731
        seen: Dict[bytes, float] = {}
        base = self.record.base
        for ratio in self.pending(group):
            units = select_units(group, scores, ratio, self.criterion, self.record.round_to)
            key = np.asarray(units, dtype=np.int64).tobytes()
            if len(units) == 0:
                loss = 0.0
            elif key in seen:
                loss = seen[key]
            else:
                with remover.applied(units):
                    if self.calibration:
                        bn_recalibration.recalibrate_bn(self.network, self.calibration)
                    metric = prefix.evaluate(run, self.previous) if prefix is not None else run()
                if prefix is not None and prefix.recorded:
                    self.previous = None  # one group's cache at a time once this one is recorded
                loss = (base - metric) / abs(base)
                seen[key] = loss
            yield group.name, ratio, loss
        if prefix is not None:
            logger.debug("prefix cache of %s: %d cached layer calls, %d replayed%s", group.name,
                         sum(map(len, prefix.records.values())), prefix.hits,
                         "" if prefix.enabled else " (switched off: input changed)")
            if prefix.recorded and prefix.enabled:
                self.previous = prefix  # the next group's first evaluation starts from it


def run_groups(analysis: GroupAnalysis, groups: List[ChannelGroup], file: Optional[str],
               progress: Optional[bool], workers: int = 1) -> None:
    """Evaluates every (group, ratio) pair not yet in the record, in this process or in
    ``workers`` forked ones; saves the file after every loss either way."""
    record = analysis.record
    total = len(groups) * len(record.ratios)
    todo = [g for g in groups if analysis.pending(g)]
    done = total - sum(len(analysis.pending(g)) for g in groups)
    with progress_bar(progress, total=total, initial=done, desc="sensitivity",
                      unit="eval") as bar:
        def store(name: str, ratio: float, loss: float) -> None:
            record.losses.setdefault(name, {})[ratio] = loss
            record.save(file)
            bar.set_postfix_str(name)
            bar.update(1)

        if workers > 1 and len(todo) > 1:
            run_forked(todo, analysis.losses, workers, lambda group, result: store(*result))
        else:
            for group in todo:
                for result in analysis.losses(group):
                    store(*result)
    for group in groups:
        losses = record.losses.get(group.name, {})
        logger.debug("sensitivity of %s: %s", group.name,
                     ", ".join(f"{r:g}: {losses[r]:.4f}" for r in record.ratios if r in losses))
