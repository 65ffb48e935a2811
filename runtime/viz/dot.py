"""A view as DOT text, for Graphviz or any tool that reads it."""

from __future__ import annotations

from archspec.graph.ops import fmt_shape

from .colours import COLOURS, edge_colour_key
from .view import Unit, View

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
        kind = edge_colour_key(v, a, b, patterns)
        lines.append(f"  {_q(a)} -> {_q(b)} [color={_q(COLOURS[kind])}, class={_q(' '.join(sorted(patterns)))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
