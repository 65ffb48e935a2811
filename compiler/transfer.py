"""Weights from elsewhere — another library's module, a hand-written nn.Module, a state-dict file — into
an archspec module. Names differ between libraries, so tensors are paired by structure: both sides are
walked module by module (a module's tensors are one group: a conv's weight, a batch norm's weight, bias,
running_mean, running_var and num_batches_tracked), and paired group by group, tensor by tensor, with
shapes that must agree. A `crossdepthwise` merge keeps its inflows' per-channel tensors stacked in one
module: its group may take as many consecutive source groups (one batch norm per inflow), concatenated.

All or nothing: every source tensor is checked before anything is paired (dense, real, finite, of a
floating-point type; batch counters whole numbers), every value is converted to its target's type and
shape before the first is copied, and nothing in the module changes unless every tensor found its pair.

An nn.Module source is walked in registration order, in the order its forward pass calls its modules,
and in the canonical order of its dataflow (traced with torch.fx, or recorded from one forward pass where
fx cannot trace it) matched against the target's; where the first two pair otherwise than the dataflow,
the dataflow's pairs are taken. Its modules' hyper-parameters (norm eps and momentum, convolution stride,
padding, dilation, groups, activations between modules) must be the target's, unless forced. A state
dict is walked in its order, by natural name order, and along the target's modules by its names' tree.
A file is read without unpickling anything, and within a bound given before it is opened
(`open_weights`): a regular file of at most that many bytes, a torch file's members stored uncompressed,
as `torch.save` writes them, with sizes that add up to no more."""

from __future__ import annotations

import importlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Iterable, Mapping

import torch
import torch.fx as fx
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
    warnings: list[str] = field(default_factory=list)  # hyper-parameters that differ, copied anyway (force)

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
        if self.warnings:
            line += f"; {len(self.warnings)} hyper-parameters differ (forced)"
        return line

    def lines(self) -> list[str]:
        """One line per pair: source name(s) and shape(s) → target name and shape."""
        return [f"{' + '.join(p.source)} {' + '.join(_fmt(s) for s in p.source_shapes)} -> {p.target} "
                f"{_fmt(p.target_shape)}" + ("" if p.how == "copy" else f" ({p.how})") for p in self.pairs]

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"warning: {w}" for w in self.warnings), *self.lines()])


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


def transfer_weights(source: Source, gm: nn.Module, force: bool = False) -> TransferReport:
    """Copy `source`'s parameters and buffers into `gm` (an archspec-built module), paired by structure,
    and say what went where. `source` is an nn.Module, a state dict (name → tensor), a `WeightsFile`, or
    the path of a `.safetensors` or torch file (read within the host's memory). Raises TransferError, and
    changes nothing in `gm`, when a source tensor is not dense, real, finite weights, or when the
    structures differ (naming the first tensors that do not line up).

    An nn.Module source is paired by the dataflow of both forward passes where the order it registers or
    calls its modules does not give the same pairs, and its modules' hyper-parameters are compared with
    their targets' (norm eps, batch norm momentum, convolution stride, padding, dilation and groups, and
    the activations between modules where both traces show them): the first that differs is refused,
    naming both modules and values, unless `force`, which copies anyway and lists every difference in the
    report's `warnings`."""
    target = list(gm.state_dict(keep_vars=True).items())
    widths = _stacked_widths(gm)
    flows = _Flows(source, gm) if isinstance(source, nn.Module) else None
    best: TransferError | None = None
    fitted: list[tuple[_Plan, list[str]]] = []  # plans whose shapes fit, with their hyper-parameter differences
    checked = False
    for order, items, dst in _walks(source, gm, flows):  # lazily: traces and forward passes only if needed
        if not checked:  # every walk holds the same tensors: checked once, before any is paired
            check_tensors(items)
            checked = True
        if order == "names":
            plan = _by_name(items, gm)
            if plan is None:
                continue
        else:
            try:
                plan = _plan(_groups(items), _groups(dst if dst is not None else target), widths, order)
            except TransferError as e:
                if best is None or e.matched > best.matched:
                    best = e
                continue
        if flows is not None and order in ("registration", "execution"):
            plan = flows.prefer(plan, widths)
        problems = _differences(plan, source, gm, flows) if flows is not None else []
        if not problems:
            return _write(plan)
        fitted.append((plan, problems))
    if fitted:
        plan, problems = next(((p, q) for p, q in fitted if p.order == "dataflow"), fitted[0])
        if not force:
            raise TransferError(f"{problems[0]}; nothing was written",
                                "the source computes something else with these weights; pass force=True "
                                "(archspec transfer --force) to copy them anyway", matched=len(plan.report.pairs))
        assert plan.report is not None
        plan.report.warnings = list(problems)
        return _write(plan)
    assert best is not None
    raise best


def like_module(text: str) -> nn.Module:
    """The module `text` names, built with fresh weights, to give a weights file its structure:
    `timm:NAME` (timm's `create_model(NAME)`), `torchvision:NAME` (`torchvision.models.NAME()`), or
    `MODULE:FUNCTION` (a function of an importable module, called with no arguments)."""
    lib, sep, name = text.partition(":")
    if not sep or not lib or not name:
        raise TransferError(f"cannot read --like '{text[:200]}'",
                            "give timm:NAME, torchvision:NAME or MODULE:FUNCTION")
    try:
        if lib == "timm":
            model = importlib.import_module("timm").create_model(name, pretrained=False)
        elif lib == "torchvision":
            model = getattr(importlib.import_module("torchvision.models"), name)(weights=None)
        else:
            model = getattr(importlib.import_module(lib), name)()
    except Exception as e:  # a library that does not import, a name it lacks, a constructor that fails
        raise TransferError(f"cannot build --like {text[:200]}: {type(e).__name__}: {e}".splitlines()[0][:400],
                            "the library must import here, and the name be one of its models") from None
    if not isinstance(model, nn.Module):
        raise TransferError(f"--like {text[:200]} gives a {type(model).__name__}, not an nn.Module")
    return model


def load_like(model: nn.Module, weights: WeightsFile) -> nn.Module:
    """`model` holding `weights`, whose names and shapes must be its own; refused (a TransferError naming
    the first difference) otherwise; the file's tensors are checked first, as `check_tensors` does."""
    check_tensors(weights.state.items())
    own = model.state_dict()
    missing = [k for k in own if k not in weights.state]
    extra = [k for k in weights.state if k not in own]
    wrong = [k for k in own if k in weights.state and tuple(own[k].shape) != tuple(weights.state[k].shape)]
    if missing or extra or wrong:
        what = (f"has no tensor '{missing[0][:200]}'" if missing else f"has tensor '{extra[0][:200]}', which the "
                f"model lacks" if extra else f"has '{wrong[0][:200]}' of shape "
                f"{_fmt(tuple(weights.state[wrong[0]].shape))}, not {_fmt(tuple(own[wrong[0]].shape))}")
        raise TransferError(f"{weights.path} is not the --like model's state dict: it {what}",
                            "--like names the model the weights were saved from")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(weights.state[k].to(v.dtype))
    return model


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


def _walks(source: Source, gm: nn.Module, flows: "_Flows | None"
           ) -> Iterable[tuple[str, list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]] | None]]:
    """The ways to walk `source`, most likely first: (how, [(name, tensor), ...], the target's tensors in
    the order to pair them, or None for its own)."""
    if isinstance(source, (str, os.PathLike, WeightsFile)):
        state = source.state if isinstance(source, WeightsFile) else load_state_dict(source)
        ordered = getattr(state, "ordered", True)
        yield "names", list(state.items()), None
        yield ("file", list(state.items()), None) if ordered else ("name-sorted", _sorted(state), None)
        yield from _tree_walks(state, gm)
        return
    if isinstance(source, nn.Module):
        items = list(source.state_dict().items())
        yield "names", items, None
        yield "registration", items, None
        executed = _execution_order(source, gm, items)
        if executed is not None and [k for k, _ in executed] != [k for k, _ in items]:
            yield "execution", executed, None
        walk = flows.walk() if flows is not None else None
        if walk is not None:
            yield "dataflow", *walk
        return
    if isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise TransferError(f"a state dict maps names to tensors; {bad[0]!r} is {type(source[bad[0]]).__name__}")
        yield "names", list(source.items()), None
        yield "state-dict", list(source.items()), None
        yield from _tree_walks(source, gm)
        return
    raise TransferError(f"cannot take weights from a {type(source).__name__}",
                        "give an nn.Module, a state dict, or the path of a .safetensors or torch file")


def _input_shape(gm: nn.Module) -> tuple[int, ...] | None:
    """One sample's shape, as the archspec module's input records it."""
    graph = getattr(gm, "graph", None)
    return next((n.meta.get("shape") for n in graph.nodes if n.op == "placeholder"), None) if graph else None


def _execution_order(model: nn.Module, gm: nn.Module, items: list[tuple[str, torch.Tensor]]
                     ) -> list[tuple[str, torch.Tensor]] | None:
    """`items` reordered module by module as `model`'s forward pass first calls the modules (one sample
    of `gm`'s input shape, in eval mode, no gradients; nothing in `model` changes), or None where that
    cannot be run."""
    shape = _input_shape(gm)
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


# ---- dataflow: both sides' modules in one canonical order ------------------------------------------------

_COMMUTATIVE = {"add", "mul"}
_MERGES = {"add": "add", "iadd": "add", "add_": "add", "radd": "add", "mul": "mul", "imul": "mul", "mul_": "mul",
           "cat": "cat", "concat": "cat", "concatenate": "cat"}
_ACTIVATIONS = {"relu": "relu", "relu6": "relu6", "gelu": "gelu", "silu": "silu", "swish": "silu",
                "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "sigmoid": "sigmoid", "tanh": "tanh",
                "leakyrelu": "leaky_relu", "elu": "elu", "selu": "selu", "celu": "celu", "mish": "mish",
                "softplus": "softplus", "gelutanh": "gelu(tanh)", "hardtanh": "hardtanh"}
_NEUTRAL = {"dropout", "dropout2d", "dropout1d", "dropout3d", "alphadropout", "droppath", "stochasticdepth",
            "flatten", "view", "reshape", "permute", "transpose", "contiguous", "getitem", "chunk", "split",
            "narrow", "mean", "adaptiveavgpool2d", "adaptiveavgpool1d", "adaptivemaxpool2d", "avgpool2d",
            "maxpool2d", "identity", "clone", "squeeze", "unsqueeze", "channelshuffle", "permutemodule",
            "float", "to", "typeas", "detach", "expandas"}


@dataclass
class _Node:
    """One step of a module's dataflow, param-free one-input steps folded into the step that feeds them:
    the input, a use of a module's tensors (`groups`), a merge of several tensors, or the output."""

    kind: str
    ordered: bool
    inputs: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    acts: list[str | None] = field(default_factory=list)  # activations folded in (None: an op not known)


@dataclass
class _Flow:
    """A module's dataflow (`_Node`s in a topological order) and the tensors of each of its groups."""

    nodes: list[_Node]
    sizes: dict[str, tuple]  # group → its tensors' element counts (batch counter apart) and its geometry
    order: list[int] = field(default_factory=list)  # the canonical order of `nodes`, once computed
    keys: list[tuple[int, int]] = field(default_factory=list)  # each ordered node's structural key


class _GroupTracer(fx.Tracer):
    """torch.fx tracing that stops at every module owning tensors of its own and none below it."""

    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        if _owns(m) and not any(_owns(c) or any(True for _ in c.parameters()) for c in m.children()):
            return True
        return super().is_leaf_module(m, name)


def _owns(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))


def _flow(model: nn.Module, shape: tuple[int, ...] | None) -> _Flow | None:
    """`model`'s dataflow: its fx graph where it is a GraphModule; else its torch.fx trace, run once on a
    zero sample of `shape` to tell tensors from other values, or, where fx cannot trace it, the torch
    operations and module calls of one forward pass on that sample, recorded with their tensors'
    identities. The pass runs in eval mode without gradients and leaves `model` as it was; None where it
    cannot run."""
    groups = _groups(list(model.state_dict(keep_vars=True).items()))
    sizes = {g.module: (tuple(t.numel() for t in g.tensors), _geometry(model, g.module)) for g in groups}
    if isinstance(model, fx.GraphModule):
        return _fold(model.graph, model, sizes, None)
    first = next(iter(model.parameters()), None)
    if shape is None or first is None:
        return None
    sample = torch.zeros((1, *shape), dtype=first.dtype, device=first.device)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        try:
            graph = _GroupTracer().trace(model)
        except Exception:  # Python control flow on tensors, or code fx cannot see through: record a pass
            return _record(model, sample, sizes)
        tensors = _Kinds(fx.GraphModule(model, graph))
        with torch.no_grad():
            tensors.run(sample)
        return _fold(graph, model, sizes, tensors.tensor)
    except Exception:  # a module that will not run on this sample
        return None
    finally:
        for m, mode in modes:
            m.training = mode


def _geometry(model: nn.Module, name: str) -> tuple | None:
    """A convolution's stride, dilation and groups where any is not 1 (which tell apart branches of the same
    shapes); None for any other module, and for a plain convolution (the same as a linear layer)."""
    m = model.get_submodule(name) if name else model
    if not isinstance(m, nn.modules.conv._ConvNd):
        return None
    shape = (tuple(m.stride), tuple(m.dilation), m.groups)
    return shape if set(shape[0]) | set(shape[1]) | {shape[2]} != {1} else None


class _Kinds(fx.Interpreter):
    """Runs a traced module, noting which nodes give tensors."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.tensor: set[fx.Node] = set()

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if _tensors(out):
            self.tensor.add(n)
        return out


def _tensors(value: object) -> list[torch.Tensor]:
    """The tensors in `value` (nested in tuples, lists and dicts), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _op_name(n: fx.Node, model: nn.Module) -> str:
    if n.op == "call_module":
        return type(model.get_submodule(n.target)).__name__
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))


def _activation(name: str, approximate: object = None) -> str | None:
    """What a param-free one-input step called `name` does, as an activation kind; "" for a step that
    changes no values in eval mode (dropout, a reshape, pooling); None for any other."""
    name = name.lower().replace("_", "")
    if name in _NEUTRAL:
        return ""
    if name in _ACTIVATIONS:
        kind = _ACTIVATIONS[name]
        return "gelu(tanh)" if kind == "gelu" and approximate == "tanh" else kind
    return None


class _Builder:
    """`_Node`s made step by step: each step of a forward pass says what it reads (earlier nodes, and the
    groups of the parameters it uses) and gets the value its outputs stand for."""

    def __init__(self, sizes: dict[str, tuple]):
        self.sizes = sizes
        self.nodes: list[_Node] = []

    def add(self, kind: str, inputs: list[int] = (), groups: list[str] = ()) -> int:
        self.nodes.append(_Node(kind, kind not in _COMMUTATIVE, list(inputs), list(groups)))
        return len(self.nodes) - 1

    def step(self, name: str, values: list[object], act: str | None, hides: bool = False
             ) -> int | list[str] | None:
        """A step reading `values` (node indices, or lists of parameter groups): a node of its own where it
        uses parameters (the groups' use) or merges tensors; where it reads one tensor only, that tensor's
        node, with `act` noted; where it reads parameters only, their groups, handed to the step that uses
        its output; None where it reads neither. `hides`: a module whose own submodules (an activation
        inside a batch norm module) no trace sees, so what follows it is not known."""
        ins = [v for v in values if isinstance(v, int)]
        groups = list(dict.fromkeys(g for v in values if isinstance(v, list) for g in v))
        if not ins:
            return groups or None
        if not groups and len(ins) == 1:
            self.nodes[ins[0]].acts.append(act)
            return ins[0]
        name = name.lower().strip("_")
        node = self.add("use" if groups else _MERGES.get(name, name), ins, groups)
        if hides:
            self.nodes[node].acts.append(None)
        return node

    def finish(self) -> _Flow:
        """The flow, a sum (or product) of sums fed nowhere else and changed by nothing one sum."""
        nodes = self.nodes
        fed = [0] * len(nodes)
        for node in nodes:
            for i in node.inputs:
                fed[i] += 1
        for node in nodes:  # in topological order: an inner sum is flat before the outer one takes its inputs
            if node.kind in _COMMUTATIVE:
                flat: list[int] = []
                for i in node.inputs:
                    inner = nodes[i]
                    if inner.kind == node.kind and fed[i] == 1 and all(a == "" for a in inner.acts):
                        flat += inner.inputs
                        inner.kind = "folded"
                    else:
                        flat.append(i)
                node.inputs = flat
        return _Flow(nodes, self.sizes)


def _fold(graph: fx.Graph, model: nn.Module, sizes: dict[str, tuple],
          tensor: set[fx.Node] | None) -> _Flow:
    """`graph` as `_Node`s (see `_Builder.step`); `tensor`, where given, the nodes that give tensors."""
    b = _Builder(sizes)
    value: dict[fx.Node, object] = {}
    for n in graph.nodes:
        args = [a for a in _flat(n.args) + _flat(list(n.kwargs.values())) if isinstance(a, fx.Node)]
        values = [value[a] for a in args if value.get(a) is not None]
        if n.op == "get_attr":
            g = n.target.rpartition(".")[0]
            value[n] = [g] if g in sizes else None
        elif n.op in ("placeholder", "output"):
            value[n] = b.add("in" if n.op == "placeholder" else "out", [v for v in values if isinstance(v, int)])
        elif tensor is None or n in tensor:
            if n.op == "call_module":
                values.append([g for g in sizes if g == n.target or g.startswith(n.target + ".")])
            approximate = (getattr(model.get_submodule(n.target), "approximate", None) if n.op == "call_module"
                           else n.kwargs.get("approximate"))
            hides = n.op == "call_module" and any(True for _ in model.get_submodule(n.target).children())
            value[n] = b.step(_op_name(n, model), values, _activation(_op_name(n, model), approximate), hides)
    return b.finish()


def _record(model: nn.Module, sample: torch.Tensor, sizes: dict[str, tuple]) -> _Flow:
    """One forward pass of `model` on `sample` as `_Node`s: every torch operation outside the modules that
    own tensors (seen through a TorchFunctionMode), and each call of those modules (through hooks), joined
    by the identities of the tensors they read and give."""
    b = _Builder(sizes)
    value: dict[int, object] = {}
    keep: list[torch.Tensor] = []  # every tensor seen stays alive, so that no identity is reused
    for name, t in model.state_dict(keep_vars=True).items():
        if name.rpartition(".")[0] in sizes:
            value[id(t)] = [name.rpartition(".")[0]]
    inside = [0]

    def note(out: object, v: object) -> None:
        for t in _tensors(out):
            value[id(t)] = v
            keep.append(t)

    def read(args: object) -> list[object]:
        return [value[id(t)] for t in _tensors(args) if value.get(id(t)) is not None]

    class Recorder(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if not inside[0] and _tensors(out):
                name = getattr(func, "__name__", str(func))
                note(out, b.step(name, read((args, kwargs)), _activation(name, kwargs.get("approximate"))))
            return out

    def enter(m, args, kwargs):
        inside[0] += 1

    def leave(m, args, kwargs, out):
        inside[0] -= 1
        if not inside[0]:
            groups = [g for g in sizes if g == names[m] or g.startswith(names[m] + ".")]
            note(out, b.step(type(m).__name__, [*read((args, kwargs)), groups], None,
                             any(True for _ in m.children())))

    names = {m: n for n, m in model.named_modules() if _GroupTracer().is_leaf_module(m, n) and _owns(m)}
    hooks = [h for m in names for h in (m.register_forward_pre_hook(enter, with_kwargs=True),
                                        m.register_forward_hook(leave, with_kwargs=True))]
    value[id(sample)] = b.add("in")
    try:
        with torch.no_grad(), Recorder():
            out = model(sample)
    finally:
        for h in hooks:
            h.remove()
    b.add("out", [v for v in read(out) if isinstance(v, int)])
    return b.finish()


def _flat(args) -> list:
    out = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _flat(a)
        elif isinstance(a, dict):
            out += _flat(list(a.values()))
        else:
            out.append(a)
    return out


def _canonical(flows: list[_Flow]) -> None:
    """Set each flow's `order`: a topological order of its nodes that does not depend on the order its
    modules were registered, called, or its branches summed. Each node gets a structural key, the same in
    every flow for the same structure: what feeds it (as a sum: its inputs' keys sorted; as a
    concatenation: in order) and what it feeds (with its place in each ordered consumer). The order
    follows one branch to its end before the next (the branch last fed first), and chooses between
    ready nodes by key."""
    ids: dict[tuple, int] = {}

    def intern(sig: tuple) -> int:
        return ids.setdefault(sig, len(ids))

    for flow in flows:
        live = [i for i, n in enumerate(flow.nodes) if n.kind != "folded"]
        consumers: dict[int, list[tuple[int, int]]] = {i: [] for i in live}
        for c in live:
            for pos, i in enumerate(flow.nodes[c].inputs):
                consumers[i].append((c, pos if flow.nodes[c].ordered else -1))
        init = {i: intern((flow.nodes[i].kind, tuple(flow.sizes[g] for g in flow.nodes[i].groups))) for i in live}
        up: dict[int, int] = {}
        for i in live:
            ins = [up[j] for j in flow.nodes[i].inputs]
            up[i] = intern(("up", init[i], tuple(ins if flow.nodes[i].ordered else sorted(ins))))
        down: dict[int, int] = {}
        for i in reversed(live):
            down[i] = intern(("down", init[i], tuple(sorted((down[c], p) for c, p in consumers[i]))))
        waiting = {i: len(flow.nodes[i].inputs) for i in live}
        fed = {i: -1 for i in live}
        ready = [i for i in live if waiting[i] == 0]
        order: list[int] = []
        while ready:
            i = min(ready, key=lambda j: (-fed[j], up[j], down[j], j))
            ready.remove(i)
            order.append(i)
            for c, _ in consumers[i]:
                waiting[c] -= 1
                fed[c] = len(order)
                if waiting[c] == 0:
                    ready.append(c)
        flow.order = order
        flow.keys = [(up[i], down[i]) for i in order]


def _flow_items(flow: _Flow, items: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """`items` (a state dict's) module by module in `flow`'s canonical order; modules the forward pass does
    not use after them, as registered."""
    rank: dict[str, int] = {}
    for i in flow.order:
        for g in flow.nodes[i].groups:
            rank.setdefault(g, len(rank))
    groups = _groups(items)
    late = len(rank)
    out: list[tuple[str, torch.Tensor]] = []
    for k in sorted(range(len(groups)), key=lambda k: (rank.get(groups[k].module, late), k)):
        out += _group_items(groups[k])
    return out


def _group_items(g: _Group) -> list[tuple[str, torch.Tensor]]:
    """A group's (name, tensor) pairs, its batch counter last."""
    return list(zip(g.names, g.tensors)) + ([g.counter] if g.counter is not None else [])

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
                             "dict with torch.save, or with archspec's save_state_dict)",
              "dataflow": "in the order of both forward passes' dataflow",
              "name-tree": "along the target's modules, the source's named modules in any order that fits"
              }.get(order, "in file order")
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


# ---- a module source: its dataflow and its hyper-parameters -------------------------------------------


class _Flows:
    """Both sides' dataflows in canonical order, traced once, when first needed."""

    def __init__(self, source: nn.Module, gm: nn.Module):
        self.source, self.gm = source, gm
        self._flows: tuple[_Flow, _Flow] | None = None
        self._traced = False
        self._plan: _Plan | None = None
        self._planned = False

    def get(self) -> tuple[_Flow, _Flow] | None:
        if not self._traced:
            self._traced = True
            shape = _input_shape(self.gm)
            src = _flow(self.source, shape)
            dst = _flow(self.gm, shape) if src is not None else None
            if src is not None and dst is not None:
                _canonical([src, dst])
                self._flows = (src, dst)
        return self._flows

    def walk(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]] | None:
        """Both sides' tensors in their canonical dataflow order."""
        flows = self.get()
        if flows is None:
            return None
        return (_flow_items(flows[0], list(self.source.state_dict().items())),
                _flow_items(flows[1], list(self.gm.state_dict(keep_vars=True).items())))

    def prefer(self, plan: _Plan, widths: Mapping[str, list[int]]) -> _Plan:
        """`plan`, or the dataflow's own pairs where they fit too and differ: the order modules are registered
        or called in can pair same-shaped modules that the data does not connect alike."""
        if not self._planned:
            self._planned = True
            walk = self.walk()
            if walk is not None:
                try:
                    self._plan = _plan(_groups(walk[0]), _groups(walk[1]), widths, "dataflow")
                except TransferError:
                    self._plan = None
        other = self._plan
        if other is None or other.report is None or plan.report is None:
            return plan
        return plan if _pairs(plan) == _pairs(other) else other


def _pairs(plan: _Plan) -> list[tuple[tuple[str, ...], str]]:
    assert plan.report is not None
    return sorted((p.source, p.target) for p in plan.report.pairs)


def _differences(plan: _Plan, source: nn.Module, gm: nn.Module, flows: _Flows) -> list[str]:
    """The hyper-parameters in which `plan`'s paired modules differ, in the target's order: each module
    pair's, then the activations that follow paired steps of both traced forward passes."""
    assert plan.report is not None
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for p in plan.report.pairs:
        if len(p.source) != 1:
            continue
        pair = (p.source[0].rpartition(".")[0], p.target.rpartition(".")[0])
        if pair in seen:
            continue
        seen.add(pair)
        try:
            a, b = source.get_submodule(pair[0]), gm.get_submodule(pair[1])
        except AttributeError:
            continue
        out += _module_differences(pair[0], a, pair[1], b)
    return out + _activation_differences(flows)


def _module_differences(sname: str, s: nn.Module, tname: str, t: nn.Module) -> list[str]:
    checks: list[tuple[str, object, object]] = []
    if isinstance(s, nn.modules.batchnorm._BatchNorm) and isinstance(t, nn.modules.batchnorm._BatchNorm):
        checks += [("BN eps", s.eps, t.eps), ("BN momentum", s.momentum, t.momentum)]
    elif isinstance(s, nn.LayerNorm) and isinstance(t, nn.LayerNorm):
        checks.append(("LayerNorm eps", s.eps, t.eps))
    elif isinstance(s, nn.GroupNorm) and isinstance(t, nn.GroupNorm):
        checks += [("GroupNorm eps", s.eps, t.eps), ("GroupNorm groups", s.num_groups, t.num_groups)]
    elif isinstance(s, nn.modules.conv._ConvNd) and isinstance(t, nn.modules.conv._ConvNd):
        checks += [("conv stride", tuple(s.stride), tuple(t.stride)), ("conv padding", _padding(s), _padding(t)),
                   ("conv dilation", tuple(s.dilation), tuple(t.dilation)), ("conv groups", s.groups, t.groups),
                   ("conv padding mode", s.padding_mode, t.padding_mode)]
    return [f"{what}: source {sname} has {a}, target {tname} has {b}" for what, a, b in checks if a != b]


def _padding(m: nn.modules.conv._ConvNd) -> object:
    """A convolution's padding as numbers per side where it is fixed and even."""
    if type(m).__name__.endswith("Same"):  # padding computed from the input (TensorFlow's "SAME")
        return "same (from the input)"
    p = m.padding
    if p == "valid":
        return (0,) * len(m.kernel_size)
    if p == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        return tuple(x // 2 for x in total) if all(x % 2 == 0 for x in total) else "same"
    return tuple(p)


def _activation_differences(flows: _Flows) -> list[str]:
    """Where both traces have the same structure, the activations folded into each pair of steps that
    differ (steps whose folded ops archspec does not know are left out)."""
    got = flows.get()
    if got is None:
        return []
    src, dst = got
    if src.keys != dst.keys:
        return []
    out = []
    last = ("the input", "the input")
    for i, j in zip(src.order, dst.order):
        a, b = src.nodes[i], dst.nodes[j]
        where = (a.groups[0], b.groups[0]) if a.groups and b.groups else None
        ka, kb = [x for x in a.acts if x != ""], [x for x in b.acts if x != ""]
        if None not in ka and None not in kb and ka != kb:
            sa, sb = (where or (f"the {a.kind} after {last[0]}", f"the {b.kind} after {last[1]}"))
            out.append(f"activation: source {sa} is followed by {', '.join(ka) or 'none'}, target {sb} by "
                       f"{', '.join(kb) or 'none'}")
        if where is not None:
            last = where
    return out


# ---- a state dict without a module: its names' tree ------------------------------------------------------

TREE_STEPS = 50_000  # placements tried in all, per target order, before the name tree is given up


def _tree_walks(state: Mapping[str, torch.Tensor], gm: nn.Module
                ) -> Iterable[tuple[str, list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]] | None]]:
    """The source's modules laid out along the target's, in its registration order and then in its dataflow
    order: modules in containers numbered 0, 1, 2... keep their numbers' order; named siblings (and a
    module's own tensors) may come in any order, the first in natural name order whose shapes fit; each
    module's subtree stays together."""
    src = _groups(_sorted(state))
    own = list(gm.state_dict(keep_vars=True).items())
    flow = _flow(gm, _input_shape(gm)) if isinstance(gm, fx.GraphModule) else None
    orders = [own]
    if flow is not None:
        _canonical([flow])
        orders.append(_flow_items(flow, own))
    for dst in orders:
        laid = _lay_out(src, _groups(dst))
        if laid is not None:
            yield "name-tree", [x for g in laid for x in _group_items(g)], dst


@dataclass
class _Tree:
    group: _Group | None = None
    children: dict[str, "_Tree"] = field(default_factory=dict)
    size: int = 0  # groups in the subtree


def _lay_out(src: list[_Group], dst: list[_Group]) -> list[_Group] | None:
    """`src`'s groups in an order whose shapes fit `dst`'s group by group, within the name tree's freedom
    (see `_tree_walks`); None where there is none, or none found within TREE_STEPS placements."""
    if len(src) != len(dst):
        return None
    root = _Tree()
    for g in src:
        node = root
        for part in g.module.split(".") if g.module else []:
            node = node.children.setdefault(part, _Tree())
        node.group = g
    _count(root)
    steps = [0]
    memo: dict[tuple[int, int], list[_Group] | None] = {}

    def fit(node: _Tree, pos: int) -> list[_Group] | None:
        key = (id(node), pos)
        if key not in memo:
            memo[key] = arrange(node, pos)
        return memo[key]

    def arrange(node: _Tree, pos: int) -> list[_Group] | None:
        numbered = sorted((k for k in node.children if k.isdigit()), key=int)
        named: list[object] = ([node.group] if node.group is not None else []) + [
            node.children[k] for k in sorted(node.children, key=_natural) if not k.isdigit()]
        return place(tuple(named), [node.children[k] for k in numbered], pos)

    def place(named: tuple, numbered: list[_Tree], pos: int) -> list[_Group] | None:
        if not named:  # numbered children only: one order, no choice to go back on
            out: list[_Group] = []
            for child in numbered:
                part = fit(child, pos + len(out)) if pos + len(out) + child.size <= len(dst) else None
                if part is None:
                    return None
                out += part
            return out
        for k, item in enumerate([*named, *numbered[:1]]):
            steps[0] += 1
            if steps[0] > TREE_STEPS:
                return None
            if isinstance(item, _Group):
                part = [item] if pos < len(dst) and _fits(item, dst[pos]) else None
            else:
                part = fit(item, pos) if pos + item.size <= len(dst) else None
            if part is None:
                continue
            rest = (place(named[:k] + named[k + 1:], numbered, pos + len(part)) if k < len(named)
                    else place(named, numbered[1:], pos + len(part)))
            if rest is not None:
                return part + rest
        return None

    try:
        return fit(root, 0)
    except RecursionError:  # names nested, or named siblings, deeper than Python's stack: no layout
        return None


def _count(root: _Tree) -> None:
    """Each node's `size`: the groups in its subtree (without recursion: names may nest deeply)."""
    order, stack = [], [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack += node.children.values()
    for node in reversed(order):
        node.size = (node.group is not None) + sum(c.size for c in node.children.values())
