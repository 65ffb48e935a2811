"""Which data set a `--data` source names, and reading it."""

from __future__ import annotations

from pathlib import Path

from archspec.errors import RunError

from . import cifar
from . import transforms as T
from .dataset import LAYOUTS, Dataset
from .digits import digits
from .folders import folder_dataset, val_dir
from .synthetic import DEFAULT_IMAGES, SETS, synthetic

_SOURCES = ("sources: nothing (scikit-learn's digits), a CIFAR-10/100 directory, an image-folder directory, "
            "or synthetic-cifar10[:N] / synthetic-cifar100[:N]")


def load(source: str | None, *, seed: int = 0, image_size: int | None = None,
         crop: float | None = None) -> Dataset:
    """The data set `source` names: None or "digits", a directory, or "synthetic-cifar10[:N]". An image
    folder is read at `image_size` (default 224) with the evaluation centre `crop` (default 0.875);
    either given for a data set of fixed-size images is a RunError."""
    if image_size is not None:
        T.check_image_size(image_size)
    if crop is not None:
        T.check_crop(crop)
    if source is None or source == "digits":
        ds = digits()
    elif source.startswith("synthetic-"):
        ds = synthetic(source, seed)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise RunError(f"no data at {path}", hint=_SOURCES)
        if not path.is_dir():
            raise RunError(f"{path} is a file: a data set is a directory", hint=LAYOUTS)
        ds = directory(path, image_size, crop)
    if ds.folder is None and (image_size is not None or crop is not None):
        c, h, w = ds.shape
        flag = "--image-size" if image_size is not None else "--crop"
        raise RunError(f"{flag} applies to image folders; {ds.name} holds images of {h}×{w} pixels",
                       f"leave out {flag}: only image folders are resized as they are read")
    return ds


def built_in_default(source: object) -> bool:
    """Whether `source` names a data set archspec ships at the size it ships it: nothing or "digits",
    or a synthetic set at its default size ("synthetic-cifar10", "synthetic-cifar10:5000"). Only such a
    name may come from a file (a checkpoint's metadata): it reads no path and chooses no size."""
    if source is None or source == "digits":
        return True
    if not isinstance(source, str):
        return False
    name, _, count = source.partition(":")
    return name in SETS and count in ("", str(DEFAULT_IMAGES))


def directory(path: Path, image_size: int | None = None, crop: float | None = None) -> Dataset:
    """The data set of a directory: a CIFAR layout, or image folders (train/ and val/ or test/) read at
    `image_size` with the centre `crop` (defaults: `transforms.DEFAULT_SIZE`, `transforms.CROP_FRACTION`)."""
    found = [(layout, d) for layout in cifar.LAYOUTS for d in (path, path / layout.subfolder)
             if all((d / f).is_file() for f in layout.files)]
    if len({layout.classes for layout, _ in found}) > 1:
        names = ", ".join(f"{layout.title} in {d}" for layout, d in found)
        raise RunError(f"{path} holds more than one data set: {names}",
                       hint="pass the directory of the one to train on")
    if found:
        return cifar.cifar(*found[0])
    if (path / "train").is_dir():
        if val_dir(path) is None:
            raise RunError(f"{path} has train/ but no val/ (nor test/) beside it", hint=LAYOUTS)
        return folder_dataset(path, size=T.DEFAULT_SIZE if image_size is None else image_size,
                              crop=T.CROP_FRACTION if crop is None else crop)
    for layout in cifar.LAYOUTS:
        for d in (path, path / layout.subfolder):
            missing = [f for f in layout.files if not (d / f).is_file()]
            if len(missing) < len(layout.files):
                raise RunError(f"{d} holds part of the {layout.title} layout: {', '.join(missing)} missing",
                               hint=LAYOUTS)
    raise RunError(f"{path} holds no data set layout that archspec reads", hint=LAYOUTS)
