"""Weights from elsewhere — another library's module, a hand-written nn.Module, a state-dict file — into
an archspec module. Names differ between libraries, so tensors are paired by structure: both sides are
walked module by module in order (a module's tensors are one group: a conv's weight, a batch norm's
weight, bias, running_mean, running_var and num_batches_tracked), and paired group by group, tensor by
tensor, with shapes that must agree. A `crossdepthwise` merge keeps its inflows' per-channel tensors
stacked in one module: its group may take as many consecutive source groups (one batch norm per
inflow), concatenated.

All or nothing: every source tensor is checked before anything is paired (dense, real, finite, of a
floating-point type; batch counters whole numbers), every value is converted to its target's type and
shape before the first is copied, and nothing in the module changes unless every tensor found its pair.

An nn.Module source is walked in registration order and, where that does not line up, in the order its
forward pass calls its modules. A file is read without unpickling anything, and within a bound given
before it is opened (`open_weights`): a regular file of at most that many bytes, a torch file's members
stored uncompressed, as `torch.save` writes them, with sizes that add up to no more."""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from archspec.errors import RunError
from archspec.files import open_bounded, write_atomic

from .activation_memory import default_limit, human
from .modules import CrossDepthwise

COUNTER = "num_batches_tracked"  # a batch norm's step count: kept where one side has none
ORDER_KEY = "archspec.order"  # safetensors metadata: the tensors' names in module order, as JSON
_RANK = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3, COUNTER: 4}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class TransferError(RunError):
    """The source's structure is not the target's, or the source cannot be read; nothing was written.
    `matched` counts the pairs found before the first mismatch."""

    def __init__(self, message: str, hint: str | None = None, matched: int = 0):
        super().__init__(message, hint)
        self.matched = matched


@dataclass(frozen=True)
class Pair:
    """One target tensor and the source tensor(s) it was given: one, or several stacked."""

    source: tuple[str, ...]
    target: str
    source_shapes: tuple[tuple[int, ...], ...]
    target_shape: tuple[int, ...]

    @property
    def how(self) -> str:
        if len(self.source) > 1:
            return "stack"
        return "copy" if self.source_shapes[0] == self.target_shape else "reshape"


@dataclass
class TransferReport:
    """What `transfer_weights` wrote: every pair, in order, and the batch counters one side lacked."""

    order: str  # how the source was walked: registration, execution, names, file
    pairs: list[Pair] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # target counters the source has none for: left as they were
    ignored: list[str] = field(default_factory=list)  # source counters the target has no place for

    @property
    def tensors(self) -> int:
        return len(self.pairs)

    @property
    def values(self) -> int:
        return sum(prod(p.target_shape) for p in self.pairs)

    def counts(self) -> dict[str, int]:
        """Pairs per kind: copy, reshape, stack."""
        out = {"copy": 0, "reshape": 0, "stack": 0}
        for p in self.pairs:
            out[p.how] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        how = "by name" if self.order == "names" else f"in {self.order} order"
        line = (f"transferred {self.tensors} tensors ({self.values:,} values) {how}: "
                f"{c['copy']} copied, {c['reshape']} reshaped, {c['stack']} stacked")
        if self.kept:
            line += f"; {len(self.kept)} batch counters kept"
        if self.ignored:
            line += f"; {len(self.ignored)} source batch counters unused"
        return line

    def lines(self) -> list[str]:
        """One line per pair: source name(s) and shape(s) → target name and shape."""
        return [f"{' + '.join(p.source)} {' + '.join(_fmt(s) for s in p.source_shapes)} -> {p.target} "
                f"{_fmt(p.target_shape)}" + ("" if p.how == "copy" else f" ({p.how})") for p in self.pairs]

    def __str__(self) -> str:
        return "\n".join([self.summary(), *self.lines()])


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


def transfer_weights(source: Source, gm: nn.Module) -> TransferReport:
    """Copy `source`'s parameters and buffers into `gm` (an archspec-built module), paired by structure,
    and say what went where. `source` is an nn.Module, a state dict (name → tensor, in module order), a
    `WeightsFile`, or the path of a `.safetensors` or torch file (read within the host's memory). Raises
    TransferError, and changes nothing in `gm`, when a source tensor is not dense, real, finite weights,
    or when the structures differ (naming the first tensors that do not line up)."""
    target = _groups(list(gm.state_dict(keep_vars=True).items()))
    widths = _stacked_widths(gm)
    best: TransferError | None = None
    checked = False
    for order, items in _walks(source, gm):  # lazily: the forward pass of an execution walk only if needed
        if not checked:  # every walk holds the same tensors: checked once, before any is paired
            check_tensors(items)
            checked = True
        if order == "names":
            plan = _by_name(items, gm)
            if plan is not None:
                return _write(plan)
            continue
        try:
            plan = _plan(_groups(items), target, widths, order)
        except TransferError as e:
            if best is None or e.matched > best.matched:
                best = e
            continue
        return _write(plan)
    assert best is not None
    raise best


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


def check_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Refuse (a TransferError naming the first) a tensor that is not weights: sparse or otherwise not
    dense, quantized, complex, of a type that is not floating point (a batch counter: a whole number), or
    holding a value that is not finite."""
    for name, t in items:
        what = _not_weights(name, t)
        if what is not None:
            raise TransferError(f"source tensor '{name[:200]}' {what}; nothing was written",
                                "weights are dense, real, finite floating-point tensors (batch counters whole "
                                "numbers)")


def _not_weights(name: str, t: torch.Tensor) -> str | None:
    if t.layout != torch.strided:
        return f"is not dense ({str(t.layout).removeprefix('torch.')})"
    if t.is_quantized:
        return f"is quantized ({str(t.dtype).removeprefix('torch.')})"
    if t.is_meta:
        return "holds no values (a meta tensor)"
    if t.is_complex():
        return f"is complex ({str(t.dtype).removeprefix('torch.')})"
    counter = name.rsplit(".", 1)[-1] == COUNTER
    if counter:
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            return f"is a batch counter of type {str(t.dtype).removeprefix('torch.')}, not a whole number"
        return None
    if not t.dtype.is_floating_point:
        return f"is of type {str(t.dtype).removeprefix('torch.')}, not floating point"
    if t.numel() and not _finite(t.detach()):
        return "holds values that are not finite (inf or nan)"
    return None


def _finite(t: torch.Tensor) -> bool:
    try:
        return bool(torch.isfinite(t).all())
    except (RuntimeError, NotImplementedError):  # a type isfinite has no kernel for (float8): as float32
        return bool(torch.isfinite(t.float()).all())


def check_memory(weights: WeightsFile, params: int, limit: int | None, bytes_per_value: int = 4) -> None:
    """Refuse a transfer whose memory, counted before the target is built, is above `limit` bytes (by
    default the host's memory): the source's tensors, the target's `params` weights, and each converted
    value staged before the first copy."""
    limit = default_limit("cpu") if limit is None else limit
    need = weights.bytes + 2 * params * bytes_per_value
    if need > limit:
        raise TransferError(f"transferring {weights.path} needs about {human(need)} (its tensors "
                            f"{human(weights.bytes)}, the target's {params:,} parameters twice), above the limit "
                            f"of {human(limit)}", "raise --max-memory if this is meant")


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write `state` as safetensors, with the order of its names recorded so that a later transfer can
    walk it in module order."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata={ORDER_KEY: json.dumps(list(tensors))}))


# ---- the two sides ---------------------------------------------------------------------------------------


@dataclass
class _Group:
    """The tensors one module owns, in order, its batch counter apart, and where its first one is in the walk."""

    module: str
    names: list[str]
    tensors: list[torch.Tensor]
    counter: tuple[str, torch.Tensor] | None
    start: int


def _groups(items: list[tuple[str, torch.Tensor]]) -> list[_Group]:
    groups: list[_Group] = []
    for i, (name, t) in enumerate(items):
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if not groups or groups[-1].module != module:
            groups.append(_Group(module, [], [], None, i))
        g = groups[-1]
        if name.rsplit(".", 1)[-1] == COUNTER and g.counter is None:
            g.counter = (name, t)
        else:
            g.names.append(name)
            g.tensors.append(t)
    return groups


def _stacked_widths(gm: nn.Module) -> dict[str, list[int]]:
    """Modules that keep several inflows' tensors stacked: module name → the inflows' widths."""
    return {name: list(m.widths) for name, m in gm.named_modules() if isinstance(m, CrossDepthwise)}


def _walks(source: Source, gm: nn.Module) -> Iterable[tuple[str, list[tuple[str, torch.Tensor]]]]:
    """The ways to walk `source`, most likely first: (how, [(name, tensor), ...])."""
    if isinstance(source, (str, os.PathLike, WeightsFile)):
        state = source.state if isinstance(source, WeightsFile) else load_state_dict(source)
        ordered = getattr(state, "ordered", True)
        yield "names", list(state.items())
        yield ("file", list(state.items())) if ordered else ("name-sorted", _sorted(state))
        return
    if isinstance(source, nn.Module):
        items = list(source.state_dict().items())
        yield "names", items
        yield "registration", items
        executed = _execution_order(source, gm, items)
        if executed is not None and [k for k, _ in executed] != [k for k, _ in items]:
            yield "execution", executed
        return
    if isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise TransferError(f"a state dict maps names to tensors; {bad[0]!r} is {type(source[bad[0]]).__name__}")
        yield "names", list(source.items())
        yield "state-dict", list(source.items())
        return
    raise TransferError(f"cannot take weights from a {type(source).__name__}",
                        "give an nn.Module, a state dict, or the path of a .safetensors or torch file")


def _execution_order(model: nn.Module, gm: nn.Module, items: list[tuple[str, torch.Tensor]]
                     ) -> list[tuple[str, torch.Tensor]] | None:
    """`items` reordered module by module as `model`'s forward pass first calls the modules (one sample
    of `gm`'s input shape, in eval mode, no gradients; nothing in `model` changes), or None where that
    cannot be run."""
    graph = getattr(gm, "graph", None)
    shape = next((n.meta.get("shape") for n in graph.nodes if n.op == "placeholder"), None) if graph else None
    first = next(iter(model.parameters()), None)
    if shape is None or first is None:
        return None
    called: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def seen(module: nn.Module, args: object) -> None:
        called.setdefault(names[id(module)], len(called))

    hooks = [m.register_forward_pre_hook(seen) for m in model.modules()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), dtype=first.dtype, device=first.device))
    except Exception:  # a module that will not run on a zero sample of this shape: registration order only
        return None
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    late = len(called)
    groups = _groups(items)
    ranked = sorted(range(len(groups)), key=lambda i: (called.get(groups[i].module, late), i))
    out: list[tuple[str, torch.Tensor]] = []
    for i in ranked:
        g = groups[i]
        out += list(zip(g.names, g.tensors))
        if g.counter is not None:
            out.append(g.counter)
    return out


# ---- pairing ---------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    order: str
    writes: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (target, value)
    report: TransferReport | None = None


def _plan(src: list[_Group], dst: list[_Group], widths: Mapping[str, list[int]], order: str) -> _Plan:
    plan = _Plan(order, report=TransferReport(order))
    n_src = sum(len(g.names) + (g.counter is not None) for g in src)
    n_dst = sum(len(g.names) + (g.counter is not None) for g in dst)
    i = 0
    for t in dst:
        s = src[i] if i < len(src) else None
        if s is not None and _fits(s, t):
            _one(plan, s, t)
            i += 1
            continue
        w = widths.get(t.module, [])
        if len(w) > 1 and _stack_fits(src[i:i + len(w)], t, w):
            _stack(plan, src[i:i + len(w)], t)
            i += len(w)
            continue
        raise _mismatch(s, t, n_src, n_dst, len(plan.report.pairs), order)
    if i < len(src):
        s = src[i]
        raise TransferError(
            f"the source has more tensors than the target: source tensor {s.start + 1} of {n_src}, "
            f"'{s.names[0] if s.names else s.counter[0]}' ({_fmt(_shape_of(s))}), has no counterpart after the "
            f"target's last ({n_dst} tensors)", _hint(order), matched=len(plan.report.pairs))
    return plan


def _same_layout(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether a tensor of shape `a` holds what one of shape `b` does, element for element: equal shapes,
    equal but for dimensions of size 1 (a 1×1 convolution and a linear layer), or one the other with its
    leading dimensions flattened (L×C per-inflow values stacked as L·C)."""
    if a == b:
        return True
    a, b = tuple(d for d in a if d != 1), tuple(d for d in b if d != 1)
    if a == b:
        return True
    long, short = (a, b) if len(a) > len(b) else (b, a)
    k = len(long) - len(short) + 1
    return bool(short) and prod(long[:k]) == short[0] and long[k:] == short[1:]


def _fits(s: _Group, t: _Group) -> bool:
    return len(s.tensors) == len(t.tensors) and all(
        _same_layout(tuple(a.shape), tuple(b.shape)) for a, b in zip(s.tensors, t.tensors))


def _stack_fits(groups: list[_Group], t: _Group, widths: list[int]) -> bool:
    """Whether `groups` (one per inflow) stacked channel-wise give `t`'s tensors."""
    if len(groups) != len(widths) or any(len(g.tensors) != len(t.tensors) for g in groups):
        return False
    for j, target in enumerate(t.tensors):
        per, rest = divmod(target.numel(), sum(widths))
        if rest or any(g.tensors[j].numel() != w * per for g, w in zip(groups, widths)):
            return False
    return True


def _one(plan: _Plan, s: _Group, t: _Group) -> None:
    for sn, st, tn, tt in zip(s.names, s.tensors, t.names, t.tensors):
        plan.writes.append((tt, st.detach().reshape(tt.shape)))
        plan.report.pairs.append(Pair((sn,), tn, (tuple(st.shape),), tuple(tt.shape)))
    _counters(plan, [s.counter] if s.counter else [], t)


def _stack(plan: _Plan, groups: list[_Group], t: _Group) -> None:
    for j, (tn, tt) in enumerate(zip(t.names, t.tensors)):
        parts = [g.tensors[j].detach().reshape(-1) for g in groups]
        plan.writes.append((tt, torch.cat([p.to(parts[0].device) for p in parts]).reshape(tt.shape)))
        plan.report.pairs.append(Pair(tuple(g.names[j] for g in groups), tn,
                                      tuple(tuple(g.tensors[j].shape) for g in groups), tuple(tt.shape)))
    _counters(plan, [g.counter for g in groups if g.counter], t)


def _counters(plan: _Plan, sources: list[tuple[str, torch.Tensor]], t: _Group) -> None:
    """A target batch counter takes the source's (the largest, for stacked inflows); without one it keeps
    its own."""
    if t.counter is None:
        plan.report.ignored += [name for name, _ in sources]
        return
    if not sources:
        plan.report.kept.append(t.counter[0])
        return
    name, tt = t.counter
    value = max((v.detach().reshape(()).cpu() for _, v in sources), key=lambda v: int(v))
    plan.writes.append((tt, value))
    plan.report.pairs.append(Pair(tuple(n for n, _ in sources), name, tuple(tuple(v.shape) for _, v in sources),
                                  tuple(tt.shape)))


def _by_name(items: list[tuple[str, torch.Tensor]], gm: nn.Module) -> _Plan | None:
    """Where the source's names and shapes are the target's own (an archspec module of the same spec), the
    pairs by name; otherwise None."""
    target = gm.state_dict(keep_vars=True)
    source = dict(items)
    if set(source) != set(target) or any(tuple(source[k].shape) != tuple(v.shape) for k, v in target.items()):
        return None
    plan = _Plan("names", report=TransferReport("names"))
    for k, tt in target.items():
        plan.writes.append((tt, source[k].detach()))
        plan.report.pairs.append(Pair((k,), k, (tuple(source[k].shape),), tuple(tt.shape)))
    return plan


def _write(plan: _Plan) -> TransferReport:
    """Stage every value in its target's type, device and shape, then copy them all: a value that cannot
    be staged leaves the module as it was."""
    assert plan.report is not None
    staged: list[tuple[torch.Tensor, torch.Tensor]] = []
    for (target, value), pair in zip(plan.writes, plan.report.pairs):
        if value.dtype.is_floating_point != target.dtype.is_floating_point:
            raise TransferError(f"source tensor '{pair.source[0]}' ({str(value.dtype).removeprefix('torch.')}) "
                                f"cannot become target tensor '{pair.target}' "
                                f"({str(target.dtype).removeprefix('torch.')}); nothing was written")
        try:
            staged.append((target, value.detach().to(device=target.device, dtype=target.dtype).reshape(target.shape)))
        except (RuntimeError, MemoryError) as e:
            raise TransferError(f"cannot stage source tensor '{pair.source[0]}' for target tensor '{pair.target}': "
                                f"{type(e).__name__}: {e}".splitlines()[0][:400] + "; nothing was written") from None
    with torch.no_grad():
        for target, value in staged:
            target.copy_(value)
    return plan.report


# ---- errors and files ------------------------------------------------------------------------------------


def _mismatch(s: _Group | None, t: _Group, n_src: int, n_dst: int, matched: int, order: str) -> TransferError:
    """The first tensors of `s` and `t` that do not line up, named with their shapes and positions."""
    if s is None:
        name, shape = (t.names[0], tuple(t.tensors[0].shape)) if t.names else (t.counter[0], ())
        return TransferError(
            f"the target has more tensors than the source: target tensor {t.start + 1} of {n_dst}, "
            f"'{name}' ({_fmt(shape)}), has no counterpart after the source's last ({n_src} tensors)",
            _hint(order), matched=matched)
    j = next((j for j, (a, b) in enumerate(zip(s.tensors, t.tensors))
              if not _same_layout(tuple(a.shape), tuple(b.shape))), min(len(s.tensors), len(t.tensors)))
    return TransferError(f"the structures differ at {_where('source', s, j, n_src)} and "
                         f"{_where('target', t, j, n_dst)}; {matched} tensors matched before them",
                         _hint(order), matched=matched)


def _where(side: str, g: _Group, j: int, n: int) -> str:
    """Tensor `j` of group `g`, or what the group holds when it has fewer tensors."""
    if j < len(g.tensors):
        return f"{side} tensor {g.start + j + 1} of {n}, '{g.names[j]}' ({_fmt(tuple(g.tensors[j].shape))})"
    held = ", ".join(_fmt(tuple(x.shape)) for x in g.tensors) or "none"
    return f"{side} module '{g.module}', which has only {len(g.tensors)} tensors ({held})"


def _hint(order: str) -> str:
    walked = {"registration": "in the order the source registers its modules",
              "execution": "in the order the source's forward pass calls its modules",
              "name-sorted": "in the order of their names (a .safetensors file keeps no order: save the state "
                             "dict with torch.save, or with archspec's save_state_dict)"}.get(order, "in file order")
    return (f"tensors are paired module by module, {walked}, each module's tensors in order, shapes equal; "
            "the source must be the same network, layer for layer")


def _fmt(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def _shape_of(g: _Group) -> tuple[int, ...]:
    return tuple(g.tensors[0].shape) if g.tensors else tuple(g.counter[1].shape)


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


def _natural(name: str) -> list:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def _sorted(state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """An unordered state dict in the most likely module order: module paths in natural order (layer2
    before layer10), each module's tensors as torch registers them."""
    def key(name: str):
        module, _, leaf = name.rpartition(".")
        return (_natural(module), _RANK.get(leaf, 5), leaf)

    return [(k, state[k]) for k in sorted(state, key=key)]
