"""Training checkpoints as single safetensors files: written atomically so a crash never costs the last good
checkpoint, and read without unpickling so a checkpoint from anywhere cannot run code.

A file holds the model's tensors under their plain state_dict names, so that
`model.load_state_dict(safetensors.torch.load_file(path))` reads a weights-only file directly, and the
optimizer, scheduler and RNG states (when present) under the prefixes `optimizer/`, `scheduler/` and
`rng/`, and a run's moving average of the weights, where it keeps one, under `ema/` (as
`AveragedModel.state_dict()` names them: `module.<name>` and `n_averaged`); its string metadata holds
`format`, `version`, the epoch, a JSON skeleton per part (the nesting around the tensors, naming each
tensor; `ema` only where there is one), `meta` as plain JSON, `digests`, the SHA-256 of every tensor's
dtype, shape and bytes, and `header_digest`, the SHA-256 of every other metadata entry (the digests
included), so that a flipped bit, a relabelled dtype, a changed shape or edited metadata is reported
instead of trained on. Every file `save` writes carries both. A file without them (written by an older
archspec, or stripped) is refused unless the caller trusts it (`trust_legacy`); its byte digests, where
present, are still checked. Weights that are NaN or infinite are refused unless the caller allows them
(`allow_nonfinite`). Files whose model tensors carry a `model/` prefix (written before) load the same
way, as the skeleton names them."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from archspec.errors import RunError
from archspec.files import kind_of, open_nonblocking, write_atomic


__all__ = ["Checkpoint", "RunMeta", "flatten", "unflatten", "save", "load", "rng_state", "set_rng_state",
           "seal", "ema_weights", "tensor_digest", "header_digest", "FORMAT", "VERSION"]

FORMAT = "archspec-checkpoint"
VERSION = "1"
_PARTS = ("model", "optimizer", "scheduler", "rng")
_EMA = "ema"  # the optional part: a file without it is a run without a moving average
# Deepest JSON nesting a checkpoint's metadata may hold: real skeletons are under ten levels deep, and
# every reader of the metadata recurses.
MAX_JSON_DEPTH = 64
# A temporary file of `save` untouched this long belongs to a killed writer, not a live one.
STALE_TEMP_SECONDS = 60.0

# Skeleton tags: a tagged node is a one-key JSON object whose key starts with "$"; plain dicts with
# str keys that do not start with "$" stay plain objects so that the header remains readable.
_TENSOR, _TUPLE, _DICT, _COUNTER, _FLOAT = "$tensor", "$tuple", "$dict", "$counter", "$float"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

_DAMAGED_HINT = ("the file is damaged (a disk, copy or edit changed it): use another checkpoint, such as "
                 "best.safetensors or a backup")
_CORRUPT_HINT = "it may be cut short or written by another program: resume from another checkpoint or start afresh"
_LEGACY_HINT = ("load it only if you trust where it came from: --trust-legacy (trust_legacy=True); training "
                "again, or resuming and saving once, writes a file with digests")
_NONFINITE_HINT = ("the run that wrote it diverged, or the file was edited; load it anyway with --allow-nonfinite "
                   "(allow_nonfinite=True)")
_PICKLE_HINT = ("archspec checkpoints are safetensors files; pickles (torch.save) are never loaded because "
                "loading one can run arbitrary code")


@dataclass
class Checkpoint:
    """Everything needed to continue a training run exactly where it stopped."""

    model: dict[str, torch.Tensor]
    optimizer: dict | None
    scheduler: dict | None
    epoch: int
    rng: dict[str, torch.Tensor]
    meta: dict[str, Any]
    ema: dict[str, torch.Tensor] | None = None  # AveragedModel.state_dict() of the weights' moving average


def ema_weights(ema: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged module's state_dict out of an AveragedModel's: its `module.` names, without the count."""
    return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}


class RunMeta(BaseModel):
    """The types of the `meta` entries `archspec train` writes, checked when a file is read so that a
    damaged or hostile value is refused there rather than crashing where it is used. An entry may be
    absent (another writer, an older file) but never of another type; other entries are kept."""

    model_config = ConfigDict(extra="allow", strict=True)

    network: str = ""
    params: dict[str, Any] = {}
    files: dict[str, str] = {}
    main: str = ""
    recipe: dict[str, Any] = {}
    data: str = ""
    data_source: str | None = None
    seed: int = Field(0, ge=-2**63, lt=2**64)  # what torch.manual_seed takes
    memory: str | None = None
    best_test_acc: float = -1.0  # runs that chose `best` on the test set (before validation splits)
    val_split: int | float = 0  # as given: a count of training images, or a fraction of them
    val_images: int = Field(0, ge=0)
    best_val_acc: float = -1.0
    best_epoch: int = Field(0, ge=0)


# -- nested structures <-> tensors + JSON skeleton

def flatten(obj: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure into tensors named `<prefix>/<path>` and a JSON-able skeleton, so that
    optimizer and scheduler states can be stored without pickle. Int dict keys, tuples, Counters and
    non-finite floats survive the trip through JSON; anything else unsupported raises TypeError."""
    tensors: dict[str, torch.Tensor] = {}
    return tensors, _encode(obj, prefix, tensors)


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {_FLOAT: "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, torch.Tensor):
        name, n = path, 1
        while name in tensors:
            n += 1
            name = f"{path}~{n}"
        tensors[name] = obj
        return {_TENSOR: name}
    if isinstance(obj, (list, tuple)):
        items = [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]
        return {_TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int)):
                raise TypeError(f"cannot store a dict key of type {type(k).__name__} at '{path}'")
        pairs = [(k, _encode(v, _join(path, k), tensors)) for k, v in obj.items()]
        if isinstance(obj, Counter):
            return {_COUNTER: [list(p) for p in pairs]}
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return dict(pairs)
        return {_DICT: [list(p) for p in pairs]}
    raise TypeError(f"cannot store a {type(obj).__name__} at '{path}' in a checkpoint")


def _join(path: str, key: object) -> str:
    return f"{path}/{key}" if path else str(key)


def unflatten(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Rebuild what `flatten` split. Raises ValueError when the skeleton is malformed or names a tensor
    that `tensors` lacks, so that a damaged file is reported rather than half-restored."""
    if skeleton is None or isinstance(skeleton, (bool, int, float, str)):
        return skeleton
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        raise ValueError(f"unexpected {type(skeleton).__name__} in the skeleton")
    tags = [k for k in skeleton if k.startswith("$")]
    if not tags:
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if len(skeleton) != 1:
        raise ValueError(f"tag {tags[0]} has company: {sorted(skeleton)}")
    tag, body = tags[0], skeleton[tags[0]]
    if tag == _TENSOR:
        if not isinstance(body, str):
            raise ValueError(f"tensor reference {body!r} is not a name")
        if body not in tensors:
            raise ValueError(f"it refers to tensor '{body}', which is not in the file")
        return tensors[body]
    if tag == _TUPLE:
        if not isinstance(body, list):
            raise ValueError("a tuple is not stored as a list")
        return tuple(unflatten(v, tensors) for v in body)
    if tag in (_DICT, _COUNTER):
        if not isinstance(body, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) for p in body):
            raise ValueError("a dict is not stored as a list of [key, value] pairs")
        out = {k: unflatten(v, tensors) for k, v in body}
        return Counter(out) if tag == _COUNTER else out
    if tag == _FLOAT:
        if body not in _NON_FINITE:
            raise ValueError(f"unknown float {body!r}")
        return _NON_FINITE[body]
    raise ValueError(f"unknown tag {tag}")


# -- saving

def save(path: str | Path, ck: Checkpoint) -> None:
    """Write `ck` to `path` atomically and durably: the file at `path` is either the previous checkpoint
    or the complete new one, even if the process is killed or the machine loses power meanwhile."""
    path = Path(path)
    tensors, metadata = _encode_checkpoint(ck)
    tensors = _storable(tensors)
    metadata = seal(metadata, tensors)
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata),
                 check=lambda tmp: _check_written(tmp, metadata, len(tensors)),
                 hint="check that the folder is writable and the disk has room")
    _remove_stale_temps(path.parent)


def _digest(t: torch.Tensor) -> str:
    """SHA-256 of a CPU tensor's bytes as safetensors stores them (the digest of older files)."""
    return hashlib.sha256(_bytes(t)).hexdigest()


def _bytes(t: torch.Tensor):
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a CPU tensor's dtype, shape and bytes: relabelling the same bytes as another dtype or
    shape changes it."""
    h = hashlib.sha256(f"{str(t.dtype).removeprefix('torch.')} {list(t.shape)}\n".encode())
    h.update(_bytes(t))
    return h.hexdigest()


def header_digest(metadata: Mapping[str, str]) -> str:
    """SHA-256 of every metadata entry but `header_digest` itself, in a canonical order."""
    rest = {k: v for k, v in metadata.items() if k != "header_digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """`metadata` with the `digests` of `tensors` (CPU, contiguous) and the `header_digest` over it all."""
    out = {k: v for k, v in metadata.items() if k not in ("digests", "header_digest")}
    out["digests"] = json.dumps({name: tensor_digest(t) for name, t in tensors.items()}, separators=(",", ":"))
    out["header_digest"] = header_digest(out)
    return out


# What `tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")` creates for a checkpoint NAME.
_TEMP = re.compile(r"\..+\.safetensors\.[a-z0-9_]{8}\.tmp")


def _remove_stale_temps(folder: Path) -> None:
    """Remove what a writer killed mid-save left in `folder` (only this module's temporary names, only
    plain files no one has touched for a while, so a concurrent save keeps its own)."""
    try:
        names = [e.name for e in os.scandir(folder) if _TEMP.fullmatch(e.name)]
    except OSError:
        return
    now = time.time()
    for name in names:
        try:
            st = os.lstat(folder / name)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TEMP_SECONDS:
                os.unlink(folder / name)
        except OSError:
            pass


def _encode_checkpoint(ck: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if isinstance(ck.epoch, bool) or not isinstance(ck.epoch, int):
        raise TypeError(f"Checkpoint.epoch must be an int, not {type(ck.epoch).__name__}")
    if not isinstance(ck.meta, dict):
        raise TypeError(f"Checkpoint.meta must be a dict, not {type(ck.meta).__name__}")
    metadata = {"format": FORMAT, "version": VERSION, "epoch": json.dumps(ck.epoch), "meta": json.dumps(ck.meta)}
    tensors: dict[str, torch.Tensor] = {}
    for part in _PARTS + ((_EMA,) if ck.ema is not None else ()):
        found, skeleton = flatten(getattr(ck, part), "" if part == "model" else part)
        clash = next((name for name in found if name in tensors), None)
        if clash is not None:
            raise TypeError(f"model tensor '{clash}' has the name of a {part} tensor: a state_dict name may "
                            f"not start with '{part}/'")
        tensors.update(found)
        metadata[part] = json.dumps(skeleton, allow_nan=False, separators=(",", ":"))
    return tensors, metadata


def _storable(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no memory, as safetensors requires (state dicts may hold
    tied weights or views of one storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        ptr = t.untyped_storage().data_ptr()
        if not t.is_contiguous() or (ptr and ptr in seen):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[name] = t
    return out


def _check_written(tmp: Path, metadata: Mapping[str, str], count: int) -> None:
    """Reread the header of the new file before it replaces the old one: a short write must not win."""
    with safe_open(tmp, framework="pt") as f:
        if f.metadata() != dict(metadata) or len(f.keys()) != count:
            raise OSError(errno.EIO, "the written file does not read back")


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


# -- loading

def load(path: str | Path, *, map_location: str | torch.device = "cpu", trust_legacy: bool = False,
         allow_nonfinite: bool = False, weights: str = "model") -> Checkpoint:
    """Read a checkpoint written by `save`, using only safetensors and JSON: nothing in the file can run
    code. Every way a file can be wrong is a RunError that names the file: a file without digests is
    refused unless `trust_legacy`, a NaN or infinite weight unless `allow_nonfinite`. With `weights`
    "ema", the returned `model` is the moving average of the weights the run kept (`ema_weights`), and a
    file without one is a RunError."""
    if weights not in ("model", "ema"):
        raise ValueError(f"weights is 'model' or 'ema', not {weights!r}")
    path = Path(path)
    if not path.exists():
        raise RunError(f"no checkpoint at {path}")
    if path.is_dir():
        inside = path / "last.safetensors"
        raise _unreadable(path, "it is a folder", f"did you mean {inside}?" if inside.is_file() else None)
    kind = _kind(path)
    if kind is not None:  # a FIFO would block the reader, a device never ends
        raise _unreadable(path, f"it is {kind}, not a regular file", None)
    try:
        with open_nonblocking(path) as f:
            kind = kind_of(os.fstat(f.fileno()).st_mode)
            head = f.read(9) if kind is None else b""
    except OSError as e:
        raise _unreadable(path, _reason(e), None) from None
    if kind is not None:
        raise _unreadable(path, f"it is {kind}, not a regular file", None)
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{"
    safetensors = len(head) == 9 and head[8:9] == b"{"
    if not safetensors and (head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
                            or head[:4] == b"PK\x03\x04"):
        raise _unreadable(path, "it is a pickle or zip file (as torch.save writes), not safetensors", _PICKLE_HINT)
    head = head[:8]
    if len(head) < 8:
        raise _unreadable(path, "the file is empty" if not head else f"the file is only {len(head)} bytes long")
    metadata, tensors = _read(path)
    _check_digests(path, metadata, tensors, trust_legacy)

    device = torch.device(map_location)
    placed = tensors if device.type == "cpu" else {k: t.to(device) for k, t in tensors.items()}
    parts = {part: _decode(path, metadata, part, tensors if part == "rng" else placed) for part in _PARTS}
    ema = _decode(path, metadata, _EMA, placed) if _EMA in metadata else None
    epoch = _json(path, metadata, "epoch")
    meta = _json(path, metadata, "meta")

    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise _unreadable(path, f"its epoch {epoch!r} is not a count")
    if not isinstance(meta, dict):
        raise _unreadable(path, "its meta is not a JSON object")
    try:
        RunMeta.model_validate(meta)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"]))
        raise _unreadable(path, f"its meta entry {_safe(where)} is wrong: {err['msg'].lower()}") from None
    model, rng = parts["model"], parts["rng"]
    if not _tensor_dict(model):
        raise _unreadable(path, "its model is not a mapping of names to tensors")
    if ema is not None and not _tensor_dict(ema):
        raise _unreadable(path, "its ema is not a mapping of names to tensors")
    if weights == "ema":
        if ema is None:
            raise RunError(f"{path} holds no moving average of the weights", "its run was trained without "
                           "ema (--recipe-set ema=true); evaluate its own weights")
        model = ema_weights(ema)
    if not allow_nonfinite:
        _check_finite(path, model)
        if ema is not None:
            _check_finite(path, ema)
    if not _tensor_dict(rng) or any(t.dtype != torch.uint8 for t in rng.values()):
        raise _unreadable(path, "its rng is not a mapping of names to byte tensors")
    for part in ("optimizer", "scheduler"):
        if parts[part] is not None and not isinstance(parts[part], dict):
            raise _unreadable(path, f"its {part} state is not a dict")
    return Checkpoint(model=model, optimizer=parts["optimizer"], scheduler=parts["scheduler"], epoch=epoch,
                      rng=rng, meta=meta, ema=ema)


def _kind(path: Path) -> str | None:
    """What `path` is when it is not a regular file ("a FIFO"), else None (and None when it cannot be
    looked at: opening it then says why)."""
    try:
        return kind_of(os.stat(path).st_mode)
    except OSError:
        return None


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata()
            _check_format(path, metadata)
            return dict(metadata), {k: f.get_tensor(k) for k in f.keys()}
    except RunError:
        raise
    except Exception as e:  # safetensors reports damage as several exception types
        raise _unreadable(path, f"not a valid safetensors file ({e})") from None


def _check_format(path: Path, metadata: Mapping[str, str] | None) -> None:
    fmt = (metadata or {}).get("format")
    if fmt is None:
        raise _unreadable(path, "it is a safetensors file without archspec metadata",
                          "only files written by archspec train can be resumed or evaluated")
    if fmt != FORMAT:
        raise _unreadable(path, f"its format is '{fmt}', not '{FORMAT}'",
                          "only files written by archspec train can be resumed or evaluated")
    version = metadata.get("version")
    if version != VERSION:
        raise _unreadable(path, f"it is checkpoint version {version!r}; this archspec reads version {VERSION}",
                          "use the archspec release that wrote it")


def _json(path: Path, metadata: Mapping[str, str], key: str) -> Any:
    if key not in metadata:
        raise _unreadable(path, f"its metadata lacks '{key}'")
    try:
        value = json.loads(metadata[key])
    except ValueError as e:
        raise _unreadable(path, f"its '{key}' entry is not valid JSON ({e})") from None
    except RecursionError:  # Python's parser recurses once per level
        deep = True
    else:
        deep = _too_deep(value)
    if deep:
        raise _unreadable(path, f"its '{key}' entry nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _too_deep(value: Any) -> bool:
    """Whether parsed JSON nests deeper than MAX_JSON_DEPTH, found without recursing."""
    todo = [(value, 1)]
    while todo:
        v, depth = todo.pop()
        if isinstance(v, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                return True
            todo.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def _check_digests(path: Path, metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor],
                   trust_legacy: bool) -> None:
    """The header against its digest, then every tensor's dtype, shape and bytes against theirs. A file
    without a header digest is refused unless `trust_legacy`; its byte digests, if any, are still checked."""
    sealed = "header_digest" in metadata
    if not sealed and not trust_legacy:
        what = ("its digests cover only tensor bytes (an older archspec wrote it)" if "digests" in metadata
                else "it has no digests (an older archspec wrote it, or they were removed)")
        raise _unreadable(path, what, _LEGACY_HINT)
    if sealed and metadata["header_digest"] != header_digest(metadata):
        raise _unreadable(path, "its header does not match its digest: its metadata changed after it was written",
                          _DAMAGED_HINT)
    if "digests" not in metadata:
        if sealed:
            raise _unreadable(path, "it has a header digest but no tensor digests")
        return
    digests = _json(path, metadata, "digests")
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise _unreadable(path, "its digests are not a JSON object of strings")
    if digests.keys() != tensors.keys():
        odd = sorted(digests.keys() ^ tensors.keys())[0]
        raise _unreadable(path, f"its digests do not list exactly its tensors (tensor {_safe(odd)})")
    # an unsealed file holds byte digests (older archspec) or, stripped of its header digest, full ones
    forms = (tensor_digest,) if sealed else (_digest, tensor_digest)
    changed = "dtype, shape or bytes" if sealed else "bytes"
    for name, t in tensors.items():
        if all(form(t) != digests[name] for form in forms):
            raise _unreadable(path, f"tensor {_safe(name)} does not match its digest: its {changed} changed after "
                                    "it was written", _DAMAGED_HINT)


def _check_finite(path: Path, model: Mapping[str, torch.Tensor]) -> None:
    """An error naming the first floating or complex weight that holds a NaN or an infinity."""
    for name, t in model.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise _unreadable(path, f"weight {_safe(name)} holds NaN or infinite values", _NONFINITE_HINT)


def _decode(path: Path, metadata: Mapping[str, str], part: str, tensors: Mapping[str, torch.Tensor]) -> Any:
    skeleton = _json(path, metadata, part)
    try:
        return unflatten(skeleton, tensors)
    except (ValueError, TypeError, AttributeError) as e:
        raise _unreadable(path, f"its '{part}' entry is damaged: {e}") from None


def _tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _safe(name: str) -> str:
    """A name read from a file, quoted for a message: control characters escaped, length bounded."""
    shown = name if len(name) <= 200 else name[:200] + "..."
    return f"'{shown}'" if shown.isprintable() else ascii(shown)


def _unreadable(path: Path, what: str, hint: str | None = _CORRUPT_HINT) -> RunError:
    return RunError(f"{path} is not a readable archspec checkpoint: {what}", hint)


# -- random number generators

def rng_state() -> dict[str, torch.Tensor]:
    """The torch CPU generator and, when CUDA is available, every device's generator (stacked under
    `cuda`), so that dropout and augmentation continue the same sequence after a resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(rng: Mapping[str, torch.Tensor]) -> None:
    """Restore what `rng_state` captured; CUDA states are restored for the devices present (a run may
    resume on fewer GPUs, or on none)."""
    try:
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].detach().cpu())
        if "cuda" in rng and torch.cuda.is_available():
            states = rng["cuda"].detach().cpu()
            for i in range(min(len(states), torch.cuda.device_count())):
                torch.cuda.set_rng_state(states[i].contiguous(), i)
    except (RuntimeError, TypeError, ValueError) as e:
        raise RunError(f"cannot restore the random number generator state: {e}") from None
