"""The protocol every learned merge's implementations follow: each named `Implementation` runs the merge
as its module would; an `Implementations` table per merge op holds the reference and the others; `REGISTRY`
maps merge ops to their tables, and `Choice` is what a merge's `choose` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Choice:
    """The implementation that runs at one place, and the one-line reason."""

    name: str
    reason: str


@dataclass(frozen=True)
class Implementation:
    """One way to compute a merge. `run(module, *xs)` computes it as the module would in its current
    mode (training or eval), updating its running statistics where it trains; `modes` says which of
    "train" and "eval" it serves, `devices` where it runs and `accepts(module)` which modules it takes."""

    name: str
    summary: str
    run: Callable[..., torch.Tensor]
    modes: tuple[str, ...] = ("train", "eval")
    devices: tuple[str, ...] = ("cpu", "cuda")
    accepts: Callable[[nn.Module], bool] = lambda m: True
    learns: bool = True  # gradients reach the module's parameters (False for an inference form)
    available: Callable[[], bool] = lambda: True  # whether what it needs imports here


@dataclass
class Implementations:
    """A merge's module class, its reference implementation and the others, by name."""

    module: type[nn.Module]
    reference: Implementation
    others: dict[str, Implementation] = field(default_factory=dict)

    def add(self, impl: Implementation) -> Implementation:
        if impl.name in self.others or impl.name == self.reference.name:
            raise ValueError(f"implementation {impl.name!r} of {self.module.__name__} is registered twice")
        self.others[impl.name] = impl
        return impl

    def all(self) -> dict[str, Implementation]:
        return {self.reference.name: self.reference, **self.others}


REGISTRY: dict[str, Implementations] = {}


def register(op: str, table: Implementations) -> Implementations:
    """Register merge op `op`'s implementations (one table per op)."""
    if op in REGISTRY:
        raise ValueError(f"merge {op!r} is registered twice")
    REGISTRY[op] = table
    return table
