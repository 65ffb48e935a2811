"""The held-out validation split: part of the training set that `best` is chosen on, so that the test
set is only ever reported, never selected on. Drawn from the run's seed alone, on the CPU, so every
rank and every resume holds out the same images."""

from __future__ import annotations

import math
from typing import Any

import torch

from archspec.errors import RunError


def parse_val_split(text: str) -> int | float:
    """`--val-split`: a count of images (`5000`) or a fraction of the training set (`0.1`)."""
    t = text.strip()
    try:
        value: int | float = int(t) if t.lstrip("+-").isdigit() else float(t)
    except ValueError:
        raise RunError(f"--val-split {text!r} is neither a count of images nor a fraction",
                       "give a count such as 5000, a fraction such as 0.1, or 0 for no validation") from None
    check_val_split(value)
    return value


def check_val_split(value: Any) -> None:
    """A count is a whole number from 0; a fraction lies strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError(f"--val-split {value!r} is neither a count of images nor a fraction")
    if isinstance(value, int) and value < 0:
        raise RunError(f"--val-split {value} is negative", "give a count from 0 or a fraction such as 0.1")
    if isinstance(value, float) and not 0 < value < 1:
        raise RunError(f"--val-split {value} is not a fraction between 0 and 1 (exclusive)",
                       "give a fraction such as 0.1, or a whole count of images such as 5000")


def val_count(n: int, value: int | float, name: str = "the training set") -> int:
    """How many of `n` training images `value` holds out; at least one image must be left to train on.
    `n` is the whole training set (`Dataset.train_images`)."""
    check_val_split(value)
    if value and n <= 0:
        raise RunError(f"--val-split {value}: {name} has no training images in memory to hold out",
                       "an image folder's validation images go in a folder of their own (val/); or give "
                       "--val-split 0")
    k = math.floor(value * n + 0.5) if isinstance(value, float) else value
    if value and k == 0:
        raise RunError(f"--val-split {value} of the {n:,} images of {name} holds out no image",
                       "give a larger fraction, or a count")
    if k >= n:
        raise RunError(f"--val-split {value} holds out {k:,} of the {n:,} training images of {name}, "
                       "leaving none to train on", f"give at most {max(n - 1, 0):,} images")
    return k


def holdout(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted, int64, on the CPU) of the `n - k` images trained on and the `k` held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed((seed * 2654435761 + 17) % 2**63))
    return perm[k:].sort().values, perm[:k].sort().values
