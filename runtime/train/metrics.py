"""A run's metrics file, one JSON line per epoch: rewritten atomically, and read back up to the first
line a crash cut short."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite the metrics file atomically (it is small: one line per epoch)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
