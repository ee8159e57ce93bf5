"""PruningSpec: what to prune, where, and how - one frozen, checked description.

A spec holds the target (exactly one of ``ratios``, ``target_flops_reduction`` and
``target_latency_reduction``), where it applies (``layers``, ``skip``, ``structure``)
and how channels are chosen (``criterion``, ``strategy`` with its ``strategy_options``,
``round_to``, ``fold_bn_shift``), when (``schedule``, a
:mod:`~slim_callbacks.pruning.schedules` schedule) and the training aids (``aids``, a
:class:`~slim_callbacks.pruning.aids.TrainingAids`). Every rule between these fields
lives here, checked at construction before anything is traced or changed;
:class:`~slim_callbacks.pruning.Pruner`, :func:`~slim_callbacks.prune` and
:class:`~slim_callbacks.PruneCallback` all build one.

Examples:
    >>> spec = PruningSpec(ratios=0.5, criterion="fpgm")
    >>> spec.strategy, spec.criterion.name
    ('uniform', 'fpgm')
    >>> PruningSpec.from_dict(spec.to_dict()) == spec
    True
    >>> PruningSpec(ratios=0.5, target_flops_reduction=0.3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: ratios: 0.5 is not allowed; expected None when target_flops_reduction ...
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from slim_callbacks.analysis.strategies import (
    check_option_values,
    strategy_option_names,
    strategy_options,
)
from slim_callbacks.core.checks import check_choice, check_number
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.criteria import Criterion, get_criterion
from slim_callbacks.engine.planner import check_fold_bn_shift
from slim_callbacks.engine.ratios import check_patterns, check_ratios, check_skip
from slim_callbacks.latency.auto_round import check_round_to_option
from slim_callbacks.pruning.aids import TrainingAids
from slim_callbacks.pruning.schedule_factory import build_schedule, schedule_from_dict
from slim_callbacks.pruning.schedules import Schedule
from slim_callbacks.pruning.targets import check_curve_start, final_ratios
from slim_callbacks.tracing.structure import Structure, check_structure

Ratios = Union[float, Dict[str, float]]
TARGETS = ("ratios", "target_flops_reduction", "target_latency_reduction")
#: what a strategy's required option is, for its error message
REQUIRED = {"sensitivities": "a sensitivities file path"}
#: how a coupled group's channels are ranked: the sum over every producer, or only the
#: producers its ratios pattern names (PaddleSlim's way)
COUPLED_SCORING = ("sum", "named")
#: the training aids' keys, which a recipe's ``pruning:`` section holds at its top level
AID_KEYS = tuple(f.name for f in dataclasses.fields(TrainingAids))


def check_target(key: str, value) -> float:
    """A MACs or latency reduction target: a number in (0, 1)."""
    return check_number(key, value, 0.0, 1.0, low_open=True, high_open=True)


def default_strategy(ratios, target_latency_reduction) -> str:
    """The strategy when none is named: ``latency`` for a latency target, ``custom`` for
    a ``{pattern: ratio}`` dict, else ``uniform``."""
    if target_latency_reduction is not None:
        return "latency"
    return "custom" if isinstance(ratios, Mapping) else "uniform"


@dataclasses.dataclass(frozen=True)
class PruningSpec:
    """What, where and how to prune (see the module docstring).

    Args:
        ratios: the final share of the ORIGINAL channels to remove: a float for every
            prunable group (``global``: its ``channel_ratio``) or ``{glob pattern: ratio}``.
        target_flops_reduction: instead, remove this share of the MACs (strategy
            ``uniform`` bisects one ratio; ``global``, ``sensitive`` find per-group ones).
        target_latency_reduction: instead, remove this share of the batch-1 Paddle
            Inference latency measured here (strategy ``latency``).
        criterion: ``l1_norm``, ``l2_norm``, ``fpgm``, ``slim``, ``opt_slim``, ``taylor``,
            a registered name or a :class:`~slim_callbacks.engine.criteria.Criterion`.
        strategy: a name in :data:`slim_callbacks.STRATEGIES`; default ``custom`` for a
            ``{pattern: ratio}`` dict, ``latency`` for a latency target, else ``uniform``.
        strategy_options: the strategy's other arguments, e.g. ``{"max_ratio": 0.8}``.
        layers: patterns the strategy's ratios apply to (not with a dict of ratios).
        skip: patterns of layers whose groups stay whole.
        structure: what a unit spans where layers allow several shapes, e.g.
            ``{"attention": "heads"}`` (:mod:`slim_callbacks.tracing.structure`).
        round_to: channels kept are a multiple of this; ``"auto"``: measured here.
        fold_bn_shift: fold what removed channels still sent into the consumers'
            biases; ``None``: on for ``slim`` and ``opt_slim``.
        coupled_scoring: how channels coupled across producers (a residual stage) are
            ranked: ``"sum"`` (default) adds every producer's scores; ``"named"`` uses
            only the producers the ratios pattern names, as PaddleSlim does (with a
            float ratio: ``sum``).

    Raises:
        ConfigError: a bad value or combination, naming the argument.
    """

    ratios: Optional[Ratios] = None
    target_flops_reduction: Optional[float] = None
    target_latency_reduction: Optional[float] = None
    criterion: Union[str, Criterion] = "l1_norm"
    strategy: Optional[str] = None
    strategy_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    layers: Optional[Tuple[str, ...]] = None
    skip: Tuple[str, ...] = ()
    structure: Union[Mapping[str, str], Structure, None] = None
    round_to: Union[int, str] = 1
    fold_bn_shift: Optional[bool] = None
    coupled_scoring: str = "sum"
    schedule: Union[Schedule, Mapping, None] = None
    aids: TrainingAids = dataclasses.field(default_factory=TrainingAids)

    def __post_init__(self):
        criterion = get_criterion(self.criterion)
        self._check_when()
        self._set("criterion", criterion)
        self._set("round_to", check_round_to_option(self.round_to))
        self._set("fold_bn_shift", check_fold_bn_shift(self.fold_bn_shift, criterion))
        self._set("structure", check_structure(self.structure))
        check_choice("coupled_scoring", self.coupled_scoring, COUPLED_SCORING)
        self._check_targets()
        self._set("ratios", None if self.ratios is None else check_ratios(self.ratios))
        layers = check_patterns("layers", self.layers)
        self._set("layers", None if layers is None else tuple(layers))
        self._set("skip", tuple(check_skip(self.skip)))
        self._set("strategy", self.strategy or default_strategy(self.ratios,
                                                                self.target_latency_reduction))
        self._check_strategy_options()
        check_curve_start(self.schedule, self.ratios)
        self._check_aids(criterion)

    def _check_when(self) -> None:
        """The schedule as an object; an ``{epoch: ratio}`` map's last value is the
        final ratio (never below a curve's ``initial_ratio``)."""
        schedule = (schedule_from_dict(self.schedule) if isinstance(self.schedule, Mapping)
                    and "kind" in self.schedule else build_schedule(self.schedule, None, 0, None, 1))
        self._set("schedule", schedule)
        self._set("ratios", final_ratios(schedule, self.ratios, self.target_flops_reduction,
                                         self.target_latency_reduction))

    def _check_aids(self, criterion: Criterion) -> None:
        aids = self.aids
        if aids is None or isinstance(aids, Mapping):
            aids = TrainingAids.from_dict(aids or {})
        if not isinstance(aids, TrainingAids):
            raise ConfigError("aids", aids, "a TrainingAids or a dict of its fields")
        self._set("aids", aids)
        if aids.bn_l1 is not None and criterion.needs != "bn_scales":
            warnings.warn(f"bn_l1 is set but criterion {criterion.name!r} ignores "
                          f"BatchNorm scales; use 'slim' or 'opt_slim'", UserWarning, stacklevel=4)

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_targets(self) -> None:
        given = [key for key in TARGETS if getattr(self, key) is not None]
        if len(given) > 1:
            raise ConfigError(given[0], getattr(self, given[0]),
                              f"None when {given[1]} is given (the targets are exclusive)")
        latency = self.target_latency_reduction is not None
        if latency and self.strategy not in (None, "latency"):
            raise ConfigError("target_latency_reduction", self.target_latency_reduction,
                              f"None for strategy {self.strategy} (only strategy latency uses it)")
        if self.strategy == "latency" and not latency:
            raise ConfigError("target_latency_reduction", None,
                              "a float in (0, 1) (required for strategy latency)")
        if not given:
            self._missing_target()
        for key in TARGETS[1:]:
            if getattr(self, key) is not None:
                check_target(key, getattr(self, key))
        if self.layers is not None and isinstance(self.ratios, Mapping):
            raise ConfigError("layers", self.layers,
                              "None with a {pattern: ratio} dict (its patterns choose the layers)")

    def _missing_target(self) -> None:
        """The error for a spec without a target, in the terms of its strategy."""
        required = [] if self.strategy is None else [
            name for name in strategy_option_names(self.strategy, required=True) if name in TARGETS]
        if required:
            raise ConfigError(required[0], None, f"a float in (0, 1) (required for strategy "
                                                 f"{self.strategy})")
        if self.strategy in ("uniform", "global"):
            raise ConfigError("ratios", None, f"a float in [0, 1) or target_flops_reduction (one "
                                              f"is required for strategy {self.strategy})")
        raise ConfigError("ratios", None, "a float in [0, 1) or a {pattern: ratio} dict (or "
                                          "target_flops_reduction, or target_latency_reduction)")


    def _check_strategy_options(self) -> None:
        options = self.strategy_options
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError("strategy_options", options, "None or a {option: value} dict")
        options = dict(options or {})
        names = strategy_option_names(self.strategy)
        for key, value in options.items():
            if key not in names:
                raise ConfigError(f"strategy_options[{key!r}]", value,
                                  f"an option of strategy {self.strategy}: {', '.join(names)}")
        check_option_values(options, lambda key: f"strategy_options[{key!r}]")
        self._set("strategy_options", options)
        self._check_ratios_kind()
        arguments = self.strategy_arguments()  # a target the strategy does not take fails now
        for name in strategy_option_names(self.strategy, required=True):
            if name not in arguments:
                key = "strategy_options['sensitivities']" if name == "sensitivities" else name
                raise ConfigError(key, None, f"{REQUIRED.get(name, 'a value')} (required for "
                                             f"strategy {self.strategy})")

    def _check_ratios_kind(self) -> None:
        """Per-layer ratios are strategy ``custom``'s; one float is the others'."""
        per_layer = isinstance(self.ratios, Mapping)
        if self.strategy == "custom" and not per_layer:
            raise ConfigError("ratios", self.ratios,
                              "a {sublayer pattern: ratio} dict for strategy custom")
        if self.strategy in ("uniform", "global") and per_layer:
            raise ConfigError("ratios", dict(self.ratios), f"a float in [0, 1) for strategy "
                              f"{self.strategy} (use strategy custom for per-layer ratios)")

    def strategy_arguments(self, round_to: Union[int, str, None] = None) -> Dict[str, Any]:
        """The keyword arguments of :func:`~slim_callbacks.resolve_strategy` for this
        spec (``round_to``: the resolved multiple, default the spec's own)."""
        options = dict(self.strategy_options)
        return strategy_options(
            self.strategy, ratios=self.ratios, target_flops_reduction=self.target_flops_reduction,
            target_latency_reduction=self.target_latency_reduction, layers=self.layers,
            skip=self.skip, criterion=self.criterion,
            round_to=self.round_to if round_to is None else round_to,
            sensitivities=options.pop("sensitivities", None), options=options)

    @property
    def explicit_ratios(self) -> bool:
        """True when the ratios are given, not searched for a MACs or latency target."""
        return self.ratios is not None and self.strategy in ("uniform", "custom")

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (criterion by name): ``PruningSpec.from_dict`` gives it back."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["criterion"] = self.criterion.name
        out["layers"] = None if self.layers is None else list(self.layers)
        out["skip"] = list(self.skip)
        out["structure"] = self.structure.to_dict()
        out["schedule"] = self.schedule.to_dict()
        out["aids"] = self.aids.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PruningSpec":
        """A spec from :meth:`to_dict`'s mapping or a recipe's ``pruning:`` section, where
        the :class:`TrainingAids` keys sit beside the others and ``sensitivities`` is the
        strategy's file (a ``distill.teacher`` path is the recipe's to load); an unknown
        key is a ConfigError.

        Examples:
            >>> spec = PruningSpec.from_dict({"ratios": 0.5, "recalibrate_bn": 4,
            ...                               "schedule": {"kind": "oneshot", "epoch": 2}})
            >>> spec.aids.recalibrate_bn, spec.schedule.epoch
            (4, 2)
        """
        if not isinstance(data, Mapping):
            raise ConfigError("spec", data, "a mapping of PruningSpec fields")
        data = dict(data)
        known = [f.name for f in dataclasses.fields(cls)] + list(AID_KEYS) + ["sensitivities"]
        for key, value in data.items():
            if key not in known:
                raise ConfigError(str(key), value, f"a PruningSpec field: {', '.join(known)}")
        aids = {key: data.pop(key) for key in AID_KEYS if key in data}
        if aids:
            given = data.get("aids") or {}
            given = given.to_dict() if isinstance(given, TrainingAids) else dict(given)
            data["aids"] = {**given, **aids}
        if data.get("sensitivities") is not None:
            data["strategy_options"] = {**(data.get("strategy_options") or {}),
                                        "sensitivities": data["sensitivities"]}
        data.pop("sensitivities", None)
        return cls(**data)
