"""`archspec inspect`: what a trained network learned about its cross-layer connections. A
crossdepthwise merge weighs each inflow with its own per-channel scales, so the L2 norm of an inflow's
scales, over the largest in its merge, says how much the layer still draws on that source (DelugeNets,
Fig. 3). A concat merge has no weights of its own; the first convolution after it does, and its mean
absolute weight over a source's channels says the same (DenseNet, Fig. 5)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from archspec.errors import RunError
from archspec.graph.ir import Network
from archspec.graph.ops import OPS
from archspec.runtime.train.evaluation import load_trained

from .colours import COLOURS
from .files import save_figure
from .view import units_of

PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def connection_strengths(checkpoint: Path, **load) -> dict:
    """The learned strength of every cross-layer connection of a checkpoint, as plain JSON: one entry
    per crossdepthwise merge (most inflows first), then one source × target table per block of concat
    merges. `load`: `load_trained`'s options (`trust_legacy`, `allow_nonfinite`)."""
    net, model, ck = load_trained(checkpoint, **load)
    units = units_of(net)
    merges = [n for n in net.nodes() if n.role == "merge"]
    cdw = [_crossdepthwise(net, model, n.name, units) for n in merges if n.op == "crossdepthwise"]
    cdw.sort(key=lambda m: -len(m["sources"]))
    concat = _concat_blocks(net, model, [n.name for n in merges if n.op == "concat"], units)
    if not cdw and not concat:
        raise RunError(f"network '{net.name}' has no cross-layer merges to inspect",
                       "inspect reads crossdepthwise merges (DelugeNet) and concat merges that feed a "
                       "convolution (DenseNet, SeqConv); this network has neither")
    return {"network": net.name, "checkpoint": str(checkpoint), "epoch": ck.epoch, "merges": cdw + concat}


def _short(unit: str, block: str | None) -> str:
    """A unit's name inside its block (`layer3`), or its full name when it comes from outside."""
    return unit[len(block) + 1:] if block and unit.startswith(block + ".") else unit


def _crossdepthwise(net: Network, model: torch.nn.Module, name: str, units: dict[str, str]) -> dict:
    module = model.get_submodule(name)
    sources = net.inputs(name)
    widths = list(module.widths)
    if len(widths) != len(sources):
        raise RunError(f"merge '{name}' has {len(widths)} inflows in its weights but {len(sources)} in the graph")
    w = module.weight.detach().float().cpu()
    norms, start = [], 0
    for c in widths:
        norms.append(float(w[start:start + c].norm()))
        start += c
    top = max(norms)
    block = net.node(name).block
    return {
        "kind": "crossdepthwise",
        "node": name,
        "block": block,
        "target": net.node(name).layer or f"{block} output",
        "sources": sources,
        "source_units": [units[s] for s in sources],
        "labels": [_short(units[s], block) for s in sources],
        "norms": norms,
        "strengths": [n / top if top > 0 else 0.0 for n in norms],
    }


def _first_weighted(net: Network, name: str, channels: int) -> str | None:
    """The first convolution (or linear layer after global pooling) fed by `name` through ops that keep
    its channels in place; the earliest made when several branches have one."""
    found, seen, frontier = [], set(), list(net.graph.successors(name))
    order = {n: i for i, n in enumerate(net.graph.nodes)}
    while frontier:
        n = frontier.pop()
        if n in seen:
            continue
        seen.add(n)
        node = net.node(n)
        if node.op == "conv" or (node.op == "linear" and net.shape(net.inputs(n)[0]) == (channels,)):
            found.append(n)
        elif OPS[node.op].keeps_channels and len(net.inputs(n)) == 1:  # a concat's channel ranges still hold
            frontier.extend(net.graph.successors(n))
    return min(found, key=order.__getitem__) if found else None


def per_input_channel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Mean absolute weight on each input channel of a conv or linear weight, over the outputs that see
    it (a grouped convolution's channel reaches only its group's outputs) and the kernel."""
    a = weight.detach().float().abs().cpu()
    a = a.flatten(2).mean(2) if a.dim() > 2 else a  # out × in/groups
    out, per_group = a.shape
    groups = in_channels // per_group
    rows = out // groups
    return torch.stack([a[g * rows:(g + 1) * rows].mean(0) for g in range(groups)]).reshape(-1)


def _concat_blocks(net: Network, model: torch.nn.Module, merges: list[str], units: dict[str, str]) -> list[dict]:
    blocks: dict[str, dict] = {}
    for m in merges:
        channels = net.shape(m)[0]
        target = _first_weighted(net, m, channels)
        if target is None:
            continue
        strength = per_input_channel(model.get_submodule(target).weight, channels)
        block = net.node(m).block or m
        b = blocks.setdefault(block, {"cells": {}, "sources": {}, "targets": [], "target_nodes": [], "nodes": []})
        column = len(b["targets"])
        b["targets"].append(units[target])
        b["target_nodes"].append(target)
        b["nodes"].append(m)
        picked: dict[str, list[int]] = {}
        start = 0
        for s in net.inputs(m):
            c = net.shape(s)[0]
            origin = s if net.node(s).op != "slice" else net.inputs(s)[0]  # a window reads part of a tensor
            picked.setdefault(units[origin], []).extend(range(start, start + c))
            start += c
        for unit, idx in picked.items():
            b["sources"].setdefault(unit, None)
            b["cells"][(unit, column)] = float(strength[idx].mean())
    out = []
    for block, b in blocks.items():
        sources = list(b["sources"])
        out.append({
            "kind": "concat",
            "block": block,
            "merges": b["nodes"],
            "sources": sources,
            "targets": b["targets"],
            "target_nodes": b["target_nodes"],
            "source_labels": [_short(s, block) for s in sources],
            "target_labels": [_short(t, block) for t in b["targets"]],
            "weights": [[b["cells"].get((s, j)) for j in range(len(b["targets"]))] for s in sources],
        })
    return out


# ---- the picture -----------------------------------------------------------------------------

def plot_connections(report: dict, path: Path) -> None:
    """One bar chart per crossdepthwise merge (its inflows' normalised strengths, like DelugeNets'
    Fig. 3) and one source × target heat map per block of concat merges, in one figure at `path`."""
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise RunError(f"cannot plot to '{path}': unknown file type '{path.suffix or '(none)'}'",
                       "give the output a .png, .svg or .pdf name")
    bars = [m for m in report["merges"] if m["kind"] == "crossdepthwise"]
    maps = [m for m in report["merges"] if m["kind"] == "concat"]
    bar_cols = min(8, len(bars)) or 1
    bar_rows = math.ceil(len(bars) / bar_cols)
    map_cols = min(4, len(maps)) or 1
    map_rows = math.ceil(len(maps) / map_cols)
    parts = [(kind, h) for kind, h, items in (("bars", 0.4 + 1.9 * bar_rows, bars),
                                              ("maps", 0.3 + 3.7 * map_rows, maps)) if items]
    width = max(2.3 * bar_cols if bars else 0, 4.4 * map_cols if maps else 0, 6.0)
    height = sum(h for _, h in parts) + 0.5
    fig = Figure(figsize=(width, height))  # laid out by hand: a solver over dozens of panels takes seconds
    fig.text(0.1 / width, 1 - 0.1 / height, f"{report['network']} · learned connection strengths "
             f"(epoch {report.get('epoch', '?')})", fontsize=12, fontweight="bold", va="top")
    top = 1 - 0.5 / height
    for kind, h in parts:
        box = dict(left=0.6 / width, right=1 - 0.25 / width, top=top - 0.3 / height, bottom=top - (h - 0.45) / height)
        if kind == "bars":
            _bar_panels(fig, bars, bar_rows, bar_cols, box)
        else:
            _heat_maps(fig, maps, map_rows, map_cols, box)
        top -= h / height
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None


def _ticks(n: int, most: int) -> list[int]:
    """At most about `most` evenly spaced tick positions, the first and the last among them."""
    step = max(1, math.ceil(n / most))
    ticks = list(range(0, n, step))
    if n - 1 - ticks[-1] > step / 2:
        ticks.append(n - 1)
    return ticks


def _bar_panels(fig, bars: list[dict], rows: int, cols: int, box: dict) -> None:
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(box, hspace=0.6, wspace=0.25))
    for ax in axes.flat[len(bars):]:
        ax.set_axis_off()
    for ax, m in zip(axes.flat, bars):
        n = len(m["strengths"])
        ax.bar(range(n), m["strengths"], color=COLOURS["crossdepthwise"], width=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_xlim(-0.6, n - 0.4)
        ticks = _ticks(n, 8)
        ax.set_xticks(ticks, [_tick(m["labels"][i], m["source_units"][i], "in") for i in ticks], fontsize=6.5)
        ax.tick_params(axis="y", labelsize=6.5)
        target = m["target"]
        where = _short(target, m["block"]) if target != f"{m['block']} output" else "output"
        ax.set_title(f"{m['block']} · {where}", fontsize=8, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("‖w‖ / max", fontsize=7)
    for ax in axes.flat[max(0, len(bars) - cols):len(bars)]:
        ax.set_xlabel("source layer (in: block input)", fontsize=7)


def _tick(label: str, unit: str, outside: str) -> str:
    """A short axis label: a layer of the block by its number (`7`), another unit of the block by the end
    of its name, a unit from outside the block by `outside` (or its name, when that is one word)."""
    if label == unit:  # not stripped: outside the block
        return unit if outside == "name" and "." not in unit else "in" if outside == "in" else "next"
    if label.startswith("layer") and label[5:].isdigit():
        return label[5:]
    return ".".join(label.split(".")[-2:])


def _heat_maps(fig, maps: list[dict], rows: int, cols: int, box: dict) -> None:
    import numpy as np

    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(box, hspace=0.55, wspace=0.45))
    for ax in axes.flat[len(maps):]:
        ax.set_axis_off()
    for ax, m in zip(axes.flat, maps):
        data = np.array([[np.nan if v is None else v for v in row] for row in m["weights"]], dtype=float)
        im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_facecolor("#f2f2f2")
        for labels, units, setter, outside in ((m["source_labels"], m["sources"], ax.set_yticks, "in"),
                                               (m["target_labels"], m["targets"], ax.set_xticks, "name")):
            ticks = _ticks(len(labels), 12)
            setter(ticks, [_tick(labels[i], units[i], outside) for i in ticks], fontsize=6.5)
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_xlabel("target (the convolution the merge feeds)", fontsize=7)
        ax.set_ylabel("source", fontsize=7)
        ax.set_title(f"{m['block']} · concat", fontsize=8, loc="left")
        bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        bar.ax.yaxis.get_major_formatter().set_useOffset(False)
        bar.set_label("mean |w|", fontsize=6.5)
