"""`archspec bench infer`: inference latency and throughput of one network's inference form (batch
norms folded) under each backend — eager PyTorch, torch.compile, a CUDA graph, onnxruntime, TensorRT —
at each batch size, warm-up excluded. A backend that cannot run here is a row that says why, not an
error. The CPU thread count is set and printed: CPU figures mean nothing without it."""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from archspec.compiler.codegen import to_module
from archspec.compiler.passes.fold_bn import fold
from archspec.graph.ir import Network
from archspec.errors import RunError, did_you_mean
from archspec.runtime.export import BatchRange, compile_tensorrt, load_tensorrt, require_onnx, write_onnx
from archspec.runtime.threads import resolve as resolve_threads
from archspec.runtime.train.capture import Captured

from .report import check_batches, environment, print_header, write_json

BACKENDS = ("eager", "compile", "onnxruntime", "tensorrt", "cudagraph")
WARMUP = 3

Runner = Callable[[torch.Tensor], Any]


class Skip(Exception):
    """A backend that cannot run here; the message says why."""


@dataclass
class Backend:
    """A backend prepared for one network: `run(x)` computes one batch; `note` qualifies the figures."""

    run: Runner
    note: str = ""
    cuda_events: bool = True  # the work is queued on torch's current CUDA stream, so CUDA events time it
    to_host: bool = False  # takes and returns host (numpy) arrays


def run_bench_infer(net: Network, backends: list[str], batches: list[int], device: str, repeat: int,
                    console: Console, threads: int | None = None, json_path: Path | None = None) -> list[dict]:
    """Time `net` (weights from seed 0) under each backend at each batch size: `repeat` timed runs after
    warm-up; print the environment and a table and return one row per backend and batch (a skipped
    backend: one row with `skipped`, one that broke: `failed`, with the reason). Median and the
    10th–90th percentile spread in ms, images/s from the median. `threads` (default: every core this
    process may use) is the intra-op thread count for the run."""
    _check(backends, batches, net.shape(net.input), repeat, threads)
    dev = _pick_device(device)
    threads = resolve_threads(threads)
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # static shapes per batch size: let cuDNN pick its fastest kernels
    env = environment(dev, network=net.name, repeat=repeat, warmup=WARMUP)
    print_header(env, console)
    torch.manual_seed(0)
    model = fold(to_module(net)).to(dev)
    shape = tuple(net.shape(net.input))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="archspec-infer-") as tmp:
        for name in backends:
            try:
                backend = prepare(name, model, net, shape, batches, dev, Path(tmp), threads)
            except Skip as e:
                rows.append({"backend": name, "device": dev.type, "skipped": str(e)})
                continue
            except Exception as e:  # a compiler outside PyTorch gave up: say so, and go on
                if name == "eager":
                    raise
                rows.append({"backend": name, "device": dev.type, "failed": _first_line(e)})
                continue
            for b in batches:
                try:
                    figures = _measure(backend, shape, b, dev, repeat)
                except Exception as e:
                    if name == "eager":
                        raise
                    rows.append({"backend": name, "device": dev.type, "batch": b, "failed": _first_line(e)})
                    continue
                rows.append({"backend": name, "device": dev.type, "batch": b, "note": backend.note, **figures})
    _print(net, rows, dev, repeat, console)
    if json_path is not None:
        write_json(json_path, {"benchmark": "infer", "environment": env, "rows": rows}, console)
    return rows


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _check(backends: list[str], batches: list[int], shape: tuple[int, ...], repeat: int,
           threads: int | None) -> None:
    if not backends:
        raise RunError("--backends: no backend given", f"backends: {', '.join(BACKENDS)}")
    for name in backends:
        if name not in BACKENDS:
            hint = did_you_mean(name, BACKENDS)
            listed = f"backends: {', '.join(BACKENDS)}"
            raise RunError(f"unknown backend '{name}'", f"{hint}\n{listed}" if hint else listed)
    check_batches(batches, shape, "1,64")
    if repeat < 1:
        raise RunError(f"--repeat {repeat}: at least one timed run is needed")
    if threads is not None and threads < 1:
        raise RunError(f"--threads {threads}: at least one thread is needed")


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA device is available here", "use --device cpu or auto")
        return torch.device("cuda")
    if name != "cpu":
        raise RunError(f"unknown device '{name}'", "devices: auto, cpu, cuda")
    return torch.device("cpu")


# ---- backends ----------------------------------------------------------------------------------------


def prepare(name: str, model: nn.Module, net: Network, shape: tuple[int, ...], batches: list[int],
             dev: torch.device, tmp: Path, threads: int = 1) -> Backend:
    """Backend `name` for the inference form `model`, built once for every batch size in `batches`: one
    compiled module, one ONNX file and session, one TensorRT engine (each covers the whole range)."""
    if name == "eager":
        return Backend(model)
    if name == "compile":
        return Backend(torch.compile(model))
    if name == "cudagraph":
        return cudagraph(model, dev)
    if name == "onnxruntime":
        return _onnxruntime(model, net, shape, batches, dev, tmp, threads)
    return _tensorrt(model, shape, batches, dev)


def cudagraph(model: nn.Module, dev: torch.device) -> Backend:
    """The eval forward captured in one CUDA graph per batch size (`Captured`, warm-up included) and
    replayed: no per-kernel launch cost. The output is the static buffer, overwritten by the next replay."""
    if dev.type != "cuda":
        raise Skip("CUDA graphs need a CUDA device, not --device cpu")
    graphs: dict[tuple[int, ...], Captured] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        key = tuple(x.shape)
        if key not in graphs:
            graphs[key] = Captured(model, (x,), warmup=WARMUP)
        return graphs[key](x)

    return Backend(run, "one captured graph per batch size, replayed")


def _span(batches: list[int]) -> BatchRange:
    return BatchRange(min(batches), max(batches), max(batches))


def _onnxruntime(model: nn.Module, net: Network, shape: tuple[int, ...], batches: list[int], dev: torch.device,
                 tmp: Path, threads: int) -> Backend:
    """One ONNX file of the inference form for the whole batch range (the form is already folded: it is
    written as it is, not folded and checked again), run by one session on `threads` intra-op threads,
    the count torch runs on, and no inter-op pool (the graph is one chain of ops)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise Skip("onnxruntime is not installed (pip install 'archspec[onnx]')") from None
    try:
        require_onnx()
    except RunError as e:
        raise Skip(e.message) from None
    r = _span(batches)
    path = tmp / f"{net.name}.onnx"
    host = model if dev.type == "cpu" else copy.deepcopy(model).cpu()
    how = write_onnx(host, torch.randn(r.example, *shape), r, path)
    providers, notes = ["CPUExecutionProvider"], [f"{threads} intra-op threads", how]
    if dev.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers, notes = ["CUDAExecutionProvider"], ["CUDA provider; times include host↔device copies", how]
        else:
            notes.insert(0, "runs on the CPU: this onnxruntime has no CUDA provider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name
    return Backend(lambda x: session.run(None, {name: x}), "; ".join(notes), cuda_events=False, to_host=True)


def _tensorrt(model: nn.Module, shape: tuple[int, ...], batches: list[int], dev: torch.device) -> Backend:
    try:
        trt = load_tensorrt("the tensorrt backend")
    except RunError as e:
        raise Skip(e.message) from None
    if dev.type != "cuda":
        raise Skip("TensorRT runs on a CUDA device, not --device cpu")
    r = _span(batches)
    trt_gm = compile_tensorrt(trt, model, shape, r, torch.float32)
    return Backend(trt_gm, f"fp32, one engine for batch {r.min}..{r.max} (tuned for {r.opt})")


# ---- timing ------------------------------------------------------------------------------------------


def _measure(backend: Backend, shape: tuple[int, ...], batch: int, dev: torch.device, repeat: int) -> dict:
    at = torch.device("cpu") if backend.to_host else dev  # a host backend is handed numpy arrays
    x = torch.randn(batch, *shape, generator=torch.Generator(device=at).manual_seed(0), device=at)
    x = x.numpy() if backend.to_host else x
    cuda = dev.type == "cuda"
    with torch.inference_mode():
        for _ in range(WARMUP):
            backend.run(x)
        if cuda:
            torch.cuda.synchronize(dev)
        times = []
        for _ in range(repeat):
            if cuda and backend.cuda_events:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                backend.run(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                backend.run(x)
                if cuda:
                    torch.cuda.synchronize(dev)
                times.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(times)
    lo, hi = _spread(times)
    return {"median_ms": median, "p10_ms": lo, "p90_ms": hi, "images_per_s": batch / (median / 1e3)}


def _spread(times: list[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles (the range itself for fewer than two runs)."""
    if len(times) < 2:
        return times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return q[0], q[-1]


def significant(x: float, digits: int = 4) -> str:
    """`x` with at least `digits` significant digits and thousands separators: 12,345 · 123.4 · 0.01234."""
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def _print(net: Network, rows: list[dict], dev: torch.device, repeat: int, console: Console) -> None:
    on = dev.type if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    table = Table(title=f"inference {net.name}  input {'×'.join(map(str, net.shape(net.input)))}  on {on}: "
                        f"median of {repeat} runs after {WARMUP} untimed warm-up runs (compiling happens there)",
                  title_justify="left")
    for col in ("backend", "batch", "ms", "p10–p90 ms", "images/s", "note"):
        table.add_column(col, justify="left" if col in ("backend", "note") else "right")
    for row in rows:
        if "skipped" in row or "failed" in row:
            why = f"skipped: {row['skipped']}" if "skipped" in row else f"failed: {row['failed']}"
            table.add_row(row["backend"], str(row.get("batch", "")), "", "", "", why)
        else:
            table.add_row(row["backend"], str(row["batch"]), f"{row['median_ms']:.3f}",
                          f"{row['p10_ms']:.3f}–{row['p90_ms']:.3f}", significant(row["images_per_s"]), row["note"])
    console.print(table)
