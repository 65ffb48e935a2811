"""Data reads from untrusted places: a checkpoint's metadata never chooses a data source, path or size;
every file is read through the bounded reader (regular files only, opened without waiting, refused
above its size limit before it is read); malformed run files are exit 2."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import RunError
from archspec.files import open_bounded, read_bounded, regular_file
from archspec.runtime import data as D
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train.checkpoint import Checkpoint
from archspec.runtime.train.evaluation import eval_source
from archspec.runtime.train.specfiles import spec_files

SPEC = "network tiny(classes: int = 10) {\n  input(1, 8, 8)\n  conv(4, 3, padding=1) relu gap linear(classes)\n}\n"
QUICK = 5.0  # seconds any refusal may take


def cli(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def checkpoint(folder: Path, data_source) -> Path:
    """A checkpoint as `archspec train` writes one for the digits, with `data_source` in its metadata."""
    (folder / "spec").mkdir(parents=True, exist_ok=True)
    (folder / "spec" / "tiny.arch").write_text(SPEC)
    spec = archspec.parse(folder / "spec" / "tiny.arch")
    net = archspec.network(spec)
    files, main = spec_files(spec)
    meta = {"network": net.name, "params": net.params, "files": files, "main": main, "data": "digits",
            "data_source": data_source, "seed": 0}
    path = folder / "run" / "last.safetensors"
    ckpt.save(path, Checkpoint(model=archspec.build(net).state_dict(), optimizer=None, scheduler=None,
                               epoch=1, rng=ckpt.rng_state(), meta=meta))
    return path


@pytest.fixture
def no_data_read(monkeypatch):
    """Fail the test if any data set is loaded."""
    def refuse(*a, **k):
        raise AssertionError(f"data was read: {a}")
    monkeypatch.setattr(D, "load", refuse)


# -- H3: checkpoint metadata never chooses the data -------------------------------------------------------

@pytest.mark.parametrize("source", ["synthetic-cifar10:400000", "synthetic-cifar100:5001", "~", "/",
                                    "{tmp}/data"])
def test_h3_checkpoint_data_source_is_refused_before_reading(tmp_path, no_data_read, source):
    (tmp_path / "data" / "train").mkdir(parents=True)
    source = source.format(tmp=tmp_path)
    path = checkpoint(tmp_path, source)
    t = time.monotonic()
    r = cli("eval", path)
    assert r.exit_code == 2 and "--data" in r.output, r.output
    assert source not in r.output.replace(str(path), "") and "400000" not in r.output
    assert time.monotonic() - t < QUICK


@pytest.mark.parametrize("source", [None, "digits", "synthetic-cifar10", "synthetic-cifar100",
                                    "synthetic-cifar10:5000"])
def test_h3_a_built_in_default_may_be_named_by_a_checkpoint(source):
    assert D.built_in_default(source)
    assert eval_source("x.safetensors", None, {"data_source": source}) == source


@pytest.mark.parametrize("source", ["synthetic-cifar10:1", "synthetic-cifar10:05000", "synthetic-imagenet",
                                    "digits/", ".", "", 3, ["digits"]])
def test_h3_anything_else_needs_data_named(source):
    assert not D.built_in_default(source)
    with pytest.raises(RunError, match="--data"):
        eval_source("x.safetensors", None, {"data_source": source})
    assert eval_source("x.safetensors", "digits", {"data_source": source}) == "digits"


def test_h3_a_checkpoint_of_the_digits_still_evaluates_without_data(tmp_path):
    r = cli("eval", checkpoint(tmp_path, None), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["data"] == "digits"


def test_h3_given_data_wins_over_the_checkpoint(tmp_path):
    r = cli("eval", checkpoint(tmp_path, "synthetic-cifar10:400000"), "--data", "digits", "--json")
    assert r.exit_code == 0, r.output


# -- the bounded reader -----------------------------------------------------------------------------------

def test_m4_read_bounded_refuses_a_fifo_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    t = time.monotonic()
    for read in (lambda p: read_bounded(p, 100, "image"), lambda p: regular_file(p, 100, "image"),
                 lambda p: open_bounded(p, 100, "image", follow=False)):
        with pytest.raises(RunError, match="it is a FIFO, not a regular file"):
            read(tmp_path / "pipe.png")
    assert time.monotonic() - t < QUICK


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "{tmp}"])
def test_read_bounded_refuses_devices_and_folders(tmp_path, path):
    path = path.format(tmp=tmp_path)
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    with pytest.raises(RunError, match="not a regular file") as e:
        read_bounded(path, 100, "metrics file")
    assert "metrics file" in e.value.message and str(path) in e.value.message


def test_read_bounded_refuses_a_file_over_its_limit_before_reading(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_bytes(b"x" * 101)
    with pytest.raises(RunError, match="101 bytes, over the 100-byte limit"):
        read_bounded(f, 100, "metrics file")
    assert read_bounded(f, 101, "metrics file") == b"x" * 101


def test_read_bounded_reads_at_most_its_limit_whatever_size_a_file_claims():
    proc = Path("/proc/self/maps")  # a regular file whose stat size is 0
    if not proc.is_file() or proc.stat().st_size != 0:
        pytest.skip("no /proc file that claims to be empty")
    with pytest.raises(RunError, match="more than the 10-byte limit"):
        read_bounded(proc, 10, "metrics file")


def test_read_bounded_names_a_missing_file_and_refuses_links_when_asked(tmp_path):
    with pytest.raises(RunError, match="no such file"):
        read_bounded(tmp_path / "none", 10, "checkpoint")
    (tmp_path / "real").write_text("ok")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_bounded(tmp_path / "link", 10, "x") == b"ok"
    with pytest.raises(RunError, match="symbolic link"):
        read_bounded(tmp_path / "link", 10, "x", follow=False)


# -- M4: a FIFO checkpoint; the pickle sniff does not refuse a safetensors header that starts like one ----

def test_m4_a_fifo_checkpoint_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "last.safetensors")
    t = time.monotonic()
    for command in (["eval"], ["inspect"]):
        r = cli(*command, tmp_path / "last.safetensors")
        assert r.exit_code == 2 and "it is a FIFO, not a regular file" in r.output, r.output
    assert time.monotonic() - t < QUICK


def test_a_safetensors_header_length_that_looks_like_a_pickle_is_read(tmp_path):
    """The first 8 bytes are the header's length: 0x...0280 starts b"\\x80\\x02", as a pickle does."""
    def header_length(pad: int) -> int:
        path = checkpoint(tmp_path, "x" * pad)
        return int.from_bytes(path.read_bytes()[:8], "little")

    base = header_length(0)
    target = base + (0x0280 - base) % 0x10000
    for pad in range(target - base - 8, target - base + 9):
        if pad >= 0 and header_length(pad) == target:
            break
    else:
        pytest.skip("no padding gave the header length wanted")
    path = tmp_path / "run" / "last.safetensors"
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert ckpt.load(path).meta["data_source"] == "x" * pad


# -- M5: metrics.jsonl on --resume -------------------------------------------------------------------------

from archspec.runtime.train import metrics as M  # noqa: E402


def test_m5_metrics_rows_read_back(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": float("nan")}]
    M.write_metrics(tmp_path / "metrics.jsonl", rows)
    back = M.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in back] == [1, 2] and back[0] == rows[0]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # cut by a crash: that epoch is redone
    assert len(M.read_metrics(tmp_path / "metrics.jsonl")) == 2
    assert M.read_metrics(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize("form", ["3", "[1]", '"epoch"', 'null', '{"epoch": "1"}', '{"epoch": true}',
                                  '{"epoch": -1}', '{"loss": 1}', '{"epoch": 1}\nnot json\n{"epoch": 2}',
                                  "[" * 100_000 + "]" * 100_000, '{"epoch": ' + "9" * 5000 + "}",
                                  b'{"epoch": 1, "x": "\xff"}'])
def test_m5_malformed_metrics_are_refused_with_exit_2(tmp_path, form):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(form if isinstance(form, bytes) else form.encode())
    with pytest.raises(RunError) as e:
        M.read_metrics(path)
    assert str(path) in e.value.message and len(e.value.message) < 300


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "large", "folder"])
def test_m5_metrics_are_read_bounded(tmp_path, monkeypatch, kind):
    path = tmp_path / "metrics.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "large":
        monkeypatch.setattr(M, "MAX_METRICS_BYTES", 1000)
        M.write_metrics(path, [{"epoch": i, "loss": 0.125} for i in range(100)])
    elif os.path.exists(kind):
        path.symlink_to(kind)
    else:
        pytest.skip(f"no {kind} here")
    t = time.monotonic()
    with pytest.raises(RunError, match="metrics file"):
        M.read_metrics(path)
    assert time.monotonic() - t < QUICK


# -- H2: CIFAR pickles are bounded before any array is made -----------------------------------------------

import pickle  # noqa: E402
import random  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

from archspec.runtime.data import cifar  # noqa: E402
from archspec.runtime.data import transforms as T  # noqa: E402

_CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_folder(root: Path, batch: dict | None = None, bad: str = "data_batch_1") -> Path:
    """A CIFAR-10 python folder of tiny batches, `bad` (the first read) holding `batch` when given."""
    root.mkdir(parents=True, exist_ok=True)
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    for name in _CIFAR10:
        (root / name).write_bytes(pickle.dumps(batch if batch is not None and name == bad else good, protocol=2))
    return root


def test_h2_a_sub_list_reused_deep_is_refused_before_any_array(tmp_path, monkeypatch):
    nested = [0] * 8
    for _ in range(26):
        nested = [nested, nested]  # 8 × 2**26 numbers once expanded
    root = cifar_folder(tmp_path / "set", {b"data": nested, b"labels": [0]})
    assert (root / "data_batch_1").stat().st_size < 1000
    monkeypatch.setattr(np, "asarray", lambda *a, **k: pytest.fail("an array was made"))
    t = time.monotonic()
    with pytest.raises(RunError, match="nests deeper than 6 levels") as e:
        D.load(str(root))
    assert str(root / "data_batch_1") in e.value.message and time.monotonic() - t < QUICK


def test_h2_a_row_reused_many_times_is_refused_by_its_expanded_size(tmp_path, monkeypatch):
    row = [0] * 3072
    root = cifar_folder(tmp_path / "set", {b"data": [row] * 100_000, b"labels": [0]})
    assert (root / "data_batch_1").stat().st_size < 300_000
    monkeypatch.setattr(np, "asarray", lambda *a, **k: pytest.fail("an array was made"))
    with pytest.raises(RunError, match=f"more than {cifar.MAX_VALUES:,} values"):
        D.load(str(root))


def test_h2_a_row_reused_deeper_than_first_met_is_refused(tmp_path):
    row = [0] * 3072
    deep = row
    for _ in range(6):
        deep = [deep]
    root = cifar_folder(tmp_path / "set", {b"labels": [row], b"data": [[deep]]})
    with pytest.raises(RunError, match="nests deeper"):
        D.load(str(root))


def test_h2_a_pickle_of_too_many_opcodes_is_refused_unpickled(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_PICKLE_OPS", 1000)
    monkeypatch.setattr(cifar._ArrayUnpickler, "load", lambda self: pytest.fail("it was unpickled"))
    root = cifar_folder(tmp_path / "set", {b"data": np.zeros((4, 3072), np.uint8), b"labels": list(range(2000))})
    with pytest.raises(RunError, match="more than 1,000 opcodes"):
        D.load(str(root))


def test_h2_cifar_batches_are_read_bounded(tmp_path, monkeypatch):
    root = cifar_folder(tmp_path / "set")
    monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(RunError, match="CIFAR batch .*over the 1,000-byte limit"):
        D.load(str(root))
    monkeypatch.undo()
    assert D.load(str(root)).classes == 10  # the official shapes still read, lists included
    cifar_folder(tmp_path / "lists", {b"data": np.zeros((4, 3, 32, 32), np.uint8).tolist(), b"labels": [0] * 4})
    assert D.load(str(tmp_path / "lists")).classes == 10


# -- M4 and M11: image folders ----------------------------------------------------------------------------

def _png_header_only(file: Path, width: int, height: int) -> None:
    """A PNG whose header claims width×height pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    file.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 7))
                     + chunk(b"IEND", b""))


def _image_tree(root: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (12, 10), (10, 20, 30)).save(root / split / cls / "0.png")


def test_m4_a_fifo_image_is_refused_not_waited_for(tmp_path):
    _image_tree(tmp_path)
    os.mkfifo(tmp_path / "train" / "cat" / "1.png")
    t = time.monotonic()
    with pytest.raises(RunError, match="1.png is not a regular file"):
        D.load(str(tmp_path))
    with pytest.raises(RunError, match="it is a FIFO"):
        T.load(tmp_path / "train" / "cat" / "1.png", 8, train=False, rng=random.Random(0), backend="pil")
    assert time.monotonic() - t < QUICK


@pytest.mark.parametrize("pixels", [100_000_000, 200_000_000], ids=["within PIL's warning", "past PIL's error"])
def test_m11_an_image_past_pils_own_limits_gets_archspecs_refusal_and_no_warning(tmp_path, pixels):
    """PIL warns above 89 Mpx and raises above 179 Mpx, each with its own words; the loader says its own
    limit either way, and prints nothing to stderr."""
    import warnings

    _png_header_only(tmp_path / "big.png", pixels // 10_000, 10_000)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(RunError, match=f"decompression bomb.*above the limit of {T.MAX_IMAGE_PIXELS:,}"):
            T.load(tmp_path / "big.png", 8, train=False, rng=random.Random(0), backend="pil")
    assert not seen


def test_m11_a_decompression_bomb_is_an_error_at_the_documented_pixel_count(tmp_path):
    side = int((T.MAX_IMAGE_PIXELS + 1) ** 0.5) + 1  # just above the limit, below PIL's own warning
    for name, (w, h) in {"over.png": (side, side), "ok.png": (64, 64)}.items():
        _png_header_only(tmp_path / name, w, h)
    t = time.monotonic()
    with pytest.raises(RunError, match=f"above the limit of {T.MAX_IMAGE_PIXELS:,}"):
        T.load(tmp_path / "over.png", 8, train=False, rng=random.Random(0), backend="pil")
    assert time.monotonic() - t < QUICK
    with pytest.raises(RunError) as e:  # under the limit: decoded (and found truncated here), not refused for size
        T.load(tmp_path / "ok.png", 8, train=False, rng=random.Random(0), backend="pil")
    assert "limit" not in e.value.message


@pytest.mark.parametrize("content", ["eps", "gif", "tiff"])
def test_m11_only_the_documented_formats_are_decoded_whatever_the_name(tmp_path, content):
    from PIL import Image

    file = tmp_path / "x.png"
    if content == "eps":
        file.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    else:
        Image.new("RGB", (12, 10)).save(file, format=content.upper())
    with pytest.raises(RunError, match="not a PNG, JPEG, WebP or BMP image"):
        T.load(file, 8, train=False, rng=random.Random(0), backend="pil")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_m11_the_documented_formats_decode(tmp_path, fmt):
    from PIL import Image

    file = tmp_path / "x.img"
    Image.new("RGB", (12, 10), (200, 10, 10)).save(file, format=fmt)
    out = T.load(file, 8, train=False, rng=random.Random(0), backend="pil")
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8 and int(out[0].float().mean()) > 150


@pytest.mark.slow
def test_m5_resume_with_a_bad_metrics_file_is_exit_2(tmp_path):
    from archspec.runtime.train import TrainConfig, train

    (tmp_path / "tiny.arch").write_text(SPEC)
    out = tmp_path / "run"
    train(TrainConfig(spec=str(tmp_path / "tiny.arch"), out=out, epochs=1, batch_size=256, progress=False,
                      device="cpu"), log=lambda m: None)
    metrics = out / "metrics.jsonl"
    metrics.write_text('[1]\n{"epoch": 1}\n')
    t = time.monotonic()
    r = cli("train", tmp_path / "tiny.arch", "--epochs", "2", "--out", out, "--resume", "--device", "cpu", "--quiet")
    assert r.exit_code == 2 and "metrics" in r.output, r.output
    assert time.monotonic() - t < 30
