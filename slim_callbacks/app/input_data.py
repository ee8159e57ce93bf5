"""Data for a recipe's ``model.inputs``: one array per input, with its dtype, then the
label.

A network of several inputs (token ids and token types, an image and its sizes) trains
on items ``(input_0, input_1, ..., label)``: ``paddle.Model`` feeds the first
``len(model.inputs)`` arrays to ``forward`` in order and the label to the loss. The
``synthetic`` source draws every input in its ``values`` range (see
:mod:`slim_callbacks.app.input_rules`); other sources give images only.

Examples:
    >>> inputs = ({"name": "ids", "shape": [1, 6], "dtype": "int64", "values": [0, 50]},
    ...           {"name": "types", "shape": [1, 6], "dtype": "int64", "values": [0, 2]})
    >>> train, evaluation = synthetic_input_datasets(DataConfig(source="synthetic"), inputs)
    >>> ids, types, label = train[0]
    >>> ids.shape, ids.dtype, int(types.max()) < 2, label.dtype, len(train), len(evaluation)
    ((6,), dtype('int64'), True, dtype('int64'), 64, 32)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from paddle.io import Dataset

from slim_callbacks.app.array_data import SYNTHETIC_SEED, SYNTHETIC_SIZES, Pair
from slim_callbacks.app.schema import DataConfig


def draw(rng: np.random.Generator, entry: Mapping) -> np.ndarray:
    """One item of the input ``entry`` (its shape past the batch): integers in
    ``[low, high)`` of its ``values`` (zeros without), floats uniform in its ``values``
    (standard normal without)."""
    shape, dtype, values = tuple(entry["shape"][1:]), entry.get("dtype", "float32"), entry.get("values")
    if np.issubdtype(np.dtype(dtype if dtype != "bfloat16" else "float32"), np.integer):
        low, high = values or (0, 1)
        return rng.integers(low, high, shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool) if values else np.zeros(shape, bool)
    if values:
        return rng.uniform(values[0], values[1], shape).astype("float32")
    return rng.standard_normal(shape, dtype=np.float32)


class SyntheticInputs(Dataset):
    """Random items ``(input_0, ..., label)`` of ``inputs``; item ``i`` is the same on
    every call.

    Examples:
        >>> data = SyntheticInputs(4, [{"shape": [1, 3], "dtype": "int64", "values": [5, 9]}])
        >>> ids, label = data[1]
        >>> bool((ids == data[1][0]).all()), bool(5 <= ids.min() and ids.max() < 9)
        (True, True)
    """

    def __init__(self, size: int, inputs: Sequence[Mapping], num_classes: int = 10,
                 seed: int = SYNTHETIC_SEED):
        super().__init__()
        self.inputs, self.seed = tuple(inputs), seed
        self.labels = np.random.default_rng([seed, 1]).integers(0, num_classes, size)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, 2, index])
        return (*(draw(rng, entry) for entry in self.inputs),
                np.array([self.labels[index]], np.int64))


def synthetic_input_datasets(cfg: DataConfig, inputs: Sequence[Mapping]) -> Pair:
    """Random items of ``inputs``: 64 train / 32 eval unless capped."""
    classes = cfg.num_classes or 10
    return (SyntheticInputs(cfg.train_samples or SYNTHETIC_SIZES[0], inputs, classes, SYNTHETIC_SEED),
            SyntheticInputs(cfg.samples or SYNTHETIC_SIZES[1], inputs, classes, SYNTHETIC_SEED + 1))
