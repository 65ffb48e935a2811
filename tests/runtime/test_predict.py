"""Predicting classes of image files: a trained checkpoint, its ONNX file and its torch.export program give
the probabilities the module itself gives on the same images (to 1e-5), each with the class names and
preprocessing it carries; exported files carry that metadata and no Identity node; preprocessing read from
a file is checked and never chooses a size; images are read as an image folder's are."""

from __future__ import annotations

import json
import os

import pytest
import torch
from PIL import Image
from rich.console import Console

from archspec.compiler.codegen import to_module
from archspec.errors import RunError
from archspec.graph.elaborate import elaborate
from archspec.runtime import data as D
from archspec.runtime.data.preprocessing import (CIFAR10_CLASSES, CIFAR100_CLASSES, KEY, checked_preprocessing,
                                                 checkpoint_preprocessing, default_preprocessing, preprocessing_of)
from archspec.runtime.export import (META_CLASSES, META_PREPROCESSING, META_SPEC, META_VERSION, ExportOptions,
                                     export_model)
from archspec.runtime.predict import image_paths, open_predictor, predict
from archspec.runtime.train import checkpoint as ckpt, load_trained
from archspec.runtime.train.specfiles import read_spec, spec_files
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")
IMAGES = 12


def _checkpoint(path, net, model, **meta) -> None:
    """`model` saved as `archspec train` saves a run's checkpoint: its weights, its spec's files, the
    data set it was trained on."""
    files, main = spec_files(read_spec(TINY))
    meta = {"network": net.name, "params": net.params, "files": files, "main": main, "data": "digits",
            "data_source": None, "seed": 0, **meta}
    ckpt.save(path, ckpt.Checkpoint(model=model.state_dict(), optimizer=None, scheduler=None, epoch=1, rng={},
                                    meta=meta))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network for the digits with weights and batch-norm statistics away from their initial
    values, saved as a run's checkpoint; the digits' test images as PNG files; and the module's own class
    probabilities on those images."""
    root = tmp_path_factory.mktemp("predict")
    ds = D.load(None)
    net = elaborate(read_spec(TINY), {"n": 1, "w": 4})
    torch.manual_seed(0)
    model = to_module(net)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "running_var", "bias")):
                t.add_(torch.rand_like(t) * 0.2)  # running variances stay positive
    model.eval()
    path = root / "last.safetensors"
    _checkpoint(path, net, model)
    folder = root / "images"
    folder.mkdir()
    for i in range(IMAGES):
        Image.fromarray(ds.test_x[i, 0].numpy(), "L").save(folder / f"{i:02d}.png")
    with torch.no_grad():
        want = model(D.normalize(ds.test_x[:IMAGES], ds)).softmax(-1)
    assert want.max(-1).values.min() < 0.99  # not one class at probability 1: the comparison is informative
    return path, folder, want, ds


def _same(results, want: torch.Tensor, topk: int = 5) -> None:
    """Each image's classes are the most probable ones, most probable first, with the module's own
    probabilities to 1e-5."""
    assert len(results) == len(want)
    for r, p in zip(results, want):
        top = r["top"]
        assert len(top) == topk
        got = [t["probability"] for t in top]
        assert got == sorted(got, reverse=True)
        for t in top:
            assert abs(t["probability"] - p[t["index"]].item()) <= 1e-5
            assert t["class"] == str(t["index"])  # the digits' names
        rest = [p[i].item() for i in range(len(p)) if i not in {t["index"] for t in top}]
        assert min(got) >= max(rest, default=0) - 1e-5


def test_checkpoint_onnx_and_pt2_predict_what_the_module_does(trained, tmp_path):
    path, folder, want, ds = trained
    _same(predict(path, folder), want)  # preprocessing inferred from the built-in data set
    meta = load_trained(path)[2].meta
    assert checkpoint_preprocessing(meta, (1, 8, 8), 10, str(path)) == (preprocessing_of(ds), True)
    net, model, ck = load_trained(path)
    recorded = tmp_path / "recorded.safetensors"  # as a run that records its preprocessing writes it
    ck.meta[KEY] = preprocessing_of(ds)
    ckpt.save(recorded, ck)
    _same(predict(recorded, sorted(folder.iterdir()), topk=5), want)
    quiet = Console(quiet=True)
    onnx_file = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx", dynamic_batch="1:4:8"), quiet,
                             preprocessing_of(ds))
    _same(predict(onnx_file, folder), want)
    fixed = export_model(net, model, ExportOptions("pt2", tmp_path / "m.pt2", batch=5), quiet, preprocessing_of(ds))
    p = open_predictor(fixed)
    assert (p.min_batch, p.max_batch, p.assumed) == (5, 5, False)
    _same(predict(fixed, folder, topk=5), want)  # 12 images in batches of exactly 5


def test_exported_onnx_has_no_identity_and_carries_the_metadata(trained, tmp_path):
    import onnx

    path, _, _, ds = trained
    net, model, _ = load_trained(path)
    out = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx"), Console(quiet=True),
                       preprocessing_of(ds))
    m = onnx.load(str(out))
    assert "Identity" not in {n.op_type for n in m.graph.node}
    props = {p.key: p.value for p in m.metadata_props}
    assert props[META_SPEC] == "tiny_delugenet" and props[META_VERSION] == __import__("archspec").__version__
    assert json.loads(props[META_CLASSES]) == [str(i) for i in range(10)]
    prep = json.loads(props[META_PREPROCESSING])
    assert prep == {k: v for k, v in preprocessing_of(ds).items() if k != "classes"}
    assert prep["mean"] == pytest.approx(ds.mean) and prep["size"] == 8 and prep["channels"] == 1


def test_an_rgb_network_without_recorded_preprocessing(tmp_path):
    """A spec exported with fresh weights carries the default preprocessing of its 32×32 RGB input:
    CIFAR-10's mean and std, taken whole; predict applies it as the module sees it."""
    net = elaborate(read_spec(TINY), {"n": 1, "w": 4, "channels": 3, "size": 32})
    torch.manual_seed(0)
    model = to_module(net).eval()
    pixels = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for i, x in enumerate(pixels):
        Image.fromarray(x.permute(1, 2, 0).numpy(), "RGB").save(tmp_path / f"{i}.png")
    prep = default_preprocessing((3, 32, 32), 10)
    mean, std = (torch.tensor(prep[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        want = model(pixels.float().div(255).sub(mean).div(std)).softmax(-1)
    out = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx"), Console(quiet=True))
    p = open_predictor(out)
    assert not p.assumed and p.preprocessing == prep and prep["crop"] == 1.0
    _same(predict(out, sorted(tmp_path.glob("*.png")), topk=10), want, topk=10)


# ---- preprocessing -----------------------------------------------------------------------------------


def test_an_image_folder_records_its_class_folders_size_and_crop(tmp_path):
    for split in ("train", "val"):
        for name in ("dog", "cat"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (20, 12), (10, 20, 30)).save(tmp_path / split / name / "a.png")
    prep = preprocessing_of(D.load(str(tmp_path), image_size=16, crop=0.5))
    assert prep == {"classes": ["cat", "dog"], "size": 16, "channels": 3, "crop": 0.5, "mean": list(D.IMAGENET_MEAN),
                    "std": list(D.IMAGENET_STD), "interpolation": "bilinear"}
    assert len(CIFAR10_CLASSES) == 10 and len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # CIFAR-100's fine labels are in alphabetical order


def test_checked_preprocessing_refuses_what_does_not_fit_the_network():
    good = default_preprocessing((3, 32, 32), 4)
    assert checked_preprocessing(good, (3, 32, 32), 4, "f") == good
    secret = "SECRET-VALUE"
    for change, words in [({"size": 4096}, "size"), ({"channels": 1}, "channels"),
                          ({"classes": ["a"] * 3}, "4 classes"),
                          ({"crop": 0}, "crop"), ({"mean": [0.1, float("nan"), 0.2]}, "mean"),
                          ({"std": [1, 1, 0]}, "positive"), ({"interpolation": secret}, "interpolation"),
                          ({"classes": [secret * 20, "b", "c", "d"]}, "class name")]:
        with pytest.raises(RunError, match=words) as e:
            checked_preprocessing({**good, **change}, (3, 32, 32), 4, "f")
        assert secret not in str(e.value.message) and "f: its preprocessing metadata is not valid" in e.value.message
    named = checked_preprocessing({**good, "classes": ["a\x1b[2Jb", "c", "d", "e"]}, (3, 32, 32), 4, "f")
    assert named["classes"][0] == "a\\x1b[2Jb"


def test_an_exported_file_with_bad_metadata_is_refused(trained, tmp_path):
    import onnx

    path, folder, _, ds = trained
    net, model, _ = load_trained(path)
    out = export_model(net, model, ExportOptions("onnx", tmp_path / "m.onnx"), Console(quiet=True),
                       preprocessing_of(ds))
    m = onnx.load(str(out))
    for p in m.metadata_props:
        if p.key == META_PREPROCESSING:
            p.value = json.dumps({**json.loads(p.value), "size": 4000})  # would decode every image at 4000×4000
    onnx.save(m, str(tmp_path / "bad.onnx"))
    with pytest.raises(RunError, match="size is not the network's input size"):
        predict(tmp_path / "bad.onnx", folder)
    for p in m.metadata_props:
        if p.key == META_CLASSES:
            p.value = "[" * 100000
    onnx.save(m, str(tmp_path / "deep.onnx"))
    with pytest.raises(RunError, match="not valid"):
        predict(tmp_path / "deep.onnx", folder)


# ---- images and errors -------------------------------------------------------------------------------


def test_image_paths_walk_folders_and_refuse_what_is_not_an_image(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/2.png", "b/c/3.jpg", "1.PNG"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.relative_to(tmp_path).as_posix() for p in image_paths([tmp_path])] == ["1.PNG", "b/2.png", "b/c/3.jpg"]
    assert image_paths([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]  # a file named: its content decides
    with pytest.raises(RunError, match="no image or folder at"):
        image_paths([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no images to predict"):
        image_paths([tmp_path / "empty"])
    os.mkfifo(tmp_path / "b" / "pipe.png")
    with pytest.raises(RunError, match="not a regular file"):
        image_paths([tmp_path])


def test_predict_errors_are_clear(trained, tmp_path, monkeypatch):
    path, folder, _, _ = trained
    with pytest.raises(RunError, match=r"a checkpoint \(.safetensors\), an ONNX file"):
        predict(tmp_path / "model.pth", folder)
    with pytest.raises(RunError, match="--topk 0"):
        predict(path, folder, topk=0)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(RunError, match="cannot read the image"):
        predict(path, tmp_path / "x.png")
    (tmp_path / "m.onnx").write_bytes(b"\x00garbage")
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(RunError, match="needs onnxruntime"):
        predict(tmp_path / "m.onnx", folder)
