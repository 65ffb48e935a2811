"""drop_path: stochastic depth per sample, as torchvision's `stochastic_depth(mode="row")`: in
training each sample's whole tensor is zeroed with probability p and the others scaled by 1/(1−p);
identity in eval. Placed last in a residual layer, it drops that layer's branch for some samples."""

from __future__ import annotations

from pydantic import Field

from .base import Build, Op, OpArgs, register


class DropPathArgs(OpArgs):
    p: float = Field(ge=0, le=1)


@register
class DropPath(Op):
    kind = "drop_path"
    keeps_channels = True
    aliases = ("droppath", "stochasticdepth")
    Args = DropPathArgs
    short = "droppath"

    @classmethod
    def lower(cls, args, ins):
        return Build("archspec.compiler.modules.DropPath", (args.p,))

    @classmethod
    def source(cls, m):
        return f"DropPath({m.p})"
