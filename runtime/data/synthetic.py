"""Synthetic CIFAR-shaped sets for speed runs: noise over a colour per class, a signal a network can
learn, generated from the run's seed."""

from __future__ import annotations

import torch

from archspec.language.errors import RunError

from .dataset import Dataset, in_memory


def synthetic(source: str, seed: int) -> Dataset:
    name, _, count = source.partition(":")
    classes = {"synthetic-cifar10": 10, "synthetic-cifar100": 100}.get(name)
    if classes is None:
        raise RunError(f"unknown synthetic set '{name}'", hint="use synthetic-cifar10[:N] or synthetic-cifar100[:N]")
    if count and not (count.isdigit() and int(count) > 0):
        raise RunError(f"'{source}': the number of training images after ':' must be a positive integer")
    n = int(count) if count else 5000
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
