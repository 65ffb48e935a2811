"""`archspec predict`: the top classes of images, from a training checkpoint, an exported ONNX file or a
torch.export program, each read with the class names and preprocessing it carries (`data.preprocessing`).
Images are read by the image loader of training (`data.transforms.load`: bounded reads, PNG, JPEG, WebP and
BMP recognised by content, decompression bombs refused) and transformed as evaluation does: the shorter
side resized to size/crop, the centre crop, then (x/255 − mean)/std per channel."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from archspec.errors import RunError
from archspec.files import regular_file
from archspec.runtime.data import transforms as T
from archspec.runtime.data.folders import image_files
from archspec.runtime.data.preprocessing import checked_preprocessing, checkpoint_preprocessing, default_preprocessing
from archspec.runtime.export import META_CLASSES, META_KEYS, META_PREPROCESSING, ort_session
from archspec.runtime.train.evaluation import load_trained

SUFFIXES = {".safetensors": "checkpoint", ".onnx": "ONNX file", ".pt2": "torch.export program"}
BATCH = 32  # images decoded and run at once
GRAY = (299, 587, 114)  # ITU-R 601 luma weights (per mille): PIL's RGB → L, for one-channel networks


@dataclass
class Predictor:
    """A network ready to classify images: `run` maps a float batch (N×C×H×W, normalised) to logits, for
    N from `min_batch` to `max_batch` (None: any); `preprocessing` is `data.preprocessing`'s dict;
    `assumed` says the preprocessing is a default, not recorded with the network."""

    run: Callable[[torch.Tensor], torch.Tensor]
    shape: tuple[int, int, int]
    classes: int
    preprocessing: dict[str, Any]
    kind: str
    assumed: bool = False
    min_batch: int = 1
    max_batch: int | None = None


def open_predictor(path: str | os.PathLike, *, max_memory: int | None = None, trust_legacy: bool = False,
                   allow_nonfinite: bool = False) -> Predictor:
    """The network in `path`, by its suffix: a checkpoint of `archspec train` (read as `archspec eval`
    reads it: `trust_legacy`, `allow_nonfinite`; a forward pass of `BATCH` images must fit `max_memory`),
    an ONNX file (run by onnxruntime) or a torch.export program (.pt2)."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RunError(f"{path}: predict reads a checkpoint (.safetensors), an ONNX file (.onnx) or a torch.export "
                       "program (.pt2)", "give one of those, written by archspec train or archspec export")
    regular_file(path, None, kind)
    if kind == "checkpoint":
        return _checkpoint(path, max_memory, trust_legacy, allow_nonfinite)
    return _onnx(path) if kind == "ONNX file" else _program(path)


def _checkpoint(path: Path, max_memory: int | None, trust_legacy: bool, allow_nonfinite: bool) -> Predictor:
    net, model, ck = load_trained(path, "cpu", BATCH, max_memory, trust_legacy=trust_legacy,
                                  allow_nonfinite=allow_nonfinite)
    model.eval()
    shape, classes = _checked_shapes(path, tuple(net.shape(net.input)), tuple(net.shape(net.output)))
    prep, exact = checkpoint_preprocessing(ck.meta, shape, classes, str(path))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    return Predictor(run, shape, classes, prep, "checkpoint", assumed=not exact)


def _onnx(path: Path) -> Predictor:
    try:
        session = ort_session(path, ["CPUExecutionProvider"], "predicting with an ONNX file")
    except RunError:
        raise
    except Exception as e:  # onnxruntime raises its own types for unreadable or invalid files
        raise RunError(f"cannot read {path} as an ONNX model: {_first_line(e)}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or not outputs:
        raise RunError(f"{path}: predict runs a network of one float image input",
                       "export it with archspec export --format onnx")
    dims, out = list(inputs[0].shape), list(outputs[0].shape)
    if len(dims) != 4 or not all(isinstance(d, int) for d in dims[1:]) or len(out) != 2 or not isinstance(out[1], int):
        raise RunError(f"{path}: predict runs a network of N×C×H×W images to N×classes scores",
                       "export it with archspec export --format onnx")
    shape, classes = _checked_shapes(path, tuple(dims[1:]), (out[1],))
    name = inputs[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    meta = session.get_modelmeta().custom_metadata_map
    prep, assumed = _artefact_preprocessing(meta, shape, classes, path)
    fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return Predictor(run, shape, classes, prep, "ONNX file", assumed, fixed or 1, fixed)


def _program(path: Path) -> Predictor:
    extra = dict.fromkeys(META_KEYS, "")
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # a file torch.export did not write, or a newer one
        raise RunError(f"cannot read {path} as a torch.export program: {_first_line(e)}") from None
    nodes = {n.name: n for n in program.graph.nodes}
    user = list(program.graph_signature.user_inputs)
    outputs = [n for n in program.graph.nodes if n.op == "output"]
    given = nodes[user[0]].meta.get("val") if len(user) == 1 and user[0] in nodes else None
    results = outputs[0].args[0] if outputs else ()
    got = results[0].meta.get("val") if results and isinstance(results[0], torch.fx.Node) else None
    if not isinstance(given, torch.Tensor) or given.dim() != 4 or not isinstance(got, torch.Tensor) or got.dim() != 2:
        raise RunError(f"{path}: predict runs a program of one N×C×H×W image input and N×classes scores",
                       "export it with archspec export --format pt2")
    try:
        c, h, w, k = (int(d) for d in (*given.shape[1:], got.shape[1]))
    except (TypeError, ValueError):
        raise RunError(f"{path}: only the batch dimension of a program's input may vary") from None
    shape, classes = _checked_shapes(path, (c, h, w), (k,))
    lo, hi = _batch_range(program, given.shape[0])
    module, dtype = program.module(), given.dtype

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x.to(dtype)).float()

    prep, assumed = _artefact_preprocessing({k: v for k, v in extra.items() if v}, shape, classes, path)
    return Predictor(run, shape, classes, prep, "torch.export program", assumed, lo, hi)


def _batch_range(program: torch.export.ExportedProgram, dim: Any) -> tuple[int, int | None]:
    """The batch sizes a program takes: its one size, or the range of its batch dimension."""
    if isinstance(dim, int):
        return dim, dim
    bounds = program.range_constraints.get(getattr(getattr(dim, "node", None), "expr", None))
    lo = int(bounds.lower) if bounds is not None and bounds.lower.is_finite else 1
    hi = int(bounds.upper) if bounds is not None and bounds.upper.is_finite else None
    return max(lo, 1), hi


def _checked_shapes(path: Path, shape: tuple, out: tuple) -> tuple[tuple[int, int, int], int]:
    """The input shape (C, H, W) and class count of a network predict can feed: square images of
    `transforms.IMAGE_SIZES`, one or three channels, a vector of class scores out."""
    if len(shape) != 3 or len(out) != 1:
        raise RunError(f"{path}: predict runs networks of C×H×W images to one score per class")
    c, h, w = (int(d) for d in shape)
    if h != w or c not in (1, 3):
        raise RunError(f"{path}: the network takes {c}×{h}×{w} inputs; predict reads square RGB or grayscale images")
    T.check_image_size(h, "the network's input size")
    return (c, h, w), int(out[0])


def _artefact_preprocessing(meta: Mapping[str, str], shape: tuple[int, int, int], classes: int,
                            path: Path) -> tuple[dict[str, Any], bool]:
    """The preprocessing in an exported file's metadata (`export.artefact_metadata`), checked; the default
    for its input where it carries none (and True: assumed)."""
    if META_CLASSES not in meta and META_PREPROCESSING not in meta:
        return default_preprocessing(shape, classes), True
    try:
        names, rest = json.loads(meta.get(META_CLASSES, "")), json.loads(meta.get(META_PREPROCESSING, ""))
    except (ValueError, RecursionError):
        raise RunError(f"{path}: its preprocessing metadata is not valid (not JSON)",
                       "export it again with this archspec") from None
    raw = {**rest, "classes": names} if isinstance(rest, dict) else rest
    return checked_preprocessing(raw, shape, classes, str(path)), False


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# ---- images ------------------------------------------------------------------------------------------


def image_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """The images named: each file as given (its content decides whether it is an image), and for a
    folder the image files (by suffix) in it and in its subfolders, sorted, links to folders not
    followed."""
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for root, dirs, _ in os.walk(path):
                dirs.sort()
                found.extend(image_files(Path(root)))
        elif path.exists():
            found.append(path)
        else:
            raise RunError(f"no image or folder at {path}", "give image files or folders of them")
    if not found:
        raise RunError("no images to predict", f"image files end in {', '.join(T.SUFFIXES)}")
    return found


def load_images(files: list[Path], prep: Mapping[str, Any], backend: str = "auto") -> torch.Tensor:
    """`files` decoded as evaluation reads them (`transforms.load`: resize to size/crop, centre crop; one
    channel by ITU-R 601 luma where the network takes one) and normalised by the preprocessing's mean
    and std: a float N×C×size×size batch."""
    backend = T.pick_backend(backend)
    images = []
    for f in files:
        x = T.load(f, prep["size"], train=False, rng=random.Random(0), backend=backend, crop=prep["crop"])
        if prep["channels"] == 1:
            weights = torch.tensor(GRAY, dtype=torch.int32).view(3, 1, 1)
            x = ((x.to(torch.int32) * weights).sum(0, keepdim=True) + 500).div(1000, rounding_mode="floor")
            x = x.to(torch.uint8)
        images.append(x)
    x = torch.stack(images)
    mean = torch.tensor(prep["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(prep["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return x.float().div_(255).sub_(mean).div_(std)


# ---- predicting --------------------------------------------------------------------------------------


def probabilities(p: Predictor, x: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities of the float batch `x`, run in pieces of the sizes the predictor takes
    (a piece below its smallest batch padded with zeros, whose scores are dropped)."""
    size = max(p.min_batch, min(BATCH, p.max_batch or BATCH))
    parts = []
    for start in range(0, len(x), size):
        chunk = x[start:start + size]
        n = len(chunk)
        if n < p.min_batch:
            chunk = torch.cat([chunk, chunk.new_zeros(p.min_batch - n, *chunk.shape[1:])])
        logits = p.run(chunk.contiguous())[:n]
        parts.append(logits.float().softmax(dim=-1))
    return torch.cat(parts)


def predict(path: str | os.PathLike, images: str | os.PathLike | Iterable[str | os.PathLike], topk: int = 5, *,
            max_memory: int | None = None, trust_legacy: bool = False, allow_nonfinite: bool = False,
            backend: str = "auto") -> list[dict[str, Any]]:
    """The `topk` most probable classes of each image (files, or folders of them: `image_paths`) by the
    network in `path` (`open_predictor`): per image `{"image": path, "top": [{"class": name, "index": i,
    "probability": p}, ...]}`, most probable first."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise RunError(f"--topk {topk!r}: the number of classes to show must be a whole number >= 1")
    files = image_paths([images] if isinstance(images, (str, os.PathLike)) else images)
    p = open_predictor(path, max_memory=max_memory, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite)
    return predict_with(p, files, topk, backend)


def predict_with(p: Predictor, files: list[Path], topk: int, backend: str = "auto") -> list[dict[str, Any]]:
    """`predict` with an open predictor, over `files`, decoded `BATCH` at a time."""
    names, k = p.preprocessing["classes"], min(topk, p.classes)
    results = []
    for start in range(0, len(files), BATCH):
        part = files[start:start + BATCH]
        probs = probabilities(p, load_images(part, p.preprocessing, backend))
        top = probs.topk(k, dim=-1)
        for f, values, indices in zip(part, top.values.tolist(), top.indices.tolist()):
            results.append({"image": str(f), "top": [{"class": names[i], "index": i, "probability": v}
                                                     for v, i in zip(values, indices)]})
    return results
