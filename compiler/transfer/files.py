"""Weights files read within a bound given before they are opened: `.safetensors` files (their recorded
order kept, an archspec checkpoint's model tensors alone) and torch files (`torch.save` zip archives of
members stored uncompressed, read with `weights_only=True`: nothing is unpickled into arbitrary objects);
`WeightsFile` (a file's tensors, read before the target is built), `Source` (what a transfer takes
weights from), and `save_state_dict`, which records the names' order in the safetensors metadata."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from archspec.errors import RunError
from archspec.files import open_bounded, write_atomic

from ..activation_memory import default_limit, human
from .report import TransferError


ORDER_KEY = "archspec.order"  # safetensors metadata: the tensors' names in module order, as JSON
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file, read (`open_weights`) before the target module is built."""

    path: Path
    state: dict[str, torch.Tensor]

    @property
    def bytes(self) -> int:
        """The memory the tensors take."""
        return sum(t.numel() * t.element_size() for t in self.state.values())


Source = nn.Module | Mapping[str, torch.Tensor] | WeightsFile | str | os.PathLike


def open_weights(path: str | os.PathLike, max_bytes: int | None = None) -> WeightsFile:
    """The tensors of the weights file at `path`, read as `load_state_dict` reads them, within `max_bytes`
    (by default the host's memory)."""
    return WeightsFile(Path(path), load_state_dict(path, max_bytes))


def load_state_dict(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file, or of a torch file (`torch.save` of a state dict, or of a dict
    holding one under `state_dict` or `model`) read with `weights_only=True`: no file is unpickled into
    arbitrary objects. A safetensors file keeps no order; archspec's own record it (`save_state_dict`).
    Only a regular file of at most `max_bytes` (by default the host's memory) is opened, without waiting
    (a FIFO is refused); a torch file's members must be stored uncompressed and add up to no more."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in TORCH_SUFFIXES:
        raise TransferError(f"cannot read weights from {path}: unknown kind of file '{suffix or path.name}'",
                            f"weights are read from .safetensors or torch files ({', '.join(TORCH_SUFFIXES)})")
    limit = default_limit("cpu") if max_bytes is None else max_bytes
    try:
        f = open_bounded(path, limit, "weights file")
    except RunError as e:
        raise TransferError(e.message.replace("weights file", "weights from", 1),
                            e.hint if "limit" not in e.message else "raise --max-memory if the file is meant") from None
    try:
        if suffix == ".safetensors":
            return _read_safetensors(path, f)
        obj = torch.load(_bounded_torch_file(f, path, limit), map_location="cpu", weights_only=True)
        return _tensor_mapping(obj, path)
    except TransferError:
        raise
    except Exception as e:  # a damaged file or one weights_only refuses: say which, never a traceback
        raise TransferError(f"cannot read weights from {path}: {type(e).__name__}: {e}".splitlines()[0][:400],
                            "a torch file must hold only tensors and plain containers (weights_only=True)") from None
    finally:
        f.close()


def _bounded_torch_file(f, path: Path, limit: int):
    """`f` (open, at its start) when it is a torch file whose tensors fit `limit` bytes: a zip archive (as
    `torch.save` writes) of members stored uncompressed whose sizes add up to at most `limit`, or a file
    in the legacy format, whose size was bounded when it was opened."""
    if zipfile.is_zipfile(f):
        try:
            members = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise TransferError(f"cannot read weights from {path}: a damaged zip archive ({why})") from None
        packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
        if packed:
            raise TransferError(f"cannot read weights from {path}: member '{packed[0][:100]}' is compressed",
                                "torch.save stores its members uncompressed; save the weights with torch.save")
        total = sum(m.file_size for m in members)
        if total > limit:
            raise TransferError(f"cannot read weights from {path}: its members hold {human(total)}, above the "
                                f"limit of {human(limit)}", "raise --max-memory if the file is meant")
    f.seek(0)
    return f


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write `state` as safetensors, with the order of its names recorded so that a later transfer can
    walk it in module order."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={ORDER_KEY: json.dumps(list(tensors))}))


class _Unordered(dict):
    """A state dict whose order means nothing (a .safetensors file without a recorded order)."""

    ordered = False


def _read_safetensors(path: Path, opened) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, read through `opened` (the file checked and opened by
    `load_state_dict`, reopened by its descriptor where the system can, so a path swapped since is not
    read)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    proc = f"/proc/self/fd/{opened.fileno()}"
    name = proc if os.path.exists(proc) else str(path)
    with safe_open(name, framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(name)
    tensors = _checkpoint_model(tensors)
    order = meta.get(ORDER_KEY)
    if order is not None:
        try:
            names = json.loads(order)
        except ValueError:
            names = None
        if isinstance(names, list) and sorted(map(str, names)) == sorted(tensors):
            return {k: tensors[k] for k in names}
    return _Unordered(tensors)


def _checkpoint_model(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An archspec training checkpoint also holds optimizer, scheduler and random states under `NAME/`
    prefixes (and, in older files, the model under `model/`): the model's tensors alone, unprefixed."""
    if not any("/" in k for k in tensors):
        return tensors
    return {k.removeprefix("model/"): v for k, v in tensors.items() if "/" not in k or k.startswith("model/")}


def _tensor_mapping(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for candidate in (obj, *(obj.get(k) for k in ("state_dict", "model", "model_state_dict")
                             if isinstance(obj, Mapping))):
        if isinstance(candidate, Mapping) and candidate and all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in candidate.items()):
            return dict(candidate)
    raise TransferError(f"{path} holds no state dict (a mapping of names to tensors)",
                        "save one with torch.save(model.state_dict(), PATH)")
