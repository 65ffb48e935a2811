"""Batches of in-memory sets on the training device: shuffled and sharded per rank, augmented and
normalised there, reproducible from (seed, epoch) alone."""

from __future__ import annotations

import math
from typing import Iterator

import torch

from archspec.errors import RunError

from .augment import augment
from .dataset import Dataset


def steps_per_epoch(n: int, batch_size: int, world: int = 1, train: bool = True) -> int:
    """Batches one rank takes from `n` images: training drops the partial batch and trims every
    rank's share to n // world; evaluation keeps everything (the count of the busiest rank)."""
    if train:
        return (n // world) // batch_size
    return math.ceil(math.ceil(n / world) / batch_size)


def check_batch_size(n: int, batch_size: int, world: int = 1, name: str = "the training set") -> None:
    """Refuse a batch size that leaves a training epoch without a step: training drops the partial
    batch (`steps_per_epoch`), so a batch larger than a rank's share would train nothing and report
    the untrained network as a result."""
    if steps_per_epoch(n, batch_size, world) > 0:
        return
    share = n // world
    each = f" ({n:,} shared among {world} processes)" if world > 1 else ""
    raise RunError(f"batch size {batch_size:,} is larger than the {share:,} training images of {name}{each}: "
                   "an epoch drops its partial batch, so training would take no step",
                   hint=f"use --batch-size {max(share, 1):,} or less" if share else "give a larger data set")


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, *, train: bool, ds: Dataset,
            device: torch.device, epoch: int = 0, seed: int = 0, rank: int = 0, world: int = 1,
            drop_last: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches and their labels on `device`: shuffled, sharded and augmented on the
    device when training, in order otherwise. Reproducible from (seed, epoch) alone and independent
    of the global RNG, which dropout uses."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} < 1")
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    device = torch.device(device)
    drop_last = train if drop_last is None else drop_last
    n = len(x)
    if train:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed((seed * 100003 + epoch) % 2**63))
        share = perm[rank::world][: n // world]
    else:
        share = torch.arange(rank, n, world, device=x.device)
    count = len(share) // batch_size if drop_last else math.ceil(len(share) / batch_size)
    x_index = share.to(x.device)
    y_index = share.to(y.device)
    mean = torch.tensor(ds.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    for b in range(count):
        part = slice(b * batch_size, (b + 1) * batch_size)
        xb = x[x_index[part]].to(device, non_blocking=True)
        yb = y[y_index[part]].to(device, non_blocking=True)
        if train and ds.augment != "none":
            g = torch.Generator().manual_seed((((seed * 100003 + epoch) * 8191 + rank) * 1000003 + b) % 2**63)
            xb = augment(xb, ds.pad, flip=ds.augment == "cifar", generator=g)
        yield xb.float().div_(255).sub_(mean).div_(std), yb.long()


def normalize(x: torch.Tensor, ds: Dataset) -> torch.Tensor:
    """uint8 images to the float inputs a network trains on: (x/255 - mean) / std per channel."""
    mean = torch.tensor(ds.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.float().div_(255).sub_(mean).div_(std)
