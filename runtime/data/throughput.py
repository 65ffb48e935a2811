"""How many images per second the loader decodes and augments from an image folder: the rate training
on that folder cannot exceed, whatever the model and device. Loader workers start (and decode their
first batches) before the clock does."""

from __future__ import annotations

import time
from pathlib import Path

from archspec.errors import RunError

from .folders import ImageFolder, _checked, _Shard, _stop_workers, check_workers, default_workers, loader, val_dir


def decode_throughput(path: Path | str, size: int = 224, *, split: str = "train", workers: int | None = None,
                      batch_size: int = 64, images: int = 2048, backend: str = "auto", seed: int = 0) -> dict:
    """Decode and transform up to `images` images of `path` (a data set with train/ and val/, or one
    folder of class folders) as training (`split="train"`: random resized crops and flips) or evaluation
    (`"val"`: resize and centre crop) reads them, in `workers` loader processes, batches of
    `batch_size`; the first batch is untimed. Returns the figures: images timed, seconds,
    images_per_s, workers, batch_size, size, split, backend."""
    if split not in ("train", "val"):
        raise RunError(f"unknown split '{split}'", "splits: train, val")
    for name, value, least in (("--size", size, 1), ("--batch-size", batch_size, 1), ("--images", images, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise RunError(f"{name} {value!r}: a whole number >= {least} is needed")
    workers = default_workers() if workers is None else workers
    check_workers(workers)
    root = _split_root(Path(path), split)
    folder = ImageFolder(root, size, train=split == "train", seed=seed, backend=backend)
    sampler = _Shard(len(folder), train=split == "train", seed=seed, rank=0, world=1)
    feed = loader(folder, sampler, batch_size, workers, pin=False, drop_last=False, seed=seed)
    batches = _checked(feed)
    next(batches)  # workers started, first batch decoded: the clock starts now
    timed, start = 0, time.perf_counter()
    while timed < images:
        for x, _ in batches:
            timed += len(x)
            if timed >= images:
                break
        else:  # the folder is done: another pass, with the next epoch's crops
            sampler.epoch += 1
            batches = _checked(feed)
    seconds = time.perf_counter() - start
    _stop_workers(feed)
    return {"images": timed, "seconds": seconds, "images_per_s": timed / seconds, "workers": workers,
            "batch_size": batch_size, "size": size, "split": split, "backend": folder.backend}


def _split_root(path: Path, split: str) -> Path:
    if not path.is_dir():
        raise RunError(f"no image folder at {path}",
                       "give a data set with train/ and val/, or a folder of class folders")
    if (path / "train").is_dir():
        root = path / "train" if split == "train" else val_dir(path)
        if root is None:
            raise RunError(f"{path} has train/ but no val/ (nor test/) beside it")
        return root
    return path
