"""ImageNet-style image folders (train/<class>/*.jpg, val/<class>/*.jpg): decoded and augmented in
loader worker processes, this rank's share of each."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from archspec.language.errors import RunError

from .dataset import LAYOUTS, Dataset, channel_stats

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def val_dir(path: Path) -> Path | None:
    return next((path / d for d in ("val", "test") if (path / d).is_dir()), None)


def _images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in index:
            raise RunError(f"{d}: class '{d.name}' is not among the classes of the training folders",
                           hint=f"the classes are the folders of {root.parent / 'train'}")
        samples.extend((f, index[d.name]) for f in sorted(d.iterdir()) if f.suffix.lower() in _IMAGE_SUFFIXES)
    if not samples:
        raise RunError(f"{root} holds no images", hint="expected <class>/*.jpg|jpeg|png under it")
    return samples


class ImageFolder(torch.utils.data.Dataset):
    """`root/<class>/*.jpg|jpeg|png` as uint8 3×size×size tensors and labels. Training images get a
    random crop of a randomly resized copy and a flip, drawn from (seed, epoch, index) so that the
    result does not depend on the worker that decodes it; test images a resize and a centre crop."""

    def __init__(self, root: Path, size: int, *, train: bool, classes: list[str] | None = None, seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise RunError(f"no image folder at {root}", hint="expected <class>/*.jpg|jpeg|png under it")
        self.root, self.size, self.train, self.seed, self.epoch = root, size, train, seed, 0
        self.classes = classes if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = _images(root, self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        file, label = self.samples[i]
        rng = random.Random(((self.seed * 100003 + self.epoch) * 1000003 + i) % 2**63)
        side = round(self.size * rng.uniform(1.0, 1.5)) if self.train else self.size
        try:
            with Image.open(file) as img:  # refuses images above PIL's decompression-bomb limit
                w, h = img.size
                if min(w, h) < 1:
                    raise ValueError(f"it is {w}×{h} pixels")
                scale = side / min(w, h)
                tw, th = max(side, round(w * scale)), max(side, round(h * scale))
                img.draft("RGB", (tw, th))  # JPEGs decode at a reduced scale when that suffices
                img = img.convert("RGB").resize((tw, th), Image.Resampling.BILINEAR)
        except Exception as e:  # anything a broken, truncated or hostile file makes PIL raise
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunError(f"cannot read the image {file}: {why}",
                           "remove or replace the file: every image of the folders must be readable") from None
        if self.train:
            left, top = rng.randint(0, tw - self.size), rng.randint(0, th - self.size)
        else:
            left, top = (tw - self.size) // 2, (th - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        if self.train and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous(), label


class _Unreadable:
    """What a loader worker hands back for an image it could not read: the message travels to the
    main process, which raises it there as the one-line error it is (an exception raised in a worker
    would come back wrapped in the worker's traceback)."""

    def __init__(self, error: RunError):
        self.message, self.hint = error.message, error.hint


class _Guarded(torch.utils.data.Dataset):
    """An `ImageFolder` as its loader's workers read it: a file that cannot be read is an `_Unreadable`."""

    def __init__(self, images: ImageFolder):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return self.images[i]
        except RunError as e:
            return _Unreadable(e)


def _collate(items: list):
    bad = next((item for item in items if isinstance(item, _Unreadable)), None)
    return bad if bad is not None else torch.utils.data.default_collate(items)


def _checked(loader: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if isinstance(batch, _Unreadable):
            raise RunError(batch.message, batch.hint)
        yield batch


class _Shard(torch.utils.data.Sampler):
    """This rank's indices: a shuffle of (seed, epoch) trimmed to n // world when training (as in
    `batches`), every world-th index in order otherwise."""

    def __init__(self, n: int, *, train: bool, seed: int, rank: int, world: int):
        self.n, self.train, self.seed, self.rank, self.world, self.epoch = n, train, seed, rank, world, 0

    def _indices(self) -> list[int]:
        if not self.train:
            return list(range(self.rank, self.n, self.world))
        g = torch.Generator().manual_seed((self.seed * 100003 + self.epoch) % 2**63)
        perm = torch.randperm(self.n, generator=g)
        return perm[self.rank::self.world][: self.n // self.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return self.n // self.world if self.train else len(range(self.rank, self.n, self.world))


class FolderLoader:
    """A DataLoader over an `ImageFolder` that moves to the next epoch's shuffle and augmentation
    each time it is iterated; `set_epoch` picks one (to resume). An unreadable image stops the
    iteration with a `RunError` naming the file."""

    def __init__(self, loader: torch.utils.data.DataLoader, sampler: _Shard):
        self.loader, self.sampler, self.dataset, self.epoch = loader, sampler, loader.dataset.images, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch = self.dataset.epoch = self.epoch
        self.epoch += 1
        return _checked(self.loader)


def folder_loaders(path: Path | str, size: int, batch_size: int, workers: int, rank: int = 0, world: int = 1,
                   *, seed: int = 0) -> tuple[FolderLoader, FolderLoader, int]:
    """Loaders of uint8 batches (N×3×size×size, labels) for `path/train` and `path/val`, this rank's
    share of each; decoding runs in `workers` processes. Normalise on the device with `normalize`."""
    path = Path(path)
    val = val_dir(path)
    if not (path / "train").is_dir() or val is None:
        raise RunError(f"{path} is not an image-folder data set", hint=LAYOUTS)
    train_set = ImageFolder(path / "train", size, train=True, seed=seed)
    test_set = ImageFolder(val, size, train=False, classes=train_set.classes)
    pin = torch.cuda.is_available()

    def loader(data: ImageFolder, sampler: _Shard, drop_last: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            _Guarded(data), batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
            drop_last=drop_last, collate_fn=_collate,
            generator=torch.Generator().manual_seed(seed))  # worker seeds not from the global RNG

    train_sampler = _Shard(len(train_set), train=True, seed=seed, rank=rank, world=world)
    test_sampler = _Shard(len(test_set), train=False, seed=seed, rank=rank, world=world)
    return (FolderLoader(loader(train_set, train_sampler, True), train_sampler),
            FolderLoader(loader(test_set, test_sampler, False), test_sampler), len(train_set.classes))


def folder_dataset(path: Path, sample: int = 64) -> Dataset:
    """A folder set: its classes, and mean/std estimated from up to `sample` training images."""
    train = ImageFolder(path / "train", 64, train=False)
    ImageFolder(val_dir(path), 64, train=False, classes=train.classes)  # the same classes, and images
    step = max(1, len(train) // sample)
    x = torch.stack([train[i][0] for i in range(0, len(train), step)[:sample]])
    mean, std = channel_stats(x)
    return Dataset(f"folder:{path}", None, None, None, None, len(train.classes), mean, std, "none", 0, folder=path)
