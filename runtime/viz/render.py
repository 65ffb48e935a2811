"""A view drawn with matplotlib alone (no Graphviz): each block a row of layer dots with its inflows
as arcs above the row (a dense block is a rainbow, a windowed one a band of short arcs), residual
skips as arcs below it, and the merge kind as colour; at block level, one box per group."""

from __future__ import annotations

import math

from archspec.graph.ops import fmt_shape

from .colours import COLOURS, OP_COLOURS, OP_LEGEND, edge_colour_key
from .layout import BOX_SLOTS, OP_LABELS, UNDER, Arc, Layout, Row, arc_points, place, route, slots, stack
from .view import Unit, View

def render(v: View):
    """A matplotlib Figure of the view (not attached to pyplot: no global state, no display)."""
    from matplotlib.figure import Figure

    if v.level == "block":
        return _render_blocks(v)
    lay = place(v)
    route(v, lay)
    stack(v, lay)
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
            ax.text(lay.in_x - 0.5 * lay.slot, r.y - 0.3 - (UNDER if r.dy else 0), "from " + ", ".join(external),
                    ha="left", va="top", fontsize=font * 0.9, color="#555555")
        _draw_units(ax, v, r, lay.slot, dot, font)
    handles = _legend_handles(v, lay.used)
    if handles:
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.005, 0.0), ncol=min(len(handles), 8),
                  fontsize=8, frameon=False, handlelength=1.6, columnspacing=1.2)
    return fig


def _legend_handles(v: View, used: set[str]):
    from matplotlib.lines import Line2D

    handles = []
    names = {"crossdepthwise": "crossdepthwise merge", "concat": "concat merge", "add": "sum merge / residual",
             "mul": "mul merge (gate)",
             "chain": "chain"}
    for k, label in names.items():
        if k in used:
            handles.append(Line2D([], [], color=COLOURS[k], lw=2, label=label))
    if v.level == "op":
        ops = {u.op for u in v.units.values()}
        for names, c in OP_LEGEND:
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
    return u.kind == "join" or (u.kind == "merge" and u.key.rsplit(".", 1)[0] == u.block)


def _draw_arcs(ax, r: Row, arcs: list[Arc], lay: Layout) -> None:
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
            segs.append(arc_points(e.xa, ya, e.xb, yb, -h - (UNDER if r.dy else 0) if e.below else h))
        if segs:
            ax.add_collection(LineCollection(segs, colors=COLOURS[kind], linewidths=lw, zorder=2, capstyle="round",
                                             alpha=alpha if kind != "chain" else min(1.0, alpha + 0.25)))


def _draw_frames(ax, v: View, r: Row, slot: float) -> None:
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
        x1 = min(xs) - slots(units[0], v.level) * slot / 2 - 0.05
        x2 = max(xs) + slots(units[-1], v.level) * slot / 2 + 0.05
        colour = COLOURS.get(grp.merge, COLOURS["chain"])
        ax.add_patch(FancyBboxPatch((x1, r.bottom + 0.05), x2 - x1, r.top - r.bottom - 0.05,
                                    boxstyle="round,pad=0,rounding_size=0.12", fc=colour, alpha=0.05,
                                    ec=colour, lw=1.0, zorder=0))
        name = ax.text(x1 + 0.1, r.top - 0.08, g, fontsize=9, fontweight="bold", va="top", ha="left", zorder=5)
        rest = "   ".join(t for t in (grp.title, fmt_shape(grp.shape)) if t)
        ax.annotate("   " + rest, xy=(1, 0), xycoords=name, va="bottom", ha="left", fontsize=8, color="#333333",
                    zorder=5)


def _draw_subs(ax, r: Row, slot: float, font: float) -> None:
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


def _draw_units(ax, v: View, r: Row, slot: float, dot: float, font: float) -> None:
    from matplotlib.patches import FancyBboxPatch

    n_layers = max((int(u.label) for u in r.units if u.kind == "layer" and u.label.isdigit()), default=0)
    step = 1 if n_layers <= 16 else 4 if n_layers <= 40 else 8
    for u in r.units:
        x, y = r.x[u.key], r.y + r.dy.get(u.key, 0.0)
        if u.kind in ("box", "input") and v.level != "op":
            w = BOX_SLOTS * slot - 0.1
            ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.17), w, 0.34, boxstyle="round,pad=0,rounding_size=0.06",
                                        fc="#eeeeee", ec="#555555", lw=0.8, zorder=3))
            ax.text(x, y + 0.05, u.label, ha="center", va="center", fontsize=min(8.0, font * 1.1), zorder=4,
                    fontweight="bold" if u.key == u.group else "normal")
            ax.text(x, y - 0.09, fmt_shape(u.shape), ha="center", va="center", fontsize=min(6.5, font), zorder=4,
                    color="#444444")
        elif v.level == "op":
            c = COLOURS.get(u.op) if u.kind == "merge" else OP_COLOURS.get(u.op, "#999999")
            ax.plot([x], [y], marker="D" if u.kind == "merge" else "o", ms=dot * 0.8, color=c, mec="none", zorder=4)
            if len(r.units) <= OP_LABELS:
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
        kind = edge_colour_key(v, a, b, patterns)
        ax.add_patch(FancyArrowPatch(start, end, connectionstyle=style, arrowstyle="-|>", mutation_scale=9,
                                     color=COLOURS[kind] if kind != "chain" else "#444444", lw=1.0, zorder=3))
    return fig


def _si(n: int) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)
