"""mean: the element-wise mean of several tensors of one shape, the op behind the `mean` merge
(FractalNet's joins). With `drop` > 0, training drops each inflow of each sample with that probability
(local drop-path), keeps at least one, and averages those kept; evaluation averages all."""

from __future__ import annotations

from pydantic import Field

from .base import Build, Op, OpArgs, Saves, one_shape, register


class MeanArgs(OpArgs):
    drop: float = Field(default=0.0, ge=0, lt=1)  # each inflow's probability of being dropped in training


@register
class Mean(Op):
    kind = "mean"
    Args = MeanArgs
    arity = (1, None)
    user = False
    saves = Saves(inputs=False, output=False, temporary=True)
    colour = "#17becf"

    @classmethod
    def shape(cls, ins, a):
        return one_shape(ins, "a mean")

    @classmethod
    def lower(cls, args, ins):
        return Build("archspec.compiler.modules.Mean", (args.drop,))

    @classmethod
    def source(cls, m):
        return f"Mean({m.drop})"
