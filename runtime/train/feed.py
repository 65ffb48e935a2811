"""The data side of the loop: a data set's batches on the training device, and running loss and
accuracy read off the device without stalling it."""

from __future__ import annotations

from typing import Iterator

import torch

from archspec.runtime import data as D


class Feed:
    """Batches of one data set on one device, this rank's share: in-memory sets through `data.batches`
    (augmented on the device), image folders through their loaders (decoded in worker processes)."""

    def __init__(self, ds: D.Dataset, batch_size: int, device: torch.device, *, seed: int = 0, rank: int = 0,
                 world: int = 1, workers: int = 4):
        self.ds, self.bs, self.device, self.seed, self.rank, self.world = ds, batch_size, device, seed, rank, world
        self.loaders = None
        if ds.folder is not None:
            self.loaders = D.folder_loaders(ds.folder, ds.size, batch_size, workers, rank, world, seed=seed)

    def sizes(self) -> tuple[int, int]:
        if self.loaders is not None:
            return len(self.loaders[0].dataset), len(self.loaders[1].dataset)
        return len(self.ds.train_y), len(self.ds.test_y)

    def epoch(self, train: bool, epoch: int = 0) -> tuple[Iterator, int]:
        if self.loaders is not None:
            loader = self.loaders[0] if train else self.loaders[1]
            if train:
                loader.set_epoch(epoch)
            dev = self.device
            it = ((D.normalize(x.to(dev, non_blocking=True), self.ds), y.to(dev, non_blocking=True)) for x, y in loader)
            return it, len(loader)
        x, y = (self.ds.train_x, self.ds.train_y) if train else (self.ds.test_x, self.ds.test_y)
        n = D.steps_per_epoch(len(y), self.bs, self.world, train=train)
        return D.batches(x, y, self.bs, train=train, ds=self.ds, device=self.device, epoch=epoch, seed=self.seed,
                         rank=self.rank, world=self.world), n


class Readout:
    """Mean loss and accuracy from running sums on the device, read for display without waiting for
    it: each read starts a non-blocking copy to the host and shows the newest copy already arrived."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        # the host side of the copy: pinned so that the copy from the GPU does not block
        self.host = torch.zeros(3, dtype=torch.float64, device="cpu", pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.shown: tuple[float, float] | None = None

    def read(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float] | None:
        if not self.cuda:
            return float(loss_sum) / seen, float(correct) / seen
        if self.event.query():  # the last copy has landed: show it, start the next
            if self.host[2] > 0:
                self.shown = (float(self.host[0] / self.host[2]), float(self.host[1] / self.host[2]))
            count = torch.full((), float(seen), dtype=torch.float64, device=loss_sum.device)
            self.host.copy_(torch.stack([loss_sum.double(), correct.double(), count]), non_blocking=True)
            self.event.record()
        return self.shown
