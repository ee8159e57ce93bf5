"""TrainingAids: what helps a pruned network recover while it trains - one frozen part
of a :class:`~slim_callbacks.pruning.PruningSpec`.

Each aid is a callback of its own (:mod:`slim_callbacks.callbacks`) that reads the
pruner's state; a spec with an aid switched on makes ``PruneCallback`` add that callback
itself. The rules of each aid's options live here, once, for the spec, the recipe and
the callbacks:

- ``distill``: knowledge distillation (``DistillCallback``): ``None`` (off), ``True``
  (defaults) or ``{"teacher", "alpha", "temperature"}``;
- ``recalibrate_bn``: re-estimate BatchNorm statistics on N training batches after each
  event (``BNRecalibration``; 0 = off);
- ``max_metric_drop`` with ``budget_metric``, ``budget_min_step``, ``budget_mode``: the
  accuracy budget (``AccuracyBudget``); the budget's options need ``max_metric_drop``;
- ``bn_l1``: L1 on BatchNorm scales until the last event (``BNScaleL1``).

Examples:
    >>> aids = TrainingAids(distill=True, max_metric_drop=0.02)
    >>> aids.distill, aids.any()
    ({'teacher': None, 'alpha': 0.5, 'temperature': 4.0}, True)
    >>> TrainingAids.from_dict(aids.to_dict()) == aids
    True
    >>> TrainingAids(budget_min_step=0.1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: budget_min_step: 0.1 is not allowed; expected 0.02 ...
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional

import paddle

from slim_callbacks.analysis.bn_recalibration import check_recalibrate_bn
from slim_callbacks.core.checks import check_choice, check_number
from slim_callbacks.core.errors import ConfigError

#: The options of distillation (``DistillCallback``'s keyword arguments).
DISTILL_OPTIONS = ("teacher", "alpha", "temperature")
#: ``temperature`` bounds: below 0.1 both softmaxes are one-hot and ``T^2`` takes the
#: KD term to 0; above 100 it drowns in float32 rounding (1e-4 at T=100, 3e-3 at 1000).
TEMPERATURES = (0.1, 100.0)
#: The budget's metric directions: ``max`` (higher is better), ``min`` (lower is).
MODES = ("max", "min")
#: The default of ``budget_min_step``.
MIN_STEP = 0.02


def check_temperature(key: str, value) -> float:
    """The softmax temperature: a number in :data:`TEMPERATURES`."""
    low, high = TEMPERATURES
    return check_number(key, value, low, high, allowed=f"a number in [{low:g}, {high:g}] "
                        f"(the softmax temperature; Hinton et al. use 1-20)")


def check_alpha(key: str, value) -> float:
    """The weight of the KD term: a number in [0, 1]."""
    return check_number(key, value, 0.0, 1.0, allowed="a number in [0, 1] (the weight of the KD term)")


def check_teacher(teacher, key: str = "teacher") -> Optional[paddle.nn.Layer]:
    """None (a frozen copy of the network), a ``paddle.nn.Layer`` or a ``paddle.Model``
    (its network)."""
    if teacher is None or isinstance(teacher, paddle.nn.Layer):
        return teacher
    if isinstance(teacher, paddle.Model):
        return teacher.network
    raise ConfigError(key, teacher, "None (a frozen copy of the network), a "
                                    "paddle.nn.Layer or a paddle.Model")


def check_distill(value, key: str = "distill") -> Optional[Dict[str, Any]]:
    """``distill``: None/False (off), True (the defaults) or a dict of its options, as
    the full options dict."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "None, True, a dict of teacher/alpha/temperature")
    for name in value:
        if name not in DISTILL_OPTIONS:
            raise ConfigError(f"{key}[{name!r}]", value[name],
                              f"an option of DistillCallback: {', '.join(DISTILL_OPTIONS)}")
    return {"teacher": check_teacher(value.get("teacher"), f"{key}['teacher']"),
            "alpha": check_alpha(f"{key}['alpha']", value.get("alpha", 0.5)),
            "temperature": check_temperature(f"{key}['temperature']", value.get("temperature", 4.0))}


def check_bn_l1(key: str, value) -> float:
    """The BN-L1 strength: a finite number > 0."""
    return check_number(key, value, 0.0, math.inf, low_open=True, high_open=True,
                        allowed="None or a number > 0")


def check_max_metric_drop(key: str, value) -> float:
    """The accuracy budget: the largest eval drop an event may cost, a finite number > 0."""
    return check_number(key, value, 0.0, math.inf, low_open=True, high_open=True,
                        allowed="a number > 0")


def check_min_step(key: str, value) -> float:
    """The budget's smallest retry step: a number in (0, 1]."""
    return check_number(key, value, 0.0, 1.0, low_open=True)


def check_budget(max_drop, metric, min_step, mode) -> tuple:
    """The accuracy budget's options, checked: ``(max_drop, metric, min_step, mode)``."""
    max_drop = check_max_metric_drop("max_metric_drop", max_drop)
    min_step = check_min_step("budget_min_step", min_step)
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError("budget_metric", metric, "an eval log key such as 'acc', or None")
    mode = None if mode is None else check_choice("budget_mode", mode, MODES)
    return max_drop, metric, min_step, mode


@dataclasses.dataclass(frozen=True)
class TrainingAids:
    """The training aids of a pruning job (see the module docstring).

    Raises:
        ConfigError: a bad option, or a budget option without ``max_metric_drop``.
    """

    distill: Optional[Dict[str, Any]] = None
    recalibrate_bn: int = 0
    max_metric_drop: Optional[float] = None
    budget_metric: Optional[str] = None
    budget_min_step: float = MIN_STEP
    budget_mode: Optional[str] = None
    bn_l1: Optional[float] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("distill", check_distill(self.distill))
        set_("recalibrate_bn", check_recalibrate_bn(self.recalibrate_bn))
        if self.bn_l1 is not None:
            set_("bn_l1", check_bn_l1("bn_l1", self.bn_l1))
        if self.max_metric_drop is not None:
            drop, metric, step, mode = check_budget(self.max_metric_drop, self.budget_metric,
                                                    self.budget_min_step, self.budget_mode)
            set_("max_metric_drop", drop)
            set_("budget_min_step", step)
            return
        for key, default in (("budget_metric", None), ("budget_mode", None),
                             ("budget_min_step", MIN_STEP)):
            if getattr(self, key) != default:
                raise ConfigError(key, getattr(self, key), f"{default} (the default) without "
                                  f"max_metric_drop (the budget is off)")

    def any(self) -> bool:
        """True if some aid is switched on."""
        return self != TrainingAids()

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (a distillation teacher network stays as it is)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key: str = "aids") -> "TrainingAids":
        """Aids from :meth:`to_dict`'s mapping; an unknown key is a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(key, data, "a mapping of TrainingAids fields")
        known = [f.name for f in dataclasses.fields(cls)]
        for name, value in data.items():
            if name not in known:
                raise ConfigError(f"{key}.{name}", value, f"a TrainingAids field: {', '.join(known)}")
        return cls(**data)
