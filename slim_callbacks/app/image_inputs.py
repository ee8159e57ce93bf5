"""Unlabelled images for a model known only by its export: every image file under a
folder (subfolders too), preprocessed as the model expects (:class:`Preprocessing`:
resize, optionally center-crop, normalize; by default as for ImageNet evaluation, or as
a PaddleX/PaddleClas export's ``inference.yml`` says), split into images to fine-tune
on and held-out images to measure fidelity on.

Examples:
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(5):
    ...     Image.new("RGB", (20, 12), (i, 0, 0)).save(os.path.join(folder, f"{i}.png"))
    >>> train, held_out = split_held_out(image_files(folder), 0.2)
    >>> len(train), len(held_out), ImageInputs(held_out, (3, 8, 8))[0].shape
    (4, 1, (3, 8, 8))
    >>> Preprocessing.from_export(folder)   # no inference.yml there: ImageNet evaluation
    Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop=True)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from paddle.io import Dataset

from slim_callbacks.app.image_data import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, HWCArray
from slim_callbacks.core.errors import ConfigError, SlimError

EXPORT_CONFIG = "inference.yml"


@dataclass(frozen=True)
class Preprocessing:
    """Resize (to 256/224 of the input size and center-crop, or straight to the input
    size without ``crop``), then ``(pixel / 255 - mean) / std`` per channel."""

    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    crop: bool = True

    @classmethod
    def from_export(cls, model_dir) -> "Preprocessing":
        """What ``inference.yml`` beside the model says (its ``NormalizeImage`` mean and
        std, whether it crops), else the default."""
        path = os.path.join(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir),
                            EXPORT_CONFIG)
        if not os.path.isfile(path):
            return cls()
        import yaml
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        ops = (config.get("PreProcess") or {}).get("transform_ops") or []
        steps = {name: args or {} for op in ops if isinstance(op, dict) for name, args in op.items()}
        normalize = steps.get("NormalizeImage", {})
        return cls(tuple(normalize.get("mean", IMAGENET_MEAN)), tuple(normalize.get("std", IMAGENET_STD)),
                   "CropImage" in steps)

    def transform(self, shape: Sequence[int]):
        """Pillow image -> float32 ``[C, H, W]`` of ``shape``."""
        from paddle.vision import transforms as T
        height, width = shape[1:]
        mean, std = np.asarray(self.mean) * 255, np.asarray(self.std) * 255
        if shape[0] == 1 and mean.size > 1:
            mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
        size = (round(height * 256 / 224), round(width * 256 / 224)) if self.crop else (height, width)
        crop = [T.CenterCrop((height, width))] if self.crop else []
        return T.Compose([T.Resize(size), *crop, HWCArray(),
                          T.Normalize(mean.tolist(), std.tolist(), data_format="HWC"), T.Transpose()])


def image_files(folder) -> List[str]:
    """Every image file under ``folder``, sorted; SlimError if there is none."""
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        raise ConfigError("data", folder, "a directory of images (any layout; labels are not "
                                          "needed)")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise SlimError(f"data: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def split_held_out(files: Sequence[str], share: float) -> Tuple[List[str], List[str]]:
    """``(fine-tune files, held-out files)``: every ``1/share``-th file is held out (at
    least one), so both halves spread over the folder alike."""
    if not 0 < share < 1:
        raise ConfigError("held_out", share, "a share in (0, 1)")
    step = max(2, round(1 / share)) if len(files) > 1 else 1
    held = [f for i, f in enumerate(files) if i % step == step - 1] or list(files[-1:])
    return [f for f in files if f not in set(held)], held


class ImageInputs(Dataset):
    """The images of ``files`` as float32 ``[C, H, W]`` arrays (``shape``), no label."""

    def __init__(self, files: Sequence[str], shape: Sequence[int],
                 preprocessing: Preprocessing = Preprocessing()):
        super().__init__()
        self.files, self.transform = list(files), preprocessing.transform(tuple(shape))
        self.mode = "L" if shape[0] == 1 else "RGB"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        from PIL import Image
        try:
            with Image.open(self.files[index]) as image:
                return np.asarray(self.transform(image.convert(self.mode)), dtype="float32")
        except OSError as err:
            raise SlimError(f"data: cannot read {self.files[index]} ({err})") from None

    def batch(self, limit: int) -> np.ndarray:
        """The first ``limit`` images as one array."""
        return np.stack([self[i] for i in range(min(limit, len(self)))])
