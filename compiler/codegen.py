"""Graph → torch.fx: each node becomes one fx node (a submodule call named after the spec, or a
torch function), as its op's `lower` says, written straight into an fx.Graph — nothing is traced. The
result is a GraphModule whose `code` is straight-line Python. A lowering names its module class or
function by dotted path (`Build`, `Call`); `lowered` imports and builds it here."""

from __future__ import annotations

from math import prod
from typing import Callable

import torch
import torch.fx as fx
from torch import nn

from archspec.collector import paused
from archspec.graph.ir import Network, Node
from archspec.graph.ops import OPS, Build, Call, Op, OpArgs, Shape
from archspec.graph.ops.weight_init import InitArgs
from .init import initialise
from .resolve import named


# torch's own layers whose every tensor `init.init_weights` draws (weight, bias): built without torch's
# default initialisation when that follows, which would fill each weight once more for nothing (a third of
# building a large network).
_DRAWN_WHOLE = (nn.Conv2d, nn.Linear)


def _unfilled(m: nn.Module) -> nn.Module:
    """`m`, built on the meta device, given empty tensors for its parameters (`to_empty` does the same
    through `_apply`, at twice the cost)."""
    for name, p in m._parameters.items():
        if p is not None:
            # where modules are built now (the CPU, or a caller's `with torch.device(...)`)
            m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=torch.get_default_device()),
                                               p.requires_grad)
    return m


def lowered(op: type[Op], args: OpArgs, ins: list[Shape], drawn: bool = False
            ) -> nn.Module | tuple[Callable, tuple, dict] | None:
    """What a node of `op` becomes: a module, a (function, extra args, kwargs) triple, or None (identity).
    `drawn`: the module's weights are initialised afterwards (`init.initialise`)."""
    low = op.lower(args, ins)
    if isinstance(low, Build):
        cls = named(low.path)
        if drawn and cls in _DRAWN_WHOLE and op.default_init is not None and isinstance(args, InitArgs):
            return _unfilled(cls(*low.args, **low.kwargs, device="meta"))
        return cls(*low.args, **low.kwargs)
    if isinstance(low, Call):
        return named(low.path), tuple(low.extra), dict(low.kwargs)
    return low


def _describe(fx_node: fx.Node, node: Node) -> fx.Node:
    """Record where `fx_node` comes from in the spec, so that passes and drawing read structure from
    `node.meta` instead of parsing names or running the model."""
    fx_node.meta.update(spec_path=node.name, op=node.op, shape=node.shape, block=node.block, layer=node.layer,
                        role=node.role, pattern=node.pattern)
    return fx_node


def to_graph(net: Network, drawn: bool = False) -> tuple[dict[str, nn.Module], fx.Graph]:
    """The fx.Graph of `net` and the modules its call_module nodes refer to, by qualified name. Every fx node made for a
    graph node carries its `spec_path`, `op`, `shape` (per sample), `block`, `layer`, `role` and `pattern`
    in `meta`; the extra nodes a lowering needs (a flatten, a partial sum) carry the same. `drawn`: the
    caller initialises the weights (`init.initialise`), so torch's own first filling is skipped."""
    root: dict[str, nn.Module] = {}
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for node in net.nodes():
        if node.role == "input":
            env[node.name] = _describe(graph.placeholder("x"), node)
            continue
        srcs = net.inputs(node.name)
        ins = [env[s] for s in srcs]
        op = OPS[node.op]
        low = lowered(op, node.args, [net.shape(s) for s in srcs], drawn)
        fx_name = node.name.replace(".", "_")
        if low is None:  # identity
            env[node.name] = ins[0]
        elif isinstance(low, nn.Module):
            if op.flattens and len(net.shape(srcs[0])) > 1:
                ins = [_describe(graph.create_node("call_function", torch.flatten, (ins[0], 1), name=fx_name + "_flat"),
                                 node.model_copy(update={"shape": (prod(net.shape(srcs[0])),)}))]
            root[node.name] = low
            env[node.name] = _describe(graph.create_node("call_module", node.name, tuple(ins), name=fx_name), node)
        else:
            fn, extra, kwargs = low
            args = (ins, *extra) if op.gather == "list" else tuple(ins) + extra
            if op.gather == "pairwise" and len(ins) > 2:
                acc = ins[0]
                for k, other in enumerate(ins[1:-1]):
                    acc = _describe(graph.create_node("call_function", fn, (acc, other), name=f"{fx_name}_{k}"), node)
                args = (acc, ins[-1])
            env[node.name] = _describe(graph.create_node("call_function", fn, args, kwargs, name=fx_name), node)
    graph.output(env[net.output])
    return root, graph


def to_module(net: Network, init: bool = True) -> fx.GraphModule:
    """A runnable GraphModule of plain ops for `net`, its weights initialised as the reference describes.
    Memory and speed passes (`passes.memory`) are the caller's choice."""
    with paused():
        modules, graph = to_graph(net, drawn=init)
        gm = fx.GraphModule(modules, graph, class_name=_class_name(net.name))  # makes the module tree once
        _in_graph_order(gm, list(modules))
        if init:
            initialise(gm, {n.name: n for n in net.nodes()})
    return gm


def _in_graph_order(gm: fx.GraphModule, paths: list[str]) -> None:
    """Order every submodule's children as `paths` (the graph's order) first reach them: fx assigns a dict
    of modules shallowest first, and the order of `state_dict`, checkpoints and transfer is the graph's."""
    rank: dict[str, int] = {}
    for path in paths:
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            rank.setdefault(".".join(parts[:i]), len(rank))
    for path, m in list(gm.named_modules()):
        if len(m._modules) > 1:
            prefix = path + "." if path else ""
            m._modules = dict(sorted(m._modules.items(), key=lambda kv: rank.get(prefix + kv[0], len(rank))))


def _class_name(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.replace("-", "_").split("_") if p) or "Network"
