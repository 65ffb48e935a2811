"""Connection patterns: each module here defines one word of the language (`chain`, `residual`,
`dense`, ...) that wires a block's layers together. A new pattern is one module plus its entry in
`PATTERNS`; the parser never changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

from ...language.errors import Loc
from ..merges import Merge
from ..ops import NoArgs, OpArgs, Shape
from ..words import Word

if TYPE_CHECKING:
    from ..elaborate import Builder, Scope

# A layer of a block: given its input tensor and the scope to name its ops in, it returns its output.
Layer = Callable[[str, "Scope"], str]
Where = "Scope"


@dataclass
class BlockContext:
    """What a pattern may do while wiring a block: run layers, merge inflows, add ops."""

    builder: "Builder"
    scope: "Scope"
    pattern: str
    merge: type[Merge] | None
    merge_args: OpArgs
    loc: Loc

    def layer_scope(self, i: int) -> "Scope":
        return self.scope.child(f"layer{i + 1}", kind="layer")

    def run(self, layer: Layer, x: str, scope: "Scope") -> str:
        return layer(x, scope)

    def merge_of(self, inputs: list[str], where: "Scope") -> str:
        assert self.merge is not None
        return self.merge.combine(self, inputs, where, self.merge_args)

    def add(self, op: str, args: dict, inputs: list[str], where: "Scope", base: str, role: str = "op",
            numbered: bool = True) -> str:
        return self.builder.add(op, args, inputs, where, base, self.loc, pattern=self.pattern, role=role,
                                numbered=numbered)

    def shape(self, name: str) -> Shape:
        return self.builder.shape(name)


class Pattern(Word):
    word: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = NoArgs
    default_merge: ClassVar[str | None] = None  # None: the pattern takes no merge word

    @classmethod
    def build(cls, ctx: BlockContext, x: str, layers: Sequence[Layer], args: OpArgs) -> str:
        raise NotImplementedError


from .chain import Chain  # noqa: E402
from .dense import Dense  # noqa: E402
from .gradual import Gradual  # noqa: E402
from .residual import Residual  # noqa: E402
from .sequential import Seq, Window  # noqa: E402

PATTERNS: dict[str, type[Pattern]] = {p.word: p for p in (Chain, Residual, Dense, Seq, Window, Gradual)}
