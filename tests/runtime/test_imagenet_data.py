"""ImageNet-shaped image folders: the standard transforms (random resized crop and flip; resize to
size/0.875 and centre crop), drawn per (seed, epoch, index) and carried out by PIL on this machine
(torchvision where it imports), loaders with persistent workers that still see each epoch, pinned
memory only for a CUDA target, ImageNet's mean and std, and the decode rate of a folder."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from archspec.errors import RunError
from archspec.runtime.data import IMAGENET_MEAN, IMAGENET_STD, decode_throughput, default_workers, folder_loaders, load
from archspec.runtime.data import transforms as T

HAS_TORCHVISION = T.torchvision_functional()[0] is not None


def _tree(root: Path, per_class: int = 3, side: tuple[int, int] = (40, 30), suffix: str = ".png") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}{suffix}")


# ---- plans -------------------------------------------------------------------------------------------


def test_eval_resizes_to_size_over_0875_and_crops_the_centre():
    assert (T.resize_side(224), T.resize_side(32), T.resize_side(16)) == (256, 37, 18)
    plan = T.eval_plan(500, 375, 224)  # resized to 341×256, crop at (58, 16)
    assert plan.size == 224 and not plan.flip
    s = 375 / 256
    assert plan.box == pytest.approx((58 * 500 / 341, 16 * s, 282 * 500 / 341, 240 * s))
    assert T.eval_plan(18, 18, 16).box == (1, 1, 17, 17)


def test_train_crops_cover_the_standard_area_and_aspect_range():
    rng = random.Random(0)
    plans = [T.train_plan(400, 300, 224, rng) for _ in range(2000)]
    for p in plans:
        left, top, right, bottom = p.box
        assert 0 <= left < right <= 400 and 0 <= top < bottom <= 300
        w, h = right - left, bottom - top
        assert 0.08 * 0.9 <= w * h / (400 * 300) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    areas = [(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) / 120000 for p in plans]
    assert min(areas) < 0.15 and max(areas) > 0.85  # the whole range is used
    assert 0.45 < sum(p.flip for p in plans) / len(plans) < 0.55
    assert T.train_plan(400, 300, 224, random.Random(7)) == T.train_plan(400, 300, 224, random.Random(7))


def test_train_crop_of_a_very_long_image_falls_back_to_the_centre():
    plan = T.train_plan(1000, 10, 32, random.Random(0))  # no crop of a standard aspect fits: 13×10
    assert plan.box == (493, 0, 506, 10)


# ---- carrying a plan out -----------------------------------------------------------------------------


def _ramp(file: Path, width: int = 200, height: int = 150) -> tuple[float, float]:
    """A PNG whose red channel rises with x and green with y, linearly: a resampled pixel's value says
    which source coordinate it was taken at. Returns the slopes (levels per pixel)."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    kx, ky = 255 / (width - 1), 255 / (height - 1)
    Image.fromarray(np.stack([np.rint(x * kx), np.rint(y * ky), np.zeros_like(x)], -1).astype(np.uint8)).save(file)
    return kx, ky


@pytest.mark.parametrize("train", [True, False])
def test_pil_path_samples_the_planned_box(tmp_path, train):
    """Each output pixel's centre maps to its place in the plan's box (mirrored with the flip)."""
    kx, ky = _ramp(tmp_path / "ramp.png")
    for seed in range(8):
        got = T.load(tmp_path / "ramp.png", 16, train=train, rng=random.Random(seed), backend="pil").float()
        plan = T.train_plan(200, 150, 16, random.Random(seed)) if train else T.eval_plan(200, 150, 16)
        left, top, right, bottom = plan.box
        u = torch.arange(1, 15, dtype=torch.float32)  # inside: the filter of a border pixel is cut by the box
        xs = left + (u + 0.5) * (right - left) / 16 - 0.5
        ys = top + (u + 0.5) * (bottom - top) / 16 - 0.5
        red = got[0, 8, 1:15].flip(0) if plan.flip else got[0, 8, 1:15]
        assert (red - xs * kx).abs().max() < 2.5, (seed, red, xs * kx)
        assert (got[1, 1:15, 8] - ys * ky).abs().max() < 2.5


def test_a_large_jpeg_decodes_at_a_reduced_scale_to_nearly_the_same_pixels(tmp_path):
    from PIL import Image

    y, x = np.mgrid[0:600, 0:800]
    smooth = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], -1).astype(np.uint8)
    file = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(file, quality=95)
    got = T.load(file, 32, train=False, rng=random.Random(0), backend="pil").float()
    box = T.eval_plan(800, 600, 32).box
    full = Image.open(file).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, box=box)
    want = torch.from_numpy(np.array(full)).permute(2, 0, 1).float()
    assert (got - want).abs().mean() < 3


def test_backends():
    assert T.pick_backend("pil") == "pil"
    assert T.pick_backend("auto") == ("torchvision" if HAS_TORCHVISION else "pil")
    with pytest.raises(RunError, match="unknown image backend 'cv2'"):
        T.pick_backend("cv2")
    if not HAS_TORCHVISION:
        with pytest.raises(RunError, match="torchvision.transforms.v2 does not import here"):
            T.pick_backend("torchvision")


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision.transforms.v2 does not import here")
def test_torchvision_path_matches_the_pil_path(tmp_path):
    _tree(tmp_path, per_class=2)
    for i, file in enumerate(sorted((tmp_path / "train").rglob("*.png"))):
        for train in (True, False):
            a = T.load(file, 16, train=train, rng=random.Random(i), backend="pil").float()
            b = T.load(file, 16, train=train, rng=random.Random(i), backend="torchvision").float()
            assert a.shape == b.shape == (3, 16, 16)
            assert (a - b).abs().mean() < 12  # same crop and flip; the two resamplers round differently


class _FakeV2:
    """The three torchvision.transforms.v2.functional calls the torchvision path makes, with their
    signatures, done by torch: the glue (argument order, flip) is tested where torchvision is absent."""

    @staticmethod
    def pil_to_tensor(img):
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()

    @staticmethod
    def resized_crop(x, top, left, height, width, size, antialias=True):
        crop = x[:, top:top + height, left:left + width].float()[None]
        out = torch.nn.functional.interpolate(crop, size=size, mode="bilinear", antialias=antialias,
                                              align_corners=False)
        return out[0].round().clamp(0, 255).to(torch.uint8)

    @staticmethod
    def horizontal_flip(x):
        return x.flip(-1)


@pytest.mark.parametrize("train", [True, False])
def test_torchvision_glue_samples_the_planned_box(tmp_path, monkeypatch, train):
    monkeypatch.setattr(T, "torchvision_functional", lambda: (_FakeV2, ""))
    assert T.pick_backend("auto") == "torchvision"
    kx, ky = _ramp(tmp_path / "ramp.png")
    for seed in range(8):
        got = T.load(tmp_path / "ramp.png", 16, train=train, rng=random.Random(seed), backend="torchvision").float()
        pil = T.load(tmp_path / "ramp.png", 16, train=train, rng=random.Random(seed), backend="pil").float()
        assert got.shape == (3, 16, 16)
        assert (got[:2, 1:15, 1:15] - pil[:2, 1:15, 1:15]).abs().max() < 4  # the same box, the same flip


# ---- loaders -----------------------------------------------------------------------------------------


def test_folders_are_normalised_by_imagenet_statistics(tmp_path):
    _tree(tmp_path)
    ds = load(str(tmp_path))
    assert (ds.mean, ds.std) == (IMAGENET_MEAN, IMAGENET_STD) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_loader_settings(tmp_path):
    _tree(tmp_path)
    assert default_workers() == min(8, len(__import__("os").sched_getaffinity(0)))
    train, test, _ = folder_loaders(tmp_path, 8, 2, 1, device="cpu")
    for loader in (train.loader, test.loader):
        assert loader.num_workers == 1 and loader.persistent_workers and not loader.pin_memory
    train, _, _ = folder_loaders(tmp_path, 8, 2, 0, device="cuda")
    assert train.loader.pin_memory and not train.loader.persistent_workers  # nothing to persist without workers
    assert folder_loaders(tmp_path, 8, 2)[0].loader.num_workers == default_workers()
    with pytest.raises(RunError, match="--workers -1"):
        folder_loaders(tmp_path, 8, 2, -1)


def test_persistent_workers_see_each_epoch(tmp_path):
    """Workers that outlive an epoch get the epoch with each index: epochs differ, an epoch can be
    replayed, and a worker decodes exactly what the training process itself would."""
    _tree(tmp_path, per_class=4)
    in_workers = folder_loaders(tmp_path, 8, 4, 1, seed=3)[0]
    here = folder_loaders(tmp_path, 8, 4, 0, seed=3)[0]
    epochs = [torch.cat([x for x, _ in in_workers]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])
    in_workers.set_epoch(0)
    assert torch.equal(torch.cat([x for x, _ in in_workers]), epochs[0])
    here.set_epoch(1)
    assert torch.equal(torch.cat([x for x, _ in here]), epochs[1])
    in_workers.close()  # ends the workers now; the next epoch starts new ones
    in_workers.set_epoch(1)
    assert torch.equal(torch.cat([x for x, _ in in_workers]), epochs[1])
    in_workers.close()


# ---- decode rate -------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])
def test_decode_throughput(tmp_path, split):
    _tree(tmp_path, per_class=3, suffix=".jpg")
    r = decode_throughput(tmp_path, 16, split=split, workers=0, batch_size=4, images=10)
    assert r["images"] >= 10 and r["seconds"] > 0 and math.isclose(r["images_per_s"], r["images"] / r["seconds"])
    assert (r["split"], r["workers"], r["size"], r["backend"]) == (split, 0, 16, T.pick_backend())
    one = decode_throughput(tmp_path / "val", 16, workers=1, batch_size=2, images=3)  # a folder of class folders
    assert one["images"] >= 3 and one["workers"] == 1


def test_decode_throughput_errors(tmp_path):
    _tree(tmp_path)
    with pytest.raises(RunError, match="unknown split 'test'"):
        decode_throughput(tmp_path, split="test")
    with pytest.raises(RunError, match="--images 0"):
        decode_throughput(tmp_path, images=0)
    with pytest.raises(RunError, match="no image folder at"):
        decode_throughput(tmp_path / "nowhere")
    (tmp_path / "train" / "cat" / "0.png").write_bytes(b"")
    with pytest.raises(RunError, match="cannot read the image .*cat/0.png"):
        decode_throughput(tmp_path, 16, workers=0, batch_size=2, images=4)
