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
    like: Optional[str] = typer.Option(None, "--like", metavar="LIB:NAME",
                                       help="The model WEIGHTS were saved from (timm:NAME, torchvision:NAME, or "
                                            "MODULE:FUNCTION): WEIGHTS are loaded into it by name, then paired "
                                            "by both forward passes' dataflow, and its hyper-parameters (norm "
                                            "eps, momentum, convolution stride, padding, dilation, groups, "
                                            "activations) must be SPEC's."),
    force: bool = typer.Option(False, "--force", help="Copy even where hyper-parameters differ (with --like), "
                                                       "each difference printed as a warning."),
) -> None:
    """Copy another library's weights into SPEC's module, tensors paired by structure, and write them."""

    def run():
        target = output_target(output)  # refused before any work, not after it
        if not target.parent.is_dir():
            raise RunError(f"cannot write -o {output}: the folder {target.parent} does not exist",
                           "create it first, or give a file in an existing folder")
        limit = memory_limit(max_memory)
        from archspec.compiler.transfer import (check_memory, like_module, load_like, open_weights, save_state_dict,
                                                transfer_weights)

        weights = open_weights(source, limit)  # read and bounded before the target is built
        origin = load_like(like_module(like), weights) if like else weights
        net, summary = analyse(spec, set_, max_params, allow_path)
        check_memory(weights, summary.params, limit)
        from archspec.compiler.codegen import to_module

        gm = to_module(net)
        report = transfer_weights(origin, gm, force)  # TransferError (a RunError): exit 2, nothing written
        save_state_dict(gm.state_dict(), output)
        out.print(report.summary())
        for warning in report.warnings:
            out.print(f"warning: {warning}", markup=False)
        if not like and report.order != "names":
            out.print("hyper-parameters (norm eps, strides, activations) not compared: a weights file holds none; "
                      "--like names the model it was saved from", markup=False)
        if verbose:
            for line in report.lines():
                out.print(line, markup=False)
        out.print(f"wrote {output}")

    guarded(run)
