"""What every element-wise activation shares: 0 parameters, the input's shape, a drawing colour, and
the memory trait — a pass may drop its input and recompute it from its backward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from .base import Call, Op


@dataclass(frozen=True)
class Gradient:
    """An activation's backward as aten computes it: grad_in = `torch.ops.aten.<aten>(grad_out, x_in or
    y_out, *extra, **kwargs)`."""

    aten: str
    reads: Literal["input", "output"]  # which tensor the formula needs besides grad_out
    extra: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


class Activation(Op):
    """A subclass sets `kind`, `function` (the dotted name of its torch function) and `backward`
    (a `Gradient`): names only, which the compiler looks up (`compiler.resolve.activation`), so that
    parsing never loads torch."""

    function: ClassVar[str]
    backward: ClassVar[Gradient]
    recomputable = True
    keeps_channels = True
    colour = "#55a868"  # as every activation

    @classmethod
    def lower(cls, args, ins):
        return Call(cls.function)

def from_output(aten: str, *extra: float) -> Gradient:
    """The backward of an activation whose output alone gives the gradient: aten's `aten` of grad_out,
    y_out and `extra`."""
    return Gradient(aten, "output", extra)
