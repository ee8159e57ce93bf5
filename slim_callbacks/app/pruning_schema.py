"""The recipe's ``pruning`` section: :class:`PruningConfig`, with its ``distill`` and
``distill.teacher`` subsections.

The rules between the section's keys (targets, strategy, ratios, options, schedule, the
training aids) are :class:`~slim_callbacks.pruning.PruningSpec`'s and its
:class:`~slim_callbacks.pruning.aids.TrainingAids`': :meth:`PruningConfig.spec` builds
one at load and :func:`recipe_error` puts its errors at their recipe key. A key's value
rule that the spec also checks is the spec's check function in a
:func:`~slim_callbacks.app.rules.spec_rule` (the recipe keeps its own text);
``PruningSpec.from_dict`` reads the section as it is. The other sections are in
:mod:`slim_callbacks.app.schema`.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple, Union

from slim_callbacks.analysis.bn_recalibration import check_recalibrate_bn
from slim_callbacks.analysis.strategies import RECIPE_KEYS, strategy_option_names
from slim_callbacks.app.rules import (
    BOOL,
    CRITERION,
    LAYERS,
    MAPPING,
    MODEL_NAME,
    PATH,
    PATTERNS,
    PRETRAINED,
    RATIOS,
    ROUND_TO,
    SCHEDULE,
    STRATEGY,
    Invalid,
    Rule,
    Section,
    checked_rule,
    key_field,
    optional_rule,
    section_field,
    spec_rule,
)
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.aids import (
    MIN_STEP,
    TrainingAids,
    check_alpha,
    check_bn_l1,
    check_max_metric_drop,
    check_min_step,
    check_temperature,
)
from slim_callbacks.pruning.spec import PruningSpec, check_target, default_strategy
from slim_callbacks.tracing.structure import CHOICES as STRUCTURE_CHOICES

logger = logging.getLogger(__name__)
#: a MACs or latency reduction target, by the spec's own check
TARGET = spec_rule(check_target, "a float in (0, 1)")


@dataclass(frozen=True)
class TeacherConfig(Section):
    """``pruning.distill.teacher``: a trained network that teaches instead of the copy
    taken before the first event. ``name``/``kwargs`` as in ``model`` (null: the recipe's own
    model and kwargs); ``pretrained`` (required): its weights. A plain path is short
    for ``{pretrained: path}`` of the recipe's model.

    Examples:
        >>> TEACHER.convert("teacher.pdparams", "t")
        TeacherConfig(name=None, kwargs={}, pretrained='teacher.pdparams')
        >>> TEACHER.convert({"name": "resnet18", "pretrained": "r18.safetensors"}, "t").name
        'resnet18'
    """

    prefix: ClassVar[str] = "pruning.distill.teacher"
    name: Optional[str] = key_field(optional_rule(MODEL_NAME), None)
    kwargs: Dict[str, Any] = field(default_factory=dict, metadata={"rule": MAPPING})
    pretrained: str = key_field(PRETRAINED)


def _teacher_convert(value, path):
    if isinstance(value, TeacherConfig):
        return value
    if isinstance(value, str):
        return TeacherConfig(pretrained=value)
    if isinstance(value, dict):
        return TeacherConfig.from_dict(value)
    raise Invalid


TEACHER = Rule(f"a weights path of the recipe's model (.safetensors, or a .pdparams pickle you "
               f"trust) or a mapping with keys {', '.join(TeacherConfig.keys())}", _teacher_convert,
               section=TeacherConfig)


@dataclass(frozen=True)
class DistillConfig(Section):
    """``pruning.distill``: knowledge distillation (:class:`~slim_callbacks.callbacks.DistillCallback`)
    from the network as it is right before the first pruning event, or from ``teacher``
    (:class:`TeacherConfig`); ``{}`` takes the defaults. The KD term is computed on the
    first output of student and teacher.

    Examples:
        >>> DistillConfig().alpha, DistillConfig(temperature=2).temperature
        (0.5, 2.0)
        >>> DistillConfig(teacher="t.pdparams").to_dict()["teacher"]["pretrained"]
        't.pdparams'
    """

    prefix: ClassVar[str] = "pruning.distill"
    alpha: float = key_field(spec_rule(check_alpha, "a float in [0, 1]"), 0.5)
    temperature: float = key_field(checked_rule(check_temperature, "a softmax temperature"), 4.0)
    teacher: Optional[TeacherConfig] = key_field(optional_rule(TEACHER), None)


@dataclass(frozen=True)
class PruningConfig(Section):
    """``pruning``: criterion, how ratios are chosen, which layers, and when.

    Exactly one of ``ratios`` and ``target_flops_reduction`` is used (strategy
    ``latency`` takes ``target_latency_reduction`` instead): strategy
    ``custom`` needs a ``ratios`` mapping, ``sensitive`` needs ``sensitivities`` and
    ``target_flops_reduction``, ``uniform`` and ``global`` take a float ratio or the
    FLOPs target (for ``global`` a float is its ``channel_ratio``: the share of all
    chosen channels, cut at one global score threshold). ``strategy_options`` holds the
    strategy's other arguments (e.g. ``{max_ratio: 0.8}`` for ``global``), checked
    against :func:`~slim_callbacks.analysis.strategies.strategy_option_names`. ``schedule`` is
    a :mod:`slim_callbacks.pruning.schedules` dict, built into the spec at load.
    ``distill`` (a mapping,
    null = off) distils the unpruned network into the pruned one; ``recalibrate_bn: N``
    re-estimates BatchNorm statistics on N training batches after each event (and
    before every evaluation of ``slim-callbacks sensitivity``); ``max_metric_drop``
    undoes an event whose eval fell more than that and retries with half the step,
    down to ``budget_min_step`` (:mod:`slim_callbacks.callbacks.budget`).
    ``structure`` says what a unit spans where layers allow several shapes
    (``{attention: heads}``; :mod:`slim_callbacks.tracing.structure`).

    Examples:
        >>> PruningConfig(ratios=0.3).layers
        ('*',)
    """

    prefix: ClassVar[str] = "pruning"
    criterion: str = key_field(CRITERION, "l1_norm")
    strategy: Optional[str] = key_field(optional_rule(STRATEGY), None)
    strategy_options: Dict[str, Any] = field(
        default_factory=dict, metadata={"rule": dataclasses.replace(MAPPING, allowed="a mapping {option: value}")})
    ratios: Union[float, Dict[str, float], None] = key_field(optional_rule(RATIOS), None)
    target_flops_reduction: Optional[float] = key_field(optional_rule(TARGET), None)
    target_latency_reduction: Optional[float] = key_field(optional_rule(TARGET), None)
    layers: Tuple[str, ...] = key_field(LAYERS, ("*",))
    skip: Tuple[str, ...] = key_field(PATTERNS, ())
    round_to: Union[int, str] = key_field(ROUND_TO, 1)
    sensitivities: Optional[str] = key_field(optional_rule(PATH), None)
    schedule: Optional[Dict[str, Any]] = key_field(optional_rule(SCHEDULE), None)
    bn_l1: Optional[float] = key_field(optional_rule(spec_rule(check_bn_l1, "a float > 0")), None)
    fold_bn_shift: Optional[bool] = key_field(optional_rule(BOOL), None)
    distill: Optional[DistillConfig] = section_field(DistillConfig, optional=True)
    recalibrate_bn: int = key_field(checked_rule(
        lambda key, value: check_recalibrate_bn(value, key), "a number of batches"), 0)
    max_metric_drop: Optional[float] = key_field(
        optional_rule(spec_rule(check_max_metric_drop, "a float > 0")), None)
    budget_min_step: float = key_field(spec_rule(check_min_step, "a float in (0, 1]"), MIN_STEP)
    structure: Dict[str, str] = field(
        default_factory=dict, metadata={"rule": dataclasses.replace(
            MAPPING, allowed="a mapping {" + ", ".join(
                f"{key}: {' or '.join(values)}" for key, values in STRUCTURE_CHOICES.items()) + "}")})

    def _check(self):
        self._check_option_names()
        try:
            spec = self.spec()
        except ConfigError as err:
            raise recipe_error(err) from None
        if self.strategy is None:
            self._set("strategy", spec.strategy)

    def _check_option_names(self):
        """``strategy_options`` holds only what no key of the recipe sets itself."""
        strategy = self.strategy or default_strategy(self.ratios, self.target_latency_reduction)
        allowed = [k for k in strategy_option_names(strategy) if k not in RECIPE_KEYS]
        for key, value in self.strategy_options.items():
            path = f"pruning.strategy_options.{key}"
            if key in RECIPE_KEYS:
                raise ConfigError(path, value, f"an option the recipe does not set itself "
                                  f"(use {RECIPE_KEYS[key]})")
            if key not in allowed:
                raise ConfigError(path, value, f"an option of strategy {strategy}: "
                                  f"{', '.join(allowed) or 'none'}")

    def spec(self, sensitivities: Optional[str] = None) -> PruningSpec:
        """This section as a :class:`~slim_callbacks.pruning.PruningSpec`, which owns every
        rule between its keys (``sensitivities``: the file's resolved path).

        Examples:
            >>> PruningConfig(ratios={"conv*": 0.5}).spec().strategy
            'custom'
        """
        options = dict(self.strategy_options)
        if sensitivities or self.sensitivities:
            options["sensitivities"] = sensitivities or self.sensitivities
        return PruningSpec(
            ratios=self.ratios, target_flops_reduction=self.target_flops_reduction,
            target_latency_reduction=self.target_latency_reduction, criterion=self.criterion,
            strategy=self.strategy, strategy_options=options,
            layers=None if tuple(self.layers) == ("*",) else self.layers, skip=self.skip,
            structure=self.structure, round_to=self.round_to, fold_bn_shift=self.fold_bn_shift,
            schedule=self.schedule, aids=self.aids())

    def aids(self, teacher=None) -> TrainingAids:
        """The section's training aids (``teacher``: the network of
        ``distill.teacher``, built by :func:`~slim_callbacks.app.builders.build_teacher`).

        Examples:
            >>> PruningConfig(ratios=0.5, distill={"alpha": 0.3}).aids().distill["alpha"]
            0.3
        """
        distill = None if self.distill is None else {
            "alpha": self.distill.alpha, "temperature": self.distill.temperature, "teacher": teacher}
        return TrainingAids(distill=distill, recalibrate_bn=self.recalibrate_bn,
                            max_metric_drop=self.max_metric_drop,
                            budget_min_step=self.budget_min_step, bn_l1=self.bn_l1)


def recipe_error(err: ConfigError) -> ConfigError:
    """A :class:`PruningSpec` error at its recipe key (``pruning.``...), null for None.

    Examples:
        >>> print(recipe_error(ConfigError("strategy_options['max_ratio']", 2, "None or below 1")))
        pruning.strategy_options.max_ratio: 2 is not allowed; expected null or below 1
    """
    key = re.sub(r"\['(\w+)'\]", r".\1", str(err.key)) if str(err.key).startswith("distill[") \
        else str(err.key)
    option = re.fullmatch(r"strategy_options\['(\w+)'\]", key)
    if option and option.group(1) in RECIPE_KEYS:
        key = RECIPE_KEYS[option.group(1)]
    elif option:
        key = f"pruning.strategy_options.{option.group(1)}"
    else:
        key = RECIPE_KEYS.get(key, f"pruning.{key}")
    return ConfigError(key, err.value, re.sub(r"\bNone\b", "null", str(err.allowed)))


