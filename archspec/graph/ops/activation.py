"""What every element-wise activation shares: 0 parameters, the input's shape, a drawing colour, and
the memory trait — a pass may drop its input and recompute it from its backward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal, Mapping

from .base import Call, Op, named


@dataclass(frozen=True)
class Gradient:
    """An activation's backward as aten computes it: grad_in = `torch.ops.aten.<aten>(grad_out, x_in or
    y_out, *extra, **kwargs)`."""

    aten: str
    reads: Literal["input", "output"]  # which tensor the formula needs besides grad_out
    extra: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def function(self) -> Callable:
        """backward(grad_out, x_in, y_out) → grad_in, the aten op looked up now."""
        fn = getattr(named("torch.ops").aten, self.aten)
        extra, kwargs, output = self.extra, dict(self.kwargs), self.reads == "output"

        def backward(g, x, y):
            return fn(g, y if output else x, *extra, **kwargs)

        return backward


class Activation(Op):
    """A subclass sets `kind`, `function` (the dotted name of its torch function) and `backward`
    (a `Gradient`). Both are looked up when called, so that parsing never loads torch."""

    function: ClassVar[str]
    backward: ClassVar[Gradient]
    recomputable = True
    keeps_channels = True
    colour = "#55a868"  # as every activation

    @classmethod
    def forward(cls) -> Callable:
        return named(cls.function)

    @classmethod
    def lower(cls, args, ins):
        return Call(cls.function)

    @classmethod
    def activation(cls):
        return cls.forward(), cls.backward.function()


def from_output(aten: str, *extra: float) -> Gradient:
    """The backward of an activation whose output alone gives the gradient: aten's `aten` of grad_out,
    y_out and `extra`."""
    return Gradient(aten, "output", extra)
