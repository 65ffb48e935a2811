"""`bench compile`, `bench train`, `bench data` and `bench infer`: benchmarks that print figures."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RunError, SpecError
from ..files import output_target
from ..graph.builder import DEFAULT_MAX_PARAMS
from .common import (AllowPathOpt, MaxMemoryOpt, MaxParamsOpt, SetOpt, SpecArg, ThreadsOpt, analyse, bench_app,
                     count, guarded, memory_limit, out, parse_sets)


def _refuse_above(net, batches: list[int], training: bool, device: str, max_memory: str | None) -> None:
    """The memory check of the benchmarks, at their largest batch, on the device they will use; the batch
    sizes themselves are checked first, so that a meaningless one is named as such."""
    from archspec.compiler.activation_memory import refuse_above
    from archspec.runtime.bench.report import check_batches

    check_batches(batches, tuple(net.shape(net.input)), "64,128,256" if training else "1,64")

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    refuse_above(net, max(batches, default=1), training=training, device=device, limit=memory_limit(max_memory))


def _json_target(path: Path | None) -> None:
    """Refuse a `--json` path that cannot be written (a folder, a device, a FIFO) before any work."""
    if path is not None:
        output_target(path)


def _batch_sizes(text: str, example: str) -> list[int]:
    """`--batch-size N[,N...]` as counts; a RunError with an example otherwise."""
    try:
        return [count(b) for b in text.split(",") if b.strip()]
    except typer.BadParameter as e:
        raise RunError(f"--batch-size: {e.message}", f"for example --batch-size {example}") from None


@bench_app.command("compile")
def bench_compile(
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    repeat: int = typer.Option(7, "--repeat", min=1, metavar="N", help="Timed repetitions (the median is shown)."),
    max_params: int = MaxParamsOpt,
) -> None:
    """Time each compile stage (parse, elaborate, passes, codegen) against a hand-written module."""

    def run():
        from archspec import library
        from archspec.runtime.bench.compile import run_bench

        analyse(spec, set_, max_params)  # every error, and the size limit, before anything is timed
        run_bench(library.find(spec), parse_sets(set_), repeat, out)

    guarded(run)


@bench_app.command("train")
def bench_train(
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    batch: str = typer.Option("64", "--batch-size", "--batch", metavar="N[,N...]",
                              help="Batch size, or comma-separated sizes (64,128,256): one row per size and module."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    dtype: str = typer.Option("fp32", "--dtype", metavar="TYPE", help="fp32 or bf16 (autocast)."),
    memory: str = typer.Option("fast", "--memory", metavar="MODE",
                               help="Memory policy of archspec's module: fast (plain ops), lean (memory linear "
                                    "in depth) or auto (lean where the fast step would not fit)."),
    compile_: str = typer.Option("none", "--compile", metavar="MODE[,MODE...]",
                                 help="none; whole (torch.compile both modules); regional (archspec's module "
                                      "compiled once per layer structure, the baseline whole); cudagraph (each "
                                      "module's whole training step captured as one CUDA graph); "
                                      "regional+cudagraph (both: archspec's layers compiled, each step captured); "
                                      "several, comma-separated; or all."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 show_default="on for CUDA, off for the CPU",
                                                 help="Channels-last weights and input."),
    baseline: str = typer.Option("auto", "--baseline", metavar="NAME",
                                 help="handwritten, naive (plain codegen), or auto (hand-written where one exists)."),
    steps: int = typer.Option(10, "--steps", min=2, metavar="N",
                              help="Timed steps per module, interleaved with the others' (the median and spread are "
                                   "shown)."),
    warmup: int = typer.Option(3, "--warmup", min=0, metavar="N",
                               help="Warm-up steps per module before the timed ones, counting the first step "
                                    "(timed on its own, as the compile time), which always runs."),
    depth_sweep: Optional[str] = typer.Option(None, "--depth-sweep", metavar="PARAM",
                                              help="Instead: bytes held for backward with the spec parameter "
                                                   "PARAM (e.g. n or depth) at 8, 16 and 32."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the environment, figures and ratios as JSON."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Training-step time, images/s and memory held for backward, against a baseline in the same run,
    the modules' steps interleaved."""

    def run():
        from archspec import library
        from archspec.runtime.bench import train as bt
        from archspec.runtime.threads import use_threads
        from archspec.runtime.train.host_memory import keep_freed_memory

        from .. import api

        _json_target(json_path)
        use_threads(threads)
        sets = parse_sets(set_)
        batches = _batch_sizes(batch, "64,128,256")
        net, _ = analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        _refuse_above(net, batches, True, device, max_memory)
        keep_freed_memory()  # both modules run in this process, so the comparison stays fair
        if depth_sweep is not None:
            if depth_sweep not in net.params:
                raise SpecError(f"network '{net.name}' has no parameter '{depth_sweep}' to sweep", None,
                                f"its parameters: {', '.join(net.params)}")
            parsed = api.parse(library.find(spec), allow_path)
            bt.depth_sweep(lambda d: api.network(parsed, **{**sets, depth_sweep: d}), batches, device, out)
        else:
            bt.run_bench_train(net, batches, device, dtype, compile_, baseline, steps, warmup, out,
                               channels_last=channels_last, memory=memory, json_path=json_path)

    guarded(run)


@bench_app.command("data")
def bench_data(
    folder: Path = typer.Argument(..., metavar="FOLDER",
                                  help="An image-folder data set (train/ and val/), or one folder of class folders."),
    size: int = typer.Option(224, "--size", min=1, metavar="N",
                             help="The crop side (evaluation resizes to size/0.875 first)."),
    split: str = typer.Option("train", "--split", metavar="NAME",
                              help="train (random resized crops and flips) or val (resize and centre crop)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, metavar="N",
                                          show_default="one per usable core, at most 8",
                                          help="Loader processes; 0 decodes in this process."),
    batch: int = typer.Option(64, "--batch-size", "--batch", min=1, metavar="N", help="Images per batch."),
    images: int = typer.Option(2048, "--images", min=1, metavar="N", help="Images to time, after one untimed batch."),
    backend: str = typer.Option("auto", "--backend", metavar="NAME",
                                help="auto (torchvision.transforms.v2 where it imports), torchvision or pil."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the figures as JSON."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Images per second the loader decodes and augments from an image folder: the most training on it
    can reach, whatever the model and device."""

    def run():
        from archspec.runtime.bench.report import write_json
        from archspec.runtime.data import decode_throughput, default_workers
        from archspec.runtime.threads import use_threads

        _json_target(json_path)
        use_threads(threads, default_workers() if workers is None else workers)
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
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    backends: str = typer.Option("eager,compile,onnxruntime,tensorrt,cudagraph", "--backends", metavar="NAME[,NAME...]",
                                 help="Comma-separated: eager, compile, onnxruntime, tensorrt, cudagraph."),
    batch: str = typer.Option("1,64", "--batch-size", "--batch", metavar="N[,N...]",
                              help="Batch size, or comma-separated sizes (1,64)."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    repeat: int = typer.Option(20, "--repeat", min=3, metavar="N", help="Timed runs per backend and batch."),
    threads: Optional[int] = ThreadsOpt,
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH",
                                             help="Also write the environment and figures as JSON."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Inference latency and images/s per backend, warm-up excluded."""

    def run():
        from archspec.runtime.bench.infer import run_bench_infer
        from archspec.runtime.threads import use_threads

        _json_target(json_path)
        batches = _batch_sizes(batch, "1,64")
        net, _ = analyse(spec, set_, DEFAULT_MAX_PARAMS, allow_path)
        _refuse_above(net, batches, False, device, max_memory)
        run_bench_infer(net, [b.strip() for b in backends.split(",") if b.strip()], batches, device, repeat, out,
                        threads=use_threads(threads), json_path=json_path)

    guarded(run)
