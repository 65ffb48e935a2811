"""What a connection pattern is (a word with arguments and a default merge, registered with `@register`)
and all it may do while wiring a block (`BlockContext`): a pattern sees the block only through that
small interface, never the interpreter or the builder behind it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, ClassVar, Protocol, Sequence

from ...errors import Loc, SpecError
from ..builder import Builder, Scope
from ..ops import OPS, NoArgs, OpArgs, Shape
from ..streams import Stream, Streams
from ..words import Word

@dataclass(frozen=True)
class Layer:
    """A layer of a block: given its input tensor and the scope to name its ops in, it returns its output.
    `op` is the primitive it consists of when the body wrote one bare op call as the layer (`bn`), None for
    a template call or a braced group; `loc` is where the body wrote it."""

    run: Callable[[str, Scope], str]
    loc: Loc | None = None
    op: str | None = None

    def __call__(self, x: str, scope: Scope) -> str:
        return self.run(x, scope)


# Runs a layer template by name on a tensor: (name, positional values, input, scope, the pattern's built-in
# choices for an error's hint) → output.
TemplateRunner = Callable[..., str]
Where = Scope  # where a pattern's own ops are named: the block's scope or one of its layers'


class MergeRule(Protocol):
    """What a pattern reads of its block's merge word (a `merges.Merge` class)."""

    word: ClassVar[str]
    equal_shapes: ClassVar[bool]  # inflows must agree in shape

    def combine(self, ctx: "BlockContext", inputs: list[str], where: Where, args: OpArgs) -> str: ...


class BlockContext:
    """A pattern's view of the block it wires: its scope, merge and location, and the few things it may do
    there — run a layer, merge inflows, add an op, read a shape, carry a residual stream."""

    def __init__(self, builder: Builder, streams: Streams, scope: Scope, pattern: str, merge: MergeRule | None,
                 merge_args: OpArgs, loc: Loc, templates: TemplateRunner | None = None):
        self._builder, self._streams = builder, streams
        self._templates = templates
        self.scope = scope  # the block's scope: ops of the block as a whole (its output merge) go here
        self.pattern = pattern
        self.merge = merge  # None for a pattern that takes no merge word
        self._merge_args = merge_args
        self.loc = loc  # the block statement: where the pattern's errors point

    def layer_scope(self, i: int) -> Scope:
        """The scope of the block's layer `i` (0-based): `block2.layer{i + 1}`."""
        return self.scope.child(f"layer{i + 1}", kind="layer")

    def run(self, layer: Layer, x: str, scope: Scope) -> str:
        """Apply one of the block's layers to `x`, naming its ops in `scope`."""
        return layer(x, scope)

    def template(self, name: str, values: Sequence[object], x: str, scope: Scope,
                 builtin: Sequence[str] = ()) -> str:
        """Apply the spec's layer template `name` to `x` with these positional arguments (a pattern's own
        sub-layer the spec names, such as a residual projection); errors point at the block, and an
        unknown name is told the `builtin` words that could stand there too."""
        if self._templates is None:
            raise SpecError(f"pattern '{self.pattern}' cannot call layer '{name}' here", self.loc)
        return self._templates(name, values, x, scope, builtin)

    def note(self, message: str) -> None:
        """Record a choice the pattern made that the spec did not write out: shown by `check` and
        `compile`."""
        self._builder.notes.append((self.loc, message))

    def readers(self, x: str, scope: Scope) -> list[str]:
        """The ops of `scope` (a layer's) that read `x`, in the order they were made."""
        return [n for n in self._builder.g.succ[x] if self._builder.g.nodes[n]["node"].layer == scope.layer]

    def op_of(self, name: str) -> str:
        return self._builder.g.nodes[name]["node"].op

    def refuse_lone_op(self, layer: Layer, x: str, y: str, what: str, allowed: tuple[str, ...] = ()) -> None:
        """An error when `layer` is one bare op without weights that keeps its input's shape (`bn`, `relu`):
        in a body such as `conv(...) bn relu conv(...)`, each call is a layer of its own, which is rarely
        what was meant where every layer is `what` (its own shortcut, its own branch)."""
        op = layer.op
        if op is None or op in allowed or OPS[op].weighted or self.shape(x) != self.shape(y):
            return
        example = "{ conv(64, 3, padding=1) bn relu conv(64, 3, padding=1) bn }"
        raise SpecError(f"in a {self.pattern} block each call is a layer of its own, so this `{op}` alone is "
                        f"{what}", layer.loc or self.loc,
                        f"group the calls of one layer in braces, as in `block {self.pattern} {{ {example} }}`, "
                        "or call a layer template")

    def merge_of(self, inputs: list[str], where: Where) -> str:
        """The block's merge of `inputs` (one inflow passes through untouched)."""
        assert self.merge is not None, f"pattern '{self.pattern}' takes no merge word"
        return self.merge.combine(self, inputs, where, self._merge_args)

    def add(self, op: str, args: dict, inputs: list[str], where: Where, base: str, role: str = "op",
            numbered: bool = True) -> str:
        """A node `op(inputs)` of the pattern's own (a projection, a slice, a join), located at the block."""
        return self._builder.add(op, args, inputs, where, base, self.loc, pattern=self.pattern, role=role,
                                 numbered=numbered)

    def shape(self, name: str) -> Shape:
        return self._builder.shape(name)

    def embedded_stream(self, x: str) -> AbstractContextManager[Stream]:
        """`with ctx.embedded_stream(x) as stream:` runs a layer whose `shortcut` marks add the residual
        stream of `x`; afterwards `stream.taken` says how many of its `stream.channels` they added."""
        return self._streams.embedded(x)

    def join_raw(self, out: str, parts: list[str]) -> None:
        """Declare `out` to be `parts` side by side, so that their raw tensors (when all have one) make
        its raw tensor and a stream carried raw runs on through it."""
        self._streams.join(out, parts)


class Pattern(Word):
    word: ClassVar[str]
    Args: ClassVar[type[OpArgs]] = NoArgs
    default_merge: ClassVar[str | None] = None  # None: the pattern takes no merge word
    fan_in: ClassVar[bool] = False  # its layers read several earlier tensors: drawn as arcs into each merge

    @classmethod
    def build(cls, ctx: BlockContext, x: str, layers: Sequence[Layer], args: OpArgs) -> str:
        """Wire `layers` on the block input `x`; returns the block's output."""
        raise NotImplementedError


PATTERNS: dict[str, type[Pattern]] = {}


def register(cls: type[Pattern]) -> type[Pattern]:
    """Class decorator: make `cls` the pattern its `word` names."""
    other = PATTERNS.get(cls.word)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"pattern '{cls.word}' is defined twice: {other.__module__} and {cls.__module__}")
    PATTERNS[cls.word] = cls
    return cls
