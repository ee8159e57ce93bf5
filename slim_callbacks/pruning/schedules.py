"""Pruning schedules: WHEN pruning happens and HOW MUCH of the final ratio is reached.

A schedule maps epochs to target ratios. The consumer (the pruning callback) knows
nothing about the curve: it asks :meth:`Schedule.events` for sorted
``(epoch, target_ratio)`` pairs and, at the end of each listed epoch, prunes the network
until the ratio in force reaches ``target_ratio``.

Semantics:

* **Targets are absolute, relative to the ORIGINAL widths.** A target of 0.4 at epoch 4
  means "40% of the channels the layer had before training started are gone after
  epoch 4", whatever earlier events removed. Nothing ever compounds: a schedule cannot
  express "remove 30% of what is left" six times (which silently ends at
  ``1 - 0.7**6 = 88%``); the last target is always exactly the final ratio.
* **Epochs are 0-based**, as in paddle's callbacks: ``fit(epochs=n)`` calls
  ``on_epoch_end(epoch)`` with ``epoch`` in ``0..n-1``, and the event at ``epoch`` fires
  there. :meth:`Schedule.validate` refuses, before training, a schedule whose last event
  would be at or after ``n`` and so would never fire.
* Targets are non-decreasing; the last one equals the final ratio exactly.
* Before the first event the ratio in force is 0.0 (:meth:`Schedule.ratio_at`).

Kinds (``make_schedule`` names in brackets):

* :class:`OneShot` [``oneshot``]: everything at one epoch.
* :class:`AtEpochs` [``epochs``]: at listed epochs, intermediate targets on a curve.
* :class:`RatioMap` [``map``]: an explicit ``{epoch: ratio}`` map of absolute ratios.
* :class:`AGP` [``agp``], :class:`LinearRamp` [``linear``], :class:`ExpRamp` [``exp``]:
  every ``frequency`` epochs from ``start_epoch`` to ``end_epoch``, both included.

The curves (``linear``, ``agp``, ``exp``) and their formulas are in
:mod:`slim_callbacks.pruning.schedule_curves`; building a schedule by name or from a
recipe dict is :mod:`slim_callbacks.pruning.schedule_factory`.

    >>> sched = AGP(start_epoch=0, end_epoch=6, frequency=2)
    >>> [(e, round(r, 4)) for e, r in sched.validate(num_epochs=10).events(0.5)]
    [(0, 0.2891), (2, 0.4375), (4, 0.4922), (6, 0.5)]
    >>> sched.ratio_at(3, 0.5) == sched.events(0.5)[1][1]
    True
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from slim_callbacks.core.checks import check_choice, check_epoch, check_int, check_ratio
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.schedule_curves import CURVES, Event, curve_targets

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- base

class Schedule:
    """Base class of every schedule: an immutable map from epochs to target ratios.

    Subclasses are frozen dataclasses (hashable, picklable, comparable) and implement
    :meth:`event_epochs` and :meth:`_targets`.

    Attributes:
        kind: the name used by :func:`make_schedule` and in ``to_dict()["kind"]``.
    """

    kind: ClassVar[str] = ""
    _last_key: ClassVar[str] = ""  # the argument that holds the last event epoch

    @property
    def event_epochs(self) -> Tuple[int, ...]:
        """Strictly increasing epochs at which an event fires; independent of the ratio."""
        raise NotImplementedError

    @property
    def last_epoch(self) -> int:
        """Epoch of the last event: after its ``on_epoch_end`` the final ratio is reached."""
        return self.event_epochs[-1]

    @property
    def final_ratio(self) -> Optional[float]:
        """The final ratio the schedule itself fixes, or None when it comes from the
        consumer (every kind except :class:`RatioMap`)."""
        return None

    def _targets(self, final_ratio) -> List[float]:
        raise NotImplementedError

    def events(self, final_ratio) -> List[Event]:
        """Sorted ``(epoch, target_ratio)`` pairs, targets relative to the original widths.

        Args:
            final_ratio: the ratio in force after the last event, in ``[0, 1)``.

        Returns:
            One pair per event epoch; targets are non-decreasing and the last equals
            ``final_ratio`` exactly.

        Raises:
            ConfigError: ``final_ratio`` is not in ``[0, 1)`` (or below ``initial_ratio``).
        """
        return list(zip(self.event_epochs, self._targets(final_ratio)))

    def ratio_at(self, epoch: int, final_ratio=None) -> float:
        """The target in force after ``on_epoch_end(epoch)``; used to resume mid-schedule.

        Args:
            epoch: a 0-based epoch; negative means "before training" (0.0).
            final_ratio: as for :meth:`events`.

        Returns:
            The target of the last event at or before ``epoch``; 0.0 before any event.
        """
        check_int("epoch", epoch, allowed="an integer epoch")
        events = self.events(final_ratio)
        index = bisect.bisect_right([e for e, _ in events], epoch)
        return events[index - 1][1] if index else 0.0

    def validate(self, num_epochs: int) -> "Schedule":
        """Checks, before training, that every event fires during ``fit(epochs=num_epochs)``.

        Args:
            num_epochs: the ``epochs`` argument of ``paddle.Model.fit``.

        Returns:
            ``self``, to chain.

        Raises:
            ConfigError: ``num_epochs`` is not an integer >= 1, or an event would be at
                an epoch >= ``num_epochs`` and would silently never happen.
        """
        num_epochs = check_int("num_epochs", num_epochs, 1)
        last = self.last_epoch
        if last >= num_epochs:
            raise ConfigError(
                self._last_key, last,
                f"every event epoch < num_epochs={num_epochs} (epochs are 0-based: "
                f"fit(epochs={num_epochs}) ends epochs 0..{num_epochs - 1}, so an event at "
                f"epoch {last} would never fire)")
        if last == num_epochs - 1:
            logger.warning("the last pruning event is at the last epoch (%d): no epoch is "
                           "left to fine-tune the pruned network", last)
        return self

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (ints, floats, lists, dicts) for YAML/JSON recipes; inverse of
        :func:`schedule_from_dict`."""
        out: Dict[str, Any] = {"kind": self.kind}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out


class _OnCurve(Schedule):
    """A schedule whose ``k``-th of ``K`` events reaches ``curve(k / K)``: subclasses
    have ``curve`` and ``initial_ratio``."""

    def _targets(self, final_ratio) -> List[float]:
        return curve_targets(len(self.event_epochs), self.curve, self.initial_ratio, final_ratio)


# ---------------------------------------------------------------------------- kinds

@dataclasses.dataclass(frozen=True)
class OneShot(Schedule):
    """Reach the final ratio in one event.

    Args:
        epoch: the 0-based epoch at whose end everything is pruned.

    Examples:
        >>> OneShot(3).events(0.5)
        [(3, 0.5)]
    """

    epoch: int
    kind: ClassVar[str] = "oneshot"
    _last_key: ClassVar[str] = "epoch"

    def __post_init__(self):
        object.__setattr__(self, "epoch", check_epoch("epoch", self.epoch))

    @property
    def event_epochs(self) -> Tuple[int, ...]:
        return (self.epoch,)

    def _targets(self, final_ratio) -> List[float]:
        return [check_ratio("final_ratio", final_ratio)]


@dataclasses.dataclass(frozen=True)
class AtEpochs(_OnCurve):
    """Prune at listed epochs; the ``k``-th of ``K`` events reaches ``curve(k / K)``.

    Args:
        epochs: strictly increasing 0-based epochs; the final ratio is reached at the last.
        curve: ``"linear"``, ``"agp"`` or ``"exp"`` (formulas in :mod:`~slim_callbacks.pruning.schedule_curves`).
        initial_ratio: the curve's value before the first event, in ``[0, 1)``.

    Examples:
        >>> [(e, round(r, 4)) for e, r in AtEpochs([2, 4, 6]).events(0.6)]
        [(2, 0.2), (4, 0.4), (6, 0.6)]
    """

    epochs: Tuple[int, ...]
    curve: str = "linear"
    initial_ratio: float = 0.0
    kind: ClassVar[str] = "epochs"
    _last_key: ClassVar[str] = "epochs"

    def __post_init__(self):
        epochs = self.epochs
        if isinstance(epochs, (str, bytes, Mapping)) or not isinstance(epochs, Iterable):
            raise ConfigError("epochs", epochs, "a non-empty list of epochs, e.g. [2, 4, 6]")
        epochs = tuple(epochs)
        if not epochs:
            raise ConfigError("epochs", [], "a non-empty list of epochs, e.g. [2, 4, 6]")
        checked = tuple(check_epoch(f"epochs[{i}]", e) for i, e in enumerate(epochs))
        if any(a >= b for a, b in zip(checked, checked[1:])):
            raise ConfigError("epochs", list(epochs), "strictly increasing epochs")
        check_choice("curve", self.curve, CURVES)
        object.__setattr__(self, "epochs", checked)
        object.__setattr__(self, "initial_ratio",
                           check_ratio("initial_ratio", self.initial_ratio))

    @property
    def event_epochs(self) -> Tuple[int, ...]:
        return self.epochs



@dataclasses.dataclass(frozen=True)
class RatioMap(Schedule):
    """An explicit ``{epoch: ratio}`` map of absolute target ratios.

    The map fixes the final ratio itself (its last value, also :attr:`final_ratio`):
    :meth:`events` and :meth:`ratio_at` ignore the value of their ``final_ratio``
    argument (it is only checked to be a ratio) and return the map's own ratios.

    Args:
        ratios: ``{epoch: ratio}`` (or ``(epoch, ratio)`` pairs); ratios in ``[0, 1)``,
            non-decreasing with the epoch. Stored sorted as a tuple of pairs.

    Examples:
        >>> sched = RatioMap({4: 0.5, 2: 0.25})
        >>> sched.events(), sched.final_ratio
        ([(2, 0.25), (4, 0.5)], 0.5)
    """

    ratios: Tuple[Tuple[int, float], ...]
    kind: ClassVar[str] = "map"
    _last_key: ClassVar[str] = "ratios"

    def __post_init__(self):
        ratios = self.ratios
        allowed = "a non-empty {epoch: ratio} map, e.g. {2: 0.25, 4: 0.5}"
        if isinstance(ratios, Mapping):
            pairs = list(ratios.items())
        elif isinstance(ratios, Sequence) and not isinstance(ratios, (str, bytes)) and all(
                isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                for p in ratios):
            pairs = [tuple(p) for p in ratios]
        else:
            raise ConfigError("ratios", ratios, allowed)
        if not pairs:
            raise ConfigError("ratios", ratios, allowed)
        checked = sorted((check_epoch("ratios key", e), check_ratio(f"ratios[{e!r}]", r))
                         for e, r in pairs)
        for (e0, r0), (e1, r1) in zip(checked, checked[1:]):
            if e0 == e1:
                raise ConfigError("ratios key", e1, "each epoch once")
            if r1 < r0:
                raise ConfigError(f"ratios[{e1}]", r1, f"a ratio >= {r0!r} (the ratio at "
                                  f"epoch {e0}): targets never decrease")
        object.__setattr__(self, "ratios", tuple(checked))

    @property
    def event_epochs(self) -> Tuple[int, ...]:
        return tuple(e for e, _ in self.ratios)

    @property
    def final_ratio(self) -> float:
        return self.ratios[-1][1]

    def events(self, final_ratio=None) -> List[Event]:
        """The map's own ``(epoch, ratio)`` pairs; ``final_ratio`` is checked, then ignored."""
        return super().events(final_ratio)

    def _targets(self, final_ratio) -> List[float]:
        if final_ratio is not None:
            check_ratio("final_ratio", final_ratio)
        return [r for _, r in self.ratios]

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "ratios": dict(self.ratios)}


@dataclasses.dataclass(frozen=True)
class Ramp(_OnCurve):
    """Base of the curves with an event every ``frequency`` epochs, ``start_epoch`` to
    ``end_epoch`` both included: ``K = (end_epoch - start_epoch) // frequency + 1``
    events, event ``k = 1..K`` at ``start_epoch + (k - 1) * frequency`` reaching
    ``curve(k / K)``.

    Args:
        start_epoch: first event (0-based).
        end_epoch: last event, where the final ratio is reached; must be
            ``start_epoch + m * frequency``.
        frequency: epochs between events, >= 1.
        initial_ratio: the curve's value before the first event, in ``[0, 1)``.
    """

    start_epoch: int
    end_epoch: int
    frequency: int = 1
    initial_ratio: float = 0.0
    curve: ClassVar[str] = ""
    _last_key: ClassVar[str] = "end_epoch"

    def __post_init__(self):
        if self.curve not in CURVES:
            raise TypeError("Ramp is abstract: use AGP, LinearRamp or ExpRamp")
        start = check_epoch("start_epoch", self.start_epoch)
        end = check_epoch("end_epoch", self.end_epoch)
        freq = check_int("frequency", self.frequency, 1)
        if start > end:
            raise ConfigError("end_epoch", end, f"an epoch >= start_epoch={start}")
        if (end - start) % freq:
            below = start + (end - start) // freq * freq
            raise ConfigError("end_epoch", end,
                              f"start_epoch + a multiple of frequency (start_epoch={start}, "
                              f"frequency={freq}: e.g. {below} or {below + freq}), else the "
                              "last event never reaches the final ratio")
        for name, value in (("start_epoch", start), ("end_epoch", end), ("frequency", freq)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "initial_ratio",
                           check_ratio("initial_ratio", self.initial_ratio))

    @property
    def event_epochs(self) -> Tuple[int, ...]:
        return tuple(range(self.start_epoch, self.end_epoch + 1, self.frequency))



@dataclasses.dataclass(frozen=True)
class AGP(Ramp):
    """Automated Gradual Pruning (Zhu & Gupta, arXiv 1710.01878): fast early, slow late.

    With ``K`` events, event ``k = 1..K`` (at ``start_epoch + (k - 1) * frequency``)
    reaches::

        s_k = s_f + (s_i - s_f) * (1 - k / K) ** 3

    i.e. the paper's ``s_t`` with ``t0`` one step before ``start_epoch`` and
    ``n = K`` steps. The ``k = 0`` term (value ``s_i``) is the state BEFORE the first
    event, never an event: events fire at ``on_epoch_end``, so the end of
    ``start_epoch`` already takes the first step. (Distiller instead prunes to ``s_i``
    at ``t0``, at ``on_epoch_begin``, and therefore needs a nonzero initial sparsity;
    with ``s_i = 0`` that first event would be a no-op.) Every event here prunes
    something (targets strictly increase when ``s_f > s_i``) and the event at
    ``end_epoch`` (inclusive) reaches ``s_f`` exactly.

    Examples:
        >>> [(e, round(r, 4)) for e, r in AGP(0, 6, frequency=2).events(0.5)]
        [(0, 0.2891), (2, 0.4375), (4, 0.4922), (6, 0.5)]
    """

    kind: ClassVar[str] = "agp"
    curve: ClassVar[str] = "agp"


@dataclasses.dataclass(frozen=True)
class LinearRamp(Ramp):
    """Linear ramp: event ``k = 1..K`` reaches ``s_i + (s_f - s_i) * k / K``.

    Examples:
        >>> [(e, round(r, 4)) for e, r in LinearRamp(1, 3).events(0.6)]
        [(1, 0.2), (2, 0.4), (3, 0.6)]
    """

    kind: ClassVar[str] = "linear"
    curve: ClassVar[str] = "linear"


@dataclasses.dataclass(frozen=True)
class ExpRamp(Ramp):
    """Geometric ramp (NNI lottery ticket): event ``k = 1..K`` reaches
    ``1 - (1 - s_i) * ((1 - s_f) / (1 - s_i)) ** (k / K)``, i.e. ``1 - (1 - s_f) ** (k/K)``
    for ``s_i = 0``: each event removes the same share of the remaining channels, with
    the targets still computed against the original widths.

    Examples:
        >>> [(e, round(r, 4)) for e, r in ExpRamp(0, 3).events(0.9375)]
        [(0, 0.5), (1, 0.75), (2, 0.875), (3, 0.9375)]
    """

    kind: ClassVar[str] = "exp"
    curve: ClassVar[str] = "exp"
