"""Building schedules: by name, from a recipe dict, or from ``PruneCallback``'s arguments.

:data:`SCHEDULES` names every kind of :mod:`slim_callbacks.pruning.schedules`;
:func:`make_schedule` and :func:`schedule_from_dict` (the inverse of
:meth:`~slim_callbacks.pruning.schedules.Schedule.to_dict`) build one with errors that
name the offending key; :func:`build_schedule` turns the "when" arguments of
``PruneCallback`` (``prune_epochs``, ``schedule``, ``start_epoch``, ``end_epoch``,
``frequency``) into one.

Recipes store schedules as dicts:

    >>> sched = schedule_from_dict({"kind": "agp", "start_epoch": 0, "end_epoch": 6,
    ...                             "frequency": 2})
    >>> [(e, round(r, 4)) for e, r in sched.validate(num_epochs=10).events(0.5)]
    [(0, 0.2891), (2, 0.4375), (4, 0.4922), (6, 0.5)]
    >>> schedule_from_dict(sched.to_dict()) == sched
    True
    >>> build_schedule(None, [2, 4], 0, None, 1)
    AtEpochs(epochs=(2, 4), curve='linear', initial_ratio=0.0)
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, Mapping, Sequence, Type

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.schedule_curves import CURVES
from slim_callbacks.pruning.schedules import AGP, AtEpochs, ExpRamp, LinearRamp, OneShot, RatioMap, Schedule

#: ``make_schedule`` / ``to_dict()["kind"]`` name -> class.
SCHEDULES: Dict[str, Type[Schedule]] = {
    cls.kind: cls for cls in (OneShot, AtEpochs, RatioMap, AGP, LinearRamp, ExpRamp)}


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


def _build(kind, kwargs: Mapping[str, Any], prefix: str) -> Schedule:
    if not isinstance(kind, str) or kind not in SCHEDULES:
        raise ConfigError(f"{prefix}kind", kind, f"one of {', '.join(SCHEDULES)}")
    cls = SCHEDULES[kind]
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key, value in kwargs.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{prefix}{key}", value,
                              f"one of the keys of kind {kind!r}: {', '.join(names)}{hint}")
    for field in fields:
        if field.name not in kwargs and field.default is dataclasses.MISSING:
            raise ConfigError(f"{prefix}{field.name}", _Missing(),
                              f"a value: kind {kind!r} requires it")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err.key}", err.value, err.allowed) from None


def make_schedule(kind: str, **kwargs) -> Schedule:
    """Builds a schedule by name.

    Args:
        kind: ``"oneshot"``, ``"epochs"``, ``"map"``, ``"agp"``, ``"linear"`` or ``"exp"``.
        **kwargs: the arguments of the class (``SCHEDULES[kind]``).

    Raises:
        ConfigError: unknown kind, unknown or missing argument, or a bad value.

    Examples:
        >>> make_schedule("epochs", epochs=[2, 4], curve="exp")
        AtEpochs(epochs=(2, 4), curve='exp', initial_ratio=0.0)
    """
    return _build(kind, kwargs, "")


def schedule_from_dict(d: Mapping[str, Any], key: str = "schedule") -> Schedule:
    """Inverse of :meth:`Schedule.to_dict`, for recipes.

    Args:
        d: ``{"kind": ..., **arguments}``, e.g.
            ``{"kind": "agp", "start_epoch": 0, "end_epoch": 6, "frequency": 2}``.
        key: the recipe path of ``d``, prefixed to the key named by errors.

    Raises:
        ConfigError: not a mapping, unknown kind or key, missing key, or a bad value; the
            message names ``<key>.<argument>``.

    Examples:
        >>> schedule_from_dict({"kind": "oneshot", "epoch": 2})
        OneShot(epoch=2)
    """
    if not isinstance(d, Mapping):
        raise ConfigError(key, d, "a mapping with a 'kind' key, e.g. "
                                  "{'kind': 'agp', 'start_epoch': 0, 'end_epoch': 6}")
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    return _build(d.get("kind", _Missing()), kwargs, f"{key}." if key else "")


def build_schedule(schedule, prune_epochs, start_epoch, end_epoch, frequency):
    """The schedule object for PruneCallback's 'when' arguments (ConfigError if bad)."""
    given = [k for k, v in (("schedule", schedule), ("prune_epochs", prune_epochs)) if v is not None]
    if len(given) > 1:
        raise ConfigError("prune_epochs", prune_epochs, "None when schedule is given (one 'when')")
    if prune_epochs is not None:
        if isinstance(prune_epochs, (str, bytes)) or not isinstance(prune_epochs, Sequence) \
                or not prune_epochs:
            raise ConfigError("prune_epochs", prune_epochs, "a non-empty list of epochs, e.g. [2, 4, 6]")
        return make_schedule("epochs", epochs=list(prune_epochs))
    if schedule is None or schedule == "oneshot":
        return make_schedule("oneshot", epoch=start_epoch)
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, Mapping):
        if "kind" in schedule:
            return schedule_from_dict(schedule)
        return make_schedule("map", ratios=dict(schedule))
    if isinstance(schedule, str) and schedule in CURVES:
        if end_epoch is None:
            raise ConfigError("end_epoch", end_epoch, f"the last epoch of the {schedule!r} curve")
        return make_schedule(schedule, start_epoch=start_epoch, end_epoch=end_epoch,
                             frequency=frequency)
    raise ConfigError("schedule", schedule, "None, 'oneshot', 'agp', 'linear', 'exp', an "
                      "{epoch: ratio} map, a schedule dict or a slim_callbacks.pruning.schedules.Schedule")
