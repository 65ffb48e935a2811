"""Both sides' dataflows in one canonical order: a topological order of each flow's steps that does not
depend on the order modules are registered or called, or branches summed, so that the same structure
gives the same order; a state dict's tensors walked in that order; the input shape an archspec module
records; and the convolutions fed straight by a zero-padding module, seen in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from .groups import group_items, module_groups
from .trace import Flow


def input_shape(gm: nn.Module) -> tuple[int, ...] | None:
    """One sample's shape, as the archspec module's input records it."""
    graph = getattr(gm, "graph", None)
    return next((n.meta.get("shape") for n in graph.nodes if n.op == "placeholder"), None) if graph else None


def canonical_order(flows: list[Flow]) -> None:
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


def flow_items(flow: Flow, items: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """`items` (a state dict's) module by module in `flow`'s canonical order; modules the forward pass does
    not use after them, as registered."""
    rank: dict[str, int] = {}
    for i in flow.order:
        for g in flow.nodes[i].groups:
            rank.setdefault(g, len(rank))
    groups = module_groups(items)
    late = len(rank)
    out: list[tuple[str, torch.Tensor]] = []
    for k in sorted(range(len(groups)), key=lambda k: (rank.get(groups[k].module, late), k)):
        out += group_items(groups[k])
    return out


def zero_pads(model: nn.Module, shape: tuple[int, ...] | None) -> dict[str, tuple[int, ...]]:
    """The convolutions whose input is the output of a padding module that pads with zeros
    (`nn.ZeroPad2d`, a `ConstantPad` of value 0) alike on both sides of each padded dimension: conv name →
    that padding per dimension, as a convolution's own padding would read. Seen in one forward pass on a
    zero sample of `shape` (eval mode, no gradients; `model` is left as it was); empty where none pads or
    the pass cannot run."""
    pads = {m: _even(m.padding) for m in model.modules()
            if isinstance(m, nn.modules.padding._ConstantPadNd) and m.value == 0}
    pads = {m: p for m, p in pads.items() if p is not None}
    first = next(iter(model.parameters()), None)
    if not pads or shape is None or first is None:
        return {}
    convs = {m: name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    padded: dict[int, tuple[int, ...]] = {}
    keep: list[torch.Tensor] = []  # every padded output stays alive, so that no identity is reused
    found: dict[str, tuple[int, ...]] = {}

    def gave(m: nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            padded[id(out)] = pads[m]
            keep.append(out)

    def takes(m: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and len(padded.get(id(x), ())) == len(m.kernel_size):
            found[convs[m]] = padded[id(x)]

    hooks = [m.register_forward_hook(gave) for m in pads] + [m.register_forward_pre_hook(takes) for m in convs]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), dtype=first.dtype, device=first.device))
    except Exception:  # a module that will not run on a zero sample of this shape: no padding seen
        return {}
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return found


def _even(padding: tuple[int, ...]) -> tuple[int, ...] | None:
    """A padding module's (left, right, top, bottom, ...) sides, last dimension first, as one amount per
    dimension, first dimension first; None where a dimension's two sides differ or any is negative."""
    sides = [tuple(padding[i:i + 2]) for i in range(0, len(padding), 2)]
    if any(len(s) != 2 or s[0] != s[1] or s[0] < 0 for s in sides):
        return None
    return tuple(s[0] for s in reversed(sides))
