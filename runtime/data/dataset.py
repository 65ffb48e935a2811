"""A data set as training sees it: images and labels of a training set and its test split, with the
per-channel statistics that normalise them (for image folders: where they lie, and the size and crop
they are read at)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .transforms import CROP_FRACTION, DEFAULT_SIZE

LAYOUTS = """expected one of:
  CIFAR-10 (python):  data_batch_1 … data_batch_5, test_batch   (or in cifar-10-batches-py/)
  CIFAR-100 (python): train, test                               (or in cifar-100-python/)
  CIFAR-10 (binary):  data_batch_1.bin … data_batch_5.bin, test_batch.bin   (or in cifar-10-batches-bin/)
  CIFAR-100 (binary): train.bin, test.bin                       (or in cifar-100-binary/)
  image folders:      train/<class>/*.jpg|png, val/<class>/*.jpg|png"""


@dataclass
class Dataset:
    """A training set and its test split. In-memory sets hold uint8 N×C×H×W images and int64 labels;
    folder sets (`folder` set) hold none and are read through `folder_loaders`."""

    name: str
    train_x: torch.Tensor | None
    train_y: torch.Tensor | None
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    pad: int
    folder: Path | None = None
    size: int = DEFAULT_SIZE  # folder sets: the side images are cropped to
    crop: float = CROP_FRACTION  # folder sets: the evaluation centre crop's share of the resized shorter side
    folder_images: int = 0  # folder sets: the images of the training folder

    @property
    def train_images(self) -> int:
        """The images of the training set (for folder sets, counted when the folder was read)."""
        return len(self.train_y) if self.train_y is not None else self.folder_images

    @property
    def shape(self) -> tuple[int, int, int]:
        """C, H, W of one image (for folder sets: the side `size` they are cropped to)."""
        if self.train_x is None:
            return (3, self.size, self.size)
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))


def in_memory(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
               test_y: torch.Tensor, classes: int, *, augment: str, pad: int) -> Dataset:
    mean, std = channel_stats(train_x)
    return Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std, augment, pad)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, exact (from a histogram) and with
    no float copy of the whole set."""
    values = torch.arange(256, dtype=torch.float64, device=x.device) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        means.append(m)
        stds.append(max(math.sqrt(var), 1e-6))
    return tuple(means), tuple(stds)
