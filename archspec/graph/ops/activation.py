"""What every element-wise activation shares: 0 parameters, the input's shape, a drawing colour, and
the memory trait — a pass may drop its input and recompute it from its backward."""

from __future__ import annotations

import importlib
from typing import Callable, ClassVar

from .base import Op


class Activation(Op):
    """A subclass sets `kind`, `function` (the dotted name of its torch function) and `backward`
    (grad_out, x_in, y_out → grad_in, as aten computes it). Both are looked up when called, so that
    parsing never loads torch."""

    function: ClassVar[str]
    recomputable = True
    keeps_channels = True
    colour = "#55a868"  # as every activation

    @classmethod
    def forward(cls) -> Callable:
        module, _, name = cls.function.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @staticmethod
    def backward(g, x, y):
        raise NotImplementedError

    @classmethod
    def lower(cls, args, ins):
        return cls.forward(), (), {}

    @classmethod
    def activation(cls):
        return cls.forward(), cls.backward


def from_output(aten: str, *extra: float) -> Callable:
    """An activation's `backward` (grad_out, x_in, y_out → grad_in) for one whose output alone gives the
    gradient: aten's `aten` of grad_out, y_out and `extra`."""

    def backward(g, x, y):
        import torch

        return getattr(torch.ops.aten, aten)(g, y, *extra)

    return staticmethod(backward)
