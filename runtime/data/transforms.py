"""ImageNet's standard image transforms, on one decoded file: for training a random resized crop
(scale 0.08–1, aspect 3/4–4/3) and a horizontal flip; for evaluation a resize of the shorter side to
size/crop and a centre crop (crop 0.875 by default: 256 → 224 at ImageNet's size). Each is first a plan
— a box of the source image and a flip — drawn from a seeded `random.Random`, so that an image's
augmentation depends on (seed, epoch, index) alone, never on the loader worker that decodes it. A plan
is then carried out by torchvision.transforms.v2 where torchvision imports, by PIL otherwise; files are
always opened by PIL, which lets a JPEG decode at a reduced scale when the crop allows it. A recipe may
add torchvision.transforms.v2's RandAugment or TrivialAugment after the crop (`AutoAugment`), its draws
seeded from the same (seed, epoch, index).

What is decoded is bounded: a file is read through the bounded reader (a regular file of at most
`MAX_IMAGE_BYTES`, opened without waiting), only the `FORMATS` are decoded, recognised by their content
whatever the file's name, and an image of more than `MAX_IMAGE_PIXELS` pixels is refused from its header,
before it is decoded."""

from __future__ import annotations

import math
import random
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archspec.errors import RunError
from archspec.files import open_bounded

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # evaluation: the centre crop's share of the resized shorter side (224 of 256)
SCALE = (0.08, 1.0)  # training: the crop's share of the image's area ...
RATIO = (3 / 4, 4 / 3)  # ... and its aspect ratio
BACKENDS = ("auto", "torchvision", "pil")
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # PIL's names of the formats decoded, checked by content
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # the files of an image folder
MAX_IMAGE_PIXELS = 64_000_000  # width × height: 8000×8000 (192 MB as RGB); larger is refused undecoded
MAX_IMAGE_BYTES = 256 * 1024 * 1024
DEFAULT_SIZE = 224  # an image folder's side when none is given: ImageNet's
IMAGE_SIZES = (8, 4096)  # the sides an image folder may be cropped to, inclusive


@dataclass(frozen=True)
class Plan:
    """The output of one image: the box (left, top, right, bottom) of the source scaled to size×size,
    then mirrored with `flip`."""

    box: tuple[float, float, float, float]
    size: int
    flip: bool


def check_image_size(size: object, what: str = "--image-size") -> int:
    """`size` when it is a whole number of pixels within `IMAGE_SIZES`, else a RunError naming `what`."""
    lo, hi = IMAGE_SIZES
    if isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi:
        raise RunError(f"{what} {size!r}: the side images are cropped to must be a whole number of pixels "
                       f"from {lo} to {hi}", f"for example {what} 64")
    return size


def check_crop(crop: object, what: str = "--crop") -> float:
    """`crop` (the evaluation crop's share of the resized shorter side) when it lies in (0, 1], else a
    RunError naming `what`."""
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise RunError(f"{what} {crop!r}: the centre crop's share of the resized image must lie in (0, 1]",
                       f"for example {what} {CROP_FRACTION} (ImageNet's 224 of 256), or 1 for no border")
    return float(crop)


def resize_side(size: int, crop: float = CROP_FRACTION) -> int:
    """The shorter side an evaluation image is resized to before its centre crop of `size`: `size /
    crop`, at least `size`."""
    return max(size, round(size / crop))


def train_plan(width: int, height: int, size: int, rng: random.Random) -> Plan:
    """A random resized crop and a coin-flip mirror: torchvision's `RandomResizedCrop` sampling (ten
    tries at a random area and log-uniform aspect; then the centre crop of the clamped aspect)."""
    area = width * height
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(lo, hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return Plan((left, top, left + w, top + h), size, rng.random() < 0.5)
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return Plan((left, top, left + w, top + h), size, rng.random() < 0.5)


def eval_plan(width: int, height: int, size: int, crop: float = CROP_FRACTION) -> Plan:
    """Resize the shorter side to `resize_side(size, crop)` (the longer in proportion, rounded down, as
    torchvision's `Resize`), then crop the centre size×size: as one box of the source image."""
    side = resize_side(size, crop)
    if width <= height:
        tw, th = side, int(side * height / width)
    else:
        tw, th = int(side * width / height), side
    left, top = int(round((tw - size) / 2)), int(round((th - size) / 2))
    sx, sy = width / tw, height / th
    return Plan((left * sx, top * sy, (left + size) * sx, (top + size) * sy), size, False)


@lru_cache(maxsize=None)
def torchvision_functional() -> tuple[Any, str]:
    """(torchvision.transforms.v2.functional, "") where it imports, else (None, why not)."""
    try:
        from torchvision.transforms.v2 import functional
    except Exception as e:  # absent, or built for another torch: its import fails in several ways
        text = str(e).strip().splitlines()
        return None, f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
    return functional, ""


AUTO_AUGMENTS = ("randaugment", "trivialaugment")


class AutoAugment:
    """torchvision.transforms.v2's RandAugment (`ops` operations of strength `magnitude` of 30) or
    TrivialAugmentWide, on a uint8 3×H×W image. `augment(x, seed)` draws from `seed` alone (the global
    generator is left as it was), so an image's augmentation depends on (seed, epoch, index) only.
    Made where torchvision does not import, it is a RunError naming it."""

    def __init__(self, policy: str, ops: int = 2, magnitude: int = 9):
        if policy not in AUTO_AUGMENTS:
            raise RunError(f"unknown auto_augment '{policy}'", f"policies: none, {', '.join(AUTO_AUGMENTS)}")
        try:
            from torchvision.transforms import v2
        except Exception as e:  # absent, or built for another torch
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(f"auto_augment {policy} needs torchvision, whose transforms do not import here "
                           f"({type(e).__name__}: {why})", "pip install torchvision (built for this torch), or "
                           "auto_augment none") from None
        self.policy = policy
        self.transform = (v2.RandAugment(num_ops=ops, magnitude=magnitude) if policy == "randaugment"
                          else v2.TrivialAugmentWide())

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(x)


def pick_backend(name: str = "auto") -> str:
    """"torchvision" or "pil": `auto` is torchvision where its transforms import; asking for torchvision
    where they do not is an error that says why."""
    if name not in BACKENDS:
        raise RunError(f"unknown image backend '{name}'", f"backends: {', '.join(BACKENDS)}")
    functional, why = torchvision_functional()
    if name == "torchvision" and functional is None:
        raise RunError(f"torchvision.transforms.v2 does not import here ({why})",
                       "install a torchvision built for this torch, or use the pil backend")
    if name == "auto":
        return "torchvision" if functional is not None else "pil"
    return name


def load(file: Path, size: int, *, train: bool, rng: random.Random, backend: str,
         crop: float = CROP_FRACTION) -> torch.Tensor:
    """`file` decoded and transformed to a uint8 3×size×size tensor (evaluation: the centre `crop` of the
    image resized to `resize_side(size, crop)`); a RunError naming the file when it
    cannot be read (not a regular file, too large, empty, not one of `FORMATS`, truncated, above
    `MAX_IMAGE_PIXELS`)."""
    from PIL import Image, UnidentifiedImageError

    bomb = RunError(f"cannot read the image {file}: a decompression bomb? it is above the limit of "
                    f"{MAX_IMAGE_PIXELS:,} pixels", "scale the image down, or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, at our own limit
            with open_bounded(file, MAX_IMAGE_BYTES, "image") as f, Image.open(f, formats=FORMATS) as img:
                width, height = img.size
                if min(width, height) < 1:
                    raise ValueError(f"it is {width}×{height} pixels")
                if width * height > MAX_IMAGE_PIXELS:
                    raise RunError(f"cannot read the image {file}: a decompression bomb? {width:,}×{height:,} "
                                   f"pixels is above the limit of {MAX_IMAGE_PIXELS:,}",
                                   "scale the image down, or remove it")
                plan = train_plan(width, height, size, rng) if train else eval_plan(width, height, size, crop)
                left, top, right, bottom = plan.box
                # a JPEG may decode at 1/2, 1/4 or 1/8 scale, as long as the box keeps `size` pixels a side
                img.draft("RGB", (math.ceil(width * size / (right - left)),
                                  math.ceil(height * size / (bottom - top))))
                sx, sy = img.size[0] / width, img.size[1] / height
                box = (left * sx, top * sy, right * sx, bottom * sy)
                img = img.convert("RGB")
                if backend == "torchvision":
                    return _with_torchvision(img, box, plan)
                return _with_pil(img, box, plan)
    except RunError:
        raise
    except Image.DecompressionBombError:  # PIL's own, larger limit, met before ours could be checked
        raise bomb from None
    except UnidentifiedImageError:
        raise RunError(f"cannot read the image {file}: it is not a PNG, JPEG, WebP or BMP image",
                       "remove or replace the file: every image of the folders must be readable") from None
    except Exception as e:  # anything a broken, truncated or hostile file makes PIL raise
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunError(f"cannot read the image {file}: {why}",
                       "remove or replace the file: every image of the folders must be readable") from None


def _with_pil(img, box: tuple[float, ...], plan: Plan) -> torch.Tensor:
    from PIL import Image

    out = img.resize((plan.size, plan.size), Image.Resampling.BILINEAR, box=box)
    if plan.flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _with_torchvision(img, box: tuple[float, ...], plan: Plan) -> torch.Tensor:
    functional, _ = torchvision_functional()
    left, top, right, bottom = (round(v) for v in box)  # whole pixels, each edge inside the image
    x = functional.pil_to_tensor(img)
    x = functional.resized_crop(x, top, left, max(1, bottom - top), max(1, right - left), [plan.size, plan.size],
                                antialias=True)
    if plan.flip:
        x = functional.horizontal_flip(x)
    return x.contiguous()
