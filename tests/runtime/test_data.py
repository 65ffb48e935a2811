"""The training data sets: CIFAR in its four official layouts (written here, small), the digits default,
synthetic sets, image folders, and batching on the device."""

import builtins
import itertools
import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from archspec.errors import RunError
from archspec.runtime.data import batches, folder_loaders, load, steps_per_epoch

PER_FILE = 20


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8)


def _write_pickle(file: Path, data, labels, key: bytes = b"labels", protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    with file.open("wb") as f:
        pickle.dump({b"batch_label": b"fake", key: labels, b"data": data, b"filenames": [b"a.png"] * len(labels)},
                    f, protocol=protocol)


def write_cifar(root: Path, kind: str, *, sub: bool = False, seed: int = 0, **options) -> tuple[Path, dict]:
    """Small CIFAR files in one of the official layouts; returns the directory and what was written."""
    rng = np.random.default_rng(seed)
    classes = 100 if kind.startswith("cifar100") else 10
    subfolder = {"cifar10-py": "cifar-10-batches-py", "cifar100-py": "cifar-100-python",
                 "cifar10-bin": "cifar-10-batches-bin", "cifar100-bin": "cifar-100-binary"}[kind]
    where = root / subfolder if sub else root
    where.mkdir(parents=True, exist_ok=True)
    names = {"cifar10-py": ([f"data_batch_{i}" for i in range(1, 6)], "test_batch"),
             "cifar100-py": (["train"], "test"),
             "cifar10-bin": ([f"data_batch_{i}.bin" for i in range(1, 6)], "test_batch.bin"),
             "cifar100-bin": (["train.bin"], "test.bin")}[kind]
    written = {}
    for split, files in (("train", names[0]), ("test", [names[1]])):
        xs, ys = [], []
        for name in files:
            n = PER_FILE if classes == 10 else 3 * PER_FILE
            x, y = _images(n, rng), rng.integers(0, classes, n)
            if kind.endswith("-py"):
                _write_pickle(where / name, x, [int(v) for v in y], b"labels" if classes == 10 else b"fine_labels",
                              **options)
            elif classes == 10:
                (where / name).write_bytes(np.concatenate([y.astype(np.uint8)[:, None], x], 1).tobytes())
            else:
                coarse = (y // 5).astype(np.uint8)[:, None]
                (where / name).write_bytes(np.concatenate([coarse, y.astype(np.uint8)[:, None], x], 1).tobytes())
            xs.append(x)
            ys.append(y)
        written[split] = (np.concatenate(xs), np.concatenate(ys))
    return root, written


@pytest.mark.parametrize("kind", ["cifar10-py", "cifar100-py", "cifar10-bin", "cifar100-bin"])
@pytest.mark.parametrize("sub", [False, True])
def test_cifar_layouts_read_exactly(tmp_path, kind, sub):
    root, written = write_cifar(tmp_path, kind, sub=sub)
    ds = load(str(root))
    classes = 100 if kind.startswith("cifar100") else 10
    assert (ds.name, ds.classes, ds.shape, ds.augment, ds.pad) == (f"cifar{classes}", classes, (3, 32, 32), "cifar", 4)
    for split, (x, y) in written.items():
        got_x, got_y = (ds.train_x, ds.train_y) if split == "train" else (ds.test_x, ds.test_y)
        assert got_x.dtype == torch.uint8 and got_y.dtype == torch.int64
        assert torch.equal(got_x, torch.from_numpy(x.reshape(-1, 3, 32, 32)))
        assert torch.equal(got_y, torch.from_numpy(y.astype(np.int64)))
        # channel-major, as in the files: the first 1024 bytes are red, the next green
        assert got_x[3, 1, 2, 5] == x[3, 1024 + 2 * 32 + 5]
    train = written["train"][0].reshape(-1, 3, 1024) / 255
    np.testing.assert_allclose(ds.mean, train.mean(axis=(0, 2)), rtol=1e-9)
    np.testing.assert_allclose(ds.std, train.std(axis=(0, 2)), rtol=1e-9)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols_and_plain_data(tmp_path, protocol):
    rng = np.random.default_rng(1)
    x, y = _images(PER_FILE, rng), [int(v) for v in rng.integers(0, 10, PER_FILE)]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _write_pickle(tmp_path / name, x, y, protocol=protocol)
    ds = load(str(tmp_path))
    assert torch.equal(ds.test_x, torch.from_numpy(x.reshape(-1, 3, 32, 32)))


@pytest.mark.parametrize("form", ["bytes", "list", "str-keys"])
def test_pickle_data_as_bytes_or_list(tmp_path, form):
    rng = np.random.default_rng(2)
    x, y = _images(PER_FILE, rng), [int(v) for v in rng.integers(0, 10, PER_FILE)]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        if form == "str-keys":
            (tmp_path / name).write_bytes(pickle.dumps({"data": x, "labels": y}))
        else:
            data = x.tobytes() if form == "bytes" else x.tolist()
            _write_pickle(tmp_path / name, data, y, protocol=2)
    ds = load(str(tmp_path))
    assert torch.equal(ds.train_x[:PER_FILE], torch.from_numpy(x.reshape(-1, 3, 32, 32)))


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_System, _Eval])
@pytest.mark.parametrize("where", ["data", "labels"])
def test_malicious_pickle_is_refused_unrun(tmp_path, payload, where):
    root, _ = write_cifar(tmp_path / "set", "cifar10-py")
    marker = tmp_path / "pwned"
    evil = payload(marker)
    x = _images(PER_FILE, np.random.default_rng(3))
    labels = [0] * (PER_FILE - 1) + [evil] if where == "labels" else [0] * PER_FILE
    _write_pickle(root / "data_batch_3", evil if where == "data" else x, labels)
    with pytest.raises(RunError) as err:
        load(str(root))
    assert str(root / "data_batch_3") in err.value.message
    assert "objects other than arrays, lists, numbers and bytes" in err.value.message
    assert not marker.exists()


def test_truncated_pickle(tmp_path):
    root, _ = write_cifar(tmp_path, "cifar100-py")
    raw = (root / "train").read_bytes()
    (root / "train").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(RunError) as err:
        load(str(root))
    assert str(root / "train") in err.value.message


def test_pickle_with_wrong_keys_or_sizes(tmp_path):
    root, _ = write_cifar(tmp_path, "cifar10-py")
    _write_pickle(root / "test_batch", _images(PER_FILE, np.random.default_rng(0)), [0] * PER_FILE, key=b"fine_labels")
    with pytest.raises(RunError, match="lacks the key labels") as err:
        load(str(root))
    assert str(root / "test_batch") in err.value.message
    _write_pickle(root / "test_batch", np.zeros((PER_FILE, 3000), np.uint8), [0] * PER_FILE)
    with pytest.raises(RunError, match="not N×3072"):
        load(str(root))
    _write_pickle(root / "test_batch", np.zeros((PER_FILE, 3072), np.uint8), [0] * (PER_FILE - 1))
    with pytest.raises(RunError, match="20 images but 19 labels"):
        load(str(root))
    (root / "test_batch").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(RunError, match="not the dict"):
        load(str(root))


def test_wrong_size_bin_and_bad_labels(tmp_path):
    root, _ = write_cifar(tmp_path, "cifar10-bin", sub=True)
    file = root / "cifar-10-batches-bin" / "data_batch_2.bin"
    file.write_bytes(file.read_bytes()[:-7])
    with pytest.raises(RunError, match="3073-byte records") as err:
        load(str(root))
    assert str(file) in err.value.message
    file.write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(RunError, match=r"outside 0\.\.9") as err:
        load(str(root))
    assert str(file) in err.value.message


def test_directory_without_a_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RunError) as err:
        load(str(tmp_path))
    assert str(tmp_path) in err.value.message
    for name in ("data_batch_1", "test_batch", "train.bin", "cifar-100-python", "train/<class>"):
        assert name in err.value.hint
    (tmp_path / "data_batch_1").write_bytes(b"")
    with pytest.raises(RunError, match="data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch missing"):
        load(str(tmp_path))


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(RunError, match=f"no data at {tmp_path / 'nope'}"):
        load(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("")
    with pytest.raises(RunError, match="is a file"):
        load(str(tmp_path / "f"))


def test_two_sets_in_one_directory_is_ambiguous(tmp_path):
    write_cifar(tmp_path, "cifar10-py", sub=True)
    write_cifar(tmp_path, "cifar100-bin", sub=True)
    with pytest.raises(RunError, match="more than one data set"):
        load(str(tmp_path))


@pytest.fixture(scope="module")
def digits():
    return load(None)


def test_digits_default(digits):
    ds = digits
    assert (ds.name, ds.shape, ds.classes, ds.augment, ds.pad) == ("digits", (1, 8, 8), 10, "crop", 1)
    assert (len(ds.train_x), len(ds.test_x)) == (1437, 360)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.max() == 255
    again = load(None, seed=7)
    assert torch.equal(ds.test_x, again.test_x) and torch.equal(ds.train_y, again.train_y)
    assert torch.bincount(ds.test_y, minlength=10).min() >= 30
    assert torch.bincount(ds.test_y, minlength=10).max() <= 42
    np.testing.assert_allclose(ds.mean[0], ds.train_x.double().mean().item() / 255, rtol=1e-9)


def test_synthetic():
    ds = load("synthetic-cifar10:500", seed=3)
    assert (ds.classes, len(ds.train_x), len(ds.test_x), ds.shape, ds.pad) == (10, 500, 100, (3, 32, 32), 4)
    assert torch.equal(ds.train_x, load("synthetic-cifar10:500", seed=3).train_x)
    assert not torch.equal(ds.train_x, load("synthetic-cifar10:500", seed=4).train_x)
    # learnable: the nearest class-mean colour beats chance by far
    colour = ds.train_x.float().mean((2, 3))
    centres = torch.stack([colour[ds.train_y == c].mean(0) for c in range(10)])
    guess = torch.cdist(ds.test_x.float().mean((2, 3)), centres).argmin(1)
    assert (guess == ds.test_y).float().mean() > 0.5
    big = load("synthetic-cifar100")
    assert (big.classes, len(big.train_x), len(big.test_x)) == (100, 5000, 1000)
    with pytest.raises(RunError, match="positive integer"):
        load("synthetic-cifar10:many")
    with pytest.raises(RunError, match="unknown synthetic set"):
        load("synthetic-mnist")


def _index_labels(ds):
    """Labels that say which image each batch row is."""
    return torch.arange(len(ds.train_x))


def test_batches_deterministic_and_rng_free(digits):
    y = _index_labels(digits)
    state = torch.get_rng_state()

    def run(epoch, seed=0):
        return list(batches(digits.train_x, y, 100, train=True, ds=digits, device=torch.device("cpu"),
                            epoch=epoch, seed=seed))

    a, b, c, d = run(0), run(0), run(1), run(0, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(a) == steps_per_epoch(1437, 100) == 14
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][1], d[0][1])
    assert a[0][0].dtype == torch.float32 and a[0][1].dtype == torch.int64 and a[0][0].shape == (100, 1, 8, 8)


def test_rank_shards_disjoint_and_even(digits):
    y = _index_labels(digits)
    seen = []
    for rank in range(3):
        got = [yb for _, yb in batches(digits.train_x, y, 64, train=True, ds=digits, device="cpu", epoch=2,
                                       rank=rank, world=3)]
        assert len(got) == steps_per_epoch(1437, 64, world=3) == 7
        seen.append(torch.cat(got))
    everything = torch.cat(seen)
    assert len(everything.unique()) == len(everything) == 3 * 7 * 64
    tested = []
    for rank in range(2):
        got = [yb for _, yb in batches(digits.train_x, y, 100, train=False, ds=digits, device="cpu",
                                       rank=rank, world=2)]
        assert len(got) <= steps_per_epoch(1437, 100, world=2, train=False)
        tested.append(torch.cat(got))
    assert torch.equal(tested[0], torch.arange(0, 1437, 2)) and torch.equal(tested[1], torch.arange(1, 1437, 2))


def test_normalisation(digits):
    (x, _), = batches(digits.train_x, digits.train_y, 2000, train=False, ds=digits, device="cpu")
    assert abs(x.mean().item()) < 1e-5 and abs(x.std().item() - 1) < 1e-3


def _crops(image: torch.Tensor, pad: int) -> torch.Tensor:
    """Every crop of the zero-padded image back to its own size."""
    c, h, w = image.shape
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    return torch.stack([padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)])


@pytest.mark.parametrize("which", ["digits", "synthetic"])
def test_augmentation_is_a_padded_crop(digits, which):
    ds = digits if which == "digits" else load("synthetic-cifar10:64")
    raw = dataclasses.replace(ds, mean=(0.0,) * ds.shape[0], std=(1.0,) * ds.shape[0])
    y = torch.arange(len(ds.train_x))
    moved = flipped = 0
    for xb, yb in itertools.islice(batches(ds.train_x, y, 64, train=True, ds=raw, device="cpu", epoch=1), 6):
        assert xb.shape == (64, *ds.shape)
        pixels = (xb * 255).round().to(torch.uint8)
        for img, i in zip(pixels, yb):
            original = ds.train_x[i]
            crops = _crops(original, ds.pad)
            plain = (crops == img).flatten(1).all(1)
            mirrored = (crops.flip(-1) == img).flatten(1).all(1)
            assert plain.any() or (ds.augment == "cifar" and mirrored.any())
            moved += not torch.equal(img, original)
            flipped += not plain.any()
    assert moved > 0
    assert (flipped > 0) == (ds.augment == "cifar")


def _png_tree(root: Path, sizes: dict[str, int]) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in sizes.items():
        for cls in ("cat", "dog", "fox"):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = (18, 18) if split == "val" else (20 + i, 28 - i)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")


def test_image_folders(tmp_path):
    _png_tree(tmp_path, {"train": 4, "val": 2})
    ds = load(str(tmp_path))
    assert (ds.folder, ds.classes, ds.train_x, ds.shape, ds.augment) == (tmp_path, 3, None, (3, 224, 224), "none")
    assert (ds.mean, ds.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet's, not estimated
    state = torch.get_rng_state()
    train, test, classes = folder_loaders(tmp_path, 16, 4, 0)
    assert classes == 3 and len(train) == 3
    epoch0 = list(train)
    train.set_epoch(0)
    again = list(train)
    assert torch.equal(torch.get_rng_state(), state)
    for (xa, ya), (xb, yb) in zip(epoch0, again):
        assert xa.dtype == torch.uint8 and xa.shape == (4, 3, 16, 16) and ya.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(torch.cat([y for _, y in epoch0]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    tested = list(test)
    assert [len(y) for _, y in tested] == [4, 2]
    from PIL import Image

    first = torch.from_numpy(np.array(Image.open(tmp_path / "val" / "cat" / "0.png"))).permute(2, 0, 1)
    assert torch.equal(tested[0][0][0], first[:, 1:17, 1:17])  # resized to 16/0.875 = 18 (as it is): its centre


def test_image_folders_sharded_and_worker_independent(tmp_path):
    _png_tree(tmp_path, {"train": 4, "val": 1})
    shards = [folder_loaders(tmp_path, 8, 2, 0, rank=r, world=2, seed=5)[0] for r in range(2)]
    labels = [torch.cat([y for _, y in s]) for s in shards]
    assert len(labels[0]) == len(labels[1]) == 6
    in_workers = torch.cat([x for x, _ in folder_loaders(tmp_path, 8, 2, 1, rank=0, world=2, seed=5)[0]])
    shards[0].set_epoch(0)
    assert torch.equal(in_workers, torch.cat([x for x, _ in shards[0]]))


def test_image_folder_errors(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(RunError, match="no val/"):
        load(str(tmp_path))
    (tmp_path / "val" / "b").mkdir(parents=True)
    with pytest.raises(RunError, match="holds no images") as err:
        load(str(tmp_path))
    assert str(tmp_path / "train") in err.value.message


# ---- unreadable images, oversized sets, batches larger than a set ----------------------------------

def _huge_png(file: Path, side: int = 30000) -> None:
    """A PNG whose header claims side×side pixels and whose data is a few bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    file.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 7))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("broken", ["empty", "text", "bomb"])
@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_is_one_line_naming_the_file(tmp_path, broken, workers):
    _png_tree(tmp_path, {"train": 2, "val": 1})
    bad = tmp_path / "val" / "dog" / "9.png"
    if broken == "empty":
        bad.write_bytes(b"")
    elif broken == "text":
        bad.write_text("not an image\n")
    else:
        _huge_png(bad)
    train, test, _ = folder_loaders(tmp_path, 8, 2, workers)
    assert len(list(train)) == 3  # the training images are fine
    train.close()
    with pytest.raises(RunError) as err:
        list(test)
    message = err.value.message
    assert message.startswith(f"cannot read the image {bad}: ") and "\n" not in message, message
    assert "worker" not in message and "Traceback" not in message
    if broken == "bomb":
        assert "decompression bomb" in message


def test_unreadable_image_among_the_sampled_ones(tmp_path):
    _png_tree(tmp_path, {"train": 2, "val": 1})
    _huge_png(tmp_path / "train" / "cat" / "0.png")
    with pytest.raises(RunError, match="cannot read the image .*cat/0.png"):
        load(str(tmp_path))  # a sample of the training images is decoded in this process, before training


def test_synthetic_size_is_bounded_before_allocating(monkeypatch):
    from archspec.runtime.data import synthetic

    with pytest.raises(RunError, match="above the limit of 10,000,000"):
        load("synthetic-cifar10:100000000000")
    for count in ("0", "-5", "²", "1" * 5000, "1e3"):
        with pytest.raises(RunError, match="positive integer"):
            load(f"synthetic-cifar10:{count}")
    monkeypatch.setattr(synthetic, "_memory", lambda: 2**30)
    with pytest.raises(RunError, match="more than this machine's 1.0 GiB") as err:
        load("synthetic-cifar10:1000000")
    assert "at most 67,216 images" in err.value.hint
    monkeypatch.setattr(synthetic, "_memory", lambda: 2**24)  # the same bound, at a size quick to draw
    with pytest.raises(RunError, match="at most 1,050 images"):
        load("synthetic-cifar10:1051")
    assert len(load("synthetic-cifar10:1050").train_x) == 1050  # within the machine's memory


def test_a_batch_larger_than_a_share_is_refused():
    from archspec.runtime.data import check_batch_size

    check_batch_size(100, 100)
    check_batch_size(100, 50, world=2)
    with pytest.raises(RunError, match="batch size 101 is larger than the 100 training images"):
        check_batch_size(100, 101)
    with pytest.raises(RunError, match="larger than the 50 training images .*shared among 2") as err:
        check_batch_size(101, 51, world=2, name="x")
    assert "--batch-size 50 or less" in err.value.hint


def test_huge_seeds_shuffle(digits):
    for seed in (2**63 - 1, 2**62 + 12345):
        x, y = next(batches(digits.train_x, digits.train_y, 8, train=True, ds=digits, device="cpu", seed=seed))
        assert x.shape == (8, 1, 8, 8)
