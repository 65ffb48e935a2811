"""A confusion matrix of a classifier's evaluation: `confusion.json` (the counts, row = true class,
column = predicted class) and `confusion.png` (each row as shares of that class's images, with the
counts written in the cells where there are few enough classes to read them). Drawn for at most
`MAX_CLASSES` classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from archspec.errors import RunError
from archspec.files import write_atomic
from archspec.runtime.train.scores import MAX_CONFUSION_CLASSES as MAX_CLASSES

from .curves import png_bytes

ANNOTATE_UP_TO = 20  # classes, beyond which the cells are too small for their counts
DPI = 100


def figure_inches(classes: int) -> float:
    """The side of the (square) picture, in inches: it grows with the classes, from 4 to 16."""
    return min(16.0, max(4.0, 0.16 * classes + 2.0))


def confusion_figure(counts: Sequence[Sequence[int]], title: str = "confusion matrix"):
    """A matplotlib Figure of `counts` (K×K, row = true class, column = predicted)."""
    from matplotlib.figure import Figure

    k = len(counts)
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    side = figure_inches(k)
    fig = Figure(figsize=(side, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class's images")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = sum(map(sum, counts))
    right = sum(counts[i][i] for i in range(k))
    ax.set_title(f"{title}: {right:,} of {total:,} right" if total else title, fontsize=10)
    step = max(1, k // 20)
    ax.set_xticks(range(0, k, step))
    ax.set_yticks(range(0, k, step))
    ax.tick_params(labelsize=7)
    if k <= ANNOTATE_UP_TO:
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                if c:
                    ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                            color="white" if shares[i][j] > 0.5 else "black")
    return fig


def write_confusion(folder: str | Path, counts: Sequence[Sequence[int]], part: str = "test") -> Path:
    """Write `confusion.json` and `confusion.png` of `counts` (K×K whole numbers, row = true class,
    column = predicted) into `folder`; returns the picture's path. More than `MAX_CLASSES` classes is a
    RunError."""
    counts = [[int(c) for c in row] for row in counts]
    k = len(counts)
    if k > MAX_CLASSES:
        raise RunError(f"a confusion matrix is drawn for at most {MAX_CLASSES} classes, not {k}")
    if any(len(row) != k for row in counts):
        raise RunError("a confusion matrix has as many columns as rows")
    folder = Path(folder)
    doc = {"part": part, "classes": k, "rows": "true class", "columns": "predicted class", "counts": counts}
    write_atomic(folder / "confusion.json", json.dumps(doc) + "\n")
    return write_atomic(folder / "confusion.png", png_bytes(confusion_figure(counts, f"{part} confusion matrix")))
