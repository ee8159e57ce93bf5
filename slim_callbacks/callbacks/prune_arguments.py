"""PruneCallback's arguments -> its :class:`~slim_callbacks.pruning.PruningSpec`, and the
spec's aids -> their callbacks (:func:`aid_callbacks`).

The common arguments are spec fields (what, where, how) and the WHEN (``prune_epochs``
or ``schedule``); the rare ones come as keywords (:data:`RARE`); the training aids
that used to be keywords (:data:`DEPRECATED`) still work for one release, with a
DeprecationWarning naming the callback to use instead. With ``spec=`` no spec field
is given as a keyword.

Examples:
    >>> spec, extras = callback_spec(None, {"ratios": 0.5, "prune_epochs": [1, 2]}, {})
    >>> spec.schedule, extras
    (AtEpochs(epochs=(1, 2), curve='linear', initial_ratio=0.0), {'reset_optimizer': False, 'graph': None})
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

from slim_callbacks.callbacks.accuracy_budget import AccuracyBudget
from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.callbacks.bn_l1 import BNScaleL1
from slim_callbacks.callbacks.distill import DistillCallback
from slim_callbacks.callbacks.recalibration import BNRecalibration
from slim_callbacks.core.checks import check_epoch, check_int
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.aids import TrainingAids
from slim_callbacks.pruning.schedule_factory import build_schedule
from slim_callbacks.pruning.spec import PruningSpec

#: Keywords of the rare cases: spec fields, the start/end/frequency of a curve schedule
#: (``schedule="agp"``), ``reset_optimizer`` (resuming without an optimizer state) and
#: ``graph`` (a trace the caller already has).
RARE = {"strategy_options": None, "structure": None, "fold_bn_shift": None,
        "coupled_scoring": "sum", "start_epoch": 0, "end_epoch": None, "frequency": 1,
        "reset_optimizer": False, "graph": None}
#: Deprecated aid keyword -> what to use instead.
DEPRECATED = {
    "distill": "DistillCallback(teacher=..., alpha=..., temperature=...)",
    "recalibrate_bn": "BNRecalibration(batches=N)",
    "max_metric_drop": "AccuracyBudget(max_metric_drop)",
    "budget_metric": "AccuracyBudget(max_metric_drop, metric=...)",
    "budget_min_step": "AccuracyBudget(max_metric_drop, min_step=...)",
    "budget_mode": "AccuracyBudget(max_metric_drop, mode=...)",
    "bn_l1": "BNScaleL1(coeff)",
    "log_dir": "VisualDLLogger(log_dir)",
    "log_freq": "VisualDLLogger(log_dir, log_freq=...)",
}
#: The WHEN arguments (not spec fields).
WHEN = ("prune_epochs", "schedule", "start_epoch", "end_epoch", "frequency")
#: The defaults of the common keyword spec fields (a spec= excludes them).
FIELD_DEFAULTS = {"ratios": None, "criterion": "l1_norm", "target_flops_reduction": None,
                  "target_latency_reduction": None, "layers": None, "skip": (),
                  "strategy": None, "round_to": 1, "prune_epochs": None, "schedule": None}


def warn_deprecated(key: str) -> None:
    warnings.warn(f"PruneCallback({key}=...) is deprecated; put {DEPRECATED[key]} beside the "
                  f"PruneCallback in fit(callbacks=[...]) (or set it in PruningSpec(aids=...))",
                  DeprecationWarning, stacklevel=4)


def split_options(options: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(rare options with their defaults, deprecated aid options given)``."""
    rare, aids = dict(RARE), {}
    for key, value in options.items():
        if key in RARE:
            rare[key] = value
        elif key in DEPRECATED:
            warn_deprecated(key)
            aids[key] = value
        else:
            raise ConfigError(key, value, f"an argument of PruneCallback: "
                              f"{', '.join(list(FIELD_DEFAULTS) + list(RARE))}, spec, ...")
    return rare, aids


def callback_spec(spec: Optional[PruningSpec], fields: Dict[str, Any],
                  options: Mapping[str, Any]) -> Tuple[PruningSpec, Dict[str, Any]]:
    """The spec of a PruneCallback, and the extras that are no spec field:
    ``reset_optimizer``, and of the deprecated keywords ``log_dir``/``log_freq`` and a
    ``distill`` given as a ``DistillCallback``."""
    rare, aids = split_options(options)
    extras = {"reset_optimizer": bool(rare.pop("reset_optimizer")), "graph": rare.pop("graph")}
    for key in ("log_dir", "log_freq"):
        if key in aids:
            extras[key] = aids.pop(key)
    if aids.get("distill") is not None and not isinstance(aids["distill"], (bool, Mapping)):
        extras["distill"] = aids.pop("distill")
    if spec is not None:
        given = {k: v for k, v in {**fields, **rare, **aids}.items()
                 if v is not None and v != {**FIELD_DEFAULTS, **RARE}.get(k)}
        if given:
            key = next(iter(given))
            raise ConfigError(key, given[key], "its default when spec= is given (the "
                                               "PruningSpec holds every field)")
        if not isinstance(spec, PruningSpec):
            raise ConfigError("spec", spec, "a PruningSpec")
        return spec, extras
    when = {k: fields.pop(k, None) for k in ("prune_epochs", "schedule")}
    start = check_epoch("start_epoch", rare.pop("start_epoch"))
    end = check_epoch("end_epoch", rare.pop("end_epoch"), allow_none=True)
    frequency = check_int("frequency", rare.pop("frequency"), 1)
    schedule = build_schedule(when["schedule"], when["prune_epochs"], start, end, frequency)
    return PruningSpec(**fields, **rare, schedule=schedule, aids=aid_fields(aids)), extras


def aid_fields(aids: Dict[str, Any]) -> TrainingAids:
    """The :class:`TrainingAids` of the deprecated keywords (None: the default)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingAids)}
    return TrainingAids(**{k: defaults[k] if v is None else v for k, v in aids.items()})


def aid_callbacks(aids: TrainingAids) -> List[PruningAid]:
    """The callbacks of the aids a spec switches on (BN-L1 runs to the last event)."""
    out: List[PruningAid] = []
    if aids.bn_l1 is not None:
        out.append(BNScaleL1(aids.bn_l1, start_epoch=0))
    if aids.recalibrate_bn:
        out.append(BNRecalibration(aids.recalibrate_bn))
    if aids.distill is not None:
        out.append(DistillCallback(**aids.distill))
    if aids.max_metric_drop is not None:
        out.append(AccuracyBudget(aids.max_metric_drop, aids.budget_metric,
                                  aids.budget_min_step, aids.budget_mode))
    return out
