"""A run's metrics, one row per epoch, in two files: `metrics.jsonl` (one JSON object a line: what
`--resume` reads back, up to the first line a crash cut short) and `metrics.csv` (the same rows for a
spreadsheet or pandas), and their picture, `curves.png` (`archspec.runtime.viz.curves`). All three are
rewritten whole and atomically; they are small, and `metrics.jsonl` is
read back through the bounded reader: a regular file of at most `MAX_METRICS_BYTES`, each line a JSON
object with a whole-number `epoch`, or the run is refused (exit 2)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from archspec.errors import RunError, printable
from archspec.files import read_bounded, write_atomic
from archspec.runtime.viz.curves import number as finite, write_curves

# A row is a few hundred bytes: this is tens of thousands of epochs.
MAX_METRICS_BYTES = 16 * 1024 * 1024
CURVES = "curves.png"
_HINT = "the run folder's metrics.jsonl was changed by another program: move it aside to resume without it"


def write_metrics(path: Path, rows: list[dict], curves: bool = True) -> None:
    """Rewrite the JSON-lines file at `path`, its CSV twin beside it, and (with `curves`) the picture of
    its rows, `curves.png`, beside them."""
    path = Path(path)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    write_csv(path.with_suffix(".csv"), rows)
    if curves:
        write_curves(path.with_name(CURVES), [("", rows)])


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


# -- a run folder read back: its configuration and metrics, summed up for `archspec runs`

MAX_CONFIG_BYTES = 1024 * 1024  # config.json is a few kilobytes
CONFIG, METRICS = "config.json", "metrics.jsonl"
_TEXT_CHARS = 60  # the most of a name read from a run folder that is shown


def read_run(folder: str | Path) -> tuple[dict, list[dict]]:
    """A run folder's `config.json` (a JSON object) and `metrics.jsonl` rows, each read within bounds. A
    folder that is not one, or a file missing, not a regular file, too large or malformed, is a
    RunError naming that file; no file's content is shown."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder} is not a run folder: {'no such folder' if not folder.exists() else 'not a folder'}",
                       "give folders `archspec train --out` wrote")
    path = folder / CONFIG
    if not os.path.lexists(path):
        raise RunError(f"{path}: no such file, so {folder} is not a run folder",
                       "give folders `archspec train --out` wrote")
    try:
        config = json.loads(read_bounded(path, MAX_CONFIG_BYTES, "run configuration").decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RunError(f"{path} is not a run configuration (a JSON object)",
                       "it was changed by another program") from None
    if not isinstance(config, dict):
        raise RunError(f"{path} is not a run configuration (a JSON object)", "it was changed by another program")
    path = folder / METRICS
    if not os.path.lexists(path):
        raise RunError(f"{path}: no such file: the run finished no epoch", "give runs that finished an epoch")
    return config, read_metrics(path)


def _text(value) -> str | None:
    """A name read from a run folder, as shown: printable, at most `_TEXT_CHARS` characters."""
    if not isinstance(value, str):
        return None
    text = printable(value)
    return text if len(text) <= _TEXT_CHARS else text[:_TEXT_CHARS - 1] + "…"


def _count(value) -> int | None:
    """A whole number from 0 to 2**63, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**63 else None


def _total(values: list[float]) -> float | None:
    """The sum of `values` (each at most `curves.LIMIT` in size), None where there are none."""
    return sum(values) if values else None


def _overrides(config: dict) -> str:
    """The `--set` values the run was given, as `name=value` words."""
    sets = config.get("overrides")
    if not isinstance(sets, dict):
        return ""
    return " ".join(f"{_text(k)}={_text(json.dumps(v))}" for k, v in sets.items())


def run_summary(folder: str | Path, config: dict, rows: list[dict]) -> dict:
    """What `archspec runs` shows of one run: network and the overrides given (`spec`), parameter and
    MAC counts (where config.json records them), recipe, epochs done and planned, the best accuracy
    (on the validation images where the run held some out, else on the test split) and its epoch, the
    last epoch's test accuracy, the training time and the mean images/s. Only values of the expected
    type are taken; anything else is None."""
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    network = _text(config.get("network"))
    sets = _overrides(config)
    on = "val" if any(finite(r.get("val_acc")) is not None for r in rows) else "test"
    scored = [(v, r["epoch"]) for r in rows if (v := finite(r.get(f"{on}_acc"))) is not None]
    best = max(scored, key=lambda s: s[0], default=(None, None))
    last = finite(rows[-1].get("test_acc")) if rows else None
    seconds = [v for r in rows if (v := finite(r.get("seconds"))) is not None]
    rates = [v for r in rows if (v := finite(r.get("images_per_s"))) is not None]
    rate = _total(rates) / len(rates) if rates else None
    return {"run": printable(str(folder)), "network": network, "spec": _text(f"{network or '?'} {sets}".rstrip()),
            "parameters": _count(config.get("parameters")), "macs": _count(config.get("macs")),
            "recipe": _text(recipe.get("name")), "epochs": rows[-1]["epoch"] if rows else 0,
            "planned_epochs": _count(recipe.get("epochs")), "best_acc": best[0], "best_on": on,
            "best_epoch": best[1], "last_test_acc": last, "seconds": _total(seconds),
            "images_per_s": rate}
