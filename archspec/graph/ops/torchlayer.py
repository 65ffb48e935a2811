"""A base for ops that are one `torch.nn` layer built from the op's own arguments (dropout, pools)."""

from __future__ import annotations

from typing import Any, ClassVar

from .base import Build, Op, OpArgs


class TorchLayer(Op):
    """An op lowered to the `torch.nn` class named `module`, built from the op's arguments alone. The
    module keeps each constructor argument under the name in `init`, so the constructor text is read back
    from it by those names and cannot drift from the lowering."""

    module: ClassVar[str]  # the torch.nn class name
    init: ClassVar[tuple[str, ...]]  # its constructor's arguments, by torch's names
    positional: ClassVar[int] = 1  # how many of them the constructor text passes by position

    @classmethod
    def torch_args(cls, a: OpArgs) -> tuple[Any, ...]:
        """The values of `init` from the op's arguments: by default those of the same names."""
        return tuple(getattr(a, k) for k in cls.init)

    @classmethod
    def lower(cls, args, ins):
        return Build(f"torch.nn.{cls.module}", (), dict(zip(cls.init, cls.torch_args(args), strict=True)))

    @classmethod
    def source(cls, m):
        given = [f"{getattr(m, k)}" if i < cls.positional else f"{k}={getattr(m, k)}" for i, k in enumerate(cls.init)]
        return f"torch.nn.{cls.module}({', '.join(given)})"
