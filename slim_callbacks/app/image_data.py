"""The image-file and downloadable data sources: ``imagenet`` (PaddleClas list files),
``imagefolder`` (one directory per class), ``cifar10`` and ``mnist``
(``paddle.vision.datasets``, from a local copy when offline), and the Pillow transforms
of image files (random-resized-crop training, resize-and-center-crop evaluation).

Every loader checks its files first; a missing one is a one-line error saying what was
expected.

Examples:
    >>> from PIL import Image
    >>> eval_transform((3, 8, 8))(Image.new("RGB", (20, 12))).shape
    (3, 8, 8)
    >>> for load, cfg in [(imagenet_datasets, DataConfig(source="imagenet", root="/nowhere")),
    ...                   (imagefolder_datasets, DataConfig(source="imagefolder", root="/nowhere")),
    ...                   (cifar10_datasets, DataConfig(source="cifar10", path="/nowhere.tgz")),
    ...                   (mnist_datasets, DataConfig(source="mnist", path="/nowhere"))]:
    ...     try:
    ...         load(cfg, (1, 28, 28))
    ...     except SlimError as err:
    ...         print(str(err)[:60])
    data.root: no directory at '/nowhere'; expected the PaddleCl
    data.root: no directory at '/nowhere/train'; expected root/t
    data.path: no file at '/nowhere.tgz'; expected /path/to/cifa
    data.path: /nowhere/train-images-idx3-ubyte.gz, /nowhere/tra
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Tuple

import numpy as np
from paddle.io import Dataset

from slim_callbacks.app.array_data import Pair, Preprocess, Shape, check_labels
from slim_callbacks.app.schema import DataConfig
from slim_callbacks.core.errors import SlimError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
OFFLINE_HINT = ("offline, point the recipe at a local copy with data.path: {what}, "
                "or use data.source: digits (bundled) or npz")


class ImageFileDataset(Dataset):
    """Image files with labels, read with Pillow and passed through ``transform``.

    Examples:
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

    Examples:
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

    Examples:
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
