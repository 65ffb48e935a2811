"""The `archspec` command line. Every failure the user can cause ends in a located message and exit
code 2, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .language import tree as T
from .errors import Loc, RunError, SpecError, loc_of
from .language.evaluate import evaluate
from .language.syntax import parse_expr
from .graph.builder import DEFAULT_MAX_PARAMS

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile, check and benchmark neural-network architecture specs.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print figures.")
app.add_typer(bench_app, name="bench")


def _version(show: bool) -> None:
    if show:
        print(f"archspec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Compile, check and benchmark neural-network architecture specs."""
out = Console(highlight=False, soft_wrap=True)

EXIT_SPEC = 2  # a problem in the spec, its values or the command line
EXIT_INTERNAL = 1  # a bug in archspec itself


def _count(text: str | int) -> int:
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


SetOpt = typer.Option(None, "--set", metavar="NAME=VALUE",
                      help="Set a network parameter (repeatable); VALUE is a number, true/false, "
                           "a \"string\" or a \\[list].")
MaxParamsOpt = typer.Option(DEFAULT_MAX_PARAMS, "--max-params", parser=_count, metavar="N",
                            help="Refuse networks with more parameters than N (e.g. 2e9), before "
                                 "allocating any weight.")
AllowPathOpt = typer.Option(None, "--allow-path", metavar="DIR",
                            help="Let the spec's `use` lines read files under DIR too (repeatable); by default "
                                 "only the spec's own folder and the shipped library.")
MaxMemoryOpt = typer.Option(None, "--max-memory", metavar="SIZE",
                            help="Refuse a step whose memory, estimated from the graph before anything is "
                                 "allocated, is above SIZE (8GiB, 500MB). Default: the device's total memory.")


def _memory_limit(text: str | None) -> int | None:
    from archspec.compiler.activation_memory import parse_size

    return None if text is None else parse_size(text)


def _refuse_above(net, batches: list[int], training: bool, device: str, max_memory: str | None) -> None:
    """The memory check of the benchmarks, at their largest batch, on the device they will use; the batch
    sizes themselves are checked first, so that a meaningless one is named as such."""
    from archspec.compiler.activation_memory import refuse_above
    from archspec.runtime.bench.report import check_batches

    check_batches(batches, tuple(net.shape(net.input)), "64,128,256" if training else "1,64")

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    refuse_above(net, max(batches, default=1), training=training, device=device, limit=_memory_limit(max_memory))


SpecArg = typer.Argument(..., metavar="SPEC", help="A spec file (.arch), or a shipped model's name (see `archspec "
                                                  "list`).", show_default=False)


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
    if e.loc and e.loc.file not in e.sources and os.path.isfile(e.loc.file):
        try:
            return {e.loc.file: Path(e.loc.file).read_text(encoding="utf-8", errors="replace")}
        except OSError:
            return {}
    return {}


def report(e: SpecError) -> None:
    """Print `e` as `file:line:col: error: ...`, the line and a caret, to stderr."""
    sys.stderr.write(e.render(_sources_for(e)) + "\n")
    sys.stderr.flush()


def guarded(fn: Callable[[], Any]) -> Any:
    """Run `fn`: a spec error is printed located and exits 2; nothing the user does shows a traceback."""
    try:
        return fn()
    except SpecError as e:
        report(e)
        raise typer.Exit(EXIT_SPEC)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise typer.Exit(130)
    except MemoryError:
        sys.stderr.write("error: out of memory (is the network far too large? see --max-params)\n")
        raise typer.Exit(EXIT_SPEC)
    except Exception as e:  # a bug in archspec, not in the spec: say so, briefly
        if os.environ.get("ARCHSPEC_TRACEBACK"):
            raise
        sys.stderr.write(f"internal error: {type(e).__name__}: {e}\n"
                         "  this is a bug in archspec, not in the spec; set ARCHSPEC_TRACEBACK=1 to see where\n")
        raise typer.Exit(EXIT_INTERNAL)


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def output_target(path: Path) -> tuple[Path, int | None]:
    """Where writing `path` lands (a symbolic link is written through, not replaced) and the mode of
    the regular file there, None for a new file. Anything but a regular file or a new path is refused:
    replacing a device such as /dev/null, a FIFO or a folder with a file would break what it stood for."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = target.stat()
    except FileNotFoundError:
        return target, None
    except OSError as err:
        raise SpecError(f"cannot write {path}: {err.strerror or err}") from None
    if stat.S_ISREG(st.st_mode):
        return target, stat.S_IMODE(st.st_mode)
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
    raise SpecError(f"cannot write {path}: it is {kind}", None, "give the path of a regular file, or a new one")


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so a crash never leaves half a file; an existing
    file keeps its permissions, a new one gets the umask's."""
    target, mode = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise SpecError(f"cannot write {path}: {err.strerror or err}") from None
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        output_target(path)  # still a regular file or nothing: never replace what appeared meanwhile
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise SpecError(f"cannot write {path}: {err.strerror or err}") from None
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
        t.add_row(g.name, str(g.layers or ""), _shape(g.output_shape), f"{g.params:,}", _human(g.macs))
    t.add_section()
    t.add_row("total", "", _shape(s.output_shape), f"{s.params:,}", _human(s.macs))
    out.print(t)
    out.print(f"depth {s.depth} (weighted layers on the longest path)   params {s.params:,}   "
              f"MACs {s.macs:,}")


def _analyse(spec: Path, sets: Optional[List[str]], max_params: int | None,
             allow_paths: Optional[List[Path]] = None):
    """Parse and elaborate `spec` with `--set` values, summarise it, and refuse it (located at the
    network's definition) when its analytic parameter count is above `max_params`."""
    from . import api  # loads torch: only commands that read a spec pay for it, not --help

    overrides = parse_sets(sets)
    parsed = api.parse(spec, allow_paths)
    net = api.network(parsed, **overrides)
    s = api.summary(net)
    if max_params is not None and s.params > max_params:
        d = parsed.networks[parsed.main]
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        loc_of(d.name, d.loc), "raise the limit with --max-params if this is intended",
                        parsed.sources)
    return net, s


@app.command()
def compile(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE",
                                          help="Write the module as a standalone .py file."),
    max_params: int = MaxParamsOpt,
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Compile SPEC into a torch.fx module and print what was built."""

    def run():
        if output is not None:
            output_target(output)  # refused before any work, not after it
        net, s = _analyse(spec, set_, max_params, allow_path)
        if output is not None:
            from archspec.compiler.activation_memory import refuse_above
            from archspec.compiler.codegen import to_module
            from archspec.compiler.standalone import standalone_source

            refuse_above(net, 1, training=False, limit=_memory_limit(max_memory))  # the weights it allocates
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
        net, _ = _analyse(spec, set_, max_params, allow_path)
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


@app.command()
def check(spec: Path = SpecArg, set_: Optional[List[str]] = SetOpt, max_params: int = MaxParamsOpt,
          allow_path: Optional[List[Path]] = AllowPathOpt) -> None:
    """Validate SPEC (syntax, names, types, shapes, size) without building weights."""

    def run():
        _, s = _analyse(spec, set_, max_params, allow_path)
        out.print(f"ok: {s.network}: {s.params:,} params, {s.macs:,} MACs, output {_shape(s.output_shape)}")

    guarded(run)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table.")) -> None:
    """The shipped models, usable by name anywhere: family, parameters, MACs and input, from their graphs."""

    def run():
        from . import library  # elaborates every model: its graph layer's imports are paid for only here

        rows = library.catalogue()
        if as_json:
            print(json.dumps([{"name": r.name, "family": r.family, "params": r.params, "macs": r.macs,
                               "input_shape": list(r.input_shape)} for r in rows]))
            return
        t = Table(title="shipped models (archspec compile NAME)", title_justify="left")
        for col, just in (("name", "left"), ("family", "left"), ("params", "right"), ("MACs", "right"),
                          ("input", "right")):
            t.add_column(col, justify=just)
        for r in rows:
            t.add_row(r.name, r.family, f"{r.params:,}", _human(r.macs), _shape(r.input_shape))
        out.print(t)

    guarded(run)


@bench_app.command("compile")
def bench_compile(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    repeat: int = typer.Option(7, min=1, help="Timed repetitions (the median is shown)."),
    max_params: int = MaxParamsOpt,
) -> None:
    """Time each compile stage (parse, elaborate, passes, codegen) against a hand-written module."""

    def run():
        from archspec.runtime.bench.compile import run_bench

        _analyse(spec, set_, max_params)  # every error, and the size limit, before anything is timed
        run_bench(spec, parse_sets(set_), repeat, out)

    guarded(run)


@app.command()
def train(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    data: Optional[str] = typer.Option(None, "--data", metavar="SOURCE",
                                       help="A CIFAR-10/100 folder (python or binary layout), an image folder "
                                            "(train/ and val/), or synthetic-cifar10[:N]; default: the digits "
                                            "bundled with scikit-learn."),
    recipe: str = typer.Option("quick", "--recipe", help="cifar, imagenet or quick."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0),
    momentum: Optional[float] = typer.Option(None, "--momentum", min=0.0, max=1.0),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", min=0.0),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov"),
    milestones: Optional[str] = typer.Option(None, "--milestones", metavar="F,F,...",
                                             help="Fractions of training at which the rate drops (e.g. 0.5,0.75)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="The factor of each drop (0.1)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    out_dir: Path = typer.Option(Path("runs/last"), "-o", "--out", metavar="DIR",
                                 help="Checkpoints (last/best.safetensors), metrics (metrics.jsonl, metrics.csv, "
                                      "TensorBoard events) and config.json go here."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compile_: str = typer.Option("none", "--compile", metavar="MODE",
                                 help="none; regional (torch.compile once per layer structure: compile time flat in "
                                      "depth); whole (torch.compile the network); cudagraph (each training step "
                                      "replayed as one CUDA graph); regional+cudagraph (compiled layers, the step "
                                      "replayed as one CUDA graph)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on for CUDA)."),
    memory: Optional[str] = typer.Option(None, "--memory", metavar="MODE",
                                         help="fast (plain ops), lean (memory linear in depth) or auto (lean where "
                                              "fast would not fit the GPU). Default: fast; with --resume, the mode "
                                              "the run was trained in."),
    val_split: Optional[str] = typer.Option(None, "--val-split", metavar="N|F",
                                            help="Training images held out to choose best.safetensors on: a count "
                                                 "(5000) or a fraction (0.1). Default 0: train on every training "
                                                 "image, as the papers do, and write no best; with --resume, the "
                                                 "run's own split."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, metavar="N",
                                          help="Image-folder loader processes [default: one per usable core, "
                                               "at most 8]; 0 decodes in the training process."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard",
                                     help="TensorBoard event files in --out (where tensorboard is installed)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Launch this many processes with torchrun (DDP)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Train SPEC with a recipe; every epoch is checkpointed atomically and can be resumed."""

    def run():
        from archspec.runtime.train.config import check_out_dir
        from archspec.runtime.train.recipes import recipe as check_recipe

        sets = parse_sets(set_)
        tweaks = {"momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov, "gamma": gamma}
        if milestones is not None:
            try:
                tweaks["milestones"] = tuple(float(m) for m in milestones.split(",") if m.strip())
            except ValueError:
                raise RunError(f"--milestones needs fractions such as 0.5,0.75, got {milestones!r}") from None
        check_recipe(recipe, **{**tweaks, "epochs": epochs, "batch_size": batch_size, "lr": lr})
        from archspec.runtime.train.split import parse_val_split

        split = parse_val_split(val_split) if val_split is not None else None
        check_out_dir(out_dir)  # every flag and the output folder, before processes start or data loads
        if nproc > 1:
            return _launch(nproc)
        from archspec.runtime.train.host_memory import keep_freed_memory
        from archspec.runtime.train import TrainConfig, train as run_training

        keep_freed_memory()

        from archspec.library import find

        cfg = TrainConfig(spec=str(find(str(spec))), sets=sets, data=data, recipe=recipe, epochs=epochs, batch_size=batch_size,
                          lr=lr, tweaks=tweaks, seed=seed, out=out_dir, resume=resume, device=device, compile=compile_, amp=amp,
                          memory=memory, progress=not quiet, val_split=split, workers=workers,
                          tensorboard=tensorboard, allow_paths=tuple(str(p) for p in allow_path or ()),
                          max_memory=_memory_limit(max_memory))
        rows = run_training(cfg, log=lambda m: out.print(m))
        if rows and int(os.environ.get("RANK", "0")) == 0:
            last = rows[-1]
            top5 = f", top-5 {last['test_top5']:.4f}" if "test_top5" in last else ""
            best = max((r for r in rows if "val_acc" in r), key=lambda r: r["val_acc"], default=None)
            chosen = (f"best: epoch {best['epoch']}, validation accuracy {best['val_acc']:.4f} "
                      f"(test {best['test_acc']:.4f})" if best else "no validation split, so no best")
            out.print(f"done: test accuracy {last['test_acc']:.4f}{top5} after {last['epoch']} "
                      f"epoch{'' if last['epoch'] == 1 else 's'}; {chosen}; wrote {out_dir}")

    guarded(run)


def _launch(nproc: int) -> None:
    """`--nproc N`: the same command once per process under torchrun."""
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "archspec", *argv]
    raise typer.Exit(subprocess.call(cmd))


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A .safetensors file from archspec train."),
    data: Optional[str] = typer.Option(None, "--data", metavar="SOURCE",
                                       help="Test data (default: the data set it was trained on, where known)."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
    max_memory: Optional[str] = MaxMemoryOpt,
) -> None:
    """Test accuracy of a checkpoint, rebuilt from the spec it carries."""

    def run():
        from archspec.runtime.train import evaluate_checkpoint

        r = evaluate_checkpoint(checkpoint, data, device, max_memory=_memory_limit(max_memory))
        if as_json:
            print(json.dumps(r))
        else:
            top5 = f", top-5 {r['test_top5']:.4f}" if "test_top5" in r else ""
            out.print(f"{r['network']} after epoch {r['epoch']} on {r['data']}: test accuracy {r['test_acc']:.4f}"
                      f"{top5}, loss {r['test_loss']:.4f} ({r['images']:,} images)")

    guarded(run)


def _load_source(source: Path, sets: dict[str, Any], seed: int, allow_path: Optional[List[Path]] = None,
                 batch: int = 1, max_memory: Optional[str] = None):
    """A spec or a shipped model's name (fresh weights from `seed`), or a training checkpoint (its weights,
    its spec)."""
    from archspec.library import find
    from archspec.runtime.train import model_from_source

    if source.suffix != ".safetensors":
        source = find(str(source))
    return model_from_source(source, sets, seed, allow_path, batch, _memory_limit(max_memory))


@app.command()
def export(
    source: Path = typer.Argument(..., metavar="SOURCE", help="A spec (.arch) or a checkpoint (.safetensors)."),
    fmt: str = typer.Option(..., "--format", help="pt2, onnx or tensorrt."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE"),
    batch: int = typer.Option(1, "--batch-size", "--batch", min=1, help="The batch size of a static export."),
    dynamic_batch: Optional[str] = typer.Option(None, "--dynamic-batch", metavar="MIN:OPT:MAX",
                                                help="Export with a dynamic batch dimension."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16."),
    verify: bool = typer.Option(False, "--verify", help="Run the artefact and compare it with eager PyTorch."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Weights of a spec source start from this seed."),
    set_: Optional[List[str]] = SetOpt,
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Export SOURCE for deployment: a torch.export program, ONNX, or a TensorRT engine."""

    def run():
        from archspec.runtime.export import ExportOptions, export_model

        if output is not None:
            output_target(output)  # a device, folder or special file is refused before any work
        largest = batch
        if dynamic_batch:
            try:
                largest = max(int(v) for v in dynamic_batch.split(":"))
            except ValueError:
                largest = batch  # the export options refuse it with their own message
        net, model = _load_source(source, parse_sets(set_), seed, allow_path, largest, max_memory)
        opts = ExportOptions(format=fmt, output=output, batch=batch, dynamic_batch=dynamic_batch,
                             precision=precision, verify=verify)
        export_model(net, model, opts, out)

    guarded(run)


@bench_app.command("train")
def bench_train(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    batch: str = typer.Option("64", "--batch-size", "--batch", help="Batch size, or comma-separated sizes (64,128,256): one "
                                                    "row per size and module."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16 (autocast)."),
    memory: str = typer.Option("fast", "--memory",
                               help="Memory policy of archspec's module: fast (plain ops), lean (memory linear "
                                    "in depth) or auto (lean where the fast step would not fit)."),
    compile_: str = typer.Option("none", "--compile",
                                 help="none; whole (torch.compile both modules); regional (archspec's module "
                                      "compiled once per layer structure, the baseline whole); cudagraph (each "
                                      "module's whole training step captured as one CUDA graph); regional+cudagraph "
                                      "(both: archspec's layers compiled, each step captured); several, comma-separated; "
                                      "or all."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Channels-last weights and input [default: on for CUDA, "
                                                      "off for CPU]."),
    baseline: str = typer.Option("auto", "--baseline",
                                 help="handwritten, naive (plain codegen), or auto (hand-written where one exists)."),
    steps: int = typer.Option(10, "--steps", min=2, help="Timed steps per module, interleaved with the "
                                                         "others' (the median and spread are shown)."),
    warmup: int = typer.Option(3, "--warmup", min=0),
    depth_sweep: Optional[str] = typer.Option(None, "--depth-sweep", metavar="PARAM",
                                              help="Instead: bytes held for backward with the spec parameter "
                                                   "PARAM (e.g. n or depth) at 8, 16 and 32."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the environment, figures and ratios as JSON."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Training-step time, images/s and memory held for backward, against a baseline in the same run,
    the modules' steps interleaved."""

    def run():
        from archspec.runtime.bench import train as bt
        from archspec.runtime.train.host_memory import keep_freed_memory

        from . import api

        sets = parse_sets(set_)
        try:
            batches = [_count(b) for b in batch.split(",") if b.strip()]
        except typer.BadParameter as e:
            raise RunError(f"--batch-size: {e.message}", "for example --batch-size 64,128,256") from None
        net, _ = _analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        _refuse_above(net, batches, True, device, max_memory)
        keep_freed_memory()  # both modules run in this process, so the comparison stays fair
        if depth_sweep is not None:
            if depth_sweep not in net.params:
                raise SpecError(f"network '{net.name}' has no parameter '{depth_sweep}' to sweep", None,
                                f"its parameters: {', '.join(net.params)}")
            bt.depth_sweep(lambda d: api.network(api.parse(spec, allow_path), **{**sets, depth_sweep: d}), batches, device, out)
        else:
            bt.run_bench_train(net, batches, device, dtype, compile_, baseline, steps, warmup, out,
                               channels_last=channels_last, memory=memory, json_path=json_path)

    guarded(run)


@bench_app.command("data")
def bench_data(
    folder: Path = typer.Argument(..., metavar="FOLDER",
                                  help="An image-folder data set (train/ and val/), or one folder of class folders."),
    size: int = typer.Option(224, "--size", min=1, help="The crop side (evaluation resizes to size/0.875 first)."),
    split: str = typer.Option("train", "--split",
                              help="train (random resized crops and flips) or val (resize and centre crop)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0,
                                          help="Loader processes [default: one per usable core, at most 8]."),
    batch: int = typer.Option(64, "--batch-size", "--batch", min=1),
    images: int = typer.Option(2048, "--images", min=1, help="Images to time, after one untimed batch."),
    backend: str = typer.Option("auto", "--backend",
                                help="auto (torchvision.transforms.v2 where it imports), torchvision or pil."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the figures as JSON."),
) -> None:
    """Images per second the loader decodes and augments from an image folder: the most training on it
    can reach, whatever the model and device."""

    def run():
        from archspec.runtime.bench.report import write_json
        from archspec.runtime.data import decode_throughput

        r = decode_throughput(folder, size, split=split, workers=workers, batch_size=batch, images=images,
                              backend=backend)
        out.print(f"{r['split']} decoding of {folder} at {r['size']}×{r['size']} ({r['backend']}, "
                  f"{r['workers']} workers, batch {r['batch_size']}): {r['images_per_s']:,.1f} images/s "
                  f"({r['images']:,} images in {r['seconds']:.2f} s)")
        if json_path is not None:
            write_json(json_path, {"benchmark": "data", **r}, out)

    guarded(run)


@bench_app.command("infer")
def bench_infer(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    backends: str = typer.Option("eager,compile,onnxruntime,tensorrt,cudagraph", "--backends",
                                 help="Comma-separated: eager, compile, onnxruntime, tensorrt, cudagraph."),
    batch: str = typer.Option("1,64", "--batch-size", "--batch", help="Batch size, or comma-separated sizes (1,64)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    repeat: int = typer.Option(20, "--repeat", min=3, help="Timed runs per backend and batch."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="CPU threads for the run [default: every core available]."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the environment and figures as JSON."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Inference latency and images/s per backend, warm-up excluded."""

    def run():
        from archspec.runtime.bench.infer import run_bench_infer

        try:
            batches = [_count(b) for b in batch.split(",") if b.strip()]
        except typer.BadParameter as e:
            raise RunError(f"--batch-size: {e.message}", "for example --batch-size 1,64") from None
        net, _ = _analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        _refuse_above(net, batches, False, device, max_memory)
        run_bench_infer(net, [b.strip() for b in backends.split(",") if b.strip()], batches, device, repeat, out,
                        threads=threads, json_path=json_path)

    guarded(run)


@app.command()
def graph(
    spec: Path = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE",
                                          help=".svg, .png or .dot (default: SPEC's name with .svg)."),
    level: str = typer.Option("layer", "--level", help="block, layer or op."),
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Draw the network: blocks, layers and their cross-layer connections, by pattern and merge."""

    def run():
        from archspec.runtime.viz import draw

        net, _ = _analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        path = draw(net, output or Path(spec.name).with_suffix(".svg"), level)
        out.print(f"wrote {path}")

    guarded(run)


@app.command()
def inspect(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT"),
    connections: bool = typer.Option(True, "--connections/--no-connections",
                                     help="What the network learned about its cross-layer connections."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE.png"),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers behind the picture."),
) -> None:
    """Plot the learned strength of each cross-layer connection of a trained network."""

    def run():
        from archspec.runtime.viz.connections import connection_strengths, plot_connections

        if not connections:
            raise RunError("nothing to inspect: --connections is what inspect reports")
        report_ = connection_strengths(checkpoint)
        if as_json:
            print(json.dumps(report_))
        path = output or (None if as_json else checkpoint.with_suffix(".connections.png"))
        if path is not None:
            plot_connections(report_, path)
            if not as_json:
                out.print(f"wrote {path}")

    guarded(run)


def main() -> None:
    try:
        app()
    except SystemExit as e:
        sys.exit(e.code)


if __name__ == "__main__":
    main()
