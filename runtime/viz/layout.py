"""Where a view's units and arcs go on the page: rows of layer dots (a block group with the small
groups leading into it), one slot per dot, each row as tall as its longest arcs need."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from .colours import edge_colour_key
from .view import Unit, View

@dataclass
class Row:
    units: list[Unit]
    x: dict[str, float] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)  # position in the row; a pair shares one
    dy: dict[str, float] = field(default_factory=dict)  # a gradual unit sits under its segment
    y: float = 0.0  # the line the units sit on
    top: float = 0.0
    bottom: float = 0.0
    above: float = 0.0  # room for arcs above and below
    below: float = 0.0


BOX_SLOTS = 5.0  # a box takes as much room as five dots
OP_LABELS = 60  # op names are written in rows of at most this many ops
_GAP = 0.6  # between two groups of a row, in dots
UNDER = 0.26  # how far a gradual update unit sits below its segment (inches)


def slots(u: Unit, level: str) -> float:
    return BOX_SLOTS if u.kind in ("box", "input") and level != "op" else 1.0


def _paired(prev: Unit | None, u: Unit) -> bool:
    """A gradual segment drawn above the update unit that made it."""
    return prev is not None and u.kind == "segment" and prev.kind == "layer" and u.key.startswith(prev.key + ".")


def _width(units: list[Unit], level: str) -> float:
    total, prev = 0.0, None
    for u in units:
        total += 0.0 if _paired(prev, u) else slots(u, level)
        total += _GAP if prev is not None and prev.group != u.group else 0.0
        prev = u
    return total


def _rows(v: View) -> list[list[Unit]]:
    """Rows of units. A chunk is a block group with the small groups that lead into it (a stem, a
    transition); trailing small groups (the head) join the last chunk. Chunks fill rows as wide as
    the widest chunk."""
    order = sorted(v.units.values(), key=lambda u: u.first)
    groups: dict[str, list[Unit]] = {}
    for u in order:
        groups.setdefault(u.group, []).append(u)
    chunks: list[list[Unit]] = []
    pending: list[Unit] = []
    for g, units in groups.items():
        if v.groups[g].has_blocks:
            chunks.append(pending + units)
            pending = []
        else:
            pending += units
    if pending:
        if chunks:
            chunks[-1] += pending
        else:
            per = 8 if v.level != "op" else 60
            chunks = [pending[i:i + per] for i in range(0, len(pending), per)]
    limit = max(_width(c, v.level) for c in chunks)
    rows: list[list[Unit]] = []
    for c in chunks:
        if rows and _width(rows[-1], v.level) + _width(c, v.level) <= limit:
            rows[-1] += c
        else:
            rows.append(list(c))
    return rows


def arc_points(x1: float, y1: float, x2: float, y2: float, h: float, n: int = 24) -> list[tuple[float, float]]:
    """Half an ellipse from (x1, y1) to (x2, y2), rising `h` (falling, when negative)."""
    pts = []
    for t in range(n):
        a = math.pi * t / (n - 1)
        s = (1 - math.cos(a)) / 2
        pts.append((x1 + (x2 - x1) * s, y1 + (y2 - y1) * s + h * math.sin(a)))
    return pts


class Arc(NamedTuple):
    """One unit edge as drawn in the row of its target."""

    xa: float
    dya: float
    xb: float
    dyb: float
    below: bool  # residual streams (and a gradual unit's reads of the old segments) run under the row
    kind: str  # colour key
    straight: bool  # neighbours: a plain line


@dataclass
class Layout:
    rows: list[Row]
    slot: float  # inches per dot
    width: float
    in_x: float  # where inflows from other rows enter a row
    arcs: list[list[Arc]] = field(default_factory=list)
    external: list[dict[str, None]] = field(default_factory=list)  # per row, the groups feeding it
    used: set[str] = field(default_factory=set)
    span_max: float = 1.0
    height: float = 0.0


def place(v: View) -> Layout:
    """Rows and horizontal positions: one slot per dot, five per box, a little gap between groups; a
    gradual segment shares the slot of the unit that updates it."""
    rows = [Row(units) for units in _rows(v)]
    max_slots = max(_width(r.units, v.level) + (1.5 if i else 0) for i, r in enumerate(rows))
    slot = min(0.42, ((24.0 if v.level == "op" else 16.0) - 1.0) / max_slots)
    margin = 0.5
    lay = Layout(rows, slot, max(7.0, max_slots * slot + 2 * margin), margin + 0.5 * slot)
    for i, r in enumerate(rows):
        x = margin + (1.5 * slot if i else 0.0)
        prev = None
        for k, u in enumerate(r.units):
            r.index[u.key] = k
            if prev is not None and prev.group != u.group:
                x += _GAP * slot
            if _paired(prev, u):
                r.x[u.key] = r.x[prev.key]
                r.dy[prev.key] = -UNDER
                r.index[u.key] = r.index[prev.key]
            else:
                w = slots(u, v.level) * slot
                r.x[u.key] = x + w / 2
                x += w
            prev = u
    return lay


def route(v: View, lay: Layout) -> None:
    """Each unit edge as an arc in its target's row; an edge from another row starts at the in-node."""
    row_of = {u.key: i for i, r in enumerate(lay.rows) for u in r.units}
    lay.arcs = [[] for _ in lay.rows]
    lay.external = [{} for _ in lay.rows]
    for (a, b), patterns in v.edges.items():
        i = row_of[b]
        r = lay.rows[i]
        kind = edge_colour_key(v, a, b, patterns)
        lay.used.add(kind)
        if row_of[a] == i:
            xa, dya, straight = r.x[a], r.dy.get(a, 0.0), abs(r.index[b] - r.index[a]) <= 1
        else:
            xa, dya, straight = lay.in_x, 0.0, r.index[b] == 0
            lay.external[i][v.units[a].group] = None
        below = kind != "chain" and ("residual" in patterns or (b in r.dy and v.units[a].kind != "segment"))
        lay.arcs[i].append(Arc(xa, dya, r.x[b], r.dy.get(b, 0.0), below, kind, straight))
    lay.span_max = max((abs(e.xb - e.xa) for row in lay.arcs for e in row if not e.straight), default=1.0) or 1.0


def stack(v: View, lay: Layout) -> None:
    """Vertical positions: each row as tall as its longest arcs need (heights grow as √span)."""
    room = 1.5 if v.level == "layer" else 1.2
    y = -0.35
    for r, arcs in zip(lay.rows, lay.arcs):
        up = [abs(e.xb - e.xa) for e in arcs if not e.below and not e.straight]
        down = [abs(e.xb - e.xa) for e in arcs if e.below and not e.straight]
        r.above = 0.3 + room * math.sqrt(max(up, default=0) / lay.span_max)
        r.below = 0.25 + 0.7 * math.sqrt(max(down) / lay.span_max) if down else 0.0
        labels = 0.4 if v.level == "op" and len(r.units) <= OP_LABELS else 0.0
        r.top = y
        r.y = y - 0.35 - r.above
        r.bottom = (r.y - 0.32 - (UNDER if r.dy else 0) - max(r.below, labels)
                    - (0.3 if any(u.sub for u in r.units) else 0))
        y = r.bottom - 0.3
    lay.height = -(y - 0.45)
