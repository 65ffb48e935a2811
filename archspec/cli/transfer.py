"""`transfer`: another library's weights copied into a spec's module and written as safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..files import output_target
from .common import AllowPathOpt, MaxParamsOpt, SetOpt, SpecArg, analyse, app, guarded, out


@app.command()
def transfer(
    source: Path = typer.Argument(..., metavar="WEIGHTS",
                                  help="A state dict: .safetensors, or a torch file (.pt, .pth, .bin, .ckpt) "
                                       "read with weights_only=True."),
    spec: Path = SpecArg,
    output: Path = typer.Option(..., "-o", "--out", "--output", metavar="FILE",
                                help="Where to write SPEC's weights (safetensors, module order recorded)."),
    set_: Optional[List[str]] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every tensor pair."),
    max_params: int = MaxParamsOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Copy another library's weights into SPEC's module, tensors paired by structure, and write them."""

    def run():
        output_target(output)  # refused before any work, not after it
        net, _ = analyse(spec, set_, max_params, allow_path)
        from archspec.compiler.codegen import to_module
        from archspec.compiler.transfer import save_state_dict, transfer_weights

        gm = to_module(net)
        report = transfer_weights(source, gm)  # TransferError (a RunError): exit 2, nothing written
        save_state_dict(gm.state_dict(), output)
        out.print(report.summary())
        if verbose:
            for line in report.lines():
                out.print(line, markup=False)
        out.print(f"wrote {output}")

    guarded(run)
