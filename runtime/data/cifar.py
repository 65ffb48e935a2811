"""CIFAR-10 and CIFAR-100 in their four official layouts (python pickles and binary records), read
without running anything a file names, and within bounds: each batch through the bounded reader (a
regular file of at most `MAX_BATCH_BYTES`), a pickle's opcodes counted (`MAX_PICKLE_OPS`) before it is
unpickled, and the object graph it made checked for depth (`MAX_DEPTH`) and for the values it would
expand to (`MAX_VALUES`, a list reused many times counted each time) before any array is made of it."""

from __future__ import annotations

import importlib
import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archspec.errors import RunError
from archspec.files import read_bounded

from .dataset import Dataset, in_memory

_PIXELS = 3 * 32 * 32
# The official files are at most 160 MB (CIFAR-100's train); a batch re-pickled as lists is larger.
MAX_BATCH_BYTES = 512 * 1024 * 1024
MAX_PICKLE_OPS = 2_000_000  # an official batch has under 300,000 (a few per label and file name)
MAX_DEPTH = 6  # dict → 'data' list → image → channel → row → pixel
MAX_VALUES = 16 * 1024 * 1024  # numbers and strings a batch's lists expand to (an array counts its size)


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


LAYOUTS = (
    _Layout("CIFAR-10 (python)", 10, "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
            "test_batch", False),
    _Layout("CIFAR-100 (python)", 100, "cifar-100-python", ("train",), "test", False),
    _Layout("CIFAR-10 (binary)", 10, "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            "test_batch.bin", True),
    _Layout("CIFAR-100 (binary)", 100, "cifar-100-binary", ("train.bin",), "test.bin", True),
)


def cifar(layout: _Layout, root: Path) -> Dataset:
    read = _read_bin if layout.binary else _read_pickle
    parts = [read(root / f, layout.classes) for f in layout.train]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = read(root / layout.test, layout.classes)
    return in_memory(f"cifar{layout.classes}", torch.from_numpy(train_x.reshape(-1, 3, 32, 32)),
                      torch.from_numpy(train_y), torch.from_numpy(test_x.reshape(-1, 3, 32, 32).copy()),
                      torch.from_numpy(test_y), layout.classes, augment="cifar", pad=4)


def _read_bin(file: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: records of a label byte (CIFAR-100: coarse then fine) and 3072 pixels."""
    labels = 1 if classes == 10 else 2
    record = labels + _PIXELS
    raw = read_bounded(file, MAX_BATCH_BYTES, "CIFAR batch")
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
    raw = read_bounded(file, MAX_BATCH_BYTES, "CIFAR batch")
    try:
        _count_ops(file, raw)
        batch = _ArrayUnpickler(io.BytesIO(raw), file).load()
    except RunError:
        raise
    except Exception as e:  # any malformed pickle: a message that names the file, not a traceback
        raise RunError(f"{file} is not a readable CIFAR python batch: {type(e).__name__}: {_first_line(e)}",
                       hint="the file may be truncated; extract the archive again") from None
    _check_graph(file, batch)
    if not isinstance(batch, dict):
        raise RunError(f"{file} holds a {type(batch).__name__}, not the dict of a CIFAR python batch")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", label_key) if k not in batch]
    if missing:
        keys = ", ".join(sorted(ascii(k)[:40] for k in batch)[:20]) or "none"
        raise RunError(f"{file} lacks the key{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                       f"(it has: {keys})", hint=f"a CIFAR-{classes} python batch holds 'data' and '{label_key}'")
    x = _pixels(file, batch["data"])
    try:
        y = np.asarray(batch[label_key])
    except Exception as e:
        raise RunError(f"{file}: '{label_key}' is not a list of numbers ({_first_line(e)})") from None
    return x, _check_labels(file, y, classes, len(x))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _count_ops(file: Path, raw: bytes) -> None:
    """Refuse a pickle of more than MAX_PICKLE_OPS opcodes before unpickling it: each may make an object."""
    for n, _ in enumerate(pickletools.genops(io.BytesIO(raw)), 1):
        if n > MAX_PICKLE_OPS:
            raise RunError(f"{file} is not a CIFAR python batch: its pickle has more than {MAX_PICKLE_OPS:,} "
                           "opcodes", hint="the official batches hold one array and short lists")


def _check_graph(file: Path, obj: Any) -> None:
    """Refuse an unpickled batch that nests deeper than MAX_DEPTH or would expand to more than
    MAX_VALUES values: a list may be reused at many places (a pickle's memo), so a few bytes can
    stand for billions of numbers. Each distinct container is walked once (its expanded size is kept)."""
    seen: dict[int, tuple[int, int]] = {}  # id → (values it expands to, levels of containers in it)
    keep: list[Any] = []  # the containers measured, alive while their ids are keys

    def measure(node: Any, depth: int) -> tuple[int, int]:
        if isinstance(node, np.ndarray):
            return int(node.size), 0
        if not isinstance(node, (list, tuple, dict)):
            return 1, 0
        known = seen.get(id(node))
        if known is None:
            if depth > MAX_DEPTH:
                raise RunError(f"{file} is not a CIFAR python batch: it nests deeper than {MAX_DEPTH} levels")
            total, height = 0, 0
            for item in (list(node.keys()) + list(node.values()) if isinstance(node, dict) else node):
                n, h = measure(item, depth + 1)
                total, height = total + n, max(height, h + 1)
                if total > MAX_VALUES:
                    raise RunError(f"{file} is not a CIFAR python batch: its lists hold more than "
                                   f"{MAX_VALUES:,} values", hint="the official batches hold the pixels as one "
                                                                  "uint8 array")
            known = seen[id(node)] = (total, max(height, 1))
            keep.append(node)
        if depth - 1 + known[1] > MAX_DEPTH:  # a container reused deeper than where it was first met
            raise RunError(f"{file} is not a CIFAR python batch: it nests deeper than {MAX_DEPTH} levels")
        return known

    measure(obj, 1)


def _pixels(file: Path, data: Any) -> np.ndarray:
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, list):
        try:
            data = np.asarray(data)
        except Exception as e:
            raise RunError(f"{file}: 'data' is not a list of pixel values ({_first_line(e)})") from None
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
