"""Training curves of one run or several, against epoch: loss, accuracy and top-5 accuracy (train,
validation and test, and of the weights' moving average where a run keeps one), the learning rate,
images per second and seconds per epoch. Drawn from metrics rows (as `metrics.jsonl` holds them) with
matplotlib's Agg canvas (no display, no pyplot state) and written as a PNG through `write_atomic`.
Only numbers of a plausible size are drawn (`number`): a row missing a column (written by another
archspec version), or holding something else there, leaves a gap."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, Sequence

from archspec.errors import printable
from archspec.files import write_atomic

PARTS = ("train", "val", "test", "ema_val", "ema_test")  # ema_: the moving average of the weights
STYLES = {"train": "--", "val": ":", "test": "-", "ema_val": (0, (3, 1, 1, 1, 1, 1)), "ema_test": "-."}
NAMES = {"ema_val": "EMA val", "ema_test": "EMA test"}
# (title, the row keys drawn: per part where the key holds "{part}", else one line)
PANELS = (("loss", "{part}_loss"), ("accuracy", "{part}_acc"), ("top-5 accuracy", "{part}_top5"),
          ("learning rate", "lr"), ("images/s (training)", "images_per_s"), ("seconds per epoch", "seconds"))
COLUMNS, ROWS = 3, 2
PANEL_INCHES = (4.0, 2.8)  # width, height of one panel
DPI = 100
LIMIT = 1e12  # no loss, accuracy, rate or time of a run is near this; axes past it cannot be ticked


def number(value) -> float | None:
    """`value` as a float when it is an int or float (not a bool) of magnitude at most `LIMIT`, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -LIMIT <= value <= LIMIT:
        return None
    return float(value)


def plain(label: str) -> str:
    """`label` shown as written: printable, and `$` escaped so that matplotlib never reads it as math."""
    return printable(label).replace("$", r"\$")


def series(rows: Iterable[dict], key: str) -> tuple[list[int], list[float]]:
    """The epochs and values of `key` over `rows`, where both are numbers (`number`)."""
    xs, ys = [], []
    for r in rows:
        v = number(r.get(key))
        if v is not None and number(r.get("epoch")) is not None:
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


LEGEND_COLUMNS, LEGEND_LINE = 6, 0.25  # entries a legend line holds; its height in inches


def legend_lines(runs: int) -> int:
    """Lines of the legend below the panels: the parts, and one entry per run where there are several."""
    return 1 if runs <= 1 else math.ceil((len(PARTS) + runs) / LEGEND_COLUMNS)


def figure_size(runs: int = 1) -> tuple[int, int]:
    """The picture's size in pixels (width, height): the panels' grid at `DPI`, with room below for the
    legend's lines."""
    width = COLUMNS * PANEL_INCHES[0]
    height = ROWS * PANEL_INCHES[1] + LEGEND_LINE * (legend_lines(runs) - 1)
    return round(width * DPI), round(height * DPI)


def curves_figure(runs: Sequence[tuple[str, Sequence[dict]]]):
    """A matplotlib Figure of the curves of each (label, rows) in `runs`, one line style per part (train
    dashed, validation dotted, test solid, the moving average's dash-dotted); one colour per part for a
    single run, per run for several."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    w, h = figure_size(len(runs))
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    inches = h / DPI
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.3 / inches,
                        bottom=(0.55 + LEGEND_LINE * legend_lines(len(runs))) / inches,
                        wspace=0.22, hspace=0.55)
    axes = fig.subplots(ROWS, COLUMNS, squeeze=False).ravel()
    one = len(runs) == 1
    colours = [f"C{i % 10}" for i in range(len(runs))]
    part_colours = {"train": "C0", "val": "C2", "test": "C1", "ema_val": "C4", "ema_test": "C3", "": "C0"}
    parts_drawn: set[str] = set()
    for ax, (title, key) in zip(axes, PANELS):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8, labelpad=1)
        ax.tick_params(which="both", labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        drawn = False
        for colour, (_, rows) in zip(colours, runs):
            for part in PARTS if "{part}" in key else ("",):
                xs, ys = series(rows, key.format(part=part))
                if not xs:
                    continue
                ax.plot(xs, ys, ls=STYLES.get(part, "-"), color=part_colours[part] if one else colour, lw=1.2,
                        marker="." if len(xs) < 30 else None)
                parts_drawn.add(part)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="#888888")
        elif key == "lr" and all(1 / LIMIT <= v for _, rows in runs for v in series(rows, key)[1]):
            ax.set_yscale("log")
    handles = [Line2D([], [], color=part_colours[p] if one else "#333333", ls=STYLES[p], label=NAMES.get(p, p))
               for p in PARTS if p in parts_drawn]
    if not one:
        handles += [Line2D([], [], color=c, lw=3, label=plain(label)) for c, (label, _) in zip(colours, runs)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), LEGEND_COLUMNS), fontsize=8,
                   frameon=False)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, at its own size and DPI (no bounding-box trimming), without the
    software tag, so the same curves give the same file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def write_curves(path: str | Path, runs: Sequence[tuple[str, Sequence[dict]]]) -> Path:
    """Draw the curves of `runs` ((label, rows) pairs) to the PNG at `path`, atomically."""
    return write_atomic(path, png_bytes(curves_figure(runs)))
