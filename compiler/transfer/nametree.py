"""A state dict without a module, laid out along the target's modules by its names' tree: modules in
numbered containers keep their numbers' order, named siblings may come in any order whose shapes fit,
each module's subtree stays together; tried in the target's registration order, then in its dataflow's,
within a bounded number of placements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.fx as fx
from torch import nn

from .dataflow import canonical_order, flow_items, input_shape
from .groups import Group, fits, group_items, module_groups, name_sorted, natural_key
from .trace import trace_flow


TREE_STEPS = 50_000  # placements tried in all, per target order, before the name tree is given up


def tree_walks(state: Mapping[str, torch.Tensor], gm: nn.Module
               ) -> Iterable[tuple[str, list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]] | None]]:
    """The source's modules laid out along the target's, in its registration order and then in its dataflow
    order: modules in containers numbered 0, 1, 2... keep their numbers' order; named siblings (and a
    module's own tensors) may come in any order, the first in natural name order whose shapes fit; each
    module's subtree stays together."""
    src = module_groups(name_sorted(state))
    own = list(gm.state_dict(keep_vars=True).items())
    flow = trace_flow(gm, input_shape(gm)) if isinstance(gm, fx.GraphModule) else None
    orders = [own]
    if flow is not None:
        canonical_order([flow])
        orders.append(flow_items(flow, own))
    for dst in orders:
        laid = _lay_out(src, module_groups(dst))
        if laid is not None:
            yield "name-tree", [x for g in laid for x in group_items(g)], dst


@dataclass
class _Tree:
    """A node of the name tree: the group named by its path, if any, and its children by name part."""

    group: Group | None = None
    children: dict[str, "_Tree"] = field(default_factory=dict)
    size: int = 0  # groups in the subtree


def _lay_out(src: list[Group], dst: list[Group]) -> list[Group] | None:
    """`src`'s groups in an order whose shapes fit `dst`'s group by group, within the name tree's freedom
    (see `tree_walks`); None where there is none, or none found within TREE_STEPS placements."""
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
    memo: dict[tuple[int, int], list[Group] | None] = {}

    def fit(node: _Tree, pos: int) -> list[Group] | None:
        key = (id(node), pos)
        if key not in memo:
            memo[key] = arrange(node, pos)
        return memo[key]

    def arrange(node: _Tree, pos: int) -> list[Group] | None:
        numbered = sorted((k for k in node.children if k.isdigit()), key=int)
        named: list[object] = ([node.group] if node.group is not None else []) + [
            node.children[k] for k in sorted(node.children, key=natural_key) if not k.isdigit()]
        return place(tuple(named), [node.children[k] for k in numbered], pos)

    def place(named: tuple, numbered: list[_Tree], pos: int) -> list[Group] | None:
        if not named:  # numbered children only: one order, no choice to go back on
            out: list[Group] = []
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
            if isinstance(item, Group):
                part = [item] if pos < len(dst) and fits(item, dst[pos]) else None
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
