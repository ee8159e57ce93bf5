"""Data sources of a recipe's ``data`` section, as ``paddle.io.Dataset`` pairs.

Every dataset yields ``(image, label)``: a float32 ``[C, H, W]`` array of the recipe's
``input_shape`` and an int64 array of shape ``[1]``, ready for ``paddle.Model.fit``.

Sources: ``digits`` (scikit-learn's bundled 8x8 digits, offline), ``npz`` (arrays in a
file), ``imagenet`` (PaddleClas list files), ``imagefolder`` (one directory per class),
``cifar10`` / ``mnist`` (``paddle.vision.datasets``, from a local copy when offline) and
``synthetic`` (random images, for dry runs). ``data.samples`` and
``data.train_samples`` cap the eval and train sets with a fixed random subset.

Example:
    >>> train, evaluation = build_datasets({"source": "digits"}, [1, 3, 32, 32])
    >>> len(train), len(evaluation)
    (1437, 360)
    >>> image, label = train[0]
    >>> image.shape, image.dtype, label.shape, label.dtype
    ((3, 32, 32), dtype('float32'), (1,), dtype('int64'))
"""
from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from paddle.io import Dataset, Subset

from slim_callbacks.app.rules import SHAPE
from slim_callbacks.app.schema import DataConfig
from slim_callbacks.core.errors import ConfigError, SlimError

_LOG = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
LUMA = (0.299, 0.587, 0.114)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
EVAL_FRACTION = 0.2
SPLIT_SEED = 0
SUBSET_SEED = 0
SYNTHETIC_SEED = 0
SYNTHETIC_SIZES = (64, 32)
MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
OFFLINE_HINT = ("offline, point the recipe at a local copy with data.path: {what}, "
                "or use data.source: digits (bundled) or npz")

Shape = Tuple[int, int, int]  # C, H, W
Pair = Tuple[Dataset, Dataset]


def build_datasets(data_cfg: Union[DataConfig, Mapping], input_shape: Sequence[int]) -> Pair:
    """The ``(train, eval)`` datasets of a recipe's ``data`` section.

    Args:
        data_cfg: a :class:`~slim_callbacks.app.schema.DataConfig` or its mapping.
        input_shape: ``[N, C, H, W]``; images come out as ``[C, H, W]`` (this wins
            over ``data.image_size``).

    Returns:
        ``(train_dataset, eval_dataset)``, each yielding ``(float32 [C, H, W], int64 [1])``.

    Raises:
        ConfigError: a bad ``data`` mapping or ``input_shape``.
        SlimError: a missing file or directory, an unreadable layout, or a source that
            needs a download while offline; the message says what was expected.

    Example:
        >>> train, evaluation = build_datasets(
        ...     {"source": "synthetic", "train_samples": 8, "samples": 4}, [1, 3, 16, 16])
        >>> len(train), len(evaluation), train[0][0].shape
        (8, 4, (3, 16, 16))
    """
    cfg = data_cfg if isinstance(data_cfg, DataConfig) else DataConfig.from_dict(data_cfg)
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


def cap(dataset: Dataset, samples: Optional[int], seed: int = SUBSET_SEED) -> Dataset:
    """At most ``samples`` items of ``dataset``: a fixed random subset in index order.

    Example:
        >>> len(cap(ArrayDataset(np.zeros((10, 1, 2, 2), "float32"), np.arange(10)), 3))
        3
    """
    if samples is None or samples >= len(dataset):
        return dataset
    keep = np.sort(np.random.default_rng(seed).choice(len(dataset), samples, replace=False))
    return Subset(dataset, keep.tolist())


# ------------------------------------------------------------------ array datasets


def resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``[size_out, size_in]`` bilinear interpolation matrix (half-pixel centers,
    as ``paddle.nn.functional.interpolate(mode="bilinear", align_corners=False)``).

    Example:
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

    Example:
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

    Example:
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

    Example:
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

    Example:
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

    Example:
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

    Example:
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

    Example:
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

    Example:
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


# ------------------------------------------------------------------ image files


class ImageFileDataset(Dataset):
    """Image files with labels, read with Pillow and passed through ``transform``.

    Example:
        >>> ImageFileDataset([("a.jpg", 0)], eval_transform((3, 8, 8))).samples
        [('a.jpg', 0)]
    """

    def __init__(self, samples: List[Tuple[str, int]], transform: Callable, mode="RGB"):
        super().__init__()
        self.samples, self.transform, self.mode = samples, transform, mode

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            image = image.convert(self.mode)
        return self.transform(image), np.array([label], np.int64)


class HWCArray:
    """PIL image -> float32 ``[H, W, C]`` array (grey gets a channel axis)."""

    def __call__(self, image):
        array = np.asarray(image, np.float32)
        return array[..., None] if array.ndim == 2 else array


def _normalize(channels: int):
    from paddle.vision import transforms as T

    mean, std = np.asarray(IMAGENET_MEAN) * 255, np.asarray(IMAGENET_STD) * 255
    if channels == 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    return [HWCArray(), T.Normalize(mean.tolist(), std.tolist(), data_format="HWC"),
            T.Transpose()]


def train_transform(shape: Shape):
    """RandomResizedCrop + RandomHorizontalFlip + ImageNet Normalize, to ``[C, H, W]``.

    Example:
        >>> from PIL import Image
        >>> train_transform((3, 8, 8))(Image.new("RGB", (20, 12))).shape
        (3, 8, 8)
    """
    from paddle.vision import transforms as T

    size = tuple(shape[1:])
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(),
                      *_normalize(shape[0])])


def eval_transform(shape: Shape):
    """Resize to size * 256 / 224 + CenterCrop + ImageNet Normalize, to ``[C, H, W]``.

    Example:
        >>> from PIL import Image
        >>> eval_transform((1, 8, 6))(Image.new("L", (20, 12))).shape
        (1, 8, 6)
    """
    from paddle.vision import transforms as T

    height, width = shape[1:]
    resize = round(height * 256 / 224) if height == width else \
        (round(height * 256 / 224), round(width * 256 / 224))
    return T.Compose([T.Resize(resize), T.CenterCrop((height, width)),
                      *_normalize(shape[0])])


def _image_pair(train: List[Tuple[str, int]], evaluation: List[Tuple[str, int]],
                shape: Shape) -> Pair:
    mode = "L" if shape[0] == 1 else "RGB"
    return (ImageFileDataset(train, train_transform(shape), mode),
            ImageFileDataset(evaluation, eval_transform(shape), mode))


def _directory(path: str, expected: str) -> str:
    if not os.path.isdir(path):
        raise SlimError(f"data.root: no directory at {path!r}; expected {expected}")
    return path


def imagenet_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """PaddleClas layout: ``root/train_list.txt`` and ``root/val_list.txt`` with lines
    ``relative/path.jpg label``, paths relative to ``root``.

    Example:
        >>> imagenet_datasets(DataConfig(source="imagenet", root="/nowhere"), (3, 8, 8))
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.SlimError: data.root: no directory at '/nowhere'; ...
    """
    root = _directory(cfg.root, "the PaddleClas dataset root holding train_list.txt, "
                                "val_list.txt and the images they list")
    train, evaluation = (read_list(root, name) for name in ("train_list.txt", "val_list.txt"))
    check_labels(np.array([label for _, label in train + evaluation]), cfg.num_classes,
                 root)
    return _image_pair(train, evaluation, shape)


def read_list(root: str, name: str) -> List[Tuple[str, int]]:
    """``(path, label)`` pairs of a PaddleClas list file ``root/name``.

    Checks the format of every line and that the first listed image exists.
    """
    list_path = os.path.join(root, name)
    if not os.path.isfile(list_path):
        raise SlimError(f"data.root: expected the list file {list_path} (PaddleClas "
                        "layout: one 'relative/path.jpg label' line per image)")
    samples = []
    with open(list_path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise SlimError(f"{list_path}:{number}: {line.strip()!r} is not "
                                "'relative/path.jpg label' with an integer label")
            samples.append((os.path.join(root, parts[0].strip()), int(parts[1])))
    if not samples:
        raise SlimError(f"{list_path} lists no images; expected 'relative/path.jpg label' "
                        "lines")
    if not os.path.isfile(samples[0][0]):
        raise SlimError(f"{list_path}: the first image {samples[0][0]} does not exist; "
                        "expected paths relative to data.root")
    return samples


def imagefolder_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``; classes sorted by
    name from ``train`` (``val`` may lack some).

    Example:
        >>> imagefolder_datasets(DataConfig(source="imagefolder", root="/nowhere"),
        ...                      (3, 8, 8))
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.SlimError: data.root: no directory at '/nowhere/train'; ...
    """
    expected = "root/train/<class>/*.jpg and root/val/<class>/*.jpg"
    train_dir = _directory(os.path.join(cfg.root, "train"), expected)
    val_dir = _directory(os.path.join(cfg.root, "val"), expected)
    classes = sorted(d.name for d in os.scandir(train_dir) if d.is_dir())
    if not classes:
        raise SlimError(f"{train_dir} has no class directories; expected {expected}")
    if cfg.num_classes is not None and len(classes) > cfg.num_classes:
        raise SlimError(f"{train_dir} has {len(classes)} classes but data.num_classes is "
                        f"{cfg.num_classes}; expected at most {cfg.num_classes} directories")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(d.name for d in os.scandir(val_dir) if d.is_dir() and d.name not in index)
    if unknown:
        raise SlimError(f"{val_dir} has classes {', '.join(unknown)} that {train_dir} lacks; "
                        f"expected the classes {', '.join(classes)}")
    return _image_pair(folder_samples(train_dir, index), folder_samples(val_dir, index),
                       shape)


def folder_samples(directory: str, index: Dict[str, int]) -> List[Tuple[str, int]]:
    """``(path, label)`` of every image under ``directory/<class>/``, sorted."""
    samples = []
    for name, label in sorted(index.items()):
        class_dir = os.path.join(directory, name)
        if not os.path.isdir(class_dir):
            continue
        samples += [(os.path.join(class_dir, f), label) for f in sorted(os.listdir(class_dir))
                    if f.lower().endswith(IMAGE_SUFFIXES)]
    if not samples:
        raise SlimError(f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "expected <class>/<image> files")
    return samples


# ------------------------------------------------------------------ paddle.vision sets


class VisionDataset(Dataset):
    """A ``paddle.vision.datasets`` set (cv2 backend) with our preprocessing and
    ``[1]``-shaped labels."""

    def __init__(self, base: Dataset, transform: Preprocess):
        super().__init__()
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        image = np.asarray(image, np.float32)
        image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        return self.transform(image), np.asarray(label, np.int64).reshape(1)


def _load_vision(source: str, factory: Callable[[str], Dataset], what: str) -> Pair:
    try:
        return factory("train"), factory("test")
    except Exception as exc:  # download failures come as many types; all mean "no data"
        raise SlimError(f"data.source {source!r} could not be loaded ({exc}); "
                        + OFFLINE_HINT.format(what=what)) from exc


def cifar10_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """CIFAR-10 through ``paddle.vision.datasets.Cifar10``; ``data.path`` is a local
    ``cifar-10-python.tar.gz`` (else Paddle's cache or a download is tried).

    Example:
        >>> cifar10_datasets(DataConfig(source="cifar10", path="/nowhere.tar.gz"),
        ...                  (3, 32, 32))
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.SlimError: data.path: no file at '/nowhere.tar.gz'; ...
    """
    from paddle.vision.datasets import Cifar10

    what = "/path/to/cifar-10-python.tar.gz"
    if cfg.path is not None and not os.path.isfile(cfg.path):
        raise SlimError(f"data.path: no file at {cfg.path!r}; expected {what}")
    train, test = _load_vision("cifar10", lambda mode: Cifar10(
        data_file=cfg.path, mode=mode, download=cfg.path is None, backend="cv2"), what)
    step = Preprocess((32, 32), shape, scale=1 / 255.0, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    return VisionDataset(train, step), VisionDataset(test, step)


def mnist_datasets(cfg: DataConfig, shape: Shape) -> Pair:
    """MNIST through ``paddle.vision.datasets.MNIST``; ``data.path`` is a directory
    with the four idx ``.gz`` files (else Paddle's cache or a download is tried).

    Example:
        >>> mnist_datasets(DataConfig(source="mnist", path="/nowhere"), (1, 28, 28))
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.SlimError: data.path: ...
    """
    from paddle.vision.datasets import MNIST

    what = "a directory with " + ", ".join(sum(MNIST_FILES.values(), ()))
    files = {mode: (None, None) for mode in MNIST_FILES}
    if cfg.path is not None:
        files = {mode: tuple(os.path.join(cfg.path, f) for f in names)
                 for mode, names in MNIST_FILES.items()}
        missing = [f for pair in files.values() for f in pair if not os.path.isfile(f)]
        if missing:
            raise SlimError(f"data.path: {', '.join(missing)} not found; expected {what}")
    train, test = _load_vision("mnist", lambda mode: MNIST(
        *files[mode], mode=mode, download=cfg.path is None, backend="cv2"), what)
    step = Preprocess((28, 28), shape, scale=1 / 255.0, mean=MNIST_MEAN, std=MNIST_STD)
    return VisionDataset(train, step), VisionDataset(test, step)


SOURCES: Dict[str, Callable[[DataConfig, Shape], Pair]] = {
    "digits": digits_datasets,
    "npz": npz_datasets,
    "imagenet": imagenet_datasets,
    "imagefolder": imagefolder_datasets,
    "cifar10": cifar10_datasets,
    "mnist": mnist_datasets,
    "synthetic": synthetic_datasets,
}
