"""Data sources of a recipe's ``data`` section, as ``paddle.io.Dataset`` pairs.

Every dataset yields ``(image, label)``: a float32 ``[C, H, W]`` array of the recipe's
``input_shape`` and an int64 array of shape ``[1]``, ready for ``paddle.Model.fit``.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits, offline), ``npz`` (arrays in a
file), ``imagenet`` (PaddleClas list files), ``imagefolder`` (one directory per class),
``cifar10`` / ``mnist`` (``paddle.vision.datasets``, from a local copy when offline) and
``synthetic`` (random images, for dry runs). ``data.samples`` and
``data.train_samples`` cap the eval and train sets with a fixed random subset. The
in-memory sources live in :mod:`slim_callbacks.app.array_data`, the image-file and
``paddle.vision`` ones in :mod:`slim_callbacks.app.image_data`; this module picks one.

Examples:
    >>> train, evaluation = build_datasets({"source": "digits"}, [1, 3, 32, 32])
    >>> len(train), len(evaluation)
    (1437, 360)
    >>> image, label = train[0]
    >>> image.shape, image.dtype, label.shape, label.dtype
    ((3, 32, 32), dtype('float32'), (1,), dtype('int64'))
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
from paddle.io import Dataset, Subset

from slim_callbacks.app.array_data import (
    Pair,
    Shape,
    digits_datasets,
    npz_datasets,
    synthetic_datasets,
)
from slim_callbacks.app.image_data import (
    cifar10_datasets,
    imagefolder_datasets,
    imagenet_datasets,
    mnist_datasets,
)
from slim_callbacks.app.input_rules import INPUT_SOURCES
from slim_callbacks.app.rules import SHAPE
from slim_callbacks.app.schema import DataConfig
from slim_callbacks.core.errors import ConfigError

_LOG = logging.getLogger(__name__)

SUBSET_SEED = 0


def build_datasets(data_cfg: Union[DataConfig, Mapping], input_shape: Sequence[int],
                   inputs: Optional[Sequence[Mapping]] = None) -> Pair:
    """The ``(train, eval)`` datasets of a recipe's ``data`` section.

    Args:
        data_cfg: a :class:`~slim_callbacks.app.schema.DataConfig` or its mapping.
        input_shape: ``[N, C, H, W]``; images come out as ``[C, H, W]`` (this wins
            over ``data.image_size``).
        inputs: a recipe's ``model.inputs``, if it has them: items are then one array
            per input and the label (:mod:`slim_callbacks.app.input_data`).

    Returns:
        ``(train_dataset, eval_dataset)``, each yielding ``(float32 [C, H, W], int64 [1])``
        (or ``(input_0, ..., int64 [1])`` with ``inputs``).

    Raises:
        ConfigError: a bad ``data`` mapping or ``input_shape``.
        SlimError: a missing file or directory, an unreadable layout, or a source that
            needs a download while offline; the message says what was expected.

    Examples:
        >>> train, evaluation = build_datasets(
        ...     {"source": "synthetic", "train_samples": 8, "samples": 4}, [1, 3, 16, 16])
        >>> len(train), len(evaluation), train[0][0].shape
        (8, 4, (3, 16, 16))
    """
    cfg = data_cfg if isinstance(data_cfg, DataConfig) else DataConfig.from_dict(data_cfg)
    if inputs is not None:
        return _input_datasets(cfg, inputs)
    shape = SHAPE(input_shape, "input_shape")[1:]
    if cfg.source != "synthetic" and shape[0] not in (1, 3):
        raise ConfigError("input_shape[1]", shape[0],
                          f"1 or 3 channels for source {cfg.source}")
    train, evaluation = SOURCES[cfg.source](cfg, shape)
    train = cap(train, cfg.train_samples)
    evaluation = cap(evaluation, cfg.samples)
    _LOG.info("data %s: %d train / %d eval samples of shape %s", cfg.source, len(train),
              len(evaluation), list(shape))
    return train, evaluation


def _input_datasets(cfg: DataConfig, inputs: Sequence[Mapping]) -> Pair:
    from slim_callbacks.app.input_data import synthetic_input_datasets
    if cfg.source not in INPUT_SOURCES:
        raise ConfigError("data.source", cfg.source, f"{' or '.join(INPUT_SOURCES)} when "
                          "model.inputs is given (the other sources give images only)")
    train, evaluation = synthetic_input_datasets(cfg, inputs)
    train, evaluation = cap(train, cfg.train_samples), cap(evaluation, cfg.samples)
    _LOG.info("data %s: %d train / %d eval samples of inputs %s", cfg.source, len(train),
              len(evaluation), ", ".join(f"{e['name']} {e['dtype']}{e['shape'][1:]}" for e in inputs))
    return train, evaluation


def cap(dataset: Dataset, samples: Optional[int], seed: int = SUBSET_SEED) -> Dataset:
    """At most ``samples`` items of ``dataset``: a fixed random subset in index order.

    Examples:
        >>> from slim_callbacks.app.array_data import ArrayDataset
        >>> len(cap(ArrayDataset(np.zeros((10, 1, 2, 2), "float32"), np.arange(10)), 3))
        3
    """
    if samples is None or samples >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), samples, replace=False))
    return Subset(dataset, keep.tolist())


SOURCES: Dict[str, Callable[[DataConfig, Shape], Pair]] = {
    "digits": digits_datasets,
    "npz": npz_datasets,
    "imagenet": imagenet_datasets,
    "imagefolder": imagefolder_datasets,
    "cifar10": cifar10_datasets,
    "mnist": mnist_datasets,
    "synthetic": synthetic_datasets,
}
