"""`archspec bench train`: the training step of a compiled network against a baseline built in the same
run — step time, images/s, the bytes autograd holds for backward, on CUDA the peak allocation, and the
first step's wall time (which includes torch.compile's work when compiling)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from archspec.language.errors import RunError
from archspec.graph.ir import Network


def saved_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training step, the model's own
    parameters and buffers excluded: what depth costs in activation memory."""
    own = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in own and s.device.type != "meta":
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(x.device, dtype):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class Figures:
    name: str
    step_ms: float
    spread_ms: tuple[float, float]  # 10th and 90th percentile
    images_per_s: float
    saved: int
    peak: int | None  # CUDA peak allocated bytes
    first_s: float = 0.0  # wall time of the first step: compilation included


COMPILE_MODES = ("none", "whole", "regional", "all")


def measure(name: str, model: nn.Module, batch: int, shape: tuple[int, ...], classes: int, device: torch.device,
            dtype: torch.dtype, steps: int, warmup: int, channels_last: bool | None = None) -> Figures:
    """Figures of `model`'s training step. The first step is timed on its own (it compiles what is
    compiled) and counts as a warm-up step. `channels_last` None means on for CUDA, off for CPU."""
    if channels_last is None:
        channels_last = device.type == "cuda"
    model = model.to(device).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)

    def step() -> None:
        with _autocast(device, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    first_s = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = _timed(step, steps, device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    saved = saved_bytes(model, x, y, dtype)
    med = statistics.median(times)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [med] * 9
    return Figures(name, med * 1e3, (q[0] * 1e3, q[-1] * 1e3), batch / med, saved, peak, first_s)


def _timed(step: Callable[[], None], steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return times


def baseline_for(net: Network, kind: str) -> tuple[str, Callable[[], nn.Module]]:
    """The module the compiled one is compared with: the hand-written equivalent where one exists, or
    the same graph through plain codegen (`naive`)."""
    from archspec.compiler.codegen import to_module

    from .bench_compile import handwritten_for

    if kind in ("auto", "handwritten"):
        hand = handwritten_for(net)
        if hand is not None:
            return "hand-written nn.Module", hand
        if kind == "handwritten":
            raise RunError(f"no hand-written module of '{net.name}' to compare with",
                           "hand-written baselines exist for DelugeNet CIFAR specs; use --baseline naive")
    if kind in ("auto", "naive"):
        return "naive (plain codegen)", lambda: to_module(net, lean=False)
    raise RunError(f"unknown baseline '{kind}'", "baselines: auto, handwritten, naive")


def _gib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**30:.3f} GiB"


def _modes(compile_: bool | str | None) -> list[str]:
    """The compile modes to measure archspec's module in: `True` (the old flag) means whole."""
    if compile_ is None or compile_ is False:
        return ["none"]
    if compile_ is True:
        return ["whole"]
    if compile_ not in COMPILE_MODES:
        raise RunError(f"unknown compile mode '{compile_}'", "compile modes: " + ", ".join(COMPILE_MODES))
    return ["none", "whole", "regional"] if compile_ == "all" else [compile_]


_SUFFIX = {"none": "", "whole": " (torch.compile)", "regional": " (regional torch.compile)"}


def run_bench_train(net: Network, batch: int, device: str, dtype: str, compile_: bool | str, baseline: str,
                    steps: int, warmup: int, out: Console, channels_last: bool | None = None) -> list[Figures]:
    """Measures archspec's module in each compile mode (`none`, `whole`, `regional`, or `all` three)
    and the baseline eager and/or whole-compiled, the compiled one standing against both compiled
    modes of archspec's. Returns the archspec rows, then the baseline rows."""
    from archspec.compiler.codegen import to_module
    from archspec.compiler.passes.regional import compile_regions, region_kinds

    from .train import Dist, pick_device

    dev = pick_device(device, Dist())
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if dt is None:
        raise RunError(f"unknown dtype '{dtype}'", "dtypes: fp32, bf16")
    modes = _modes(compile_)
    shape, classes = tuple(net.shape(net.input)), net.shape(net.output)[0]
    base_name, base_make = baseline_for(net, baseline)
    args = (batch, shape, classes, dev, dt, steps, warmup, channels_last)
    rows, base_rows, notes = [], {}, []
    for mode in modes:
        torch.manual_seed(0)
        model = to_module(net)
        if mode == "whole":
            model = torch.compile(model)
        elif mode == "regional":
            model = compile_regions(model, net)
            kinds = region_kinds(model)
            notes.append(f"regional: {len(kinds)} compiled structures for {sum(map(len, kinds.values()))} regions")
        rows.append(measure("archspec" + _SUFFIX[mode], model, *args))
    for mode in dict.fromkeys("none" if m == "none" else "whole" for m in modes):
        torch.manual_seed(0)
        base = base_make()
        base_rows[mode] = measure(base_name + _SUFFIX[mode], torch.compile(base) if mode == "whole" else base, *args)
    layout = "channels_last" if (dev.type == "cuda" if channels_last is None else channels_last) else "contiguous"
    table = Table(title=f"train step: {net.name}, batch {batch}, {dtype}, {layout}, {dev}, median of {steps} "
                        f"after {max(warmup, 1)} warm-up", title_justify="left")
    for col in ("module", "step ms", "p10–p90 ms", "images/s", "held for backward", "CUDA peak", "first step s"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for r in rows + list(base_rows.values()):
        table.add_row(r.name, f"{r.step_ms:.1f}", f"{r.spread_ms[0]:.1f}–{r.spread_ms[1]:.1f}",
                      f"{r.images_per_s:,.1f}", _gib(r.saved), _gib(r.peak), f"{r.first_s:.1f}")
    out.print(table)
    for note in notes:
        out.print(note)
    for mode, a in zip(modes, rows):
        b = base_rows["none" if mode == "none" else "whole"]
        ratios = [f"step time {a.step_ms / b.step_ms:.2f}×", f"images/s {a.images_per_s / b.images_per_s:.2f}×"]
        if b.saved:
            ratios.append(f"held for backward {a.saved / b.saved:.2f}×")
        if a.peak and b.peak:
            ratios.append(f"CUDA peak {a.peak / b.peak:.2f}×")
        out.print(f"{a.name} / {b.name}: " + ", ".join(ratios))
    return rows + list(base_rows.values())


def depth_sweep(net_at: Callable[[int], Network], batch: int, device: str, out: Console,
                depths: tuple[int, ...] = (8, 16, 32)) -> list[tuple[int, int]]:
    """Bytes held for backward by the spec's network at several depths: linear growth means no
    quadratic copies of earlier features."""
    from archspec.compiler.codegen import to_module

    from .train import Dist, pick_device

    dev = pick_device(device, Dist())
    rows = []
    for d in depths:
        net = net_at(d)
        model = to_module(net).to(dev).train()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *net.shape(net.input), generator=g).to(dev)
        y = torch.randint(0, net.shape(net.output)[0], (batch,), generator=g).to(dev)
        rows.append((d, saved_bytes(model, x, y)))
    table = Table(title=f"bytes held for backward by depth, batch {batch}", title_justify="left")
    for col in ("depth", "held", "per layer", "growth vs linear"):
        table.add_column(col, justify="right")
    d0, b0 = rows[0]
    for d, b in rows:
        table.add_row(str(d), _gib(b), f"{b / d / 2**20:.2f} MiB", f"{(b / b0) / (d / d0):.2f}")
    out.print(table)
    return rows
