"""The training data sets of `archspec train`: scikit-learn's bundled digits (the default: nothing to
download), CIFAR-10/100 in any of their official layouts, synthetic CIFAR-shaped sets for speed runs,
and ImageNet-style image folders; plus batching that augments on the training device."""

from __future__ import annotations

import importlib
import math
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from archspec.language.errors import RunError

_SPLIT_SEED = 20240917  # the digits split never changes, whatever the run's seed
_PIXELS = 3 * 32 * 32
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LAYOUTS = """expected one of:
  CIFAR-10 (python):  data_batch_1 … data_batch_5, test_batch   (or in cifar-10-batches-py/)
  CIFAR-100 (python): train, test                               (or in cifar-100-python/)
  CIFAR-10 (binary):  data_batch_1.bin … data_batch_5.bin, test_batch.bin   (or in cifar-10-batches-bin/)
  CIFAR-100 (binary): train.bin, test.bin                       (or in cifar-100-binary/)
  image folders:      train/<class>/*.jpg|png, val/<class>/*.jpg|png"""
_SOURCES = ("sources: nothing (scikit-learn's digits), a CIFAR-10/100 directory, an image-folder directory, "
            "or synthetic-cifar10[:N] / synthetic-cifar100[:N]")


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
    size: int = 224

    @property
    def shape(self) -> tuple[int, int, int]:
        """C, H, W of one image (for folder sets: the side `size` they are cropped to)."""
        if self.train_x is None:
            return (3, self.size, self.size)
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))


def load(source: str | None, *, seed: int = 0) -> Dataset:
    """The data set `source` names: None or "digits", a directory, or "synthetic-cifar10[:N]"."""
    if source is None or source == "digits":
        return _digits()
    if source.startswith("synthetic-"):
        return _synthetic(source, seed)
    path = Path(source).expanduser()
    if not path.exists():
        raise RunError(f"no data at {path}", hint=_SOURCES)
    if not path.is_dir():
        raise RunError(f"{path} is a file: a data set is a directory", hint=_LAYOUTS)
    return _directory(path)


# ---- digits ---------------------------------------------------------------------------------------

def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.data * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # a seeded shuffle sorted stably by class, every fifth to test: 20% of each class, 360 in all
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    by_class = perm[torch.argsort(y[perm], stable=True)]
    test = torch.zeros(len(y), dtype=torch.bool)
    test[by_class[::5]] = True
    return _in_memory("digits", x[~test], y[~test], x[test], y[test], 10, augment="crop", pad=1)


def _in_memory(name: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
               test_y: torch.Tensor, classes: int, *, augment: str, pad: int) -> Dataset:
    mean, std = channel_stats(train_x)
    return Dataset(name, train_x, train_y, test_x, test_y, classes, mean, std, augment, pad)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, exact (from a histogram) and with
    no float copy of the whole set."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        means.append(m)
        stds.append(max(math.sqrt(var), 1e-6))
    return tuple(means), tuple(stds)


# ---- synthetic ------------------------------------------------------------------------------------

def _synthetic(source: str, seed: int) -> Dataset:
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
    return _in_memory(name, train_x, train_y, test_x, test_y, classes, augment="cifar", pad=4)


# ---- CIFAR ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    title: str
    classes: int
    subfolder: str
    train: tuple[str, ...]
    test: str
    binary: bool

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test)


_CIFAR = (
    _Layout("CIFAR-10 (python)", 10, "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test_batch", False),
    _Layout("CIFAR-100 (python)", 100, "cifar-100-python", ("train",), "test", False),
    _Layout("CIFAR-10 (binary)", 10, "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            "test_batch.bin", True),
    _Layout("CIFAR-100 (binary)", 100, "cifar-100-binary", ("train.bin",), "test.bin", True),
)


def _directory(path: Path) -> Dataset:
    found = [(layout, d) for layout in _CIFAR for d in (path, path / layout.subfolder)
             if all((d / f).is_file() for f in layout.files)]
    if len({layout.classes for layout, _ in found}) > 1:
        names = ", ".join(f"{layout.title} in {d}" for layout, d in found)
        raise RunError(f"{path} holds more than one data set: {names}",
                       hint="pass the directory of the one to train on")
    if found:
        return _cifar(*found[0])
    if (path / "train").is_dir():
        if _val_dir(path) is None:
            raise RunError(f"{path} has train/ but no val/ (nor test/) beside it", hint=_LAYOUTS)
        return _folder_dataset(path)
    for layout in _CIFAR:
        for d in (path, path / layout.subfolder):
            missing = [f for f in layout.files if not (d / f).is_file()]
            if len(missing) < len(layout.files):
                raise RunError(f"{d} holds part of the {layout.title} layout: {', '.join(missing)} missing",
                               hint=_LAYOUTS)
    raise RunError(f"{path} holds no data set layout that archspec reads", hint=_LAYOUTS)


def _cifar(layout: _Layout, root: Path) -> Dataset:
    read = _read_bin if layout.binary else _read_pickle
    parts = [read(root / f, layout.classes) for f in layout.train]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = read(root / layout.test, layout.classes)
    return _in_memory(f"cifar{layout.classes}", torch.from_numpy(train_x.reshape(-1, 3, 32, 32)),
                      torch.from_numpy(train_y), torch.from_numpy(test_x.reshape(-1, 3, 32, 32).copy()),
                      torch.from_numpy(test_y), layout.classes, augment="cifar", pad=4)


def _read_bin(file: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of a label byte (CIFAR-100: coarse then fine) and 3072 pixels."""
    labels = 1 if classes == 10 else 2
    record = labels + _PIXELS
    raw = file.read_bytes()
    if not raw or len(raw) % record:
        raise RunError(f"{file} is {len(raw)} bytes, not a whole number of {record}-byte records "
                       f"({labels} label byte{'s' if labels > 1 else ''} + {_PIXELS} pixels)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    return rows[:, labels:], _check_labels(file, rows[:, labels - 1].astype(np.int64), classes, len(rows))


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` as Python 3 protocol-2 pickles use it for bytes, limited to that use."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("an encode call other than the latin1 of a bytes object")
    return text.encode("latin1")


def _numpy_attr(module: str, name: str) -> Any:
    for prefix in ("numpy._core.", "numpy.core."):
        try:
            return getattr(importlib.import_module(prefix + module), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {module}.{name}")


_ARRAY_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr("numeric", "_frombuffer"),
    ("_codecs", "encode"): lambda: _latin1,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Reads pickles of arrays, lists, numbers and bytes; refuses every other global, so that no
    code a file names can run."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        make = _ARRAY_GLOBALS.get((module, name))
        if make is None:
            raise RunError(f"{self.path} holds objects other than arrays, lists, numbers and bytes "
                           f"({module}.{name}); it was not read",
                           hint="the CIFAR python batches hold only numpy arrays and lists")
        return make()


def _read_pickle(file: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One python batch: a pickled dict with `data` (N×3072 uint8) and `labels` or `fine_labels`."""
    label_key = "labels" if classes == 10 else "fine_labels"
    try:
        with file.open("rb") as f:
            batch = _ArrayUnpickler(f, file).load()
    except RunError:
        raise
    except Exception as e:  # any malformed pickle: a message that names the file, not a traceback
        raise RunError(f"{file} is not a readable CIFAR python batch: {type(e).__name__}: {e}",
                       hint="the file may be truncated; extract the archive again") from None
    if not isinstance(batch, dict):
        raise RunError(f"{file} holds a {type(batch).__name__}, not the dict of a CIFAR python batch")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        keys = ", ".join(sorted(map(str, batch))) or "none"
        raise RunError(f"{file} lacks the key{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                       f"(it has: {keys})", hint=f"a CIFAR-{classes} python batch holds 'data' and '{label_key}'")
    x = _pixels(file, batch["data"])
    try:
        y = np.asarray(batch[label_key])
    except Exception as e:
        raise RunError(f"{file}: '{label_key}' is not a list of numbers ({e})") from None
    return x, _check_labels(file, y, classes, len(x))


def _pixels(file: Path, data: Any) -> np.ndarray:
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, list):
        try:
            data = np.asarray(data)
        except Exception as e:
            raise RunError(f"{file}: 'data' is not a list of pixel values ({e})") from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "ui":
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise RunError(f"{file}: 'data' holds {kind}, not uint8 pixels")
    if data.ndim == 1 and data.size % _PIXELS == 0:
        data = data.reshape(-1, _PIXELS)
    elif data.ndim == 4 and data.shape[1:] == (3, 32, 32):
        data = data.reshape(len(data), _PIXELS)
    if data.ndim != 2 or data.shape[1] != _PIXELS or len(data) == 0:
        raise RunError(f"{file}: 'data' has shape {data.shape}, not N×{_PIXELS} (3×32×32 channel-major)")
    if data.dtype != np.uint8:
        if data.min() < 0 or data.max() > 255:
            raise RunError(f"{file}: 'data' holds values outside 0..255")
        data = data.astype(np.uint8)
    return data


def _check_labels(file: Path, y: np.ndarray, classes: int, n: int) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "ui":
        raise RunError(f"{file}: the labels are not a list of integers (shape {y.shape}, {y.dtype})")
    if len(y) != n:
        raise RunError(f"{file} holds {n} images but {len(y)} labels")
    if n and (y.min() < 0 or y.max() >= classes):
        raise RunError(f"{file}: labels range over {y.min()}..{y.max()}, outside 0..{classes - 1} of "
                       f"CIFAR-{classes}")
    return y.astype(np.int64)


# ---- batches on the training device ---------------------------------------------------------------

def steps_per_epoch(n: int, batch_size: int, world: int = 1, train: bool = True) -> int:
    """Batches one rank takes from `n` images: training drops the partial batch and trims every
    rank's share to n // world; evaluation keeps everything (the count of the busiest rank)."""
    if train:
        return (n // world) // batch_size
    return math.ceil(math.ceil(n / world) / batch_size)


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
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        share = perm[rank::world][: n // world]
    else:
        share = torch.arange(rank, n, world)
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


def augment(x: torch.Tensor, pad: int, *, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by `pad`, cropped back at its own random offset and, with `flip`,
    mirrored with probability 1/2: one gather on x's device, offsets drawn from `generator` on CPU."""
    n, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator) - pad
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=generator) - pad
    mirror = torch.randint(0, 2, (n, 1, 1), generator=generator).bool() if flip else torch.zeros(n, 1, 1).bool()
    dy, dx, mirror = dy.to(x.device), dx.to(x.device), mirror.to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    cols = torch.where(mirror, w - 1 - cols, cols) + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
    out = torch.gather(x.reshape(n, c, h * w), 2, index.reshape(n, 1, h * w).expand(n, c, h * w))
    return out.view(n, c, h, w).masked_fill_(~inside.unsqueeze(1), 0)


def normalize(x: torch.Tensor, ds: Dataset) -> torch.Tensor:
    """uint8 images to the float inputs a network trains on: (x/255 - mean) / std per channel."""
    mean = torch.tensor(ds.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.float().div_(255).sub_(mean).div_(std)


# ---- image folders --------------------------------------------------------------------------------

def _val_dir(path: Path) -> Path | None:
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
            with Image.open(file) as img:
                w, h = img.size
                scale = side / min(w, h)
                tw, th = max(side, round(w * scale)), max(side, round(h * scale))
                img.draft("RGB", (tw, th))  # JPEGs decode at a reduced scale when that suffices
                img = img.convert("RGB").resize((tw, th), Image.Resampling.BILINEAR)
        except (OSError, ValueError) as e:
            raise RunError(f"cannot read the image {file}: {e}") from None
        if self.train:
            left, top = rng.randint(0, tw - self.size), rng.randint(0, th - self.size)
        else:
            left, top = (tw - self.size) // 2, (th - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        if self.train and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous(), label


class _Shard(torch.utils.data.Sampler):
    """This rank's indices: a shuffle of (seed, epoch) trimmed to n // world when training (as in
    `batches`), every world-th index in order otherwise."""

    def __init__(self, n: int, *, train: bool, seed: int, rank: int, world: int):
        self.n, self.train, self.seed, self.rank, self.world, self.epoch = n, train, seed, rank, world, 0

    def _indices(self) -> list[int]:
        if not self.train:
            return list(range(self.rank, self.n, self.world))
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        return perm[self.rank::self.world][: self.n // self.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return self.n // self.world if self.train else len(range(self.rank, self.n, self.world))


class FolderLoader:
    """A DataLoader over an `ImageFolder` that moves to the next epoch's shuffle and augmentation
    each time it is iterated; `set_epoch` picks one (to resume)."""

    def __init__(self, loader: torch.utils.data.DataLoader, sampler: _Shard):
        self.loader, self.sampler, self.dataset, self.epoch = loader, sampler, loader.dataset, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.sampler.epoch = self.dataset.epoch = self.epoch
        self.epoch += 1
        return iter(self.loader)


def folder_loaders(path: Path | str, size: int, batch_size: int, workers: int, rank: int = 0, world: int = 1,
                   *, seed: int = 0) -> tuple[FolderLoader, torch.utils.data.DataLoader, int]:
    """Loaders of uint8 batches (N×3×size×size, labels) for `path/train` and `path/val`, this rank's
    share of each; decoding runs in `workers` processes. Normalise on the device with `normalize`."""
    path = Path(path)
    val = _val_dir(path)
    if not (path / "train").is_dir() or val is None:
        raise RunError(f"{path} is not an image-folder data set", hint=_LAYOUTS)
    train_set = ImageFolder(path / "train", size, train=True, seed=seed)
    test_set = ImageFolder(val, size, train=False, classes=train_set.classes)
    pin = torch.cuda.is_available()

    def loader(data: ImageFolder, sampler: _Shard, drop_last: bool) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            data, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin, drop_last=drop_last,
            generator=torch.Generator().manual_seed(seed))  # worker seeds not from the global RNG

    train_sampler = _Shard(len(train_set), train=True, seed=seed, rank=rank, world=world)
    test_sampler = _Shard(len(test_set), train=False, seed=seed, rank=rank, world=world)
    return (FolderLoader(loader(train_set, train_sampler, True), train_sampler),
            loader(test_set, test_sampler, False), len(train_set.classes))


def _folder_dataset(path: Path, sample: int = 64) -> Dataset:
    """A folder set: its classes, and mean/std estimated from up to `sample` training images."""
    train = ImageFolder(path / "train", 64, train=False)
    ImageFolder(_val_dir(path), 64, train=False, classes=train.classes)  # the same classes, and images
    step = max(1, len(train) // sample)
    x = torch.stack([train[i][0] for i in range(0, len(train), step)[:sample]])
    mean, std = channel_stats(x)
    return Dataset(f"folder:{path}", None, None, None, None, len(train.classes), mean, std, "none", 0, folder=path)
