"""`transfer`: another library's weights copied into a spec's module and written as safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RunError
from ..files import output_target
from .common import AllowPathOpt, MaxParamsOpt, SetOpt, SpecArg, analyse, app, guarded, memory_limit, out


@app.command()
def transfer(
    source: Path = typer.Argument(..., metavar="WEIGHTS",
                                  help="A state dict: .safetensors, or a torch file (.pt, .pth, .bin, .ckpt) "
                                       "read with weights_only=True."),
    spec: str = SpecArg,
    output: Path = typer.Option(..., "-o", "--out", "--output", metavar="FILE",
                                help="Where to write SPEC's weights (safetensors, module order recorded)."),
    set_: Optional[List[str]] = SetOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every tensor pair."),
    max_params: int = MaxParamsOpt,
    max_memory: Optional[str] = typer.Option(None, "--max-memory", metavar="SIZE",
                                             help="Refuse a transfer whose memory (the weights file's tensors, "
                                                  "the target's weights and their staged copy), counted before "
                                                  "the target is built, is above SIZE (8GiB, 500MB). Default: "
                                                  "the host's memory."),
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Copy another library's weights into SPEC's module, tensors paired by structure, and write them."""

    def run():
        target = output_target(output)  # refused before any work, not after it
        if not target.parent.is_dir():
            raise RunError(f"cannot write -o {output}: the folder {target.parent} does not exist",
                           "create it first, or give a file in an existing folder")
        limit = memory_limit(max_memory)
        from archspec.compiler.transfer import check_memory, open_weights, save_state_dict, transfer_weights

        weights = open_weights(source, limit)  # read and bounded before the target is built
        net, summary = analyse(spec, set_, max_params, allow_path)
        check_memory(weights, summary.params, limit)
        from archspec.compiler.codegen import to_module

        gm = to_module(net)
        report = transfer_weights(weights, gm)  # TransferError (a RunError): exit 2, nothing written
        save_state_dict(gm.state_dict(), output)
        out.print(report.summary())
        if verbose:
            for line in report.lines():
                out.print(line, markup=False)
        out.print(f"wrote {output}")

    guarded(run)
