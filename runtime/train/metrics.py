"""A run's metrics, one row per epoch, in two files: `metrics.jsonl` (one JSON object a line: what
`--resume` reads back, up to the first line a crash cut short) and `metrics.csv` (the same rows for a
spreadsheet or pandas). Both are rewritten whole and atomically; they are small, and `metrics.jsonl` is
read back through the bounded reader: a regular file of at most `MAX_METRICS_BYTES`, each line a JSON
object with a whole-number `epoch`, or the run is refused (exit 2)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from archspec.errors import RunError
from archspec.files import read_bounded, write_atomic

# A row is a few hundred bytes: this is tens of thousands of epochs.
MAX_METRICS_BYTES = 16 * 1024 * 1024
_HINT = "the run folder's metrics.jsonl was changed by another program: move it aside to resume without it"


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite the JSON-lines file at `path`, and its CSV twin beside it."""
    path = Path(path)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    write_csv(path.with_suffix(".csv"), rows)


def columns(rows: list[dict]) -> list[str]:
    """Every key of the rows, in the order first seen: rows of a run resumed by another archspec version
    may hold fewer columns (their cells stay empty)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(Path(path), buf.getvalue())


def read_metrics(path: Path) -> list[dict]:
    """The rows of the JSON-lines file at `path` (none when there is no file), up to a last line a crash
    cut short. A file that is not a regular one, is larger than `MAX_METRICS_BYTES`, is not UTF-8, or
    holds a line that is not an object with a whole-number `epoch` is a RunError; no row's text is shown."""
    path = Path(path)
    if not os.path.lexists(path):
        return []
    data = read_bounded(path, MAX_METRICS_BYTES, "metrics file")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RunError(f"{path} is not UTF-8 text (byte {e.start:,})", _HINT) from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # a line cut by a crash: that epoch is redone
            raise RunError(f"{path}: line {number} is not JSON", _HINT) from None
        except (ValueError, RecursionError):  # a number too long to convert, nesting too deep to read
            raise RunError(f"{path}: line {number} is not a metrics row", _HINT) from None
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise RunError(f"{path}: line {number} is not a metrics row (an object with a whole-number epoch)",
                           _HINT)
        rows.append(row)
    return rows
