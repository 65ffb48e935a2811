"""Ops that move tensors without weights: the network input, identity, channel concatenation, the
element-wise sum and a channel slice."""

from __future__ import annotations

from pydantic import NonNegativeInt, PositiveInt

from .base import Call, Op, OpArgs, Saves, ShapeError, image, one_shape, register, same_spatial


class InputArgs(OpArgs):
    shape: tuple[PositiveInt, ...]


class SliceArgs(OpArgs):
    start: NonNegativeInt
    stop: PositiveInt


@register
class Input(Op):
    """The network's input; it becomes the module's one placeholder."""

    kind = "input"
    Args = InputArgs
    arity = (0, 0)
    colour = "#222222"

    @classmethod
    def shape(cls, ins, a):
        return tuple(a.shape)


@register
class Identity(Op):
    kind = "identity"
    keeps_channels = True
    saves = Saves(inputs=False, output=False, view=True)
    aliases = ("id", "noop")

    @classmethod
    def lower(cls, args, ins):
        return None


@register
class Concat(Op):
    """Channel concatenation (DenseNet)."""

    kind = "concat"
    saves = Saves(inputs=False, output=False)
    arity = (1, None)
    user = False
    gather = "list"

    @classmethod
    def shape(cls, ins, a):
        same_spatial(ins, "concat")
        return (sum(s[0] for s in ins),) + ins[0][1:]

    @classmethod
    def lower(cls, args, ins):
        return Call("torch.cat", (1,))


@register
class Add(Op):
    """Element-wise sum (ResNet)."""

    kind = "add"
    saves = Saves(inputs=False, output=False, temporary=True)
    arity = (1, None)
    user = False
    gather = "pairwise"

    @classmethod
    def shape(cls, ins, a):
        return one_shape(ins, "a sum")

    @classmethod
    def lower(cls, args, ins):
        return Call("operator.add")


@register
class Slice(Op):
    """A channel range [start, stop) of one tensor."""

    kind = "slice"
    saves = Saves(inputs=False, output=False, view=True)
    Args = SliceArgs
    keeps_channels = False
    colour = "#8172b3"

    @classmethod
    def shape(cls, ins, a):
        c = image(ins[0], "slice")[0]
        if not a.start < a.stop <= c:
            raise ShapeError(f"channel slice [{a.start}, {a.stop}) is outside 0..{c}")
        return (a.stop - a.start,) + ins[0][1:]

    @classmethod
    def lower(cls, args, ins):
        return Call("operator.getitem", ((slice(None), slice(args.start, args.stop)),))
