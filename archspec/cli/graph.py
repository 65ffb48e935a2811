"""`graph`: a drawing of the network's blocks, layers and cross-layer connections."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..files import output_target
from ..graph.builder import DEFAULT_MAX_PARAMS
from .common import AllowPathOpt, SetOpt, SpecArg, analyse, app, guarded, out


@app.command()
def graph(
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE",
                                          show_default="SPEC's name with .svg", help=".svg, .png or .dot."),
    level: str = typer.Option("layer", "--level", metavar="LEVEL", help="block, layer or op."),
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Draw the network: blocks, layers and their cross-layer connections, by pattern and merge."""

    def run():
        from archspec.runtime.viz import draw

        if output is not None:
            output_target(output)  # a folder, a device or a FIFO is refused before any work
        net, _ = analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        path = draw(net, output or Path(Path(spec).name).with_suffix(".svg"), level)
        out.print(f"wrote {path}")

    guarded(run)
