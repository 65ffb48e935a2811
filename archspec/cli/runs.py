"""`runs`: training runs side by side, read from their folders (config.json and metrics.jsonl), as a
table, as JSON, or as one picture of their curves."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RunError, printable
from .common import app, guarded, human, out


def _costs(folder: Path) -> tuple[int, int] | None:
    """Parameters and MACs of the network in the run's `last.safetensors`, rebuilt from the spec text it
    carries (as `archspec eval` rebuilds it); None where the folder holds no checkpoint, or one that does
    not load (a note on stderr says why)."""
    from archspec.compiler.costs import summarize
    from archspec.runtime.train import checkpoint as ckpt
    from archspec.runtime.train.evaluation import network_of

    path = folder / "last.safetensors"
    if not path.is_file():
        return None
    try:
        s = summarize(network_of(ckpt.load(path), path))
    except RunError as e:
        sys.stderr.write(printable(f"note: {e.message}: its parameters and MACs are not shown") + "\n")
        return None
    return s.params, s.macs


def _cell(value, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


FIELDS = ("spec", "params", "MACs", "recipe", "epochs", "best acc", "last test acc", "time", "images/s")


def _cells(s: dict) -> list[str]:
    """One run's column of the table, in the order of `FIELDS`."""
    epochs = f"{s['epochs']}" + (f" of {s['planned_epochs']}" if s["planned_epochs"] is not None else "")
    best = "—" if s["best_acc"] is None else f"{s['best_acc']:.4f} ({s['best_on']}, epoch {s['best_epoch']})"
    return [s["spec"] or "—", _cell(s["parameters"], "{:,}"), "—" if s["macs"] is None else human(s["macs"]),
            s["recipe"] or "—", epochs, best, _cell(s["last_test_acc"], "{:.4f}"), _duration(s["seconds"]),
            _cell(s["images_per_s"], "{:,.0f}")]


def _table(summaries: list[dict]):
    """The runs side by side: one column per run, one row per field."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, pad_edge=False, caption="best acc: on the validation images (val) where the "
                  "run held some out, else on the test split")
    table.add_column("", style="bold", no_wrap=True)
    for s in summaries:
        table.add_column(Text(s["run"]), overflow="fold")  # Text: nothing read from a folder is taken as markup
    columns = [_cells(s) for s in summaries]
    for i, field in enumerate(FIELDS):
        table.add_row(field, *(Text(c[i]) for c in columns))
    return table


@app.command()
def runs(
    folders: List[Path] = typer.Argument(..., metavar="RUN...", help="Run folders (`archspec train --out`).",
                                         show_default=False),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE.png",
                                        help="Also draw the runs' curves over each other into FILE.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as a JSON list instead of a table."),
) -> None:
    """Compare training runs side by side: spec, size, recipe, accuracy, time and speed."""

    def run():
        from archspec.runtime.train.metrics import read_run, run_summary

        if plot is not None and plot.suffix.lower() != ".png":
            raise RunError(f"--plot {plot}: the picture is a .png file", "name it FILE.png")
        read = [(folder, *read_run(folder)) for folder in folders]  # every folder checked before any output
        summaries = []
        for folder, config, rows in read:
            s = run_summary(folder, config, rows)
            if s["parameters"] is None or s["macs"] is None:
                costs = _costs(folder)
                if costs is not None:
                    s["parameters"], s["macs"] = costs
            summaries.append(s)
        if plot is not None:
            from archspec.runtime.viz.curves import write_curves

            write_curves(plot, [(str(folder), rows) for folder, _, rows in read])
        if as_json:
            print(json.dumps(summaries, indent=2))
        else:
            out.print(_table(summaries))
            if plot is not None:
                out.print(f"wrote {plot}")

    guarded(run)
