"""The data side of the loop: a data set's batches on the training device — training images, the
validation images held out of them, and the test split — and running loss and accuracy read off the
device without stalling it."""

from __future__ import annotations

from typing import Iterator

import torch

from archspec.errors import RunError
from archspec.runtime import data as D

from .split import holdout

PARTS = ("train", "val", "test")


class Feed:
    """Batches of one data set on one device, this rank's share: in-memory sets through `data.batches`
    (augmented on the device), image folders through their loaders (decoded in worker processes).
    `val` training images, drawn from `seed`, are held out of training and served as the `val` part,
    in order and unaugmented as the test split is; normalisation keeps the data set's statistics."""

    def __init__(self, ds: D.Dataset, batch_size: int, device: torch.device, *, seed: int = 0, rank: int = 0,
                 world: int = 1, workers: int | None = None, val: int = 0):
        self.ds, self.bs, self.device, self.seed, self.rank, self.world = ds, batch_size, device, seed, rank, world
        self.loaders = None
        self.parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if ds.folder is not None:
            if val:
                raise RunError(f"--val-split holds out images of in-memory data sets only; {ds.name} is an image "
                               "folder", "give its validation images a folder of their own (val/), or --val-split 0")
            self.loaders = D.folder_loaders(ds.folder, ds.size, batch_size, workers, rank, world, seed=seed,
                                            device=device, crop=ds.crop)
            return
        x, y = ds.train_x, ds.train_y
        if val:
            keep, held = holdout(len(y), val, seed)
            self.parts["train"] = (x[keep.to(x.device)], y[keep.to(y.device)])
            self.parts["val"] = (x[held.to(x.device)], y[held.to(y.device)])
        else:
            self.parts["train"] = (x, y)
        self.parts["test"] = (ds.test_x, ds.test_y)

    def close(self) -> None:
        """End the image-folder loaders' worker processes."""
        for loader in (self.loaders or ())[:2]:  # train and test; the third item is the class count
            loader.close()

    def size(self, part: str) -> int:
        """Images in `part` (train, val or test); 0 for a part this feed has not."""
        if self.loaders is not None:
            return {"train": len(self.loaders[0].dataset), "test": len(self.loaders[1].dataset)}.get(part, 0)
        return len(self.parts[part][1]) if part in self.parts else 0

    def sizes(self) -> tuple[int, int]:
        """Images trained on, and test images."""
        return self.size("train"), self.size("test")

    @property
    def has_val(self) -> bool:
        return self.size("val") > 0

    def keep_on(self, device: torch.device, budget: int) -> None:
        """Move the in-memory images and labels to `device` when they take at most `budget` bytes."""
        if not self.parts:
            return
        if sum(x.numel() * x.element_size() for x, _ in self.parts.values()) <= budget:
            self.parts = {k: (x.to(device), y.to(device)) for k, (x, y) in self.parts.items()}

    def epoch(self, train: bool, epoch: int = 0) -> tuple[Iterator, int]:
        return self.batches("train" if train else "test", epoch)

    def batches(self, part: str, epoch: int = 0) -> tuple[Iterator, int]:
        """This rank's batches of `part` and how many there are; training batches are shuffled and
        augmented from (seed, epoch), the others in order."""
        train = part == "train"
        if self.loaders is not None:
            if part == "val":
                raise ValueError("an image-folder feed holds no validation part")
            loader = self.loaders[0] if train else self.loaders[1]
            if train:
                loader.set_epoch(epoch)
            dev = self.device
            it = ((D.normalize(x.to(dev, non_blocking=True), self.ds), y.to(dev, non_blocking=True)) for x, y in loader)
            return it, len(loader)
        x, y = self.parts[part]
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
