"""The in-memory data sources: ``digits``, ``npz`` and ``synthetic``, and the array
preprocessing they share with the ``paddle.vision`` sets.

:class:`Preprocess` scales, resizes (bilinear, as ``paddle.nn.functional.interpolate``),
normalizes and sets the channel count of ``[..., C, H, W]`` arrays, on one image or a
whole batch. ``npz`` files are read without unpickling and checked array by array, each
problem a one-line error naming the file.

Examples:
    >>> train, evaluation = synthetic_datasets(DataConfig(source="synthetic"), (3, 8, 8))
    >>> len(train), len(evaluation), train[0][0].shape
    (64, 32, (3, 8, 8))
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
from paddle.io import Dataset

from slim_callbacks.app.schema import DataConfig
from slim_callbacks.core.errors import ConfigError, SlimError

LUMA = (0.299, 0.587, 0.114)
EVAL_FRACTION = 0.2
SPLIT_SEED = 0
SYNTHETIC_SEED = 0
SYNTHETIC_SIZES = (64, 32)

Shape = Tuple[int, int, int]  # C, H, W
Pair = Tuple[Dataset, Dataset]


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``[size_out, size_in]`` bilinear interpolation matrix (half-pixel centers,
    as ``paddle.nn.functional.interpolate(mode="bilinear", align_corners=False)``).

    Examples:
        >>> resize_matrix(2, 4).round(2).tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    source = np.clip(source, 0, size_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    weight = source - low
    matrix = np.zeros((size_out, size_in), np.float32)
    np.add.at(matrix, (np.arange(size_out), low), 1 - weight)
    np.add.at(matrix, (np.arange(size_out), high), weight)
    return matrix


class Preprocess:
    """Scale, bilinear resize, normalize and set the channel count of ``[..., C, H, W]``.

    Works on one image or a whole batch, so small sources run it once at build time
    and large ones per item. Picklable for DataLoader workers.

    Examples:
        >>> step = Preprocess((8, 8), (3, 16, 16), scale=1 / 16, mean=(0.5,), std=(0.5,))
        >>> step(np.full((5, 1, 8, 8), 16.0)).shape
        (5, 3, 16, 16)
    """

    def __init__(self, size_in: Tuple[int, int], shape: Shape, *, scale: float = 1.0,
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)):
        self.channels, self.size = shape[0], tuple(shape[1:])
        self.scale = scale
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        self.rows = self.cols = None
        if tuple(size_in) != self.size:
            self.rows = resize_matrix(size_in[0], self.size[0])
            self.cols = resize_matrix(size_in[1], self.size[1]).T.copy()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = images.astype(np.float32) * np.float32(self.scale)
        if self.rows is not None:
            images = self.rows @ images @ self.cols
        images = (images - self.mean) / self.std
        return to_channels(images, self.channels)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """``[..., C, H, W]`` with ``channels`` channels: grey is replicated, RGB -> luma.

    Examples:
        >>> to_channels(np.ones((1, 2, 2), "float32"), 3).shape
        (3, 2, 2)
    """
    have = images.shape[-3]
    if have == channels:
        return np.ascontiguousarray(images, dtype=np.float32)
    if have == 1:
        return np.repeat(images, channels, axis=-3).astype(np.float32)
    if have == 3 and channels == 1:
        luma = np.asarray(LUMA, np.float32).reshape(3, 1, 1)
        return (images * luma).sum(axis=-3, keepdims=True).astype(np.float32)
    raise SlimError(f"cannot turn {have}-channel images into {channels} channels; "
                    "expected 1 or 3 channels")


class ArrayDataset(Dataset):
    """Images ``[N, C, H, W]`` and labels ``[N]`` in memory, optionally preprocessed
    per item.

    Examples:
        >>> data = ArrayDataset(np.zeros((4, 3, 8, 8), "float32"), np.arange(4))
        >>> data[2][1]
        array([2])
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 transform: Optional[Callable[[np.ndarray], np.ndarray]] = None):
        super().__init__()
        if len(images) != len(labels):
            raise SlimError(f"{len(images)} images but {len(labels)} labels; "
                            "expected one label per image")
        self.images, self.labels = images, np.asarray(labels, np.int64).reshape(-1)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, np.array([self.labels[index]], np.int64)


def digits_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """scikit-learn's 1797 bundled 8x8 digits, upscaled once; stratified 80/20 split.

    Normalized with the mean and std of the upscaled train split.

    Examples:
        >>> train, evaluation = digits_datasets(DataConfig(source="digits"), (1, 16, 16))
        >>> train.images.shape, sorted(set(evaluation.labels.tolist())) == list(range(10))
        ((1437, 1, 16, 16), True)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    labels = digits.target.astype(np.int64)
    train_idx, eval_idx = train_test_split(np.arange(len(labels)), test_size=EVAL_FRACTION,
                                           stratify=labels, random_state=SPLIT_SEED)
    images = Preprocess((8, 8), (1, *shape[1:]))(images)
    train = images[train_idx]
    step = Preprocess(shape[1:], shape, mean=(float(train.mean()),), std=(float(train.std()),))
    return (ArrayDataset(step(train), labels[train_idx]),
            ArrayDataset(step(images[eval_idx]), labels[eval_idx]))


def npz_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """``x_train, y_train, x_test, y_test`` from an ``.npz`` file.

    Images are NHWC uint8 (``(N, H, W)`` grey too; normalized with the per-channel
    train mean/std) or NCHW float (used as they are). Resized per item.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> x = np.zeros((4, 8, 8, 3), np.uint8)
        >>> np.savez(path, x_train=x, y_train=np.arange(4), x_test=x, y_test=np.arange(4))
        >>> npz_datasets(DataConfig(source="npz", path=path), (3, 16, 16))[0][0][0].shape
        (3, 16, 16)
    """
    with open_npz(cfg.path) as arrays:
        x_train, x_test = (npz_images(npz_array(arrays, k, cfg.path), k, cfg.path)
                           for k in ("x_train", "x_test"))
        y_train, y_test = (npz_labels(npz_array(arrays, k, cfg.path), k, cfg.path)
                           for k in ("y_train", "y_test"))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise SlimError(f"{cfg.path}: x_train images are {x_train.shape[1:]} but x_test "
                        f"images are {x_test.shape[1:]}; expected the same [C, H, W]")
    check_labels(np.concatenate([y_train, y_test]), cfg.num_classes, cfg.path)
    if x_train.dtype == np.uint8:
        mean = x_train.mean(axis=(0, 2, 3)) / 255.0
        std = np.maximum(x_train.std(axis=(0, 2, 3)) / 255.0, 1e-6)
        step = Preprocess(x_train.shape[2:], shape, scale=1 / 255.0, mean=mean, std=std)
    else:
        step = Preprocess(x_train.shape[2:], shape)
    return ArrayDataset(x_train, y_train, step), ArrayDataset(x_test, y_test, step)


NPZ_EXPECTED = "an .npz file with arrays x_train, y_train, x_test, y_test"


@contextlib.contextmanager
def open_npz(path: str):
    """The arrays of an ``.npz`` file (never unpickled), with every array present;
    a missing, foreign or incomplete file is a one-line error naming it."""
    if not os.path.isfile(path):
        raise SlimError(f"data.path: no file at {path!r}; expected {NPZ_EXPECTED}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile):  # numpy reads anything else as a pickle
        raise ConfigError("data.path", path, f"{NPZ_EXPECTED}, as numpy.savez writes "
                          f"(this file is not a numpy archive)") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ConfigError("data.path", path, f"{NPZ_EXPECTED} (it holds one .npy array)")
    with arrays:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
        if missing:
            raise SlimError(f"{path}: missing arrays {', '.join(missing)} (found "
                            f"{', '.join(arrays.files) or 'none'}); expected {NPZ_EXPECTED}")
        yield arrays


def npz_array(arrays, name: str, path: str) -> np.ndarray:
    """One non-empty numeric array of an open ``.npz`` (object arrays are refused)."""
    try:
        array = arrays[name]
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ConfigError("data.path", path, f"{NPZ_EXPECTED}; {name} cannot be read "
                          f"without unpickling ({err})") from None
    if array.ndim == 0 or len(array) == 0:
        raise ConfigError("data.path", path, f"{NPZ_EXPECTED}; {name} holds no samples")
    return array


def npz_num_classes(path: str) -> Tuple[int, int]:
    """``(num_classes, largest label)`` of an ``.npz``'s labels: largest label + 1.

    Examples:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
        >>> x = np.zeros((2, 8, 8, 3), np.uint8)
        >>> np.savez(path, x_train=x, y_train=[0, 9], x_test=x, y_test=[3, 4])
        >>> npz_num_classes(path)
        (10, 9)
    """
    with open_npz(path) as arrays:
        labels = np.concatenate([npz_labels(npz_array(arrays, k, path), k, path)
                                 for k in ("y_train", "y_test")])
    check_labels(labels, None, path)
    return int(labels.max()) + 1, int(labels.max())


def npz_images(images: np.ndarray, name: str, path: str) -> np.ndarray:
    """NCHW view of NHWC uint8 (or ``(N, H, W)`` uint8) or NCHW float images."""
    if images.dtype == np.uint8 and images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.transpose(0, 3, 1, 2)
    if np.issubdtype(images.dtype, np.floating) and images.ndim == 4 and \
            images.shape[1] in (1, 3):
        return images
    raise SlimError(f"{path}: {name} has shape {images.shape} and dtype {images.dtype}; "
                    "expected NHWC uint8 (N, H, W, 1 or 3) or NCHW float (N, 1 or 3, H, W)")


def npz_labels(labels: np.ndarray, name: str, path: str) -> np.ndarray:
    """Integer labels of shape ``(N,)`` or ``(N, 1)`` as an int64 ``(N,)`` array."""
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (1, 2) or \
            (labels.ndim == 2 and labels.shape[1] != 1):
        raise SlimError(f"{path}: {name} has shape {labels.shape} and dtype {labels.dtype};"
                        " expected integer class labels of shape (N,) or (N, 1)")
    return labels.reshape(-1).astype(np.int64)


def check_labels(labels: np.ndarray, num_classes: Optional[int], where: str) -> None:
    """Labels must lie in ``[0, num_classes)`` (or just be >= 0 when unknown)."""
    if labels.size and labels.min() < 0:
        raise SlimError(f"{where}: label {int(labels.min())} is negative; "
                        "expected class indices >= 0")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise SlimError(f"{where}: label {int(labels.max())} is not below data.num_classes="
                        f"{num_classes}; expected class indices 0..{num_classes - 1}")


class SyntheticDataset(Dataset):
    """Random normal images and random labels; item ``i`` is the same on every call.

    Examples:
        >>> data = SyntheticDataset(4, (3, 8, 8), num_classes=2)
        >>> bool((data[1][0] == data[1][0]).all()), data[1][0].shape
        (True, (3, 8, 8))
    """

    def __init__(self, size: int, shape: Shape, num_classes: int = 10,
                 seed: int = SYNTHETIC_SEED):
        super().__init__()
        self.shape, self.seed = tuple(shape), seed
        self.labels = np.random.default_rng([seed, 1]).integers(0, num_classes, size)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, 2, index])
        image = rng.standard_normal(self.shape, dtype=np.float32)
        return image, np.array([self.labels[index]], np.int64)


def synthetic_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """Random data of the input shape: 64 train / 32 eval items unless capped.

    Examples:
        >>> train, _ = synthetic_datasets(DataConfig(source="synthetic", num_classes=3),
        ...                               (3, 8, 8))
        >>> len(train), int(train.labels.max()) < 3
        (64, True)
    """
    classes = cfg.num_classes or 10
    n_train = cfg.train_samples or SYNTHETIC_SIZES[0]
    n_eval = cfg.samples or SYNTHETIC_SIZES[1]
    return (SyntheticDataset(n_train, shape, classes, SYNTHETIC_SEED),
            SyntheticDataset(n_eval, shape, classes, SYNTHETIC_SEED + 1))
