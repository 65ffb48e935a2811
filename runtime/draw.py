"""`archspec graph`: a picture of a network's cross-layer wiring, drawn with matplotlib alone (no
Graphviz), or its DOT text. A connection pattern is recognised by shape, not by reading labels: each
block is a row of layer dots with its inflows drawn as arcs above the row (a dense block is a rainbow,
a windowed one a band of short arcs), residual skips as arcs below it, and the merge kind as colour."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from archspec.language.errors import RunError
from archspec.graph.ir import Network, node_macs, node_params
from archspec.graph.ops import fmt_shape

LEVELS = ("block", "layer", "op")
SUFFIXES = (".svg", ".png", ".dot")

MERGE_WORDS = {"concat": "concat", "add": "sum", "crossdepthwise": "crossdepthwise"}
COLOURS = {"concat": "#1f77b4", "add": "#2ca02c", "crossdepthwise": "#d62728", "chain": "#666666"}
OP_COLOURS = {"conv": "#4c72b0", "linear": "#4c72b0", "bn": "#dd8452", "relu": "#55a868",
              "slice": "#8172b3", "input": "#222222"}
_SHORT = {"crossdepthwise": "cdw", "dropout2d": "drop2d"}
_OP_LEGEND = ((("conv", "linear"), "#4c72b0"), (("bn",), "#dd8452"), (("relu",), "#55a868"),
              (("slice",), "#8172b3"), (("input",), "#222222"))
FAN_IN = {"dense", "seq", "window", "gradual"}

_BLOCK = re.compile(r"block\d+$")
_LAYER = re.compile(r"layer\d+$")


# ---- names -----------------------------------------------------------------------------------

def group_of(name: str) -> str:
    """The top-level group (stem, block1, transition1, head, ...) a node belongs to."""
    return name.split(".", 1)[0]


def layer_of(name: str) -> str | None:
    """The deepest block layer (`…blockN.layerM`) strictly holding `name`, or None."""
    parts = name.split(".")
    for i in range(len(parts) - 2, 0, -1):
        if _LAYER.match(parts[i]) and _BLOCK.match(parts[i - 1]):
            return ".".join(parts[:i + 1])
    return None


def block_of(name: str) -> str | None:
    """The deepest block scope (`…blockN`) holding `name`: the block a layer or a merge belongs to."""
    parts = name.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if _BLOCK.match(parts[i]) and (_LAYER.match(parts[i + 1]) or parts[i + 1].startswith(("merge", "join"))):
            return ".".join(parts[:i + 1])
    return None


# ---- the view: units, edges, groups ----------------------------------------------------------

@dataclass
class Unit:
    """One drawn node: a layer, a merge, a whole small group, or one op."""

    key: str
    kind: str  # box, layer, merge, segment, join, op, input
    group: str
    label: str
    shape: tuple
    op: str
    merge: str  # merge op of its block, for colour ("chain" when none)
    sub: str | None  # the nested block (layer level) or layer (op level) it sits in, for a band
    first: int  # creation index of its first node: the drawing order


@dataclass
class Group:
    """A top-level group (stem, block1, transition1, head): what its box or frame says."""

    name: str
    title: str  # "dense · crossdepthwise, 8 layers"
    shape: tuple
    params: int = 0
    macs: int = 0
    has_blocks: bool = False
    merge: str = "chain"


@dataclass
class View:
    """What a picture or a DOT file shows at one level."""

    network: str
    level: str
    units: dict[str, Unit] = field(default_factory=dict)
    edges: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (u, v) → patterns
    groups: dict[str, Group] = field(default_factory=dict)


def _groups(net: Network) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    kinds: dict[str, dict[str, None]] = {}
    layers: dict[str, set[str]] = {}
    for node in net.nodes():
        g = group_of(node.name)
        grp = groups.setdefault(g, Group(g, "", node.shape))
        grp.shape = node.shape
        if node.role != "input":
            grp.params += node_params(net, node)
            grp.macs += node_macs(net, node)
        if layer_of(node.name) or node.role == "merge":
            grp.has_blocks = True
        parts = node.name.split(".")
        if len(parts) > 2 and _BLOCK.match(parts[0]) and _LAYER.match(parts[1]):
            layers.setdefault(g, set()).add(parts[1])
        if node.role == "merge":
            kinds.setdefault(g, {})[f"{node.pattern} · {MERGE_WORDS.get(node.op, node.op)}"] = None
            if grp.merge == "chain":
                grp.merge = node.op
        elif node.pattern != "chain" and not any(k.startswith(node.pattern + " ") for k in kinds.get(g, {})):
            kinds.setdefault(g, {})[node.pattern] = None
    for g, grp in groups.items():
        words = [k for k in kinds.get(g, {}) if " " in k or not any(j.startswith(k + " ") for j in kinds[g])]
        n = len(layers.get(g, ()))
        if n:
            what = "segment" if any(k.startswith("gradual") for k in words) else "layer"
            words.append(f"{n} {what}" + ("s" if n > 1 else ""))
        grp.title = ", ".join(words)
    return groups


def _block_merges(net: Network) -> dict[str, str]:
    """Each block's merge op, read off its merge nodes (an embedded residual block adds: `add`)."""
    out: dict[str, str] = {}
    for node in net.nodes():
        b = block_of(node.name)
        if b is None:
            continue
        if node.role == "merge":
            out.setdefault(b, node.op)
        elif node.role == "shortcut" and node.op == "add":
            out.setdefault(b, "add")
    return out


def _unit_key(net: Network, name: str, level: str, groups: dict[str, Group]) -> str:
    node = net.node(name)
    g = group_of(name)
    if level == "block":
        return g
    if level == "op" or node.role in ("input", "merge"):
        return name
    if node.role == "join" and layer_of(name) is None:
        return name
    if node.role == "window":  # a window's slice belongs to the merge it feeds, which comes before the layer
        merges = [s for s in net.graph.successors(name) if net.node(s).role == "merge"]
        if merges:
            return merges[0]
    lay = layer_of(name)
    if lay is not None:
        return lay
    if not groups[g].has_blocks or "." not in name:
        return g
    return name.rsplit(".", 1)[0]


def units_of(net: Network, level: str = "layer") -> dict[str, str]:
    """Each node's unit at `level`: the layer, merge or small group the picture draws it in."""
    groups = _groups(net)
    return {n.name: _unit_key(net, n.name, level, groups) for n in net.nodes()}


def _layer_number(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    return last[5:] if _LAYER.match(last) else last


def view(net: Network, level: str = "layer") -> View:
    """The units drawn at `level` and the edges between them: every node-level edge between two
    different units becomes one unit edge, carrying the patterns of the edges it stands for."""
    if level not in LEVELS:
        raise RunError(f"unknown drawing level '{level}'", f"levels: {', '.join(LEVELS)}")
    groups = _groups(net)
    merges = _block_merges(net)
    v = View(net.name, level, groups=groups)
    key_of: dict[str, str] = {}
    for i, node in enumerate(net.nodes()):
        key = _unit_key(net, node.name, level, groups)
        key_of[node.name] = key
        unit = v.units.get(key)
        if unit is None:
            v.units[key] = _make_unit(net, key, node, level, groups, merges, i)
        else:
            unit.shape = node.shape  # the last node made gives the unit's output
    for a, b, data in net.graph.edges(data=True):
        ka, kb = key_of[a], key_of[b]
        if ka != kb:
            v.edges.setdefault((ka, kb), set()).add(data["edge"].pattern)
    return v


def _make_unit(net: Network, key: str, node, level: str, groups: dict[str, Group], merges: dict[str, str],
               index: int) -> Unit:
    if key in net.graph:  # a unit named after a node is that node's (a window's slice joins its merge)
        node = net.node(key)
    g = group_of(key)
    block = block_of(node.name)
    merge = merges.get(block, "chain") if block else "chain"
    if level == "block":
        grp = groups[g]
        return Unit(key, "input" if node.role == "input" else "box", g, g, node.shape, node.op, grp.merge, None,
                    index)
    if level == "op":
        kind = {"input": "input", "merge": "merge"}.get(node.role, "op")
        sub = layer_of(node.name) or (None if groups[g].has_blocks or kind == "input" else g)
        return Unit(key, kind, g, _SHORT.get(node.op, node.op), node.shape, node.op,
                    node.op if node.role == "merge" else merge, sub, index)
    if node.role == "input":
        return Unit(key, "input", g, "input", node.shape, node.op, "chain", None, index)
    if node.role == "merge":
        kind = "segment" if node.pattern == "gradual" else "merge"
        return Unit(key, kind, g, "merge", node.shape, node.op, node.op, _sub(block, g), index)
    if node.role == "join" and key == node.name:
        return Unit(key, "join", g, "join", node.shape, node.op, merge, _sub(block, g), index)
    if key == g:
        return Unit(key, "box", g, g, node.shape, node.op, "chain", None, index)
    if layer_of(node.name) == key:
        return Unit(key, "layer", g, _layer_number(key), node.shape, node.op, merge, _sub(block, g), index)
    return Unit(key, "box", g, key.rsplit(".", 1)[-1], node.shape, node.op, "chain", None, index)


def _sub(block: str | None, group: str) -> str | None:
    """A nested block (one below the group's own), which the picture marks with a band."""
    return block if block and block != group else None


# ---- DOT -------------------------------------------------------------------------------------

def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_DOT_SHAPES = {"box": "box", "layer": "circle", "merge": "diamond", "segment": "square", "join": "square",
               "op": "ellipse", "input": "invhouse"}


def to_dot(v: View) -> str:
    """DOT text: one cluster per top-level group, one node per unit, one edge per unit edge."""
    lines = [f"digraph {_q(v.network)} {{", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [arrowsize=0.6];']
    by_group: dict[str, list[Unit]] = {}
    for u in v.units.values():
        by_group.setdefault(u.group, []).append(u)
    for g, units in by_group.items():
        grp = v.groups[g]
        title = f"{g}\n{grp.title}\n{fmt_shape(grp.shape)}" if grp.title else f"{g}\n{fmt_shape(grp.shape)}"
        indent = "  "
        if v.level != "block" and len(units) > 1:
            lines.append(f"  subgraph {_q('cluster_' + g)} {{")
            lines.append(f"    label={_q(title)}; style=rounded; color=\"#999999\";")
            indent = "    "
        for u in units:
            short = u.key.split(".", 1)[1] if u.kind != "box" and u.key != g else u.key
            label = title if v.level == "block" else f"{short}\n{fmt_shape(u.shape)}"
            colour = COLOURS.get(u.merge, COLOURS["chain"]) if u.kind in ("merge", "segment") else "#333333"
            lines.append(f"{indent}{_q(u.key)} [label={_q(label)}, shape={_DOT_SHAPES[u.kind]}, color={_q(colour)}];")
        if indent == "    ":
            lines.append("  }")
    for (a, b), patterns in v.edges.items():
        kind = _edge_colour_key(v, a, b, patterns)
        lines.append(f"  {_q(a)} -> {_q(b)} [color={_q(COLOURS[kind])}, class={_q(' '.join(sorted(patterns)))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_colour_key(v: View, a: str, b: str, patterns: set[str]) -> str:
    """Colour an edge by the merge that the inflow feeds: its target's merge, or its block's."""
    target = v.units[b]
    if target.kind in ("merge", "segment"):
        return target.op if target.op in COLOURS else "chain"
    if patterns == {"residual"}:
        return "add"
    if patterns & (FAN_IN | {"residual"}):
        return target.merge if target.merge in COLOURS else "chain"
    return "chain"


# ---- matplotlib ------------------------------------------------------------------------------

@dataclass
class _Row:
    units: list[Unit]
    x: dict[str, float] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)  # position in the row; a pair shares one
    dy: dict[str, float] = field(default_factory=dict)  # a gradual unit sits under its segment
    y: float = 0.0  # the line the units sit on
    top: float = 0.0
    bottom: float = 0.0
    above: float = 0.0  # room for arcs above and below
    below: float = 0.0


_BOX_SLOTS = 5.0  # a box takes as much room as five dots
_OP_LABELS = 60  # op names are written in rows of at most this many ops
_GAP = 0.6  # between two groups of a row, in dots
_UNDER = 0.26  # how far a gradual update unit sits below its segment (inches)


def _slots(u: Unit, level: str) -> float:
    return _BOX_SLOTS if u.kind in ("box", "input") and level != "op" else 1.0


def _paired(prev: Unit | None, u: Unit) -> bool:
    """A gradual segment drawn above the update unit that made it."""
    return prev is not None and u.kind == "segment" and prev.kind == "layer" and u.key.startswith(prev.key + ".")


def _width(units: list[Unit], level: str) -> float:
    total, prev = 0.0, None
    for u in units:
        total += 0.0 if _paired(prev, u) else _slots(u, level)
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


def _arc(x1: float, y1: float, x2: float, y2: float, h: float, n: int = 24) -> list[tuple[float, float]]:
    """Half an ellipse from (x1, y1) to (x2, y2), rising `h` (falling, when negative)."""
    pts = []
    for t in range(n):
        a = math.pi * t / (n - 1)
        s = (1 - math.cos(a)) / 2
        pts.append((x1 + (x2 - x1) * s, y1 + (y2 - y1) * s + h * math.sin(a)))
    return pts


def _legend_handles(v: View, used: set[str]):
    from matplotlib.lines import Line2D

    handles = []
    names = {"crossdepthwise": "crossdepthwise merge", "concat": "concat merge", "add": "sum merge / residual",
             "chain": "chain"}
    for k, label in names.items():
        if k in used:
            handles.append(Line2D([], [], color=COLOURS[k], lw=2, label=label))
    if v.level == "op":
        ops = {u.op for u in v.units.values()}
        for names, c in _OP_LEGEND:
            if ops & set(names):
                label = " / ".join(n for n in names if n in ops)
                handles.append(Line2D([], [], ls="", marker="o", color=c, label=label))
        if any(u.kind == "merge" for u in v.units.values()):
            handles.append(Line2D([], [], ls="", marker="D", color="#888888", label="merge (cdw: crossdepthwise)"))
        return handles
    marks = {"layer": ("o", "#333333", "layer"), "merge": ("D", "#888888", "merge"),
             "segment": ("s", "#888888", "segment, updated by the unit under it"),
             "join": ("s", "white", "block output (segments joined)")}
    kinds = {u.kind for u in v.units.values()}
    for k, (m, c, label) in marks.items():
        if k in kinds:
            handles.append(Line2D([], [], ls="", marker=m, color="#333333", mfc=c, label=label))
    if any(u.kind == "merge" and _is_output(u) for u in v.units.values()):
        handles.append(Line2D([], [], ls="", marker="D", color="#333333", mfc="white", ms=8, label="block output"))
    return handles


def _is_output(u: Unit) -> bool:
    """A block's own merge or join (`blockN.merge`), not a layer's input merge."""
    return u.kind == "join" or (u.kind == "merge" and u.key.rsplit(".", 1)[0] == block_of(u.key))


class _Arc(NamedTuple):
    """One unit edge as drawn in the row of its target."""

    xa: float
    dya: float
    xb: float
    dyb: float
    below: bool  # residual streams (and a gradual unit's reads of the old segments) run under the row
    kind: str  # colour key
    straight: bool  # neighbours: a plain line


@dataclass
class _Layout:
    rows: list[_Row]
    slot: float  # inches per dot
    width: float
    in_x: float  # where inflows from other rows enter a row
    arcs: list[list[_Arc]] = field(default_factory=list)
    external: list[dict[str, None]] = field(default_factory=list)  # per row, the groups feeding it
    used: set[str] = field(default_factory=set)
    span_max: float = 1.0
    height: float = 0.0


def _place(v: View) -> _Layout:
    """Rows and horizontal positions: one slot per dot, five per box, a little gap between groups; a
    gradual segment shares the slot of the unit that updates it."""
    rows = [_Row(units) for units in _rows(v)]
    max_slots = max(_width(r.units, v.level) + (1.5 if i else 0) for i, r in enumerate(rows))
    slot = min(0.42, ((24.0 if v.level == "op" else 16.0) - 1.0) / max_slots)
    margin = 0.5
    lay = _Layout(rows, slot, max(7.0, max_slots * slot + 2 * margin), margin + 0.5 * slot)
    for i, r in enumerate(rows):
        x = margin + (1.5 * slot if i else 0.0)
        prev = None
        for k, u in enumerate(r.units):
            r.index[u.key] = k
            if prev is not None and prev.group != u.group:
                x += _GAP * slot
            if _paired(prev, u):
                r.x[u.key] = r.x[prev.key]
                r.dy[prev.key] = -_UNDER
                r.index[u.key] = r.index[prev.key]
            else:
                w = _slots(u, v.level) * slot
                r.x[u.key] = x + w / 2
                x += w
            prev = u
    return lay


def _route(v: View, lay: _Layout) -> None:
    """Each unit edge as an arc in its target's row; an edge from another row starts at the in-node."""
    row_of = {u.key: i for i, r in enumerate(lay.rows) for u in r.units}
    lay.arcs = [[] for _ in lay.rows]
    lay.external = [{} for _ in lay.rows]
    for (a, b), patterns in v.edges.items():
        i = row_of[b]
        r = lay.rows[i]
        kind = _edge_colour_key(v, a, b, patterns)
        lay.used.add(kind)
        if row_of[a] == i:
            xa, dya, straight = r.x[a], r.dy.get(a, 0.0), abs(r.index[b] - r.index[a]) <= 1
        else:
            xa, dya, straight = lay.in_x, 0.0, r.index[b] == 0
            lay.external[i][v.units[a].group] = None
        below = kind != "chain" and ("residual" in patterns or (b in r.dy and v.units[a].kind != "segment"))
        lay.arcs[i].append(_Arc(xa, dya, r.x[b], r.dy.get(b, 0.0), below, kind, straight))
    lay.span_max = max((abs(e.xb - e.xa) for row in lay.arcs for e in row if not e.straight), default=1.0) or 1.0


def _stack(v: View, lay: _Layout) -> None:
    """Vertical positions: each row as tall as its longest arcs need (heights grow as √span)."""
    room = 1.5 if v.level == "layer" else 1.2
    y = -0.35
    for r, arcs in zip(lay.rows, lay.arcs):
        up = [abs(e.xb - e.xa) for e in arcs if not e.below and not e.straight]
        down = [abs(e.xb - e.xa) for e in arcs if e.below and not e.straight]
        r.above = 0.3 + room * math.sqrt(max(up, default=0) / lay.span_max)
        r.below = 0.25 + 0.7 * math.sqrt(max(down) / lay.span_max) if down else 0.0
        labels = 0.4 if v.level == "op" and len(r.units) <= _OP_LABELS else 0.0
        r.top = y
        r.y = y - 0.35 - r.above
        r.bottom = (r.y - 0.32 - (_UNDER if r.dy else 0) - max(r.below, labels)
                    - (0.3 if any(u.sub for u in r.units) else 0))
        y = r.bottom - 0.3
    lay.height = -(y - 0.45)


def render(v: View):
    """A matplotlib Figure of the view (not attached to pyplot: no global state, no display)."""
    from matplotlib.figure import Figure

    if v.level == "block":
        return _render_blocks(v)
    lay = _place(v)
    _route(v, lay)
    _stack(v, lay)
    fig = Figure(figsize=(lay.width, lay.height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, lay.width)
    ax.set_ylim(-lay.height, 0)
    ax.set_axis_off()
    ax.text(0.15, -0.1, f"{v.network} · {v.level} level", fontsize=12, fontweight="bold", va="top")
    ax.text(lay.width - 0.15, -0.12, "time runs left → right: inflows arc above a row, residual streams below it",
            fontsize=7.5, color="#555555", ha="right", va="top")
    dot = min(0.6 * lay.slot * 72, 9.0)  # marker size in points
    font = max(4.5, min(8.0, lay.slot * 72 * 0.55))
    for r, arcs, external in zip(lay.rows, lay.arcs, lay.external):
        _draw_frames(ax, v, r, lay.slot)
        _draw_subs(ax, r, lay.slot, font)
        _draw_arcs(ax, r, arcs, lay)
        if external:
            ax.plot([lay.in_x], [r.y], marker="o", ms=dot * 0.9, mfc="white", mec="#333333", zorder=4)
            ax.text(lay.in_x, r.y + 0.1, "in", ha="center", va="bottom", fontsize=font, color="#333333")
            ax.text(lay.in_x - 0.5 * lay.slot, r.y - 0.3 - (_UNDER if r.dy else 0), "from " + ", ".join(external),
                    ha="left", va="top", fontsize=font * 0.9, color="#555555")
        _draw_units(ax, v, r, lay.slot, dot, font)
    handles = _legend_handles(v, lay.used)
    if handles:
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.005, 0.0), ncol=min(len(handles), 8),
                  fontsize=8, frameon=False, handlelength=1.6, columnspacing=1.2)
    return fig


def _draw_arcs(ax, r: _Row, arcs: list[_Arc], lay: _Layout) -> None:
    """All of a row's arcs, one LineCollection per colour: thinner and fainter the more there are."""
    from matplotlib.collections import LineCollection

    n = max(len(arcs), 1)
    alpha = max(0.16, min(0.85, 4.0 / math.sqrt(n)))
    lw = max(0.35, min(1.2, 12.0 / math.sqrt(n) * lay.slot))
    for kind in COLOURS:
        segs = []
        for e in arcs:
            if e.kind != kind:
                continue
            ya, yb = r.y + e.dya, r.y + e.dyb
            if e.straight:
                segs.append([(e.xa, ya), (e.xb, yb)])
                continue
            h = ((r.below - 0.12) if e.below else (r.above - 0.1)) * math.sqrt(abs(e.xb - e.xa) / lay.span_max)
            segs.append(_arc(e.xa, ya, e.xb, yb, -h - (_UNDER if r.dy else 0) if e.below else h))
        if segs:
            ax.add_collection(LineCollection(segs, colors=COLOURS[kind], linewidths=lw, zorder=2, capstyle="round",
                                             alpha=alpha if kind != "chain" else min(1.0, alpha + 0.25)))


def _draw_frames(ax, v: View, r: _Row, slot: float) -> None:
    """A rounded frame per group of more than one unit, titled with its patterns and output shape."""
    from matplotlib.patches import FancyBboxPatch

    by_group: dict[str, list[Unit]] = {}
    for u in r.units:
        by_group.setdefault(u.group, []).append(u)
    for g, units in by_group.items():
        grp = v.groups[g]
        if (len(units) == 1 and units[0].kind in ("box", "input")) or (v.level == "op" and not grp.has_blocks):
            continue
        xs = [r.x[u.key] for u in units]
        x1 = min(xs) - _slots(units[0], v.level) * slot / 2 - 0.05
        x2 = max(xs) + _slots(units[-1], v.level) * slot / 2 + 0.05
        colour = COLOURS.get(grp.merge, COLOURS["chain"])
        ax.add_patch(FancyBboxPatch((x1, r.bottom + 0.05), x2 - x1, r.top - r.bottom - 0.05,
                                    boxstyle="round,pad=0,rounding_size=0.12", fc=colour, alpha=0.05,
                                    ec=colour, lw=1.0, zorder=0))
        name = ax.text(x1 + 0.1, r.top - 0.08, g, fontsize=9, fontweight="bold", va="top", ha="left", zorder=5)
        rest = "   ".join(t for t in (grp.title, fmt_shape(grp.shape)) if t)
        ax.annotate("   " + rest, xy=(1, 0), xycoords=name, va="bottom", ha="left", fontsize=8, color="#333333",
                    zorder=5)


def _draw_subs(ax, r: _Row, slot: float, font: float) -> None:
    """A line under each nested block (SeqConv groups inside a layer; a layer's ops), with its name."""
    spans: dict[str, list[float]] = {}
    for u in r.units:
        if u.sub:
            spans.setdefault(u.sub, []).append(r.x[u.key])
    for sub, xs in spans.items():
        x1, x2 = min(xs) - slot * 0.45, max(xs) + slot * 0.45
        yb = r.bottom + 0.28
        ax.plot([x1, x2], [yb, yb], color="#888888", lw=2.0, alpha=0.5, solid_capstyle="butt")
        label = sub.split(".", 1)[1] if "." in sub else sub
        if (x2 - x1) > len(label) * font / 72 * 0.55:
            ax.text((x1 + x2) / 2, yb - 0.05, label, fontsize=font * 0.9, ha="center", va="top", color="#555555")


def _draw_units(ax, v: View, r: _Row, slot: float, dot: float, font: float) -> None:
    from matplotlib.patches import FancyBboxPatch

    n_layers = max((int(u.label) for u in r.units if u.kind == "layer" and u.label.isdigit()), default=0)
    step = 1 if n_layers <= 16 else 4 if n_layers <= 40 else 8
    for u in r.units:
        x, y = r.x[u.key], r.y + r.dy.get(u.key, 0.0)
        if u.kind in ("box", "input") and v.level != "op":
            w = _BOX_SLOTS * slot - 0.1
            ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.17), w, 0.34, boxstyle="round,pad=0,rounding_size=0.06",
                                        fc="#eeeeee", ec="#555555", lw=0.8, zorder=3))
            ax.text(x, y + 0.05, u.label, ha="center", va="center", fontsize=min(8.0, font * 1.1), zorder=4,
                    fontweight="bold" if u.key == u.group else "normal")
            ax.text(x, y - 0.09, fmt_shape(u.shape), ha="center", va="center", fontsize=min(6.5, font), zorder=4,
                    color="#444444")
        elif v.level == "op":
            c = COLOURS.get(u.op) if u.kind == "merge" else OP_COLOURS.get(u.op, "#999999")
            ax.plot([x], [y], marker="D" if u.kind == "merge" else "o", ms=dot * 0.8, color=c, mec="none", zorder=4)
            if len(r.units) <= _OP_LABELS:
                ax.text(x, y - 0.08, u.label, ha="center", va="top", fontsize=font * 0.8, rotation=90,
                        color="#444444")
        elif u.kind == "layer":
            ax.plot([x], [y], marker="o", ms=dot, color="#333333", mec="white", mew=0.5, zorder=4)
            num = int(u.label) if u.label.isdigit() else 0
            if num == 1 or num % step == 0 or num == n_layers:
                ax.text(x, y - 0.12, u.label, ha="center", va="top", fontsize=font, color="#333333")
        else:
            marker = {"merge": "D", "segment": "s", "join": "s"}[u.kind]
            c = COLOURS.get(u.op if u.kind != "join" else u.merge, COLOURS["chain"])
            out = _is_output(u)
            ax.plot([x], [y], marker=marker, ms=dot * (1.25 if out else 0.8), mfc="white" if out else c,
                    mec=c, mew=1.2 if out else 0.5, zorder=4)


def _render_blocks(v: View):
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    units = sorted(v.units.values(), key=lambda u: u.first)
    per_col = 10
    cols = math.ceil(len(units) / per_col)
    box_w, box_h, gap_y, gap_x = 3.6, 0.72, 0.32, 0.8
    rows = min(len(units), per_col)
    width = cols * box_w + (cols - 1) * gap_x + 0.8
    height = rows * (box_h + gap_y) + 0.7
    fig = Figure(figsize=(max(width, 4.5), height))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, max(width, 4.5))
    ax.set_ylim(0, height)
    ax.set_axis_off()
    fig.text(0.02, 1 - 0.1 / height, f"{v.network} · block level", fontsize=11, fontweight="bold", va="top")
    pos: dict[str, tuple[float, float]] = {}
    for i, u in enumerate(units):
        c, k = divmod(i, per_col)
        x = 0.4 + c * (box_w + gap_x)
        y = height - 0.55 - k * (box_h + gap_y) - box_h
        pos[u.key] = (x, y)
        grp = v.groups[u.group]
        colour = COLOURS.get(grp.merge, "#999999")
        ax.add_patch(FancyBboxPatch((x, y), box_w, box_h, boxstyle="round,pad=0,rounding_size=0.1",
                                    fc=colour if grp.merge != "chain" else "#eeeeee",
                                    alpha=0.18 if grp.merge != "chain" else 1.0, ec="none", zorder=1))
        ax.add_patch(FancyBboxPatch((x, y), box_w, box_h, boxstyle="round,pad=0,rounding_size=0.1", fc="none",
                                    ec=colour if grp.merge != "chain" else "#555555", lw=1.0, zorder=2))
        ax.text(x + 0.12, y + box_h - 0.1, u.group, fontsize=9.5, fontweight="bold", va="top")
        ax.text(x + box_w - 0.12, y + box_h - 0.11, fmt_shape(grp.shape), fontsize=8, va="top", ha="right")
        if grp.title:
            ax.text(x + 0.12, y + box_h / 2 - 0.04, grp.title, fontsize=7.5, va="center", color="#222222")
        if u.kind != "input":
            ax.text(x + 0.12, y + 0.08, f"{grp.params:,} params · {_si(grp.macs)} MACs", fontsize=7, va="bottom",
                    color="#555555")
    keys = [u.key for u in units]
    for (a, b), patterns in v.edges.items():
        (xa, ya), (xb, yb) = pos[a], pos[b]
        consecutive = keys.index(b) == keys.index(a) + 1
        if consecutive and xa == xb:
            start, end, style = (xa + box_w / 2, ya), (xb + box_w / 2, yb + box_h), "arc3"
        elif consecutive:
            start, end, style = (xa + box_w, ya + box_h / 2), (xb, yb + box_h / 2), "arc3,rad=0.15"
        else:
            start, end, style = (xa + box_w, ya + box_h / 2), (xb + box_w, yb + box_h / 2), "arc3,rad=-0.5"
        kind = _edge_colour_key(v, a, b, patterns)
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=style, arrowstyle="-|>", mutation_scale=9,
                                     color=COLOURS[kind] if kind != "chain" else "#444444", lw=1.0, zorder=3))
    return fig


def _si(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


# ---- entry point -----------------------------------------------------------------------------

def draw(net: Network, path: Path, level: str = "layer") -> Path:
    """Draw `net` at `level` (block, layer or op) to `path`: .svg or .png through matplotlib, .dot as
    text. Returns the path written."""
    path = Path(path)
    if level not in LEVELS:
        raise RunError(f"unknown drawing level '{level}'", f"levels: {', '.join(LEVELS)}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RunError(f"cannot draw to '{path}': unknown file type '{path.suffix or '(none)'}'",
                       "give the output a .svg, .png or .dot name")
    if path.is_dir():
        raise RunError(f"cannot write {path}: it is a directory")
    v = view(net, level)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".dot":
            path.write_text(to_dot(v), encoding="utf-8")
        else:
            save_figure(render(v), path)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a Figure by the path's suffix. A PNG is cut to 256 colours (the tints of translucent arcs
    by median cut, plus the legend's own colours, which are too rare to win a place), a third of the
    size; an SVG or PDF carries no date, so a redrawn picture is the same file."""
    suffix = path.suffix.lower()
    if suffix != ".png":
        from matplotlib import rc_context

        with rc_context({"svg.hashsalt": "archspec"}):  # fixed ids for clip paths
            fig.savefig(path, format=suffix[1:], dpi=dpi, metadata={"Creator": None, "Date": None}
                        if suffix == ".svg" else {"Creator": None, "Producer": None, "CreationDate": None})
        return
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as img:
        rgb = img.convert("RGB")
    keys = [*COLOURS.values(), *OP_COLOURS.values(), "#ffffff", "#000000", "#333333"]
    palette = rgb.quantize(colors=256 - len(keys), method=Image.Quantize.MEDIANCUT).getpalette()
    palette = palette[:3 * (256 - len(keys))] + [int(k[i:i + 2], 16) for k in keys for i in (1, 3, 5)]
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette)
    out = rgb.quantize(palette=holder, dither=Image.Dither.NONE)
    exact = [tuple(int(k[i:i + 2], 16) for i in (1, 3, 5)) for k in keys]
    pal = out.getpalette()
    for j in range(len(pal) // 3):  # the lookup is coarse: give near-white back its white, and so on
        entry = pal[3 * j:3 * j + 3]
        near = min(exact, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, entry)))
        if sum((a - b) ** 2 for a, b in zip(near, entry)) <= 48:
            pal[3 * j:3 * j + 3] = near
    out.putpalette(pal)
    out.save(path, optimize=True)
