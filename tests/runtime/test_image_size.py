"""Image folders read at a chosen side (`image_size`) and evaluation crop instead of ImageNet's fixed
224 and 0.875; both checked, and refused for data sets of fixed-size images; the count of a folder's
training images, and the `--val-split` message where no images are held in memory."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from archspec.errors import RunError
from archspec.runtime.data import folder_loaders, load
from archspec.runtime.data import transforms as T
from archspec.runtime.train.split import val_count


def _tree(root: Path, per_class: int = 3, side: tuple[int, int] = (40, 30)) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 1)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


def test_a_folder_is_read_at_the_size_asked(tmp_path):
    _tree(tmp_path)
    ds = load(str(tmp_path), image_size=24, crop=0.5)
    assert (ds.shape, ds.size, ds.crop, ds.train_images) == ((3, 24, 24), 24, 0.5, 6)
    default = load(str(tmp_path))
    assert (default.shape, default.crop) == ((3, T.DEFAULT_SIZE, T.DEFAULT_SIZE), T.CROP_FRACTION)
    train, test, _ = folder_loaders(tmp_path, ds.size, 2, 0, crop=ds.crop, device="cpu")
    assert {tuple(x.shape[1:]) for x, _ in train} == {tuple(x.shape[1:]) for x, _ in test} == {(3, 24, 24)}


def test_the_crop_sets_the_resized_side():
    assert T.resize_side(64, 1.0) == 64 and T.resize_side(64, 0.5) == 128
    assert T.resize_side(224) == round(224 / T.CROP_FRACTION)
    # the shorter side (100) resized to 50 / 0.5 = 100: the centre 50×50 of the source
    assert T.eval_plan(200, 100, 50, 0.5).box == (75, 25, 125, 75)
    # no border: the whole shorter side
    assert T.eval_plan(200, 100, 50, 1.0).box == (50, 0, 150, 100)


def test_the_crop_reaches_the_decoded_image(tmp_path):
    from PIL import Image

    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    Image.fromarray(ramp).save(tmp_path / "r.png")
    whole = T.load(tmp_path / "r.png", 16, train=False, rng=random.Random(0), backend="pil", crop=1.0)
    half = T.load(tmp_path / "r.png", 16, train=False, rng=random.Random(0), backend="pil", crop=0.5)
    span = lambda x: float(x[0, 8, -1]) - float(x[0, 8, 0])  # noqa: E731  the ramp's rise across a row
    assert span(half) < 0.6 * span(whole)


@pytest.mark.parametrize("size", [0, 7, 4097, True, 64.0, "64"])
def test_a_bad_size_is_refused(tmp_path, size):
    with pytest.raises(RunError, match="--image-size"):
        load(str(tmp_path), image_size=size)


@pytest.mark.parametrize("crop", [0, -0.5, 1.5, True, "0.9"])
def test_a_bad_crop_is_refused(tmp_path, crop):
    with pytest.raises(RunError, match="--crop"):
        load(str(tmp_path), crop=crop)


def test_fixed_size_images_refuse_a_size():
    with pytest.raises(RunError, match="--image-size applies to image folders.*32×32"):
        load("synthetic-cifar10:100", image_size=64)
    with pytest.raises(RunError, match="--crop applies to image folders"):
        load("synthetic-cifar10:100", crop=0.9)


def test_val_split_counts_the_images_given():
    assert val_count(144, 0.1, "folder:x") == 14
    with pytest.raises(RunError) as e:
        val_count(0, 0.1, "folder:x")
    assert "of the 0 images" not in e.value.message and "no training images in memory" in e.value.message


def test_train_takes_the_image_size_and_refuses_it_for_other_data(tmp_path, monkeypatch):
    """`train --image-size/--crop` reach the folder data set the trainer loads (its fit replaced: no
    training run), and on a data set that is not a folder they are refused before any work."""
    from typer.testing import CliRunner

    from archspec.cli import app
    from archspec.runtime.train import Trainer

    _tree(tmp_path / "imgs")
    built = []
    monkeypatch.setattr(Trainer, "fit", lambda self: built.append(self) or [])
    r = CliRunner().invoke(app, ["train", "tiny_delugenet", "--data", str(tmp_path / "imgs"), "--image-size", "16",
                                 "--crop", "0.5", "--workers", "0", "--batch-size", "2", "--out", str(tmp_path / "run"),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    [t] = built
    assert (t.ds.size, t.ds.crop) == (16, 0.5) and t.net.shape(t.net.input)[1:] == (16, 16)
    t.feed.close()
    r = CliRunner().invoke(app, ["train", "tiny_delugenet", "--image-size", "64", "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "--image-size applies to image folders" in r.output
    assert not (tmp_path / "d").exists()
