"""A run's metrics, one row per epoch, in two files: `metrics.jsonl` (one JSON object a line: what
`--resume` reads back, up to the first line a crash cut short) and `metrics.csv` (the same rows for a
spreadsheet or pandas). Both are rewritten whole and atomically; they are small."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from archspec.files import write_atomic


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
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything after it is redone
    return rows
