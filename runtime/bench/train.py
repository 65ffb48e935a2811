"""`archspec bench train`: the training step of archspec's module against a baseline built in the same
process — step time, images/s, the bytes autograd holds for backward, on CUDA the peak allocation, and
the first step's wall time (torch.compile's work included). The modules' steps are interleaved, one
of each per round, so drift in clocks, temperature or other load falls on all of them alike."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from archspec.compiler.codegen import to_module
from archspec.compiler.passes.regional import region_kinds
from archspec.graph.ir import Network
from archspec.errors import RunError
from archspec.runtime.train.devices import Dist, pick_device
from archspec.runtime.train.step import (COMPILE_MODES as TRAIN_MODES, Step, StepConfig, amp_of, assemble,
                                         captures_step, check_compile_mode, compiles_regions, forward_loss, place,
                                         sgd, wrap)

from .handwritten import handwritten_for
from .report import Spread, check_batches, environment, print_header, write_json

COMPILE_MODES = (*TRAIN_MODES, "all")
_SUFFIX = {"none": "", "whole": " (torch.compile)", "regional": " (regional torch.compile)",
           "cudagraph": " (CUDA graph step)", "regional+cudagraph": " (regional torch.compile, CUDA graph step)"}


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

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = forward_loss(model, x, y, dtype)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


@dataclass
class Figures:
    """One module's figures at one batch size; times in ms, memory in bytes."""

    name: str
    batch: int
    step_ms: float  # median
    spread_ms: tuple[float, float]  # 10th and 90th percentile
    range_ms: tuple[float, float]  # fastest and slowest step
    images_per_s: float  # from the median
    saved: int  # held for backward
    peak: int | None  # CUDA: the module's state and batch plus the most one step allocates on top
    first_s: float = 0.0  # wall time of the first step: compilation included


class Trainee:
    """A `Step` of `model` (its batches running through `run`, as `cfg` says) with its own batch and
    optimizer, ready to take timed training steps."""

    def __init__(self, name: str, model: nn.Module, run: nn.Module, cfg: StepConfig, batch: int,
                 shape: tuple[int, ...], classes: int):
        self.name, self.device, self.batch = name, cfg.device, batch
        self.dtype = cfg.dtype
        model.train(), run.train()
        g = torch.Generator(device=cfg.device).manual_seed(0)
        self.x = cfg.layout(torch.randn(batch, *shape, generator=g, device=cfg.device))
        self.y = torch.randint(0, classes, (batch,), generator=g, device=cfg.device)
        self.opt = sgd(model.parameters(), cfg, 0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
        self.model, self.run = model, run
        self.train_step = Step(model, run, self.opt, cfg, batch)
        self.graph, self.graph_peak = cfg.captures, 0
        self.first_s = 0.0

    def step(self) -> None:
        if self.graph and self.train_step.captured is None:  # the capture is the first step's work, as compiling is
            before = self._peak_start()
            self.train_step.capture(self.x, self.y)
            self.graph_peak = self._peak_end(before)  # the graph's pool is allocated at capture
        self.train_step(self.x, self.y)

    def timed_step(self) -> float:
        """Seconds one step takes: CUDA events on the GPU, the wall clock on the CPU."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        self.step()
        return time.perf_counter() - t0

    def first_step(self) -> None:
        """The first step, timed by the wall clock: it includes what torch.compile does."""
        t0 = time.perf_counter()
        self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.first_s = time.perf_counter() - t0

    def cuda_peak(self) -> int | None:
        """The module's parameters, optimizer state and batch, plus the most one step (gradients
        included) allocates above everything allocated before it; for a CUDA graph, the most its
        capture allocated, its memory pool included."""
        if self.device.type != "cuda":
            return None
        if self.graph:
            return self.graph_peak
        self.opt.zero_grad(set_to_none=True)
        before = self._peak_start()
        self.step()
        return self._peak_end(before)

    def _peak_start(self) -> int:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def _peak_end(self, before: int) -> int:
        torch.cuda.synchronize(self.device)
        own = sum(p.nbytes for p in self.model.parameters()) + self.x.nbytes + self.y.nbytes
        own += sum(t.nbytes for s in self.opt.state.values() for t in s.values() if torch.is_tensor(t))
        return own + torch.cuda.max_memory_allocated(self.device) - before


def interleave(steps: int, runs: list[Callable[[], float]]) -> list[list[float]]:
    """`steps` rounds, each calling every function once in order (A B A B …); their results, per function."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(steps):
        for i, run in enumerate(runs):
            times[i].append(run())
    return times


def measure_together(trainees: list[Trainee], steps: int, warmup: int) -> list[Figures]:
    """Figures of each trainee's step, the steps interleaved. The first step is timed on its own (it
    compiles what is compiled) and counts as a warm-up step."""
    for t in trainees:
        t.first_step()
    for _ in range(warmup - 1):
        for t in trainees:
            t.step()
    times = interleave(steps, [t.timed_step for t in trainees])
    rows = []
    for t, ts in zip(trainees, times):
        s = Spread.of([v * 1e3 for v in ts])
        rows.append(Figures(t.name, t.batch, s.median, (s.p10, s.p90), (s.min, s.max), t.batch / (s.median / 1e3),
                            saved_bytes(t.run, t.x, t.y, t.dtype), t.cuda_peak(), t.first_s))
    return rows


def baseline_for(net: Network, kind: str) -> tuple[str, Callable[[], nn.Module]]:
    """The module archspec's is compared with: the hand-written equivalent where one exists, or the
    same graph through plain codegen (`naive`)."""
    if kind in ("auto", "handwritten"):
        hand = handwritten_for(net)
        if hand is not None:
            return "hand-written nn.Module", hand
        if kind == "handwritten":
            raise RunError(f"no hand-written module of '{net.name}' to compare with",
                           "hand-written baselines exist for the CIFAR DelugeNet, DenseNet-BC, GUNN and "
                           "SeqResNet specs; use --baseline naive")
    if kind in ("auto", "naive"):
        return "naive (plain codegen)", lambda: to_module(net)
    raise RunError(f"unknown baseline '{kind}'", "baselines: auto, handwritten, naive")


def _modes(compile_: bool | str | None) -> list[str]:
    """The compile modes to measure archspec's module in: one mode, a comma-separated list, or `all`;
    `True` (the old flag) means whole."""
    if compile_ is None or compile_ is False:
        return ["none"]
    if compile_ is True:
        return ["whole"]
    modes = [m if m == "all" else check_compile_mode(m) for m in (w.strip() for w in compile_.split(",")) if m]
    if "all" in modes:
        return list(TRAIN_MODES)
    return list(dict.fromkeys(modes))


def _check(batches: list[int], shape: tuple[int, ...], steps: int, warmup: int) -> None:
    check_batches(batches, shape, "64,128,256")
    if steps < 1:
        raise RunError(f"--steps {steps}: at least one timed step is needed")
    if warmup < 0:
        raise RunError(f"--warmup {warmup}: cannot be negative")


_BASE_MODE = {"none": "none", "whole": "whole", "regional": "whole", "cudagraph": "cudagraph",
              "regional+cudagraph": "cudagraph"}
"""The baseline's form each of archspec's modes is set against (besides the eager baseline)."""


def _gib(n: int | None) -> str:
    return "–" if n is None else f"{n / 2**30:.3f} GiB"


def run_bench_train(net: Network, batches: int | list[int], device: str, dtype: str, compile_: bool | str,
                    baseline: str, steps: int, warmup: int, out: Console, channels_last: bool | None = None,
                    memory: str = "fast", json_path: Path | None = None) -> list[Figures]:
    """At each batch size, archspec's module (under the memory policy `memory`, in each compile mode:
    `none`, `whole`, `regional`, or `all` three) and the baseline (eager, and whole-compiled where
    archspec's is compiled) take interleaved training steps. Prints the environment, one row per
    module and batch size and the ratios of medians; returns the rows, batch by batch."""
    batches = [batches] if isinstance(batches, int) else list(batches)
    _check(batches, net.shape(net.input), steps, warmup)
    amp, modes = amp_of(dtype), _modes(compile_)
    dev = pick_device(device, Dist())
    if compile_ == "all" and dev.type != "cuda":
        modes = [m for m in modes if not captures_step(m)]  # `all` measures what the device can run
    configs = {m: StepConfig(dev, memory, m, amp, channels_last) for m in dict.fromkeys(
        modes + ["none"] + [_BASE_MODE[m] for m in modes])}  # every mode checked before any work
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the shapes are static: let cuDNN pick its fastest kernels
    shape, classes = tuple(net.shape(net.input)), net.shape(net.output)[0]
    base_name, base_make = baseline_for(net, baseline)
    env = environment(dev, network=net.name, dtype=dtype, channels_last=configs["none"].channels_last,
                      memory=memory, compile=compile_ or "none", baseline=base_name, steps=steps,
                      warmup=max(warmup, 1))
    print_header(env, out)
    rows: list[Figures] = []
    ratios: list[dict] = []
    notes: list[str] = []
    for batch in batches:
        resolved = configs["none"].memory_for(net, batch)
        label = "archspec" + {"fast": "", "lean": " (lean)"}.get(memory, f" ({memory} → {resolved})")
        trainees, pairs = [], []
        base_of: dict[str, Trainee] = {}
        for mode in dict.fromkeys(["none"] + [_BASE_MODE[m] for m in modes]):  # eager always: the goals' yardstick
            torch.manual_seed(0)
            cfg = configs[mode]
            base = place(base_make(), cfg)
            base_of[mode] = Trainee(base_name + _SUFFIX[mode], base, wrap(base, cfg), cfg, batch, shape, classes)
        for mode in modes:
            torch.manual_seed(0)
            model, run = assemble(net, configs[mode], resolved)
            if compiles_regions(mode):
                kinds = region_kinds(run)
                notes.append(f"regional: {len(kinds)} compiled structures for {sum(map(len, kinds.values()))} regions")
            a = Trainee(label + _SUFFIX[mode], model, run, configs[mode], batch, shape, classes)
            trainees.append(a)
            pairs += [(a, b) for b in dict.fromkeys([base_of[_BASE_MODE[mode]], base_of["none"]])]
        trainees += list(base_of.values())
        figures = dict(zip((t.name for t in trainees), measure_together(trainees, steps, warmup)))
        rows += figures.values()
        for a, b in pairs:
            ratios.append(_ratio(figures[a.name], figures[b.name]))
        del trainees, pairs, base_of
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    _print(net, rows, ratios, dict.fromkeys(notes), steps, warmup, out)
    if json_path is not None:
        write_json(json_path, {"benchmark": "train", "environment": env, "rows": [asdict(r) for r in rows],
                               "ratios": ratios}, out)
    return rows


def _ratio(a: Figures, b: Figures) -> dict:
    return {"batch": a.batch, "module": a.name, "baseline": b.name, "step_time": a.step_ms / b.step_ms,
            "images_per_s": a.images_per_s / b.images_per_s,
            "held_for_backward": a.saved / b.saved if b.saved else None,
            "cuda_peak": a.peak / b.peak if a.peak and b.peak else None}


def _print(net: Network, rows: list[Figures], ratios: list[dict], notes: dict[str, None], steps: int, warmup: int,
           out: Console) -> None:
    table = Table(title=f"train step: {net.name}, median of {steps} interleaved steps after {max(warmup, 1)} "
                        "warm-up", title_justify="left")
    for col in ("module", "batch", "step ms", "p10–p90 ms", "images/s", "held for backward", "CUDA peak",
                "first step s"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for i, r in enumerate(rows):
        if i and r.batch != rows[i - 1].batch:
            table.add_section()
        table.add_row(escape(r.name), str(r.batch), f"{r.step_ms:.1f}", f"{r.spread_ms[0]:.1f}–{r.spread_ms[1]:.1f}",
                      f"{r.images_per_s:,.1f}", _gib(r.saved), _gib(r.peak), f"{r.first_s:.1f}")
    out.print(table)
    for note in notes:
        out.print(note)
    for q in ratios:
        parts = [f"step time {q['step_time']:.2f}×", f"images/s {q['images_per_s']:.2f}×"]
        if q["held_for_backward"] is not None:
            parts.append(f"held for backward {q['held_for_backward']:.2f}×")
        if q["cuda_peak"] is not None:
            parts.append(f"CUDA peak {q['cuda_peak']:.2f}×")
        out.print(escape(f"batch {q['batch']}: {q['module']} / {q['baseline']}: " + ", ".join(parts)))


def depth_sweep(net_at: Callable[[int], Network], batches: int | list[int], device: str, out: Console,
                depths: tuple[int, ...] = (8, 16, 32)) -> list[tuple[int, int, int]]:
    """Bytes held for backward by the spec's network at several depths, per batch size: linear growth
    means no quadratic copies of earlier features. Rows are (batch, depth, bytes)."""
    dev = pick_device(device, Dist())
    rows = []
    for batch in [batches] if isinstance(batches, int) else batches:
        table = Table(title=f"bytes held for backward by depth, batch {batch}", title_justify="left")
        for col in ("depth", "held", "per layer", "growth vs linear"):
            table.add_column(col, justify="right")
        first = None
        for d in depths:
            net = net_at(d)
            model = to_module(net).to(dev).train()
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(batch, *net.shape(net.input), generator=g, device=dev)
            y = torch.randint(0, net.shape(net.output)[0], (batch,), generator=g, device=dev)
            b = saved_bytes(model, x, y)
            first = first or (d, b)
            rows.append((batch, d, b))
            table.add_row(str(d), _gib(b), f"{b / d / 2**20:.2f} MiB", f"{(b / first[1]) / (d / first[0]):.2f}")
        out.print(table)
    return rows
