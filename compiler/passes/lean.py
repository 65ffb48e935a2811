"""The lean pass: memory linear in depth for concatenating blocks, no convolution recomputed. A naive
dense layer keeps, for backward, a fresh copy of the concatenation of every earlier feature map (and
its batch-norm and activation outputs): memory quadratic in depth. `apply` replaces

- each `concat → bn → act → conv` chain (DenseNet layers), `act` any activation the op registry marks
  recomputable, by a `ConcatNormActConv`;
- each `concat → [dropout2d →] conv…` (SeqConv groups, GUNN units and their projection shortcuts), and
  each `dropout2d → conv…`, by a `ConcatConv`;

fused modules (`fused.py`) that hold only their inputs and per-channel statistics or masks. The lean
policy (`memory.py`) composes it with `normalise_once` for the cross-layer depthwise merges. Chains are found by the
graph op each fx node records in `meta["op"]`; the nodes written in their place carry the meta of the
nodes they replace, so later passes (regional compilation) read the same structure."""

from __future__ import annotations

import operator
from typing import Callable

import torch.fx as fx
from torch import nn

from archspec.graph.ops import OPS

from .contract import Pass
from .fused import ConcatConv, ConcatNormActConv


def _op(node: object) -> str | None:
    """The graph op an fx node was made for, None for anything else."""
    return node.meta.get("op") if isinstance(node, fx.Node) else None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _is_cat(node: object) -> bool:
    """A channel concatenation of a list of tensors, as codegen writes one."""
    return (_op(node) == "concat" and node.op == "call_function" and len(node.args) == 2
            and isinstance(node.args[0], (list, tuple)) and node.args[1] in (1, -3) and not node.kwargs)


def _recomputable(node: fx.Node) -> bool:
    """An activation the registry marks recomputable, applied to one tensor and nothing else."""
    op = OPS.get(_op(node))
    return (op is not None and op.recomputable and node.op in ("call_function", "call_module")
            and len(node.args) == 1 and isinstance(node.args[0], fx.Node) and not node.kwargs)


def _plain_conv(node: fx.Node | None, src: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` is a conv op's plain Conv2d called on `src` alone, with a padding the fused ops
    take (zeros, given as numbers)."""
    if node is None or _op(node) != "conv" or node.op != "call_module" or node.args != (src,) or node.kwargs:
        return False
    c = modules.get(node.target)
    return type(c) is nn.Conv2d and c.padding_mode == "zeros" and not isinstance(c.padding, str)


def _chain(act: fx.Node, modules: dict[str, nn.Module]) -> tuple[fx.Node, fx.Node, fx.Node] | None:
    """(cat, bn, conv) around the activation `act` when they form a fusable chain: the concatenation
    read only by the batch norm, its output only by the activation, the activation's only by the
    convolution."""
    if not _recomputable(act):
        return None
    bn, conv = act.args[0], _only_user(act)
    if _op(bn) != "bn" or bn.op != "call_module" or len(bn.users) != 1 or bn.kwargs or len(bn.args) != 1:
        return None
    if type(modules.get(bn.target)) is not nn.BatchNorm2d or not _plain_conv(conv, act, modules):
        return None
    if modules[conv.target].groups != 1:
        return None
    src = bn.args[0]
    if _is_cat(src) and len(src.users) == 1:
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
    if not users or not all(_plain_conv(u, node, modules) for u in users):
        return None
    return users


def _conv_chain(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[list, fx.Node | None, fx.Node | None,
                                                                        list[fx.Node]] | None:
    """(inputs, cat, dropout, convs) when `node` ends a `concat → [dropout2d →] conv…` chain whose
    intermediate results nothing else reads, or a `dropout2d → conv…` one."""
    drop = None
    if _op(node) == "dropout2d":
        if (node.op != "call_module" or type(modules.get(node.target)) is not nn.Dropout2d or len(node.args) != 1
                or node.kwargs or not isinstance(node.args[0], fx.Node)):
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


def _described(node: fx.Node, like: fx.Node, **update) -> fx.Node:
    """`node` carrying the meta of `like`, the node it stands for, with `update` on top."""
    node.meta.update(like.meta, **update)
    return node


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


def _apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with every fusable chain (see the module docstring) replaced by its fused module, registered
    beside the first convolution; everything else is left alone. Modifies `gm` in place and returns it."""
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    emit: dict[fx.Node, Callable[[fx.Graph, dict], fx.Node]] = {}
    drop: set[fx.Node] = set()
    for act in gm.graph.nodes:
        found = _chain(act, modules)
        if found is None:
            continue
        cat, bn, conv = found
        leaf = "_".join((_leaf(bn.target), act.name.rpartition("_")[2], _leaf(conv.target)))
        fused = ConcatNormActConv((cat.name, bn.name, act.name, conv.name), _op(act))
        path = _register(gm, conv.target, leaf, fused)

        def write(graph: fx.Graph, env: dict, cat=cat, bn=bn, conv=conv, path=path) -> fx.Node:
            refs = (_described(graph.create_node("get_attr", bn.target, name=bn.name), bn),
                    _described(graph.create_node("get_attr", conv.target, name=conv.name), conv))
            xs = tuple(env[x] for x in cat.args[0])
            return _described(graph.create_node("call_module", path, refs + xs, name=path.replace(".", "_")), conv)

        emit[conv] = write
        drop |= {cat, bn, act}
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
            d = None if dropout is None else _described(
                graph.create_node("get_attr", dropout.target, name=dropout.name), dropout)
            refs = tuple(_described(graph.create_node("get_attr", c.target, name=c.name + "_module"), c)
                         for c in convs)
            made["fused"] = graph.create_node("call_module", path, (d, refs, *(env[x] for x in xs)),
                                              name=path.replace(".", "_"))
            if len(convs) == 1:
                return _described(made["fused"], convs[0])
            _described(made["fused"], convs[0], shape=tuple(c.meta.get("shape") for c in convs))
            return _described(graph.create_node("call_function", operator.getitem, (made["fused"], 0),
                                                name=convs[0].name), convs[0])

        def pick(graph: fx.Graph, env: dict, k: int, conv: fx.Node, made=made) -> fx.Node:
            return _described(graph.create_node("call_function", operator.getitem, (made["fused"], k),
                                                name=conv.name), conv)

        emit[convs[0]] = write
        for k, c in enumerate(convs[1:], 1):
            emit[c] = lambda graph, env, k=k, c=c, pick=pick: pick(graph, env, k, c)
        drop |= {n for n in (cat, dropout) if n is not None}
    if emit:
        _rebuild(gm, emit, drop)
    return gm


# Fused training modules have no place in the inference form, whose batch norms are folded.
apply = Pass("lean", _apply, forbids=("fold_bn",))
