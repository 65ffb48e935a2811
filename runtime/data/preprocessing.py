"""What a trained network expects of an image, as plain JSON that travels with it (a checkpoint's
metadata, an exported file's metadata): its class names, the side and channels it is read at, the
evaluation crop, the per-channel mean and std, and the interpolation. Written from the data set a run
trains on (`preprocessing_of`), inferred for files that carry none (`inferred_preprocessing`,
`default_preprocessing`), and checked whenever it is read from a file (`checked_preprocessing`)."""

from __future__ import annotations

import math
from typing import Any, Mapping

from archspec.errors import RunError, printable

from . import transforms as T
from .dataset import Dataset
from .folders import folder_classes
from .sources import built_in_default, load

KEY = "preprocessing"  # the checkpoint metadata entry that holds it
INTERPOLATION = "bilinear"  # what the image loader resizes with (`transforms.load`)
MAX_CLASS_NAME = 200  # characters of one class name read from a file
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew
skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())  # fine labels, in order
KNOWN_CLASSES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}
# the per-channel statistics of CIFAR-10's training images and of ImageNet's
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def class_names(ds: Dataset) -> list[str]:
    """The names of `ds`'s classes, in label order: an image folder's class folders, CIFAR's label
    names, the digits themselves; the label numbers for a synthetic set."""
    if ds.folder is not None:
        return folder_classes(ds.folder / "train")
    known = KNOWN_CLASSES.get(ds.name)
    if known is not None and len(known) == ds.classes:
        return list(known)
    return [str(i) for i in range(ds.classes)]


def preprocessing_of(ds: Dataset) -> dict[str, Any]:
    """How `ds`'s images reach the network it trains, as plain JSON: `classes` (names in label order),
    `size` (the side), `channels`, `crop` (the evaluation centre crop's share of the resized shorter side;
    1 for sets of whole images), `mean` and `std` (per channel, in [0, 1] units) and `interpolation`."""
    c, h, _ = ds.shape
    return {"classes": class_names(ds), "size": int(h), "channels": int(c),
            "crop": float(ds.crop) if ds.folder is not None else 1.0,
            "mean": [float(m) for m in ds.mean], "std": [float(s) for s in ds.std], "interpolation": INTERPOLATION}


def default_preprocessing(shape: tuple[int, ...], classes: int, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The preprocessing assumed for a network of input `shape` (C, H, W) that records none: CIFAR-10's
    mean and std for inputs of 32×32 or smaller (taken whole), ImageNet's otherwise (centre crop 0.875),
    each averaged over the channels for an input that is not RGB; classes named by `names` or numbered."""
    channels, size = int(shape[0]), int(shape[-1])
    small = size <= 32
    mean, std = (CIFAR_MEAN, CIFAR_STD) if small else (T.IMAGENET_MEAN, T.IMAGENET_STD)
    if channels != 3:
        mean, std = (sum(mean) / 3,) * channels, (sum(std) / 3,) * channels
    return {"classes": list(names) if names and len(names) == classes else [str(i) for i in range(classes)],
            "size": size, "channels": channels, "crop": 1.0 if small else T.CROP_FRACTION,
            "mean": list(mean), "std": list(std), "interpolation": INTERPOLATION}


def inferred_preprocessing(meta: Mapping[str, Any], shape: tuple[int, ...],
                           classes: int) -> tuple[dict[str, Any], bool]:
    """The preprocessing of a checkpoint that records none, from what its metadata does record, and
    whether it is exact: a built-in data set (`sources.built_in_default`) is read again for its exact
    statistics; CIFAR's class names where the data set's name says CIFAR; `default_preprocessing`
    otherwise. No path or size in the metadata is followed."""
    source = meta.get("data_source")
    if built_in_default(source):
        seed = meta.get("seed", 0)
        ds = load(source, seed=seed if type(seed) is int else 0)
        if ds.shape == tuple(shape) and ds.classes == classes:
            return preprocessing_of(ds), True
    name = meta.get("data")
    names = KNOWN_CLASSES.get(name) if isinstance(name, str) else None
    return default_preprocessing(shape, classes, names), False


def checkpoint_preprocessing(meta: Mapping[str, Any], shape: tuple[int, ...], classes: int,
                             where: str) -> tuple[dict[str, Any], bool]:
    """The preprocessing of a checkpoint (the file `where`) of a network of input `shape` and `classes`
    outputs, and whether it is exact: the one its metadata records under `KEY`, checked; else
    `inferred_preprocessing`."""
    raw = meta.get(KEY)
    if raw is None:
        return inferred_preprocessing(meta, shape, classes)
    return checked_preprocessing(raw, shape, classes, where), True


def checked_preprocessing(raw: object, shape: tuple[int, ...], classes: int, where: str) -> dict[str, Any]:
    """`raw`, read from the file `where`, when it is preprocessing for a network of input `shape` (C, H, W)
    and `classes` outputs: its size and channels those of the network, a name per class, a crop in
    (0, 1], finite statistics with positive stds; else a RunError naming the entry that is wrong (never
    its value). Class names have their control characters written as escapes (`errors.printable`)."""
    def bad(what: str) -> RunError:
        return RunError(f"{where}: its preprocessing metadata is not valid ({what})",
                        "export or train it again with this archspec, or remove the metadata")

    if not isinstance(raw, Mapping):
        raise bad("not an object")
    channels, size = int(shape[0]), int(shape[-1])
    if raw.get("size") != size or type(raw.get("size")) is not int:
        raise bad("its size is not the network's input size")
    if raw.get("channels") != channels or type(raw.get("channels")) is not int:
        raise bad("its channels are not the network's input channels")
    names = raw.get("classes")
    if not isinstance(names, list) or len(names) != classes:
        raise bad(f"it does not name the network's {classes} classes")
    if not all(isinstance(n, str) and 0 < len(n) <= MAX_CLASS_NAME for n in names):
        raise bad(f"a class name is not a string of 1 to {MAX_CLASS_NAME} characters")
    crop = raw.get("crop")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise bad("its crop is not a number in (0, 1]")
    stats = {}
    for key in ("mean", "std"):
        values = raw.get(key)
        if not isinstance(values, list) or len(values) != channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise bad(f"its {key} is not {channels} finite numbers")
        stats[key] = [float(v) for v in values]
    if not all(s > 0 for s in stats["std"]):
        raise bad("its std is not positive")
    if raw.get("interpolation") != INTERPOLATION:
        raise bad(f"its interpolation is not {INTERPOLATION}")
    return {"classes": [printable(n, keep="") for n in names], "size": size, "channels": channels, "crop": float(crop),
            **stats, "interpolation": INTERPOLATION}

