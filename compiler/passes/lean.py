"""The lean pass: memory linear in depth for concatenating blocks, no convolution recomputed. A naive
dense layer keeps, for backward, a fresh copy of the concatenation of every earlier feature map (and
its batch-norm and ReLU outputs): memory quadratic in depth. `apply` replaces

- each `cat → BatchNorm2d → relu → Conv2d` chain (DenseNet layers) by a `ConcatNormActConv`;
- each `cat → [Dropout2d →] Conv2d…` (SeqConv groups, GUNN units and their projection shortcuts), and
  each `Dropout2d → Conv2d…`, by a `ConcatConv`;

fused modules (`fused.py`) that hold only their inputs and per-channel statistics or masks; and it
normalises each cross-layer depthwise producer once (`normalise_once.py`). `restore` undoes both, for
passes that look at the plain ops (batch-norm folding for export, standalone source)."""

from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import normalise_once
from .fused import ConcatConv, ConcatNormActConv

def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_cat(node: fx.Node) -> bool:
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    return (node.op == "call_function" and node.target is torch.cat and isinstance(node.args[0], (list, tuple))
            and dim in (1, -3) and set(node.kwargs) <= {"dim"})


def _chain(relu: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node | None, fx.Node, fx.Node] | None:
    """(cat, bn, conv) around `relu` when they form a fusable chain: the concatenation (or None for a
    single input) read only by the batch norm, its output only by the ReLU, the ReLU's only by the
    convolution."""
    if relu.op != "call_function" or relu.target not in (F.relu, torch.relu) or relu.kwargs.get("inplace"):
        return None
    bn, conv = relu.args[0], _only_user(relu)
    if not isinstance(bn, fx.Node) or bn.op != "call_module" or len(bn.users) != 1 or bn.kwargs or len(bn.args) != 1:
        return None
    if conv is None or conv.op != "call_module" or conv.args != (relu,) or conv.kwargs:
        return None
    b, c = modules.get(bn.target), modules.get(conv.target)
    if type(b) is not nn.BatchNorm2d or type(c) is not nn.Conv2d:
        return None
    if c.groups != 1 or c.padding_mode != "zeros" or isinstance(c.padding, str):
        return None
    src = bn.args[0]
    if isinstance(src, fx.Node) and _is_cat(src) and len(src.users) == 1:
        return src, bn, conv
    return None


def _rebuild(gm: fx.GraphModule, emit: dict[fx.Node, Callable[[fx.Graph, dict], fx.Node]],
             drop: set[fx.Node]) -> None:
    """Copy `gm`'s graph into a fresh one, so that the nodes written in place of others can take their
    names: `emit[n]` writes n's replacement, nodes in `drop` are left out."""
    graph, env = fx.Graph(), {}
    for n in gm.graph.nodes:
        if n in emit:
            env[n] = emit[n](graph, env)
        elif n not in drop:
            env[n] = graph.node_copy(n, env.__getitem__)
    graph.lint()
    gm.graph = graph


def _conv_users(node: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node] | None:
    """`node`'s users when every one is a plain Conv2d called on `node` alone."""
    users = list(node.users)
    for u in users:
        if u.op != "call_module" or u.args != (node,) or u.kwargs:
            return None
        c = modules.get(u.target)
        if type(c) is not nn.Conv2d or c.padding_mode != "zeros" or isinstance(c.padding, str):
            return None
    return users or None


def _conv_chain(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[list, fx.Node | None, fx.Node | None,
                                                                        list[fx.Node]] | None:
    """(inputs, cat, dropout, convs) when `node` ends a `cat → [Dropout2d →] Conv2d…` chain whose
    intermediate results nothing else reads, or a `Dropout2d → Conv2d…` one."""
    drop = None
    if node.op == "call_module" and type(modules.get(node.target)) is nn.Dropout2d:
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        drop, src = node, node.args[0]
        cat = src if _is_cat(src) and len(src.users) == 1 else None
    elif _is_cat(node):
        cat = node
    else:
        return None
    convs = _conv_users(node, modules)
    if convs is None:
        return None
    return (list(cat.args[0]) if cat is not None else [drop.args[0]]), cat, drop, convs


def _register(gm: fx.GraphModule, near: str, leaf: str, module: nn.Module) -> str:
    """Add `module` beside the submodule at `near` under a free name starting with `leaf`."""
    parent_path = near.rpartition(".")[0]
    parent, name, k = gm.get_submodule(parent_path), leaf, 1
    while hasattr(parent, name):
        k += 1
        name = f"{leaf}{k}"
    parent.add_module(name, module)
    return f"{parent_path}.{name}" if parent_path else name


def _leaf(target: str) -> str:
    return target.rpartition(".")[2]


def apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with every fusable chain (see the module docstring) replaced by its fused module, registered
    beside the first convolution; everything else is left alone. Modifies `gm` in place and returns it."""
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    emit, drop = {}, set()
    for relu in gm.graph.nodes:
        found = _chain(relu, modules)
        if found is None:
            continue
        cat, bn, conv = found
        leaf = "_".join((_leaf(bn.target), relu.name.rpartition("_")[2], _leaf(conv.target)))
        path = _register(gm, conv.target, leaf, ConcatNormActConv((cat.name, bn.name, relu.name, conv.name)))

        def write(graph: fx.Graph, env: dict, cat=cat, bn=bn, conv=conv, path=path) -> fx.Node:
            refs = (graph.create_node("get_attr", bn.target, name=bn.name),
                    graph.create_node("get_attr", conv.target, name=conv.name))
            xs = tuple(env[x] for x in cat.args[0])
            return graph.create_node("call_module", path, refs + xs, name=path.replace(".", "_"))

        emit[conv] = write
        drop |= {cat, bn, relu}
    for node in list(gm.graph.nodes):
        found = None if node in drop else _conv_chain(node, modules)
        if found is None or any(c in emit for c in found[3]):
            continue
        xs, cat, dropout, convs = found
        convs = sorted(convs, key=order.__getitem__)
        names = (None if cat is None else cat.name, None if dropout is None else dropout.name, *(c.name for c in convs))
        leaf = "_".join(_leaf(n.target) for n in ([dropout] if dropout is not None else []) + convs)
        path = _register(gm, convs[0].target, leaf, ConcatConv(names))
        made: dict[str, fx.Node] = {}

        def write(graph: fx.Graph, env: dict, xs=xs, dropout=dropout, convs=convs, path=path, made=made) -> fx.Node:
            d = None if dropout is None else graph.create_node("get_attr", dropout.target, name=dropout.name)
            refs = tuple(graph.create_node("get_attr", c.target, name=c.name + "_module") for c in convs)
            made["fused"] = graph.create_node("call_module", path, (d, refs, *(env[x] for x in xs)),
                                              name=path.replace(".", "_"))
            if len(convs) == 1:
                return made["fused"]
            return graph.create_node("call_function", operator.getitem, (made["fused"], 0), name=convs[0].name)

        def pick(graph: fx.Graph, env: dict, k: int = 0, made=made, name: str = "") -> fx.Node:
            return graph.create_node("call_function", operator.getitem, (made["fused"], k), name=name)

        emit[convs[0]] = write
        for k, c in enumerate(convs[1:], 1):
            emit[c] = lambda graph, env, k=k, made=made, name=c.name: pick(graph, env, k, made, name)
        drop |= {n for n in (cat, dropout) if n is not None}
    if emit:
        _rebuild(gm, emit, drop)
    return normalise_once.apply(gm)


def restore(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with every fused module expanded back into its plain ops under their original names and
    every cross-layer depthwise merge normalising on its own. Modifies `gm` in place and returns it."""
    normalise_once.restore(gm)
    emit, drop, paths = {}, set(), []
    for node in gm.graph.nodes:
        fused = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(fused, ConcatNormActConv):
            bn_ref, conv_ref, *xs = node.args
            refs = (bn_ref, conv_ref)

            def write(graph: fx.Graph, env: dict, bn=bn_ref.target, conv=conv_ref.target, xs=xs,
                      names=fused.names) -> fx.Node:
                ins = [env[x] for x in xs]
                x = graph.create_node("call_function", torch.cat, (ins, 1), name=names[0]) if len(ins) > 1 else ins[0]
                y = graph.create_node("call_module", bn, (x,), name=names[1])
                y = graph.create_node("call_function", F.relu, (y,), name=names[2])
                return graph.create_node("call_module", conv, (y,), name=names[3])

        elif isinstance(fused, ConcatConv):
            drop_ref, conv_refs, *xs = node.args
            refs = (() if drop_ref is None else (drop_ref,)) + tuple(conv_refs)
            made: dict = {}

            def write(graph: fx.Graph, env: dict, d=drop_ref, c=conv_refs[0], xs=xs, names=fused.names,
                      made=made) -> fx.Node:
                ins = [env[x] for x in xs]
                x = graph.create_node("call_function", torch.cat, (ins, 1), name=names[0]) if len(ins) > 1 else ins[0]
                if d is not None:
                    x = graph.create_node("call_module", d.target, (x,), name=names[1])
                made["x"] = x
                made[0] = graph.create_node("call_module", c.target, (x,), name=names[2])
                return made[0]

            def conv_k(graph: fx.Graph, env: dict, k: int, made=made, refs=conv_refs, names=fused.names) -> fx.Node:
                if k not in made:  # the other convolutions where their outputs were first read
                    made[k] = graph.create_node("call_module", refs[k].target, (made["x"],), name=names[2 + k])
                return made[k]

            for user in node.users if len(conv_refs) > 1 else ():  # output k of several convolutions
                if user.op == "call_function" and user.target is operator.getitem:
                    emit[user] = lambda graph, env, k=user.args[1], f=conv_k: f(graph, env, k)
        else:
            continue
        paths.append(node.target)
        emit[node] = write
        drop |= {ref for ref in refs if set(ref.users) == {node}}
    if emit:
        _rebuild(gm, emit, drop)
        for path in paths:
            parent, _, leaf = path.rpartition(".")
            delattr(gm.get_submodule(parent), leaf)
    return gm
