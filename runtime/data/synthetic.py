"""Synthetic CIFAR-shaped sets for speed runs: noise over a colour per class, a signal a network can
learn, generated from the run's seed."""

from __future__ import annotations

import os

import torch

from archspec.errors import RunError

from .dataset import Dataset, in_memory


MAX_IMAGES = 10_000_000
DEFAULT_IMAGES = 5000  # training images of `synthetic-cifar10` with no `:N`
SETS = {"synthetic-cifar10": 10, "synthetic-cifar100": 100}  # name: classes
_IMAGE_BYTES = 3 * 32 * 32
# bytes per training image while a split is drawn: the uint8 images and test split kept (1.2), the
# int16 noise and the int16 sum it is made from (4)
_PEAK_BYTES = _IMAGE_BYTES * (1.2 + 4)


def _memory() -> int | None:
    """This machine's physical memory in bytes, where the system says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def image_count(source: str, count: str) -> int:
    """The N of `synthetic-…:N`, refused before anything is allocated when it is not a positive whole
    number, above `MAX_IMAGES`, or more than this machine's memory could hold while drawing it."""
    if not count:
        return DEFAULT_IMAGES
    if not (count.isascii() and count.isdigit() and len(count) <= 12 and int(count) > 0):
        raise RunError(f"'{source}': the number of training images after ':' must be a positive integer",
                       hint=f"at most {MAX_IMAGES:,}, for example synthetic-cifar10:5000")
    n = int(count)
    if n > MAX_IMAGES:
        raise RunError(f"'{source}': {n:,} images is above the limit of {MAX_IMAGES:,}",
                       hint=f"synthetic images are held in memory ({_IMAGE_BYTES:,} bytes each)")
    total = _memory()
    if total is not None and n * _PEAK_BYTES > total:
        raise RunError(f"'{source}': {n:,} images need about {n * _PEAK_BYTES / 2**30:.1f} GiB to draw, more "
                       f"than this machine's {total / 2**30:.1f} GiB of memory",
                       hint=f"use at most {int(total // _PEAK_BYTES):,} images")
    return n


def synthetic(source: str, seed: int) -> Dataset:
    name, _, count = source.partition(":")
    classes = SETS.get(name)
    if classes is None:
        raise RunError(f"unknown synthetic set '{name}'", hint="use synthetic-cifar10[:N] or synthetic-cifar100[:N]")
    n = image_count(source, count)
    g = torch.Generator().manual_seed(seed)
    # each class has its own mean colour on top of the noise: a signal a network can pick up
    colours = torch.randint(0, 128, (classes, 3, 1, 1), generator=g, dtype=torch.int16)

    def split(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (m,), generator=g)
        noise = torch.randint(0, 128, (m, 3, 32, 32), generator=g, dtype=torch.int16)
        return (noise + colours[y]).to(torch.uint8), y

    train_x, train_y = split(n)
    test_x, test_y = split(max(1, n // 5))
    return in_memory(name, train_x, train_y, test_x, test_y, classes, augment="cifar", pad=4)
