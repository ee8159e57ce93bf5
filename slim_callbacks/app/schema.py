"""The recipe schema: a strict, typed view of a YAML training-and-pruning recipe.

Every section (``model``, ``data``, ``train`` with ``train.optimizer`` and
``train.lr``, ``pruning``, ``logging``, ``checkpoint``, ``deploy``) is a small frozen
:class:`~slim_callbacks.app.rules.Section` whose fields carry a validation rule; unknown
keys, wrong types and inconsistent combinations raise
:class:`~slim_callbacks.core.errors.ConfigError` naming the full key path, the value and
what is allowed. Defaults that depend on other keys (``output_dir``, ``input_shape``,
``train.lr.base`` ...) are filled in, so :meth:`Recipe.to_dict` is the fully resolved
recipe. Reading files lives in :mod:`slim_callbacks.app.recipe`, ``-o`` overrides in
:mod:`slim_callbacks.app.overrides`.

Examples:
    >>> recipe = Recipe(name="demo", model={"name": "mobilenet_v1"},
    ...                 data={"source": "digits"}, pruning={"ratios": 0.5})
    >>> recipe.input_shape, recipe.output_dir, recipe.checkpoint.save_dir
    ((1, 3, 32, 32), 'output/demo', 'output/demo/checkpoints')
    >>> Recipe.from_dict(recipe.to_dict()) == recipe
    True
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple, Union

import yaml

from slim_callbacks.app.input_rules import INPUTS, check_with_inputs
from slim_callbacks.app.pruning_schema import PruningConfig
from slim_callbacks.app.rules import (
    BOOL,
    EPOCHS,
    IMAGE_SIZE,
    MAPPING,
    MODEL_NAME,
    NAME,
    PATH,
    PRETRAINED,
    RATIO,
    SHAPE,
    Invalid,
    Rule,
    Section,
    choice_rule,
    float_rule,
    int_rule,
    key_field,
    list_rule,
    optional_rule,
    section_field,
)
from slim_callbacks.core.checks import is_int
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.deploy.export import FORMATS as EXPORT_FORMATS

_LOG = logging.getLogger(__name__)

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

@dataclass(frozen=True)
class ModelConfig(Section):
    """``model``: which network to build.

    Examples:
        >>> ModelConfig(name="mobilenet_v1", kwargs={"scale": 0.25}).pretrained is None
        True
    """

    prefix: ClassVar[str] = "model"
    name: str = key_field(MODEL_NAME)
    kwargs: Dict[str, Any] = field(default_factory=dict, metadata={"rule": MAPPING})
    pretrained: Optional[str] = key_field(optional_rule(PRETRAINED), None)
    inputs: Optional[Tuple[dict, ...]] = key_field(optional_rule(INPUTS), None)

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        return out if self.inputs is not None else {k: v for k, v in out.items() if k != "inputs"}


@dataclass(frozen=True)
class DataConfig(Section):
    """``data``: where images come from (see :mod:`slim_callbacks.app.data`).

    ``root`` is the image directory of ``imagenet`` / ``imagefolder``; ``path`` the
    local copy of ``npz`` (required), ``cifar10`` (cifar-10-python.tar.gz) and
    ``mnist`` (directory of the four idx .gz files). ``samples`` and
    ``train_samples`` cap the eval and train sets (a fixed random subset).

    Examples:
        >>> DataConfig(source="digits").num_workers
        0
    """

    prefix: ClassVar[str] = "data"
    source: str = key_field(choice_rule(DATA_SOURCES))
    root: Optional[str] = key_field(optional_rule(PATH), None)
    path: Optional[str] = key_field(optional_rule(PATH), None)
    image_size: Union[int, Tuple[int, int], None] = key_field(optional_rule(IMAGE_SIZE), None)
    num_classes: Optional[int] = key_field(optional_rule(int_rule(1)), None)
    num_workers: int = key_field(int_rule(0), 0)
    samples: Optional[int] = key_field(optional_rule(int_rule(1)), None)
    train_samples: Optional[int] = key_field(optional_rule(int_rule(1)), None)

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

    Examples:
        >>> OptimizerConfig().momentum, OptimizerConfig(name="adam").momentum
        (0.9, None)
    """

    prefix: ClassVar[str] = "train.optimizer"
    name: str = key_field(choice_rule(OPTIMIZERS), "momentum")
    momentum: Optional[float] = key_field(optional_rule(RATIO), None)
    weight_decay: float = key_field(float_rule(0.0), 0.0)

    def _check(self):
        if self.name == "momentum" and self.momentum is None:
            self._set("momentum", DEFAULT_MOMENTUM)
        if self.name != "momentum" and self.momentum is not None:
            raise ConfigError("train.optimizer.momentum", self.momentum,
                              f"null for optimizer {self.name} (only momentum uses it)")


@dataclass(frozen=True)
class LrConfig(Section):
    """``train.lr``: base rate and schedule; ``milestones`` (epochs) only for piecewise.

    Examples:
        >>> LrConfig(schedule="piecewise", milestones=[30, 60]).milestones
        (30, 60)
    """

    prefix: ClassVar[str] = "train.lr"
    base: Optional[float] = key_field(optional_rule(float_rule(0.0, low_open=True)), None)
    schedule: str = key_field(choice_rule(LR_SCHEDULES), "cosine")
    milestones: Tuple[int, ...] = key_field(EPOCHS, ())
    gamma: float = key_field(float_rule(0.0, 1.0, low_open=True, high_open=False), 0.1)

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

    Examples:
        >>> TrainConfig(optimizer={"name": "adam"}).lr.base
        0.001
    """

    prefix: ClassVar[str] = "train"
    epochs: int = key_field(int_rule(1), 10)
    batch_size: int = key_field(int_rule(1), 32)
    optimizer: OptimizerConfig = section_field(OptimizerConfig)
    lr: LrConfig = section_field(LrConfig)
    eval_every: int = key_field(int_rule(1), 1)
    seed: Optional[int] = key_field(optional_rule(int_rule(0)), 0)
    amp: Optional[str] = key_field(optional_rule(choice_rule(AMP_LEVELS)), None)

    def _check(self):
        if self.lr.base is None:
            self._set("lr", dataclasses.replace(self.lr, base=DEFAULT_LR[self.optimizer.name]))
        late = [m for m in self.lr.milestones if m >= self.epochs]
        if late:
            _LOG.warning("train.lr.milestones %s are not below train.epochs=%d: the "
                         "learning rate never decays there", late, self.epochs)














@dataclass(frozen=True)
class LoggingConfig(Section):
    """``logging``: VisualDL and log-line settings; ``log_dir`` defaults under output_dir.

    Examples:
        >>> LoggingConfig().log_freq
        10
    """

    prefix: ClassVar[str] = "logging"
    log_dir: Optional[str] = key_field(optional_rule(PATH), None)
    log_freq: int = key_field(int_rule(1), 10)
    visualdl: bool = key_field(BOOL, True)


@dataclass(frozen=True)
class CheckpointConfig(Section):
    """``checkpoint``: where and how often (epochs) to save; defaults under output_dir.

    Examples:
        >>> CheckpointConfig().save_freq
        1
    """

    prefix: ClassVar[str] = "checkpoint"
    save_dir: Optional[str] = key_field(optional_rule(PATH), None)
    save_freq: int = key_field(int_rule(1), 1)


_FORMAT_LIST = list_rule(choice_rule(EXPORT_FORMATS), "")


def _formats_convert(value, path):
    formats = _FORMAT_LIST.convert(value, path)
    if not formats or len(set(formats)) != len(formats):
        raise Invalid
    return formats


FORMATS = Rule(f"a non-empty list of distinct formats from {', '.join(EXPORT_FORMATS)}",
               _formats_convert)


@dataclass(frozen=True)
class DeployConfig(Section):
    """``deploy``: what ``run`` does with the final model. ``export`` writes it, verified,
    to ``<output_dir>/inference/`` in each of ``formats``; ``latency`` (default: the
    value of ``export``) also exports the unpruned network (``inference/original/``) and
    measures both side by side, batch 1, oneDNN on, 1 thread and all cores,
    ``latency_rounds`` interleaved rounds of 5 runs; ``keep_intermediates`` measures
    both with Paddle Inference's eager deletion off (faster at batch 1, more memory:
    :func:`~slim_callbacks.deploy.runtime.predictor`).

    Examples:
        >>> DeployConfig().formats, DeployConfig().latency, DeployConfig(export=False).latency
        (('paddle',), True, False)
    """

    prefix: ClassVar[str] = "deploy"
    export: bool = key_field(BOOL, True)
    formats: Tuple[str, ...] = key_field(FORMATS, ("paddle",))
    latency: Optional[bool] = key_field(optional_rule(BOOL), None)
    latency_rounds: int = key_field(int_rule(1), 20)
    keep_intermediates: bool = key_field(BOOL, False)

    def _check(self):
        if self.latency is None:
            self._set("latency", self.export)
        if self.latency and not self.export:
            raise ConfigError("deploy.latency", True, "false when deploy.export is false "
                              "(latency is measured on the exported models)")
        if self.latency and "paddle" not in self.formats:
            raise ConfigError("deploy.formats", list(self.formats), "a list with paddle when "
                              "deploy.latency is true (latency is measured in Paddle Inference)")


@dataclass(frozen=True)
class Recipe(Section):
    """A whole recipe, validated and with every default resolved.

    ``pruning`` is ``None`` for a plain training run. Build it with
    :func:`~slim_callbacks.app.recipe.load_recipe`; :meth:`to_dict` gives back the
    resolved mapping.

    Examples:
        >>> r = Recipe(name="x", model={"name": "resnet18"},
        ...            data={"source": "synthetic"}, input_shape=[2, 3, 64, 48])
        >>> r.data.image_size, r.data.num_classes, r.logging.log_dir
        ((64, 48), 10, 'output/x/logs')
    """

    prefix: ClassVar[str] = ""
    name: str = key_field(NAME)
    output_dir: Optional[str] = key_field(optional_rule(PATH), None)
    model: ModelConfig = section_field(ModelConfig)
    data: DataConfig = section_field(DataConfig)
    input_shape: Optional[Tuple[int, int, int, int]] = key_field(optional_rule(SHAPE), None)
    train: TrainConfig = section_field(TrainConfig)
    pruning: Optional[PruningConfig] = section_field(PruningConfig, optional=True)
    logging: LoggingConfig = section_field(LoggingConfig)
    checkpoint: CheckpointConfig = section_field(CheckpointConfig)
    deploy: DeployConfig = section_field(DeployConfig)

    def _check(self):
        check_with_inputs(self.model.inputs, self.input_shape, self.data.source)
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

    @property
    def example_inputs(self):
        """What the engine feeds the network: ``model.inputs`` (positional arguments), or
        the one float32 input of ``input_shape``."""
        if self.model.inputs is None:
            return list(self.input_shape)
        return [{k: v for k, v in entry.items() if k != "values"} for entry in self.model.inputs]

    def to_dict(self) -> Dict[str, Any]:
        out = super().to_dict()
        return out if self.model.inputs is None else {k: v for k, v in out.items() if k != "input_shape"}

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
        if classes is None and is_int(wanted):
            classes = int(wanted)
        if classes is None and self.data.source == "synthetic":
            classes = 10
        if isinstance(wanted, int) and classes is not None and wanted != classes:
            raise ConfigError("model.kwargs.num_classes", wanted,
                              f"{classes} (the classes of data source {self.data.source})")
        if classes != self.data.num_classes:
            self._set("data", dataclasses.replace(self.data, num_classes=classes))

    def to_yaml(self) -> str:
        """The resolved recipe as YAML text (what ``slim-callbacks check`` prints).

        Examples:
            >>> print(Recipe(name="t", model={"name": "lenet"},
            ...              data={"source": "mnist"}).to_yaml().splitlines()[0])
            name: t
        """
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
