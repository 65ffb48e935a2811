"""Graph construction: hierarchical names, and nodes added with validated arguments and inferred shapes.
Everything that makes a node goes through `Builder.add`, so every node is checked the same way and
records its block and layer."""

from __future__ import annotations

import functools

import networkx as nx

from ..errors import Loc, SpecError
from .args import make_args
from .ir import Edge, Node
from .ops import OPS, OpArgs, Shape, ShapeError, fmt_shape

# Bounds that turn a runaway spec into an error rather than a hang. The largest real networks have a few
# thousand ops.
MAX_NODES = 50_000  # ops in one network
MAX_EDGES = 500_000  # tensors read, summed over all ops (dense patterns grow quadratically)
DEFAULT_MAX_PARAMS = 2_000_000_000  # parameters a network may have unless the caller raises the limit
# The largest count a spec may give an op (channels, features, an input's height or width, a kernel, a
# padding): 2**40. A tensor with a dimension of that size holds 2**40 values for one sample, more than any
# machine's memory; the widest real layers have about 10**5 channels, the largest real inputs a few 10**4
# pixels a side. (Sizes an op infers, such as a concatenation's channels, are bounded by the op, edge,
# parameter and memory limits instead.)
MAX_DIM = 2**40


class Scope:
    """A hierarchical name prefix with per-kind counters (`conv1`, `conv2`, `block1`, ...), and the block and
    block layer it lies in, so that every node records its structure and no later stage parses names."""

    def __init__(self, path: str = "", block: str | None = None, layer: str | None = None):
        self.path = path
        self.block, self.layer = block, layer
        self.counts: dict[str, int] = {}
        self.children: dict[str, Scope] = {}

    def name(self, base: str, numbered: bool = True) -> str:
        base = str(base)
        if numbered:
            self.counts[base] = self.counts.get(base, 0) + 1
            base = f"{base}{self.counts[base]}"
        return f"{self.path}.{base}" if self.path else base

    def child(self, base: str, numbered: bool = False, kind: str | None = None) -> "Scope":
        """A child scope; `kind` "block" or "layer" makes it the block or block layer of what it holds."""
        name = self.name(base, numbered)
        if name not in self.children:
            block, layer = (name if kind == "block" else self.block), (name if kind == "layer" else self.layer)
            self.children[name] = Scope(name, block, layer)
        return self.children[name]


@functools.lru_cache(maxsize=4096)
def _edge(slot: int, pattern: str) -> Edge:
    """Edges are immutable values: one object per (slot, pattern) serves every edge alike."""
    return Edge(slot=slot, pattern=pattern)


def _check_counts(op: str, a: OpArgs, loc: Loc) -> None:
    """Refuse an op given a count above `MAX_DIM` (a whole number, or one in a tuple such as a shape)."""
    for name in type(a).model_fields:
        value = getattr(a, name)
        for v in value if isinstance(value, tuple) else (value,):
            if type(v) is int and v > MAX_DIM:
                raise SpecError(f"{op}: {name}={v:,} is above the largest count an op may be given ({MAX_DIM:,})",
                                loc, "channels, features, sizes, kernels and paddings are each at most 2**40")


class Builder:
    """Adds nodes to the graph, validating arguments and inferring shapes as it goes."""

    def __init__(self) -> None:
        self.g = nx.DiGraph()
        self.edges = 0  # kept here: networkx counts edges by walking every node
        self.notes: list[tuple[Loc, str]] = []  # choices made for the spec that it did not write out

    def shape(self, name: str) -> Shape:
        return self.g.nodes[name]["node"].shape

    def add(self, op: str, args: dict | OpArgs, inputs: list[str], scope: Scope, base: str, loc: Loc,
            pattern: str = "chain", role: str = "op", numbered: bool = True) -> str:
        """A new node `op(inputs)` named `base` in `scope` (numbered, or plain where that name is free);
        returns its name. Bad arguments, arity or shapes are errors at `loc`."""
        spec = OPS[op]
        lo, hi = spec.arity
        if len(inputs) < lo or (hi is not None and len(inputs) > hi):
            raise SpecError(f"{op} takes {lo}" + ("" if hi == lo else f" to {hi or 'any number of'}")
                            + f" inputs, got {len(inputs)}", loc)
        if len(set(inputs)) != len(inputs):
            raise SpecError(f"{op} reads the same tensor twice", loc)
        a = args if isinstance(args, OpArgs) else make_args(op, spec.Args, (), args, loc)
        _check_counts(op, a, loc)
        in_shapes = [self.shape(i) for i in inputs]
        try:
            shape = spec.shape(in_shapes, a)
        except ShapeError as err:
            got = ", ".join(fmt_shape(s) for s in in_shapes)
            raise SpecError(f"shapes cannot meet: {err}", loc,
                            f"{op} gets {'inputs' if len(in_shapes) > 1 else 'an input of'} {got}") from None
        if len(self.g) >= MAX_NODES:
            raise SpecError(f"the network has more than {MAX_NODES:,} ops", loc,
                            "is a repeat count or a range far too large?")
        if self.edges + len(inputs) > MAX_EDGES:
            raise SpecError(f"the network's ops read more than {MAX_EDGES:,} tensors in all", loc,
                            "is a dense block far too long?")
        name = scope.name(base, numbered)
        if name in self.g:
            name = scope.name(base, True)
        # built from values checked above, so unvalidated: validation was a third of elaborating a large spec
        self.g.add_node(name, node=Node.model_construct(name=name, op=op, args=a, shape=tuple(shape), loc=loc,
                                                        pattern=pattern, role=role, block=scope.block,
                                                        layer=scope.layer))
        for slot, i in enumerate(inputs):
            self.g.add_edge(i, name, edge=_edge(slot, pattern))
        self.edges += len(inputs)
        return name
