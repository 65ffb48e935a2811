"""Regional compilation: `torch.compile` per spec layer instead of per network, so that compile time
stays flat in depth. The generated module's graph is cut into regions, one per layer scope
(`block2.layer5`, or a top-level scope such as `stem`, `transition1`, `head`); regions of the same
structure (same code, same module types and parameter shapes) become instances of one class whose
`forward` is compiled once, so dynamo's cache, keyed by the code object, serves every layer of that
structure. What stays outside the regions runs eagerly: the nodes that gather earlier features (a
variadic callee — `torch.cat`, a merge, a fused concatenation — reading tensors of other scopes, whose
arity grows with the layer index), nodes a pass marks `meta["eager"]` (the buffered merges, whose
buffer is a Python object), and small glue (slices, adds) between regions.

The structure comes from each fx node's `meta`, as codegen and the passes write it: `layer` (the
innermost block layer) or else the top-level component of `spec_path` names its region, and `shape`
tells apart layers of one structure that differ in resolution. The result shares its leaf modules,
parameters and buffers with the input and keeps their paths, so its state_dict has the same keys and
the two are interchangeable for checkpoints.

Not `torch.compiler.nested_compile_region` inside a whole-model compile: in torch 2.13 its
invoke_subgraph refuses training with buffer mutations, which every batch norm makes."""

from __future__ import annotations

import inspect
import operator
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn


class Region(nn.Module):
    """A layer scope's part of the graph. Subclasses are made per structure; `forward` is the first run
    of the scope's nodes, `run1`, `run2`… the others when gathers split the scope."""

    runs: tuple[str, ...] = ()


def _scope(node: fx.Node) -> str:
    """The region `node` belongs to: its innermost block layer (the unit a `repeat` or a block stamps
    out), else the top-level scope of its spec path; '' for nodes that come from no spec op."""
    layer = node.meta.get("layer")
    if layer:
        return layer
    path = node.meta.get("spec_path")
    return path.split(".")[0] if path and "." in path else ""


class _GradLayout(torch.autograd.Function):
    """Identity whose backward hands on the gradient in its input's memory format. Inductor lays
    convolution graphs out channels last on CPU, and a compiled region's input gradient comes back that
    way; eager consumers (batch-norm backward above all) run several times slower on a gradient whose
    layout differs from the tensor it belongs to. Leaves need no help: autograd matches their layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.format = torch.channels_last if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last) else torch.contiguous_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=ctx.format)


def grad_in_layout(x: Any) -> Any:
    """`x`, its gradient to come back in its own memory format (see `_GradLayout`)."""
    if isinstance(x, torch.Tensor) and x.requires_grad and x.grad_fn is not None and torch.is_grad_enabled():
        return _GradLayout.apply(x)
    return x


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: out.append(a) if a.op != "get_attr" else None)
    return out


def _variadic(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_function":
        return node.target is torch.cat
    if node.op != "call_module":
        return False
    params = inspect.signature(gm.get_submodule(node.target).forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def _plan(gm: fx.GraphModule) -> tuple[list[tuple[str, list[fx.Node]]], set[fx.Node]]:
    """The runs — (scope, nodes): maximal sequences of consecutive nodes of one scope, gathers left
    out — and the floating nodes: get_attrs and picks from an outer node's tuple, which compute
    nothing, so they neither break a run nor need their place (the outer graph writes them where
    first needed). Each run is convex: nothing outside it lies on a path between two of its nodes."""
    modules = dict(gm.named_modules())
    where: dict[fx.Node, str | None] = {}
    floating: set[fx.Node] = set()
    runs: list[tuple[str, list[fx.Node]]] = []
    last = None  # the last node that is not floating
    for node in gm.graph.nodes:
        if node.op == "get_attr" or (node.op == "call_function" and node.target is operator.getitem
                                     and isinstance(node.args[0], fx.Node) and where.get(node.args[0]) is None):
            floating.add(node)
            continue
        scope = _scope(node) if node.op not in ("placeholder", "output") else ""
        if scope and type(modules.get(scope)) is not nn.Module:
            scope = ""
        if scope and (node.meta.get("eager") or
                      (_variadic(node, gm) and any(where.get(a) != scope for a in _tensor_args(node)))):
            scope = ""
        where[node] = scope or None
        if scope and runs and runs[-1][0] == scope and runs[-1][1][-1] is last:
            runs[-1][1].append(node)
        elif scope:
            runs.append((scope, [node]))
        last = node
    return [(s, ns) for s, ns in runs if any(n.op == "call_module" for n in ns)], floating


class _Built:
    """One run as a standalone graph whose targets are relative to its scope and whose node names drop
    the scope's prefix (so that layers of one structure give the same code), with what the outer graph
    needs to call it."""

    def __init__(self, gm: fx.GraphModule, scope: str, nodes: list[fx.Node]):
        inside = set(nodes)
        prefix, under = scope.replace(".", "_") + "_", scope + "."
        local = lambda name: name[len(prefix):] if name.startswith(prefix) else name
        graph, env = fx.Graph(), {}
        self.inputs: list[fx.Node] = []

        def take(a: fx.Node) -> None:  # placeholders and local get_attrs first, in order of first use
            if a in inside or a in env:
                return
            if a.op == "get_attr" and a.target.startswith(under) and all(u in inside for u in a.users):
                env[a] = graph.create_node("get_attr", a.target[len(under):], name=local(a.name))
            else:
                self.inputs.append(a)
                env[a] = graph.placeholder(f"x{len(self.inputs) - 1}")

        for n in nodes:
            fx.node.map_arg((n.args, n.kwargs), take)
        for n in nodes:
            args, kwargs = fx.node.map_arg((n.args, n.kwargs), env.__getitem__)
            target = n.target[len(under):] if n.op == "call_module" else n.target
            env[n] = graph.create_node(n.op, target, args, kwargs, name=local(n.name))
        self.outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        outs = [env[n] for n in self.outputs]
        graph.output(outs[0] if len(outs) == 1 else tuple(outs))
        graph.lint()
        code = graph.python_code(root_module="self")
        self.code, self.globals = code.src, code.globals
        owner = gm.get_submodule(scope)
        used = sorted({n.target for n in graph.nodes if n.op in ("call_module", "get_attr")})
        self.key = (self.code, tuple(_attr_key(path, owner) for path in used),
                    tuple(a.meta.get("shape") for a in self.inputs))


def _attr_key(path: str, owner: nn.Module) -> tuple:
    """What must match for two layers to share compiled code: the type of what `path` names, the
    configuration of torch's own modules (custom ones are told apart by their parameter shapes and, at
    run time, by dynamo's guards), and the shape and dtype of every parameter and buffer."""
    obj: Any = owner
    for p in path.split("."):
        obj = getattr(obj, p)
    if isinstance(obj, torch.Tensor):
        return path, type(obj), tuple(obj.shape), obj.dtype, obj.requires_grad
    config = obj.extra_repr() if type(obj).__module__.startswith("torch.nn") else ""
    tensors = tuple((k, tuple(t.shape), t.dtype, t.requires_grad)
                    for k, t in list(obj.named_parameters()) + list(obj.named_buffers()))
    return path, type(obj), config, tensors


def _region_class(name: str, built: list[_Built], compile_: Callable[[Callable], Callable]) -> type[Region]:
    from torch.fx.graph_module import _forward_from_src

    attrs: dict[str, Any] = {"__module__": __name__}
    runs = []
    for k, b in enumerate(built):
        attr = "forward" if k == 0 else f"run{k}"
        fn = _forward_from_src(b.code, b.globals)
        fn.__name__, fn.__qualname__ = attr, f"{name}.{attr}"
        attrs[attr] = compile_(fn)
        runs.append(attr)
    attrs["runs"] = tuple(runs)
    return type(name, (Region,), attrs)


def _copy_tree(mod: nn.Module, path: str, regions: dict[str, Region]) -> nn.Module:
    """`mod`'s tree with every plain container rebuilt (as its region where there is one) and every
    other module kept: the copy shares leaves, parameters and buffers with the original."""
    if path in regions:
        new: nn.Module = regions[path]
    elif path == "" or type(mod) is nn.Module:
        new = nn.Module()
    else:
        return mod
    new.training = mod.training
    new._parameters = OrderedDict(mod._parameters)
    new._buffers = OrderedDict(mod._buffers)
    new._non_persistent_buffers_set = set(mod._non_persistent_buffers_set)
    for name, child in mod._modules.items():
        new._modules[name] = None if child is None else _copy_tree(child, f"{path}.{name}" if path else name, regions)
    return new


def compile_regions(gm: fx.GraphModule, **compile_kwargs) -> fx.GraphModule:
    """A module computing what `gm` computes, with each layer scope compiled by
    `torch.compile(**compile_kwargs)` once per distinct structure (see the module docstring); scopes and
    shapes are read off the nodes' `meta`. `gm` is left as it is."""
    runs, floating = _plan(gm)
    plan = [(scope, nodes, _Built(gm, scope, nodes)) for scope, nodes in runs]
    by_scope: dict[str, list[_Built]] = {}
    first: dict[fx.Node, tuple[str, int, _Built]] = {}
    for scope, nodes, b in plan:
        first[nodes[0]] = (scope, len(by_scope.get(scope, [])), b)
        by_scope.setdefault(scope, []).append(b)
    classes: dict[tuple, type[Region]] = {}
    regions: dict[str, Region] = {}
    for scope, bs in by_scope.items():
        key = tuple(b.key for b in bs)
        if key not in classes:
            classes[key] = _region_class(f"Region{len(classes)}", bs,
                                         lambda fn: torch.compile(fn, **compile_kwargs))
        regions[scope] = classes[key]()

    inside = {n for _, nodes, _ in plan for n in nodes}
    graph, env = fx.Graph(), {}

    def val(a: fx.Node) -> fx.Node:
        if a not in env and a in floating:
            env[a] = graph.node_copy(a, val)
        return env[a]

    for node in gm.graph.nodes:
        if node in first:
            scope, k, b = first[node]
            args = tuple(graph.call_function(grad_in_layout, (val(a),)) if a.op != "get_attr" else val(a)
                         for a in b.inputs)
            name = scope.replace(".", "_")
            if k == 0:
                call = graph.create_node("call_module", scope, args, name=name)
            else:
                owner = graph.create_node("get_attr", scope, name=name)
                call = graph.create_node("call_method", f"run{k}", (owner, *args), name=f"{name}_run{k}")
            if len(b.outputs) == 1:
                env[b.outputs[0]] = call
            else:
                for i, out in enumerate(b.outputs):
                    env[out] = graph.create_node("call_function", operator.getitem, (call, i), name=out.name)
        elif node not in inside and node not in floating:
            env[node] = graph.node_copy(node, val)
    graph.lint()

    tree = _copy_tree(gm, "", regions)
    out = fx.GraphModule(tree, graph, class_name=type(gm).__name__)
    out._modules.clear()
    out._modules.update(tree._modules)
    out._parameters, out._buffers = tree._parameters, tree._buffers
    out.training = gm.training
    return out


def region_kinds(module: nn.Module) -> dict[str, list[str]]:
    """Region class name → paths of its instances: how many distinct compiled structures a regionally
    compiled module has, and which layers share each."""
    kinds: dict[str, list[str]] = {}
    for path, m in module.named_modules():
        if isinstance(m, Region):
            kinds.setdefault(type(m).__name__, []).append(path)
    return kinds
