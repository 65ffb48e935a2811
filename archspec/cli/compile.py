"""`compile`, `check` and `list`: a spec read, checked, summarised, and written as a standalone file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..errors import RunError, printable
from ..files import output_target, write_atomic
from .completion import model_names
from .common import (AllowPathOpt, MaxMemoryOpt, MaxParamsOpt, SetOpt, SpecArg, ThreadsOpt, analyse, app, guarded,
                     human, memory_limit, out, shape)


def print_notes(net, most: int = 5) -> None:
    """The choices archspec made that the spec's own file left open (a library's are its author's), once
    per place, at most `most` of them."""
    seen = {}
    for loc, message in net.notes:
        if loc.file == net.main_file and (loc.line, loc.column) not in seen:
            seen[(loc.line, loc.column)] = f"note: {loc}: {message}"
    for line in list(seen.values())[:most]:
        out.print(line, markup=False)
    if len(seen) > most:
        out.print(f"note: and {len(seen) - most} more like these", markup=False)


def print_summary(s) -> None:
    t = Table(title=f"{s.network}  input {shape(s.input_shape)}", title_justify="left")
    for col, just in (("group", "left"), ("layers", "right"), ("output", "right"), ("params", "right"),
                      ("MACs", "right")):
        t.add_column(col, justify=just)
    for g in s.groups:
        t.add_row(g.name, str(g.layers or ""), shape(g.output_shape), f"{g.params:,}", human(g.macs))
    t.add_section()
    t.add_row("total", "", shape(s.output_shape), f"{s.params:,}", human(s.macs))
    out.print(t)
    out.print(f"depth {s.depth} (weighted layers on the longest path)   params {s.params:,}   "
              f"MACs {s.macs:,}")


@app.command()
def compile(
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE",
                                          help="Write the module as a standalone .py file."),
    max_params: int = MaxParamsOpt,
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Compile SPEC into a torch.fx module and print what was built."""

    def run():
        if output is not None:
            output_target(output)  # refused before any work, not after it
        net, s = analyse(spec, set_, max_params, allow_path)
        print_notes(net)
        if output is not None:
            from archspec.compiler.activation_memory import refuse_above
            from archspec.compiler.codegen import to_module
            from archspec.compiler.standalone import standalone_source
            from archspec.runtime.threads import use_threads

            use_threads(threads)  # the weights are initialised here
            refuse_above(net, 1, training=False, limit=memory_limit(max_memory))  # the weights it allocates
            gm = to_module(net)  # plain ops: the standalone file carries no fused training modules
            write_atomic(output, standalone_source(gm, f"{net.name} from {spec}"))
        if as_json:
            print(json.dumps(s.to_json()))
        else:
            print_summary(s)
            if output is not None:
                out.print(f"wrote {output}")

    guarded(run)


@app.command()
def check(spec: str = SpecArg, set_: Optional[List[str]] = SetOpt, max_params: int = MaxParamsOpt,
          allow_path: Optional[List[Path]] = AllowPathOpt) -> None:
    """Validate SPEC (syntax, names, types, shapes, size) without building weights."""

    def run():
        net, s = analyse(spec, set_, max_params, allow_path)
        print_notes(net)
        out.print(f"ok: {s.network}: {s.params:,} params, {s.macs:,} MACs, output {shape(s.output_shape)}")

    guarded(run)


@app.command("list")
def list_(pattern: Optional[str] = typer.Argument(None, metavar="PATTERN",
                                                 help="Only models whose names match this shell wildcard "
                                                      "(quote it: 'resnet*').", autocompletion=model_names),
          as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table.")) -> None:
    """The shipped models, usable by name anywhere: family, parameters, MACs and input, from their graphs
    (computed once per spec version, then read from a cache)."""

    def run():
        from .. import library  # elaborates models on a cache miss: the graph layer's imports are paid for only here

        rows = library.summaries(pattern)
        if not rows and pattern is not None:
            raise RunError(f"no shipped model matches {printable(pattern[:80])!r}", "archspec list shows them all")
        if as_json:
            print(json.dumps([{"name": r.name, "family": r.family, "params": r.params, "macs": r.macs,
                               "input_shape": list(r.input_shape)} for r in rows]))
            return
        t = Table(title="shipped models (archspec compile NAME)", title_justify="left")
        for col, just in (("name", "left"), ("family", "left"), ("params", "right"), ("MACs", "right"),
                          ("input", "right")):
            t.add_column(col, justify=just)
        for r in rows:
            t.add_row(r.name, r.family, f"{r.params:,}", human(r.macs), shape(r.input_shape))
        out.print(t)

    guarded(run)
