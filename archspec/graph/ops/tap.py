"""tap: marks the tensor it receives as a feature a backbone returns (`build(..., features_only=True)`,
`forward_intermediates`); 0 parameters, shape-preserving, lowered to nothing. A spec's taps replace the
default features (one per resolution), so a spec states its own feature pyramid."""

from __future__ import annotations

from pydantic import Field

from .base import Op, OpArgs, Saves, image, register


class TapArgs(OpArgs):
    # the feature's name in `feature_info`; empty: the tap's own path (`tap1`, `transition2.tap1`)
    name: str = Field("", max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@register
class Tap(Op):
    kind = "tap"
    keeps_channels = True
    saves = Saves(inputs=False, output=False, view=True)
    aliases = ("feature", "features", "hook")
    Args = TapArgs
    colour = "#dd8452"

    @classmethod
    def shape(cls, ins, a):
        return image(ins[0], "tap")  # a feature is a map: a tap after `gap` is a spec error

    @classmethod
    def lower(cls, args, ins):
        return None
