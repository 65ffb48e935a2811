"""The `archspec` command line. Every failure the user can cause ends in a located message and exit
code 2, never a traceback."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import Loc, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile, check and benchmark neural-network architecture specs.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")
app.add_typer(bench_app, name="bench")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SetOpt = typer.Option(None, "--set", help="Set a network parameter: name=value (repeatable).")
MaxParamsOpt = typer.Option(2_000_000_000, "--max-params", help="Refuse networks with more parameters.")


def parse_sets(items: Optional[List[str]]) -> dict[str, Any]:
    """`name=value` pairs; values are spec literals (numbers, true/false, "strings", [lists])."""
    from .evaluate import evaluate
    from .syntax import parse_expr

    result: dict[str, Any] = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise SpecError(f"--set needs name=value, got {item!r}")
        result[name.strip()] = evaluate(parse_expr(text.strip(), f"--set {name.strip()}"), {})
    return result


def _sources_for(e: SpecError) -> dict[str, str]:
    if e.loc and os.path.isfile(e.loc.file):
        try:
            return {e.loc.file: Path(e.loc.file).read_text(errors="replace")}
        except OSError:
            return {}
    return {}


def guarded(fn: Callable[[], Any], sources: dict[str, str] | None = None) -> Any:
    try:
        return fn()
    except SpecError as e:
        err.print(e.render({**_sources_for(e), **(sources or {})}), markup=False)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3f}{unit}"
    return str(n)


def _shape(s) -> str:
    return "×".join(map(str, s))


def print_summary(s) -> None:
    t = Table(title=f"{s.network}  input {_shape(s.input_shape)}", title_justify="left")
    for col, just in (("group", "left"), ("layers", "right"), ("output", "right"), ("params", "right"),
                      ("MACs", "right")):
        t.add_column(col, justify=just)
    for g in s.groups:
        t.add_row(g.name, str(g.layers), _shape(g.output_shape), f"{g.params:,}", _human(g.macs))
    t.add_section()
    t.add_row("total", "", _shape(s.output_shape), f"{s.params:,}", _human(s.macs))
    out.print(t)
    out.print(f"depth {s.depth} (weighted layers on the longest path)   params {s.params:,}   "
              f"MACs {s.macs:,}")


@app.command()
def compile(
    spec: Path = typer.Argument(..., help="Spec file (.arch)."),
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the module as a standalone .py file."),
    max_params: int = MaxParamsOpt,
) -> None:
    """Compile SPEC into a torch.fx module and print what was built."""
    from . import api

    def run():
        net = api.network(spec, **parse_sets(set_))
        s = api.summary(net)
        if output is not None:
            from archspec.compiler.standalone import standalone_source

            gm = api.build(net, max_params=max_params)
            write_atomic(output, standalone_source(gm, f"{net.name} from {spec}"))
        elif s.params > max_params:
            api.build(net, max_params=max_params)  # raises the located refusal
        if as_json:
            print(json.dumps(s.to_json()))
        else:
            print_summary(s)
            if output is not None:
                out.print(f"wrote {output}")

    guarded(run)


@app.command()
def check(spec: Path = typer.Argument(..., help="Spec file (.arch)."), set_: Optional[List[str]] = SetOpt) -> None:
    """Validate SPEC (syntax, names, types, shapes) without building weights."""
    from . import api

    def run():
        s = api.summary(api.network(spec, **parse_sets(set_)))
        out.print(f"ok: {s.network}: {s.params:,} params, {s.macs:,} MACs, output {_shape(s.output_shape)}")

    guarded(run)


@bench_app.command("compile")
def bench_compile(
    spec: Path = typer.Argument(..., help="Spec file (.arch)."),
    set_: Optional[List[str]] = SetOpt,
    repeat: int = typer.Option(7, help="Timed repetitions (the median is shown)."),
) -> None:
    """Time each compile stage (parse, elaborate, passes, codegen) against a hand-written module."""
    from archspec.runtime.bench_compile import run_bench

    guarded(lambda: run_bench(spec, parse_sets(set_), repeat, out))


def main() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code
        sys.exit(code)


if __name__ == "__main__":
    main()
