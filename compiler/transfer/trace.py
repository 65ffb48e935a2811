"""A module's dataflow as a graph of steps (`Flow` of `Node`s): torch.fx tracing that stops at every
module owning tensors, run once on a zero sample to tell tensors from other values, or, where fx cannot
trace, one forward pass recorded through a TorchFunctionMode and module hooks. Param-free one-input steps
fold into the step that feeds them, noted as activations; nested sums and products flatten into one."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from .groups import module_groups


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
class Node:
    """One step of a module's dataflow, param-free one-input steps folded into the step that feeds them:
    the input, a use of a module's tensors (`groups`), a merge of several tensors, or the output."""

    kind: str
    ordered: bool
    inputs: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    acts: list[str | None] = field(default_factory=list)  # activations folded in (None: an op not known)


@dataclass
class Flow:
    """A module's dataflow (`Node`s in a topological order) and the tensors of each of its groups."""

    nodes: list[Node]
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


def trace_flow(model: nn.Module, shape: tuple[int, ...] | None) -> Flow | None:
    """`model`'s dataflow: its fx graph where it is a GraphModule; else its torch.fx trace, run once on a
    zero sample of `shape` to tell tensors from other values, or, where fx cannot trace it, the torch
    operations and module calls of one forward pass on that sample, recorded with their tensors'
    identities. The pass runs in eval mode without gradients and leaves `model` as it was; None where it
    cannot run."""
    groups = module_groups(list(model.state_dict(keep_vars=True).items()))
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
    """`Node`s made step by step: each step of a forward pass says what it reads (earlier nodes, and the
    groups of the parameters it uses) and gets the value its outputs stand for."""

    def __init__(self, sizes: dict[str, tuple]):
        self.sizes = sizes
        self.nodes: list[Node] = []

    def add(self, kind: str, inputs: list[int] = (), groups: list[str] = ()) -> int:
        self.nodes.append(Node(kind, kind not in _COMMUTATIVE, list(inputs), list(groups)))
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

    def finish(self) -> Flow:
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
        return Flow(nodes, self.sizes)


def _fold(graph: fx.Graph, model: nn.Module, sizes: dict[str, tuple],
          tensor: set[fx.Node] | None) -> Flow:
    """`graph` as `Node`s (see `_Builder.step`); `tensor`, where given, the nodes that give tensors."""
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


def _record(model: nn.Module, sample: torch.Tensor, sizes: dict[str, tuple]) -> Flow:
    """One forward pass of `model` on `sample` as `Node`s: every torch operation outside the modules that
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
