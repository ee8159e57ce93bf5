"""The recipe schema: a strict, typed view of a YAML training-and-pruning recipe.

A recipe is read with ``yaml.safe_load``, patched by command-line overrides
(``-o train.epochs=3``) and only then validated. Every section is a small frozen
dataclass whose fields carry a validation rule; unknown keys, wrong types and
inconsistent combinations raise :class:`~slim_callbacks.core.errors.ConfigError` naming the
full key path, the value and what is allowed. Defaults that depend on other keys
(``output_dir``, ``input_shape``, ``train.lr.base`` ...) are filled in, so
:meth:`Recipe.to_dict` is the fully resolved recipe and loads back to an equal one.

Example:
    >>> recipe = load_recipe(
    ...     {"name": "demo", "model": {"name": "mobilenet_v1"},
    ...      "data": {"source": "digits"}, "pruning": {"ratios": 0.5}},
    ...     overrides=["train.epochs=3", "pruning.criterion=fpgm"])
    >>> recipe.train.epochs, recipe.pruning.criterion, recipe.input_shape
    (3, 'fpgm', (1, 3, 32, 32))
    >>> recipe.output_dir, recipe.checkpoint.save_dir
    ('output/demo', 'output/demo/checkpoints')
    >>> load_recipe(recipe.to_dict()) == recipe
    True
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Dict, Iterable, Mapping, Optional, Tuple, Union

import yaml

from slim_callbacks.core.errors import ConfigError, SlimError

_LOG = logging.getLogger(__name__)

MODEL_NAME_HELP = ("a paddle.vision.models function name (e.g. mobilenet_v1) "
                   "or 'module:callable'")
DATA_SOURCES = ("digits", "npz", "imagenet", "imagefolder", "cifar10", "mnist", "synthetic")
OPTIMIZERS = ("momentum", "sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "piecewise", "cosine")
AMP_LEVELS = ("O1", "O2")  # train.amp: paddle.Model.prepare(amp_configs=...)

#: Image side used when neither ``input_shape`` nor ``data.image_size`` is given.
DEFAULT_IMAGE_SIZE = {"digits": 32, "npz": 32, "cifar10": 32, "mnist": 28,
                      "synthetic": 32, "imagenet": 224, "imagefolder": 224}
#: Number of classes fixed by the data source itself.
SOURCE_CLASSES = {"digits": 10, "cifar10": 10, "mnist": 10}
#: Which data sources read ``data.root`` (a directory) and ``data.path`` (a local copy).
ROOT_SOURCES = ("imagenet", "imagefolder")
PATH_SOURCES = ("npz", "cifar10", "mnist")
#: Learning rate used when ``train.lr.base`` is not given, per optimizer.
DEFAULT_LR = {"momentum": 0.1, "sgd": 0.1, "adam": 0.001, "adamw": 0.001}
DEFAULT_MOMENTUM = 0.9


class _Missing:
    """Marks a required key that the recipe does not set."""

    def __repr__(self):
        return "<missing>"


MISSING = _Missing()


def join_key(prefix: str, key: Any) -> str:
    """The key path of ``key`` inside ``prefix``.

    Example:
        >>> join_key("train", "epochs"), join_key("", "name")
        ('train.epochs', 'name')
    """
    return f"{prefix}.{key}" if prefix else str(key)


# --------------------------------------------------------------------------- rules


class _Invalid(Exception):
    """Raised by a rule's ``convert`` to say "not allowed" at its own key path."""


@dataclass(frozen=True)
class Rule:
    """How one key is validated: the allowed-values text and a converter.

    ``convert(value, path)`` returns the normalized value or raises ``_Invalid``;
    nested rules raise :class:`ConfigError` at their own, deeper, path. ``section``
    names the dataclass of a nested section; ``mapping`` is ``"flat"`` or ``"nested"``
    for free-form dict keys that overrides may reach into.
    """

    allowed: str
    convert: Callable[[Any, str], Any]
    section: Optional[type] = None
    mapping: Optional[str] = None
    optional: bool = False

    def __call__(self, value, path):
        if value is MISSING:
            raise ConfigError(path, value, f"{self.allowed} (required)")
        try:
            return self.convert(value, path)
        except _Invalid:
            raise ConfigError(path, value, self.allowed) from None


def _optional(rule: Rule) -> Rule:
    def convert(value, path):
        return None if value is None else rule.convert(value, path)
    return dataclasses.replace(rule, allowed=f"null or {rule.allowed}", convert=convert,
                               optional=True)


def _int_rule(low: int) -> Rule:
    def convert(value, path):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _Invalid
        return value
    return Rule(f"an int >= {low}", convert)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_float(value) -> float:
    """``value`` as a finite float; accepts ints and YAML 1.1 strings like ``'3e-5'``."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid
    if not math.isfinite(value):
        raise _Invalid
    return float(value)


def _float_rule(low: float, high: float = math.inf, *, low_open=False,
                high_open=True) -> Rule:
    def convert(value, path):
        number = _as_float(value)
        if number < low or (low_open and number == low):
            raise _Invalid
        if number > high or (high_open and number == high):
            raise _Invalid
        return number
    if high == math.inf:
        allowed = f"a float {'>' if low_open else '>='} {low:g}"
    else:
        allowed = (f"a float in {'(' if low_open else '['}{low:g}, "
                   f"{high:g}{')' if high_open else ']'}")
    return Rule(allowed, convert)


def _str_rule(allowed: str = "a non-empty string", pattern: Optional[str] = None) -> Rule:
    def convert(value, path):
        if not isinstance(value, str) or not value.strip():
            raise _Invalid
        if pattern is not None and not re.fullmatch(pattern, value):
            raise _Invalid
        return value
    return Rule(allowed, convert)


def _choice_rule(options: Iterable[str]) -> Rule:
    options = tuple(options)

    def convert(value, path):
        if not isinstance(value, str) or value not in options:
            raise _Invalid
        return value
    return Rule(f"one of {', '.join(options)}", convert)


def _criterion_convert(value, path):
    """A name :func:`~slim_callbacks.engine.criteria.get_criterion` knows at validation time,
    so criteria added with ``register_criterion`` work in recipes too."""
    from slim_callbacks.engine.criteria import get_criterion
    get_criterion(value, key=path)
    return value


def _strategy_convert(value, path):
    """A name in :data:`slim_callbacks.analysis.strategies.STRATEGIES`, the one registry of
    strategies that recipes, ``PruneCallback`` and ``resolve_strategy`` share."""
    from slim_callbacks.analysis.strategies import STRATEGIES
    if not isinstance(value, str) or value not in STRATEGIES:
        raise ConfigError(path, value, f"one of {', '.join(STRATEGIES)}")
    return value


def _bool_convert(value, path):
    if not isinstance(value, bool):
        raise _Invalid
    return value


BOOL = Rule("true or false", _bool_convert)


def _list_rule(item: Rule, allowed: str, length: Optional[int] = None) -> Rule:
    def convert(value, path):
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        if length is not None and len(value) != length:
            raise _Invalid
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))
    return Rule(allowed, convert)


def _mapping_convert(value, path):
    if not isinstance(value, Mapping):
        raise _Invalid
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(join_key(path, key), value[key], "string keys")
    return copy.deepcopy(dict(value))


MAPPING = Rule("a mapping", _mapping_convert, mapping="nested")


def _section_rule(cls: type) -> Rule:
    def convert(value, path):
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise _Invalid
        return cls.from_dict(value)
    return Rule(f"a mapping with keys {', '.join(cls.keys())}", convert, section=cls)


def _key(rule: Rule, default: Any = MISSING):
    """A dataclass field validated by ``rule``; ``default`` MISSING means required."""
    return field(default=default, metadata={"rule": rule})


def _section(cls: type, *, optional: bool = False):
    """A nested section field; absent or null means all its defaults (or None)."""
    rule = _section_rule(cls)
    return field(default=None, metadata={"rule": _optional(rule) if optional else rule})


# ------------------------------------------------------------------ composite rules

NAME = _str_rule("a name of letters, digits, '_', '-', '.' (e.g. mbv1_digits)",
                 r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PATH = _str_rule("a non-empty path string")
PATTERNS = _list_rule(_str_rule("a non-empty glob pattern string"),
                      "a list of glob patterns over sublayer names")


def _non_empty_patterns(value, path):
    patterns = PATTERNS.convert(value, path)
    if not patterns:
        raise _Invalid
    return patterns


LAYERS = Rule("a non-empty list of glob patterns over sublayer names ([] matches nothing; "
              "'*' is every layer)", _non_empty_patterns)
RATIO = _float_rule(0.0, 1.0)
MODEL_NAME = _str_rule(MODEL_NAME_HELP,
                       r"[A-Za-z_]\w*|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
PRETRAINED = _str_rule("a path to a .safetensors file (or a .pdparams pickle you trust)",
                       r".+\.(safetensors|pdparams)")
EPOCHS = _list_rule(_int_rule(1), "a list of epochs (ints >= 1)")
SHAPE = _list_rule(_int_rule(1), "a list of 4 positive ints [N, C, H, W]", length=4)


def _image_size_convert(value, path):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise _Invalid
        return tuple(_int_rule(1)(v, f"{path}[{i}]") for i, v in enumerate(value))
    return _int_rule(1).convert(value, path)


IMAGE_SIZE = Rule("an int >= 1 or a list [height, width]", _image_size_convert)


def _ratios_convert(value, path):
    if isinstance(value, Mapping):
        ratios = _mapping_convert(value, path)
        if not ratios:
            raise _Invalid
        return {key: RATIO(ratio, join_key(path, key)) for key, ratio in ratios.items()}
    return RATIO.convert(value, path)


RATIOS = Rule("a float in [0, 1) or a non-empty mapping {sublayer pattern: ratio}",
              _ratios_convert, mapping="flat")


def _schedule_convert(value, path):
    schedule = _mapping_convert(value, path)
    kind = schedule.get("kind", MISSING)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(join_key(path, "kind"), kind, "a schedule kind name (string)")
    return schedule


SCHEDULE = Rule("a mapping with a string 'kind' (see slim_callbacks.callbacks.schedules)",
                _schedule_convert, mapping="nested")


# ----------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """Base of the recipe sections: validates every field after ``__init__``.

    Subclasses set ``prefix`` (their key path) and may override :meth:`_check` for
    cross-field checks and derived defaults.
    """

    prefix: ClassVar[str] = ""

    def __post_init__(self):
        for f in fields(self):
            value = f.metadata["rule"](getattr(self, f.name), join_key(self.prefix, f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks; may fill derived defaults with ``_set``."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The keys this section accepts, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, raw: Mapping):
        """Build the section from a mapping, rejecting unknown keys.

        Example:
            >>> TrainConfig.from_dict({"epochs": 2}).batch_size
            32
        """
        for key, value in raw.items():
            if key not in cls.keys():
                raise ConfigError(join_key(cls.prefix, key), value, unknown_key_help(cls))
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dicts, lists and scalars, ready for ``yaml.safe_dump``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def unknown_key_help(cls: type) -> str:
    """The allowed-keys text of a section, e.g. ``a key of train: epochs, ...``."""
    where = cls.prefix or "the recipe"
    return f"a key of {where}: {', '.join(cls.keys())}"


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelConfig(Section):
    """``model``: which network to build.

    Example:
        >>> ModelConfig(name="mobilenet_v1", kwargs={"scale": 0.25}).pretrained is None
        True
    """

    prefix: ClassVar[str] = "model"
    name: str = _key(MODEL_NAME)
    kwargs: Dict[str, Any] = field(default_factory=dict, metadata={"rule": MAPPING})
    pretrained: Optional[str] = _key(_optional(PRETRAINED), None)


@dataclass(frozen=True)
class DataConfig(Section):
    """``data``: where images come from (see :mod:`slim_callbacks.app.data`).

    ``root`` is the image directory of ``imagenet`` / ``imagefolder``; ``path`` the
    local copy of ``npz`` (required), ``cifar10`` (cifar-10-python.tar.gz) and
    ``mnist`` (directory of the four idx .gz files). ``samples`` and
    ``train_samples`` cap the eval and train sets (a fixed random subset).

    Example:
        >>> DataConfig(source="digits").num_workers
        0
    """

    prefix: ClassVar[str] = "data"
    source: str = _key(_choice_rule(DATA_SOURCES))
    root: Optional[str] = _key(_optional(PATH), None)
    path: Optional[str] = _key(_optional(PATH), None)
    image_size: Union[int, Tuple[int, int], None] = _key(_optional(IMAGE_SIZE), None)
    num_classes: Optional[int] = _key(_optional(_int_rule(1)), None)
    num_workers: int = _key(_int_rule(0), 0)
    samples: Optional[int] = _key(_optional(_int_rule(1)), None)
    train_samples: Optional[int] = _key(_optional(_int_rule(1)), None)

    def _check(self):
        if self.source in ROOT_SOURCES and self.root is None:
            raise ConfigError("data.root", None,
                              f"the image directory (required for source {self.source})")
        if self.source not in ROOT_SOURCES and self.root is not None:
            raise ConfigError("data.root", self.root,
                              f"null for source {self.source} (only "
                              f"{', '.join(ROOT_SOURCES)} read data.root)")
        if self.source == "npz" and self.path is None:
            raise ConfigError("data.path", None, "the .npz file (required for source npz)")
        if self.source not in PATH_SOURCES and self.path is not None:
            raise ConfigError("data.path", self.path,
                              f"null for source {self.source} (only "
                              f"{', '.join(PATH_SOURCES)} read data.path)")
        known = SOURCE_CLASSES.get(self.source)
        if known is not None and self.num_classes not in (None, known):
            raise ConfigError("data.num_classes", self.num_classes,
                              f"{known} for source {self.source}")


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """``train.optimizer``; ``momentum`` defaults to 0.9 and only momentum uses it.

    Example:
        >>> OptimizerConfig().momentum, OptimizerConfig(name="adam").momentum
        (0.9, None)
    """

    prefix: ClassVar[str] = "train.optimizer"
    name: str = _key(_choice_rule(OPTIMIZERS), "momentum")
    momentum: Optional[float] = _key(_optional(RATIO), None)
    weight_decay: float = _key(_float_rule(0.0), 0.0)

    def _check(self):
        if self.name == "momentum" and self.momentum is None:
            self._set("momentum", DEFAULT_MOMENTUM)
        if self.name != "momentum" and self.momentum is not None:
            raise ConfigError("train.optimizer.momentum", self.momentum,
                              f"null for optimizer {self.name} (only momentum uses it)")


@dataclass(frozen=True)
class LrConfig(Section):
    """``train.lr``: base rate and schedule; ``milestones`` (epochs) only for piecewise.

    Example:
        >>> LrConfig(schedule="piecewise", milestones=[30, 60]).milestones
        (30, 60)
    """

    prefix: ClassVar[str] = "train.lr"
    base: Optional[float] = _key(_optional(_float_rule(0.0, low_open=True)), None)
    schedule: str = _key(_choice_rule(LR_SCHEDULES), "cosine")
    milestones: Tuple[int, ...] = _key(EPOCHS, ())
    gamma: float = _key(_float_rule(0.0, 1.0, low_open=True, high_open=False), 0.1)

    def _check(self):
        if self.schedule == "piecewise" and not self.milestones:
            raise ConfigError("train.lr.milestones", list(self.milestones),
                              "a non-empty list of epochs for schedule piecewise")
        if self.schedule != "piecewise" and self.milestones:
            raise ConfigError("train.lr.milestones", list(self.milestones),
                              f"[] for schedule {self.schedule} (only piecewise uses it)")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError("train.lr.milestones", list(self.milestones),
                              "strictly increasing epochs")


@dataclass(frozen=True)
class TrainConfig(Section):
    """``train``: epochs, batch size, optimizer, learning rate and AMP level (null, O1, O2).

    Example:
        >>> TrainConfig(optimizer={"name": "adam"}).lr.base
        0.001
    """

    prefix: ClassVar[str] = "train"
    epochs: int = _key(_int_rule(1), 10)
    batch_size: int = _key(_int_rule(1), 32)
    optimizer: OptimizerConfig = _section(OptimizerConfig)
    lr: LrConfig = _section(LrConfig)
    eval_every: int = _key(_int_rule(1), 1)
    seed: Optional[int] = _key(_optional(_int_rule(0)), 0)
    amp: Optional[str] = _key(_optional(_choice_rule(AMP_LEVELS)), None)

    def _check(self):
        if self.lr.base is None:
            self._set("lr", dataclasses.replace(self.lr, base=DEFAULT_LR[self.optimizer.name]))
        late = [m for m in self.lr.milestones if m >= self.epochs]
        if late:
            _LOG.warning("train.lr.milestones %s are not below train.epochs=%d: the "
                         "learning rate never decays there", late, self.epochs)


@dataclass(frozen=True)
class PruningConfig(Section):
    """``pruning``: criterion, how ratios are chosen, which layers, and when.

    Exactly one of ``ratios`` and ``target_flops_reduction`` is used: strategy
    ``custom`` needs a ``ratios`` mapping, ``sensitive`` needs ``sensitivities`` and
    ``target_flops_reduction``, ``uniform`` and ``global`` take a float ratio or the
    FLOPs target (for ``global`` a float is its ``channel_ratio``: the share of all
    chosen channels, cut at one global score threshold). ``strategy_options`` holds the
    strategy's other arguments (e.g. ``{max_ratio: 0.8}`` for ``global``), checked
    against :func:`~slim_callbacks.analysis.strategies.strategy_option_names`. ``schedule`` is
    passed as-is to :mod:`slim_callbacks.callbacks.schedules`.

    Example:
        >>> PruningConfig(ratios=0.3).layers
        ('*',)
    """

    prefix: ClassVar[str] = "pruning"
    criterion: str = _key(Rule("a registered criterion name", _criterion_convert), "l1_norm")
    strategy: str = _key(Rule("a registered strategy name", _strategy_convert), "uniform")
    strategy_options: Dict[str, Any] = field(
        default_factory=dict, metadata={"rule": dataclasses.replace(MAPPING, allowed="a mapping {option: value}")})
    ratios: Union[float, Dict[str, float], None] = _key(_optional(RATIOS), None)
    target_flops_reduction: Optional[float] = _key(
        _optional(_float_rule(0.0, 1.0, low_open=True)), None)
    layers: Tuple[str, ...] = _key(LAYERS, ("*",))
    skip: Tuple[str, ...] = _key(PATTERNS, ())
    round_to: int = _key(_int_rule(1), 1)
    sensitivities: Optional[str] = _key(_optional(PATH), None)
    schedule: Optional[Dict[str, Any]] = _key(_optional(SCHEDULE), None)
    bn_l1: Optional[float] = _key(_optional(_float_rule(0.0)), None)

    def _check(self):
        ratios, target, strategy = self.ratios, self.target_flops_reduction, self.strategy
        if ratios is not None and target is not None:
            raise ConfigError("pruning.target_flops_reduction", target,
                              "null when pruning.ratios is set (they are exclusive)")
        if strategy == "custom" and not isinstance(ratios, dict):
            raise ConfigError("pruning.ratios", ratios,
                              "a mapping {sublayer pattern: ratio} for strategy custom")
        if strategy == "sensitive":
            if self.sensitivities is None:
                raise ConfigError("pruning.sensitivities", None,
                                  "a sensitivities file path (required for strategy sensitive)")
            if target is None:
                raise ConfigError("pruning.target_flops_reduction", None,
                                  "a float in (0, 1) (required for strategy sensitive)")
        self._check_strategy_options()
        if strategy in ("uniform", "global"):
            if isinstance(ratios, dict):
                raise ConfigError("pruning.ratios", ratios,
                                  f"a float in [0, 1) for strategy {strategy} "
                                  "(use strategy custom for per-layer ratios)")
            if ratios is None and target is None:
                raise ConfigError("pruning.ratios", None,
                                  f"a float in [0, 1) or pruning.target_flops_reduction "
                                  f"(one is required for strategy {strategy})")


    def _check_strategy_options(self):
        from slim_callbacks.analysis.strategies import RECIPE_KEYS, strategy_option_names
        allowed = [k for k in strategy_option_names(self.strategy) if k not in RECIPE_KEYS]
        for key, value in self.strategy_options.items():
            path = f"pruning.strategy_options.{key}"
            if key in RECIPE_KEYS:
                raise ConfigError(path, value, f"an option the recipe does not set itself "
                                  f"(use {RECIPE_KEYS[key]})")
            if key not in allowed:
                raise ConfigError(path, value, f"an option of strategy {self.strategy}: "
                                  f"{', '.join(allowed) or 'none'}")


@dataclass(frozen=True)
class LoggingConfig(Section):
    """``logging``: VisualDL and log-line settings; ``log_dir`` defaults under output_dir.

    Example:
        >>> LoggingConfig().log_freq
        10
    """

    prefix: ClassVar[str] = "logging"
    log_dir: Optional[str] = _key(_optional(PATH), None)
    log_freq: int = _key(_int_rule(1), 10)
    visualdl: bool = _key(BOOL, True)


@dataclass(frozen=True)
class CheckpointConfig(Section):
    """``checkpoint``: where and how often (epochs) to save; defaults under output_dir.

    Example:
        >>> CheckpointConfig().save_freq
        1
    """

    prefix: ClassVar[str] = "checkpoint"
    save_dir: Optional[str] = _key(_optional(PATH), None)
    save_freq: int = _key(_int_rule(1), 1)


@dataclass(frozen=True)
class Recipe(Section):
    """A whole recipe, validated and with every default resolved.

    ``pruning`` is ``None`` for a plain training run. Build it with
    :func:`load_recipe`; :meth:`to_dict` gives back the resolved mapping.

    Example:
        >>> r = Recipe(name="x", model={"name": "resnet18"},
        ...            data={"source": "synthetic"}, input_shape=[2, 3, 64, 48])
        >>> r.data.image_size, r.data.num_classes, r.logging.log_dir
        ((64, 48), 10, 'output/x/logs')
    """

    prefix: ClassVar[str] = ""
    name: str = _key(NAME)
    output_dir: Optional[str] = _key(_optional(PATH), None)
    model: ModelConfig = _section(ModelConfig)
    data: DataConfig = _section(DataConfig)
    input_shape: Optional[Tuple[int, int, int, int]] = _key(_optional(SHAPE), None)
    train: TrainConfig = _section(TrainConfig)
    pruning: Optional[PruningConfig] = _section(PruningConfig, optional=True)
    logging: LoggingConfig = _section(LoggingConfig)
    checkpoint: CheckpointConfig = _section(CheckpointConfig)

    def _check(self):
        if self.output_dir is None:
            self._set("output_dir", os.path.join("output", self.name))
        self._resolve_image_size()
        self._resolve_num_classes()
        if self.logging.log_dir is None:
            self._set("logging", dataclasses.replace(
                self.logging, log_dir=os.path.join(self.output_dir, "logs")))
        if self.checkpoint.save_dir is None:
            self._set("checkpoint", dataclasses.replace(
                self.checkpoint, save_dir=os.path.join(self.output_dir, "checkpoints")))

    def _resolve_image_size(self):
        size = self.data.image_size
        if self.input_shape is None:
            size = DEFAULT_IMAGE_SIZE[self.data.source] if size is None else size
            height, width = (size, size) if isinstance(size, int) else size
            self._set("input_shape", (1, 3, height, width))
        height, width = self.input_shape[2:]
        if size is None:
            size = height if height == width else (height, width)
        given = (size, size) if isinstance(size, int) else size
        if tuple(given) != (height, width):
            raise ConfigError("data.image_size", size,
                              f"the H, W of input_shape ({height}, {width})")
        if size != self.data.image_size:
            self._set("data", dataclasses.replace(self.data, image_size=size))

    def _resolve_num_classes(self):
        wanted = self.model.kwargs.get("num_classes")
        classes = self.data.num_classes
        if classes is None:
            classes = SOURCE_CLASSES.get(self.data.source)
        if classes is None and isinstance(wanted, int) and not isinstance(wanted, bool):
            classes = wanted
        if classes is None and self.data.source == "synthetic":
            classes = 10
        if isinstance(wanted, int) and classes is not None and wanted != classes:
            raise ConfigError("model.kwargs.num_classes", wanted,
                              f"{classes} (the classes of data source {self.data.source})")
        if classes != self.data.num_classes:
            self._set("data", dataclasses.replace(self.data, num_classes=classes))

    def to_yaml(self) -> str:
        """The resolved recipe as YAML text (what ``slim-callbacks check`` prints).

        Example:
            >>> print(load_recipe({"name": "t", "model": {"name": "lenet"},
            ...                    "data": {"source": "mnist"}}).to_yaml().splitlines()[0])
            name: t
        """
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------ loading


def load_recipe(path_or_dict: Union[str, os.PathLike, Mapping, Recipe],
                overrides: Iterable[str] = ()) -> Recipe:
    """Read, override and validate a recipe.

    Args:
        path_or_dict: a YAML file path, a mapping, or a :class:`Recipe`.
        overrides: ``"a.b.c=value"`` strings applied in order before validation;
            values are parsed with ``yaml.safe_load`` (``3``, ``0.5``, ``true``,
            ``[1, 2]``, ``{a: 1}``). A single string counts as one override.

    Returns:
        The validated :class:`Recipe` with every default resolved.

    Raises:
        ConfigError: an unknown key, a wrong type or an inconsistent combination.
        SlimError: the file is missing or is not valid YAML.

    Example:
        >>> r = load_recipe({"name": "d", "model": {"name": "mobilenet_v1"},
        ...                  "data": {"source": "digits"}},
        ...                 overrides=["model.kwargs={scale: 0.25}", "train.lr.base=0.05"])
        >>> r.model.kwargs, r.train.lr.base, r.pruning is None
        ({'scale': 0.25}, 0.05, True)
    """
    raw = read_recipe(path_or_dict)
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        apply_override(raw, text)
    return Recipe.from_dict(raw)


def read_recipe(path_or_dict) -> Dict[str, Any]:
    """The raw recipe mapping (a deep copy), not validated yet.

    Example:
        >>> read_recipe({"name": "x"})
        {'name': 'x'}
    """
    if isinstance(path_or_dict, Recipe):
        return path_or_dict.to_dict()
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict))
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise ConfigError("recipe", path_or_dict, "a YAML file path or a mapping")
    path = os.fspath(path_or_dict)
    try:
        with open(path, encoding="utf-8") as stream:
            raw = yaml.safe_load(stream)
    except FileNotFoundError:
        raise SlimError(f"recipe file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("recipe", path, f"a UTF-8 YAML text file (byte {exc.start} is "
                          f"{exc.object[exc.start:exc.start + 1]!r}: binary or another "
                          f"encoding)") from None
    except OSError as exc:
        raise SlimError(f"recipe {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SlimError(f"recipe {path} is not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("recipe", raw, f"a mapping of sections at the top of {path}")
    return raw


def parse_override(text: str) -> Tuple[str, Any]:
    """Split ``"a.b=value"`` into the key path and the YAML-parsed value.

    Example:
        >>> parse_override("train.epochs=3"), parse_override("input_shape=[1, 3, 32, 32]")
        (('train.epochs', 3), ('input_shape', [1, 3, 32, 32]))
    """
    usage = "'section.key=value', e.g. 'train.epochs=3'"
    if not isinstance(text, str):
        raise ConfigError("override", text, usage)
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("override", text, usage)
    try:
        return key, yaml.safe_load(value_text)
    except yaml.YAMLError:
        raise ConfigError(key, value_text, "a YAML value, e.g. 3, 0.5, true, [1, 2], {a: 1}") \
            from None


def apply_override(raw: Dict[str, Any], text: str) -> None:
    """Set one ``"a.b.c=value"`` override in the raw recipe mapping, in place.

    The key path must exist in the schema down to a free-form mapping
    (``model.kwargs``, ``pruning.ratios``, ``pruning.schedule``), inside which any
    key may be set. Keys of ``pruning.ratios`` are sublayer patterns and may contain
    dots: ``pruning.ratios.features.0.conv=0.3``.

    Example:
        >>> raw = {"train": {"epochs": 5}}
        >>> apply_override(raw, "train.optimizer.name=adam")
        >>> raw
        {'train': {'epochs': 5, 'optimizer': {'name': 'adam'}}}
    """
    key, value = parse_override(text)
    parts = key.split(".")
    node, section = raw, Recipe
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth + 1])
        rule = _field_rule(section, part)
        if rule is None:
            raise ConfigError(here, value, unknown_key_help(section))
        rest = parts[depth + 1:]
        if not rest:
            _check_section_override(rule, here, value, text)
            node[part] = value
            return
        if rule.section is None and rule.mapping is None:
            raise ConfigError(key, value, f"a key path ending at {here} (it holds a value)")
        node = _child_mapping(node, part, here, key)
        if rule.mapping is not None:
            _set_free_form(node, rest, value, here, key, flat=rule.mapping == "flat")
            return
        section = rule.section


def _check_section_override(rule: Rule, key: str, value, text: str) -> None:
    """``-o train=`` (or ``train=null``, ``train={}``) would silently reset a whole
    section to its defaults: an error. ``-o pruning=null`` (no pruning) stays allowed."""
    if rule.section is None:
        return
    empty = not text.partition("=")[2].strip()
    if empty or value == {} or (value is None and not rule.optional):
        raise ConfigError(key, "" if empty else value,
                          f"{rule.allowed}, not empty; set keys with -o {key}.KEY=VALUE "
                          "(an empty override would reset the section to its defaults)")


def _field_rule(section: type, name: str) -> Optional[Rule]:
    for f in fields(section):
        if f.name == name:
            return f.metadata["rule"]
    return None


def _child_mapping(node: Dict[str, Any], part: str, here: str, key: str) -> Dict[str, Any]:
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    if not isinstance(child, dict):
        raise ConfigError(here, child, f"a mapping (to set {key} inside it)")
    return child


def _set_free_form(node, rest, value, here, key, *, flat):
    if flat:
        node[".".join(rest)] = value
        return
    for depth, part in enumerate(rest[:-1]):
        node = _child_mapping(node, part, ".".join([here, *rest[:depth + 1]]), key)
    node[rest[-1]] = value
