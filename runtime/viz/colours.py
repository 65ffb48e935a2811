"""Colours of the pictures: a connection by the merge its inflow feeds, an op by its kind."""

from __future__ import annotations

from archspec.graph.merges import BY_OP
from archspec.graph.ops import OPS, Op
from archspec.graph.patterns import PATTERNS

from .view import View

# a connection by the merge its inflow feeds (keyed by the merge op), grey for a plain chain
COLOURS = {**{op: merge.colour for op, merge in BY_OP.items()}, "chain": "#666666"}
OP_COLOURS = {kind: op.colour for kind, op in OPS.items()}
# the legend: each colour an op declares, with the ops that have it; the default grey is "other"
OP_LEGEND = tuple((tuple(k for k, op in OPS.items() if op.colour == c), c)
                  for c in dict.fromkeys(op.colour for op in OPS.values()) if c != Op.colour)
FAN_IN = {word for word, p in PATTERNS.items() if p.fan_in}


def edge_colour_key(v: View, a: str, b: str, patterns: set[str]) -> str:
    """Colour an edge by the merge that the inflow feeds: its target's merge, or its block's."""
    target = v.units[b]
    if target.kind in ("merge", "segment"):
        return target.op if target.op in COLOURS else "chain"
    if patterns == {"residual"}:
        return "add"
    if patterns & (FAN_IN | {"residual"}):
        return target.merge if target.merge in COLOURS else "chain"
    return "chain"
