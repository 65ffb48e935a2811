"""`inspect`: what a trained network learned about its cross-layer connections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import RunError
from .common import AllowNonfiniteOpt, ThreadsOpt, TrustLegacyOpt, app, guarded, out


@app.command()
def inspect(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A .safetensors file from archspec train."),
    connections: bool = typer.Option(True, "--connections/--no-connections",
                                     help="What the network learned about its cross-layer connections."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE.png",
                                          show_default="CHECKPOINT's name with .connections.png; none with --json",
                                          help="Where to draw the picture."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers behind the picture."),
    threads: Optional[int] = ThreadsOpt,
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
) -> None:
    """Plot the learned strength of each cross-layer connection of a trained network."""

    def run():
        from archspec.runtime.threads import use_threads
        from archspec.runtime.viz.connections import connection_strengths, plot_connections

        use_threads(threads)
        if not connections:
            raise RunError("nothing to inspect: --connections is what inspect reports")
        # only the options given are passed, as keywords that `load_trained` takes
        given = {k: v for k, v in (("trust_legacy", trust_legacy), ("allow_nonfinite", allow_nonfinite)) if v}
        report_ = connection_strengths(checkpoint, **given)
        if as_json:
            print(json.dumps(report_))
        path = output or (None if as_json else checkpoint.with_suffix(".connections.png"))
        if path is not None:
            plot_connections(report_, path)
            if not as_json:
                out.print(f"wrote {path}")

    guarded(run)
