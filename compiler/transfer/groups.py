"""A state dict's tensors module by module: a module's tensors are one group (a conv's weight; a batch
norm's weight, bias, running mean and variance, its batch counter kept apart). Also whether two groups
hold the same values element for element, and the natural name order (layer2 before layer10) used where
a state dict's order means nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod
from typing import Mapping

import torch


COUNTER = "num_batches_tracked"  # a batch norm's step count: kept where one side has none
_RANK = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3, COUNTER: 4}


@dataclass
class Group:
    """The tensors one module owns, in order, its batch counter apart, and where its first one is in the walk."""

    module: str
    names: list[str]
    tensors: list[torch.Tensor]
    counter: tuple[str, torch.Tensor] | None
    start: int


def module_groups(items: list[tuple[str, torch.Tensor]]) -> list[Group]:
    """`items` (name, tensor) cut into groups where the module part of the name changes."""
    groups: list[Group] = []
    for i, (name, t) in enumerate(items):
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if not groups or groups[-1].module != module:
            groups.append(Group(module, [], [], None, i))
        g = groups[-1]
        if name.rsplit(".", 1)[-1] == COUNTER and g.counter is None:
            g.counter = (name, t)
        else:
            g.names.append(name)
            g.tensors.append(t)
    return groups


def group_items(g: Group) -> list[tuple[str, torch.Tensor]]:
    """A group's (name, tensor) pairs, its batch counter last."""
    return list(zip(g.names, g.tensors)) + ([g.counter] if g.counter is not None else [])


def same_layout(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
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


def fits(s: Group, t: Group) -> bool:
    """Whether group `s` can give group `t` its tensors: as many, each of the same layout (`same_layout`)."""
    return len(s.tensors) == len(t.tensors) and all(
        same_layout(tuple(a.shape), tuple(b.shape)) for a, b in zip(s.tensors, t.tensors))


def natural_key(name: str) -> list:
    """A sort key that orders the numbers in a name by value (layer2 before layer10)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def name_sorted(state: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """An unordered state dict in the most likely module order: module paths in natural order (layer2
    before layer10), each module's tensors as torch registers them."""
    def key(name: str):
        module, _, leaf = name.rpartition(".")
        return (natural_key(module), _RANK.get(leaf, 5), leaf)

    return [(k, state[k]) for k in sorted(state, key=key)]
