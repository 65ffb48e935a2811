"""ImageNet-style image folders (train/<class>/*.jpg, val/<class>/*.jpg): decoded and augmented in
persistent loader worker processes, this rank's share of each."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable, Iterator

import torch

from archspec.errors import RunError
from archspec.runtime.threads import usable_cores

from . import transforms as T
from .dataset import LAYOUTS, Dataset



def val_dir(path: Path) -> Path | None:
    return next((path / d for d in ("val", "test") if (path / d).is_dir()), None)


def folder_classes(root: Path) -> list[str]:
    """The classes of an image folder: its subfolders' names, sorted (their order is the label order)."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir())


def _images(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in index:
            raise RunError(f"{d}: class '{d.name}' is not among the classes of the training folders",
                           hint=f"the classes are the folders of {root.parent / 'train'}")
        samples.extend((f, index[d.name]) for f in image_files(d))
    if not samples:
        raise RunError(f"{root} holds no images", hint="expected <class>/*.jpg|jpeg|png|webp|bmp under it")
    return samples


def image_files(folder: Path) -> list[Path]:
    """The files of `folder` named as images (`transforms.SUFFIXES`), sorted; one that is not a regular
    file (a FIFO, a device, a folder, a socket, a broken link) is refused here, before any is opened."""
    files = []
    with os.scandir(folder) as entries:
        for e in entries:
            if os.path.splitext(e.name)[1].lower() not in T.SUFFIXES:
                continue
            if not e.is_file():  # follows a link; a FIFO would block the worker that opened it
                raise RunError(f"{folder / e.name} is not a regular file, so not an image",
                               "remove it: an image folder holds image files")
            files.append(folder / e.name)
    return sorted(files)


class ImageFolder(torch.utils.data.Dataset):
    """`root/<class>/*.jpg|jpeg|png|webp|bmp` as uint8 3×size×size tensors and labels, by ImageNet's standard
    transforms (`transforms.py`): a random resized crop and a flip for training, drawn from (seed,
    epoch, index) so that the result does not depend on the worker that decodes it; a resize to
    size/crop and a centre crop for evaluation; then, for training, `augment` where set (a recipe's
    `transforms.AutoAugment`), seeded from the same draws. An item is read by index (in `epoch`) or by
    (epoch, index), as the loader's sampler hands it to workers that outlive an epoch."""

    def __init__(self, root: Path, size: int, *, train: bool, classes: list[str] | None = None, seed: int = 0,
                 backend: str = "auto", crop: float = T.CROP_FRACTION):
        root = Path(root)
        if not root.is_dir():
            raise RunError(f"no image folder at {root}", hint="expected <class>/*.jpg|jpeg|png|webp|bmp under it")
        self.root, self.train, self.seed, self.epoch = root, train, seed, 0
        self.size = T.check_image_size(size, "image size")
        self.crop = T.check_crop(crop, "crop")
        self.backend = T.pick_backend(backend)
        self.classes = classes if classes is not None else folder_classes(root)
        self.samples = _images(root, self.classes)
        self.augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = item if isinstance(item, tuple) else (self.epoch, item)
        file, label = self.samples[i]
        rng = random.Random(((self.seed * 100003 + epoch) * 1000003 + i) % 2**63)
        x = T.load(file, self.size, train=self.train, rng=rng, backend=self.backend, crop=self.crop)
        if self.train and self.augment is not None:
            x = self.augment(x, rng.getrandbits(62))
        return x, label


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
    batches = iter(loader)
    for batch in batches:
        if isinstance(batch, _Unreadable):
            _stop_workers(loader, batches)
            raise RunError(batch.message, batch.hint)
        yield batch


def _stop_workers(loader: torch.utils.data.DataLoader, batches: Iterator | None = None) -> None:
    """End the loader's persistent workers now rather than whenever the garbage collector gets to them:
    shut down from a collection, a worker can miss its stop message and hold the process up for the
    loader's 5 s join timeout. A later epoch starts new workers."""
    batches = batches if batches is not None else getattr(loader, "_iterator", None)
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()
    if getattr(loader, "_iterator", None) is batches:
        loader._iterator = None


class _Shard(torch.utils.data.Sampler):
    """This rank's items, as (epoch, index): a shuffle of (seed, epoch) trimmed to n // world when
    training (as in `batches`), every world-th index in order otherwise. The epoch travels with each
    index because persistent workers keep their own copy of the data set from the first epoch on."""

    def __init__(self, n: int, *, train: bool, seed: int, rank: int, world: int):
        self.n, self.train, self.seed, self.rank, self.world, self.epoch = n, train, seed, rank, world, 0

    def _indices(self) -> list[int]:
        if not self.train:
            return list(range(self.rank, self.n, self.world))
        g = torch.Generator().manual_seed((self.seed * 100003 + self.epoch) % 2**63)
        perm = torch.randperm(self.n, generator=g)
        return perm[self.rank::self.world][: self.n // self.world].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self._indices())

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

    def set_augment(self, augment: Callable[[torch.Tensor, int], torch.Tensor] | None) -> None:
        """Augment each training image with `augment(image, seed)` after its crop and flip; set before the
        first iteration, while no worker holds a copy of the folder."""
        if getattr(self.loader, "_iterator", None) is not None:
            raise RuntimeError("set_augment after the loader's workers started")
        self.dataset.augment = augment

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch = self.dataset.epoch = self.epoch
        self.epoch += 1
        return _checked(self.loader)

    def close(self) -> None:
        """End the worker processes (a later iteration starts new ones)."""
        _stop_workers(self.loader)


def default_workers() -> int:
    """Loader processes when none are asked for: one per usable core, at most 8."""
    return min(8, usable_cores())


def check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise RunError(f"--workers {workers!r}: the number of loader processes must be a whole number >= 0",
                       "0 decodes in the training process itself")


def folder_loaders(path: Path | str, size: int, batch_size: int, workers: int | None = None, rank: int = 0,
                   world: int = 1, *, seed: int = 0, device: torch.device | str | None = None,
                   backend: str = "auto", crop: float = T.CROP_FRACTION) -> tuple[FolderLoader, FolderLoader, int]:
    """Loaders of uint8 batches (N×3×size×size, labels) for `path/train` and `path/val`, this rank's
    share of each, by ImageNet's standard transforms (evaluation: the centre `crop`). Decoding runs in
    `workers` processes (default: `default_workers()`) that persist across epochs; batches land in
    pinned memory when `device` is a CUDA device (without a device: whenever CUDA is available), so
    that copies to it do not block. Normalise on the device with `normalize`."""
    path = Path(path)
    workers = default_workers() if workers is None else workers
    check_workers(workers)
    val = val_dir(path)
    if not (path / "train").is_dir() or val is None:
        raise RunError(f"{path} is not an image-folder data set", hint=LAYOUTS)
    train_set = ImageFolder(path / "train", size, train=True, seed=seed, backend=backend)
    test_set = ImageFolder(val, size, train=False, classes=train_set.classes, backend=backend, crop=crop)
    pin = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    train_sampler = _Shard(len(train_set), train=True, seed=seed, rank=rank, world=world)
    test_sampler = _Shard(len(test_set), train=False, seed=seed, rank=rank, world=world)
    return (FolderLoader(loader(train_set, train_sampler, batch_size, workers, pin, drop_last=True, seed=seed),
                         train_sampler),
            FolderLoader(loader(test_set, test_sampler, batch_size, workers, pin, drop_last=False, seed=seed),
                         test_sampler), len(train_set.classes))


def loader(images: ImageFolder, sampler: torch.utils.data.Sampler, batch_size: int, workers: int, pin: bool, *,
           drop_last: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    """The DataLoader of one folder: unreadable files come back as messages, not worker tracebacks."""
    return torch.utils.data.DataLoader(
        _Guarded(images), batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin,
        drop_last=drop_last, collate_fn=_collate, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed))  # worker seeds not from the global RNG


def folder_dataset(path: Path, probe: int = 64, *, size: int = T.DEFAULT_SIZE,
                   crop: float = T.CROP_FRACTION) -> Dataset:
    """A folder set read at `size` (evaluation: the centre `crop`): its classes, its count of training
    images, ImageNet's mean and std (the standard for natural images, not an estimate from a few files),
    and up to `probe` training images spread over the set decoded once here, so that a broken set stops
    before training starts rather than in its first epoch."""
    size, crop = T.check_image_size(size), T.check_crop(crop)
    train = ImageFolder(path / "train", 32, train=False)
    ImageFolder(val_dir(path), 32, train=False, classes=train.classes)  # the same classes, and images
    step = max(1, len(train) // probe)
    for i in range(0, len(train), step)[:probe]:
        train[i]
    return Dataset(f"folder:{path}", None, None, None, None, len(train.classes), T.IMAGENET_MEAN, T.IMAGENET_STD,
                   "none", 0, folder=path, size=size, crop=crop, folder_images=len(train))
