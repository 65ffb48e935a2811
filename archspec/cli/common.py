"""What every command shares: the application and its `bench` group, the console, the options several
commands take (`--set`, `--max-params`, `--allow-path`, `--max-memory`), reading a spec with them, and
`guarded`, which turns every failure the user can cause into a located message and exit code 2."""

from __future__ import annotations

import linecache
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import rich
import typer

from .. import __version__
from ..errors import Loc, SpecError, loc_of, printable
from ..files import read_bounded
from ..graph.builder import DEFAULT_MAX_PARAMS
from ..language import tree as T
from ..language.evaluate import evaluate
from ..language.loader import MAX_FILE_BYTES
from ..language.syntax import parse_expr
from .completion import complete_spec
from .helptext import App

app = App(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
          help="Compile, check and benchmark neural-network architecture specs.")
bench_app = App(no_args_is_help=True, help="Benchmarks that print figures.")
app.add_typer(bench_app, name="bench")


def _version(show: bool) -> None:
    if show:
        print(f"archspec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Compile, check and benchmark neural-network architecture specs."""


# What every command prints on: rich's own console, which progress bars (`runtime.train.progress`) draw on
# too, so that a line printed while a bar is shown lands above it rather than after its last frame.
rich.reconfigure(highlight=False, soft_wrap=True)
out = rich.get_console()

EXIT_SPEC = 2  # a problem in the spec, its values or the command line
EXIT_INTERNAL = 1  # a bug in archspec itself


def count(text: str | int) -> int:
    """A parameter count: `2000000`, `2_000_000`, `2e9`, `1.5e6`."""
    if isinstance(text, int):  # the default
        return text
    text = text.strip()
    try:
        v = float(text.replace("_", "")) if any(c in text.lower() for c in ".e") else int(text.replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number (e.g. 2000000000 or 2e9)") from None
    if v != v or v < 0 or v == float("inf") or (isinstance(v, float) and not v.is_integer()):
        raise typer.BadParameter(f"{text!r} is not a whole, non-negative number")
    return int(v)


def allow_path(text: str | Path) -> Path:
    """A folder `--allow-path` names; an empty one is refused (it would read as the working folder)."""
    if isinstance(text, Path):
        return text
    if not text.strip():
        raise typer.BadParameter("an empty path names no folder: give the folder (write . for the working folder)")
    return Path(text)


SetOpt = typer.Option(None, "--set", metavar="NAME=VALUE",
                      help="Set a network parameter (repeatable); VALUE is a number, true/false, "
                           "a \"string\" or a \\[list].")
MaxParamsOpt = typer.Option(DEFAULT_MAX_PARAMS, "--max-params", parser=count, metavar="N",
                            help="Refuse networks with more parameters than N (e.g. 2e9), before "
                                 "allocating any weight.")
AllowPathOpt = typer.Option(None, "--allow-path", metavar="DIR", parser=allow_path,
                            help="Let the spec's `use` lines read files under DIR too (repeatable); by default "
                                 "only the spec's own folder and the shipped library.")
MaxMemoryOpt = typer.Option(None, "--max-memory", metavar="SIZE",
                            help="Refuse a step whose memory, estimated from the graph before anything is "
                                 "allocated, is above SIZE (8GiB, 500MB). Default: the memory available now (the "
                                 "host's, within its cgroup's limit, or the GPU's free memory).")


def memory_limit(text: str | None) -> int | None:
    """`--max-memory` in bytes, None where not given."""
    from ..compiler.activation_memory import parse_size  # the compiler loads torch: not for --help

    return None if text is None else parse_size(text)


SpecArg = typer.Argument(..., metavar="SPEC", help="A spec file (.arch), or a shipped model's name (see `archspec "
                                                  "list`).", show_default=False, autocompletion=complete_spec)


def parse_sets(items: Optional[List[str]]) -> dict[str, Any]:
    """`name=value` pairs; values are spec literals (numbers, true/false, "strings", [lists])."""
    result: dict[str, Any] = {}
    for item in items or ():
        name, eq, text = item.partition("=")
        where = {"--set": item}
        if not eq or not name.strip().isidentifier():
            raise SpecError(f"--set needs NAME=VALUE, got {item!r}", Loc("--set", 1, 1, len(item) + 1),
                            "for example --set classes=100", where)
        lead = len(text) - len(text.lstrip())
        column = len(name) + 2 + lead
        expr = parse_expr(text.strip(), "--set", item, column)
        try:
            value = evaluate(expr, {})
        except SpecError as e:
            if isinstance(expr, T.Name) or e.message.startswith("unknown name"):
                raise SpecError(f"--set {name.strip()}: a value is a literal, not a name", e.loc,
                                f"write a string in quotes: --set '{name.strip()}=\"{text.strip()}\"'", where) from None
            raise e.with_sources(where) from None
        result[name.strip()] = value
    return result


def _sources_for(e: SpecError) -> dict[str, str]:
    """The text of the spec file `e` points into, to show its line: read as the loader reads a spec
    (a regular file, bounded); a file the error marks as not to be shown (source None) stays unread."""
    if e.loc and e.loc.file not in e.sources and os.path.isfile(e.loc.file):
        try:
            return {e.loc.file: read_bounded(e.loc.file, MAX_FILE_BYTES, "spec").decode("utf-8", "replace")}
        except (OSError, SpecError):
            return {}
    return {}


def report(e: SpecError) -> None:
    """Print `e` as `file:line:col: error: ...`, the line and a caret, to stderr."""
    sys.stderr.write(e.render(_sources_for(e)) + "\n")
    sys.stderr.flush()


def guarded(fn: Callable[[], Any]) -> Any:
    """Run `fn`: a spec error is printed located and exits 2; nothing the user does shows a traceback.
    No command of archspec's calls `sys.exit` (they end with `typer.Exit`), so a `SystemExit` or another
    `BaseException` that is not an `Exception` comes from code archspec ran (a plugin's): it is reported
    in one line and exits 2, never as success and never as a traceback. An allocator's failure (a
    `MemoryError`, torch's out-of-memory) is one line saying what was asked for and where, and exits 2."""
    try:
        return fn()
    except SpecError as e:
        report(e)
        raise typer.Exit(EXIT_SPEC)
    except (typer.Exit, typer.Abort):
        raise
    except SystemExit as e:
        code = printable(repr(e.code)[:80])
        sys.stderr.write(f"error: code run by this command called sys.exit({code}) (a plugin?); the command did not "
                         "finish\n")
        raise typer.Exit(EXIT_SPEC)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130)
    except Exception as e:  # a bug in archspec, not in the spec: say so, briefly
        if out_of_memory(e):
            sys.stderr.write(printable(out_of_memory_line(e)) + "\n")
            raise typer.Exit(EXIT_SPEC)
        if os.environ.get("ARCHSPEC_TRACEBACK"):
            raise
        sys.stderr.write(f"internal error: {type(e).__name__}: {e}\n"
                         "  this is a bug in archspec, not in the spec; set ARCHSPEC_TRACEBACK=1 to see where\n")
        raise typer.Exit(EXIT_INTERNAL)
    except BaseException as e:  # not an Exception: raised by code archspec ran, not by archspec
        if os.environ.get("ARCHSPEC_TRACEBACK"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        sys.stderr.write(printable(f"error: code run by this command raised {type(e).__name__}: {first} "
                                   "(a plugin?); the command did not finish") + "\n")
        raise typer.Exit(EXIT_SPEC)


_ALLOCATING = re.compile(r"tried to allocate\s+(\d+(?:\.\d+)?)\s*(bytes|[KMGTPE]i?B)\b", re.IGNORECASE)
_GENERATED = "<eval_with_key>"  # the file name torch.fx gives a generated module's code
_ASSIGNED = re.compile(r"\s*([A-Za-z_]\w*)\s*=")


def out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocator's failure: a `MemoryError`, torch's `OutOfMemoryError` (a CUDA
    device's), or the RuntimeError torch's CPU allocator raises when the host refuses memory."""
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "can't allocate memory" in str(e)


def _generated_op(e: BaseException) -> str | None:
    """The op of a generated model that was running when `e` was raised: the name its line of generated
    code assigns, in the innermost such frame; None outside a generated model."""
    op, tb = None, e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(_GENERATED):
            m = _ASSIGNED.match(linecache.getline(code.co_filename, tb.tb_lineno, tb.tb_frame.f_globals))
            op = m.group(1) if m else op
        tb = tb.tb_next
    return op


def out_of_memory_line(e: BaseException) -> str:
    """One line for an allocator's failure: how much was asked for and in which op of the model, where
    the error or the running code says so."""
    m = _ALLOCATING.search(str(e))
    size = ""
    if m:
        number, unit = m.groups()
        size = f" {human_bytes(int(float(number)))}" if unit.lower() == "bytes" else f" {number} {unit}"
    op = _generated_op(e)
    where = f" in the model's op '{op}'" if op else ""
    return (f"error: out of memory allocating{size or ' memory'}{where}; lower the batch size or the input size "
            "(--max-memory and --max-params refuse a step or a network too large before allocating)")


def human_bytes(n: int) -> str:
    """`n` bytes in binary units (`1.5 GiB`)."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3f}{unit}"
    return str(n)


def shape(s) -> str:
    return "×".join(map(str, s))


def analyse(spec: str, sets: Optional[List[str]], max_params: int | None,
            allow_paths: Optional[List[Path]] = None):
    """Parse and elaborate `spec` (a path, or a shipped model's name; `./NAME` is the working folder's) with
    `--set` values, summarise it, and refuse it (located at the network's definition) when its analytic
    parameter count is above `max_params`."""
    from .. import api, library  # loads torch: only commands that read a spec pay for it, not --help

    overrides = parse_sets(sets)
    parsed = api.parse(library.find(spec), allow_paths)  # the argument is a path or a name, never spec text
    net = api.network(parsed, **overrides)
    s = api.summary(net)
    if max_params is not None and s.params > max_params:
        d = parsed.networks[parsed.main]
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        loc_of(d.name, d.loc), "raise the limit with --max-params if this is intended",
                        parsed.sources)
    return net, s


ThreadsOpt = typer.Option(None, "--threads", min=1, metavar="N",
                          help="CPU threads torch computes on. Default: OMP_NUM_THREADS where set, else the cores "
                               "this process may use less those other processes keep busy; loader processes "
                               "count against them.")
TrustLegacyOpt = typer.Option(False, "--trust-legacy",
                              help="Load a checkpoint without digests (written by an older archspec); only for "
                                   "files from a source you trust.")
AllowNonfiniteOpt = typer.Option(False, "--allow-nonfinite",
                                 help="Load a checkpoint whose weights hold NaN or infinite values.")
