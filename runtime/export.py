"""`archspec export`: a network as a deployment artefact — a torch.export program (needs only torch to
load), ONNX, or a TensorRT program and engine — always from its inference form (eval mode, each batch
norm folded into a convolution or merge beside it where that is exact: `fold_bn.fold`), optionally
checked against eager PyTorch."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import inspect
import itertools
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.console import Console
from rich.table import Table
from torch import fx, nn

from archspec.compiler.passes.fold_bn import fold
from archspec.graph.ir import Network
from archspec.errors import RunError, did_you_mean
from archspec.runtime.process import alive

FORMATS = ("pt2", "onnx", "tensorrt")
PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SUFFIXES = {"pt2": ".pt2", "onnx": ".onnx", "tensorrt": ".ep"}
# The largest error `--verify` accepts, as a fraction of the largest |output| of eager fp32 PyTorch: fp32
# artefacts differ only by rounding (TensorRT picks its own kernels, TF32 among them); fp16 keeps ~3
# significant digits, bf16 ~2.
TOLERANCES: dict[str, dict[str, float]] = {
    "pt2": {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2},
    "onnx": {"fp32": 1e-4},
    "tensorrt": {"fp32": 1e-3, "fp16": 1e-2, "bf16": 5e-2},
}
ONNX_OPSET = 18
_ONNX_INLINE_LIMIT = 1_500_000_000  # bytes of weights a single .onnx file holds (protobuf stops at 2 GiB)


# ---- options -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artefact accepts: one (`min == max`) or a dynamic range tuned for `opt`."""

    min: int
    opt: int
    max: int

    @property
    def dynamic(self) -> bool:
        return self.min < self.max

    @property
    def example(self) -> int:
        """The batch to trace with: `opt`, but at least 2 in a range, so that tracing does not
        specialise the batch dimension to the size 1."""
        return min(max(self.opt, 2), self.max) if self.dynamic else self.opt

    @property
    def checked(self) -> tuple[int, ...]:
        """The batch sizes `--verify` runs: both ends of a range."""
        return (self.min, self.max) if self.dynamic else (self.min,)

    def dynamic_shapes(self) -> tuple[dict[int, Any]] | None:
        """torch.export's `dynamic_shapes` for the one input: a `batch` dimension in [min, max]."""
        if not self.dynamic:
            return None
        return ({0: torch.export.Dim("batch", min=self.min, max=self.max)},)

    def __str__(self) -> str:
        return f"batch {self.min}..{self.max} (tuned for {self.opt})" if self.dynamic else f"batch {self.min}"


def parse_dynamic_batch(text: str) -> BatchRange:
    """`MIN:OPT:MAX` with whole numbers 1 ≤ MIN ≤ OPT ≤ MAX and MIN < MAX."""
    hint = "write --dynamic-batch MIN:OPT:MAX, e.g. 1:8:64 (1 <= MIN <= OPT <= MAX)"
    parts = text.split(":")
    if len(parts) != 3:
        raise RunError(f"--dynamic-batch {text!r}: expected three numbers MIN:OPT:MAX", hint)
    try:
        lo, opt, hi = (int(p.strip()) for p in parts)
    except ValueError:
        raise RunError(f"--dynamic-batch {text!r}: MIN, OPT and MAX must be whole numbers", hint) from None
    if not 1 <= lo <= opt <= hi:
        raise RunError(f"--dynamic-batch {text!r}: needs 1 <= MIN <= OPT <= MAX", hint)
    if lo == hi:
        raise RunError(f"--dynamic-batch {text!r}: MIN equals MAX, so the batch is not dynamic",
                       f"use --batch {lo} for a fixed batch size")
    return BatchRange(lo, opt, hi)


@dataclass
class ExportOptions:
    """What `export_model` writes. `output` defaults to `NAME.pt2`, `NAME.onnx` or `NAME.ep` (TensorRT also
    writes the raw engine beside it, as `.engine`); `dynamic_batch` (`MIN:OPT:MAX`) replaces `batch`."""

    format: str
    output: Path | None = None
    batch: int = 1
    dynamic_batch: str | None = None
    precision: str = "fp32"
    verify: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise RunError(f"unknown export format '{self.format}'",
                           _choices("formats", FORMATS, did_you_mean(self.format, FORMATS)))
        if self.precision not in PRECISIONS:
            raise RunError(f"unknown precision '{self.precision}'",
                           _choices("precisions", PRECISIONS, did_you_mean(self.precision, PRECISIONS)))
        if self.format == "onnx" and self.precision != "fp32":
            raise RunError(f"onnx export is fp32; --precision {self.precision} is not supported for it",
                           "use --precision fp16 or bf16 with --format tensorrt or pt2")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise RunError(f"--batch {self.batch!r}: the batch size must be a whole number >= 1")
        if self.dynamic_batch is not None:
            parse_dynamic_batch(self.dynamic_batch)
        if self.output is not None:
            self.output = Path(self.output)

    @property
    def batches(self) -> BatchRange:
        if self.dynamic_batch is not None:
            return parse_dynamic_batch(self.dynamic_batch)
        return BatchRange(self.batch, self.batch, self.batch)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]


def _choices(what: str, names, suggestion: str | None) -> str:
    listed = f"{what}: {', '.join(names)}"
    return f"{suggestion}\n{listed}" if suggestion else listed


# ---- export ------------------------------------------------------------------------------------------


def export_model(net: Network, model: nn.Module, opts: ExportOptions, console: Console) -> Path:
    """Write `model` (the network `net`) as `opts` asks, print what was written and, with `verify`, how
    far the artefact's outputs are from eager PyTorch's; returns the artefact's path."""
    shape = tuple(net.shape(net.input))
    output = Path(opts.output) if opts.output is not None else Path(f"{net.name}{SUFFIXES[opts.format]}")
    if output.is_dir():
        raise RunError(f"cannot write {output}: it is a directory", "name a file with -o")
    if opts.format == "tensorrt" and output.suffix == ".engine":
        raise RunError(f"-o {output}: name the .ep program; the raw engine is written beside it as .engine")
    folded = fold(model) if isinstance(model, fx.GraphModule) else copy.deepcopy(model).eval()
    exporter = {"pt2": _export_pt2, "onnx": _export_onnx, "tensorrt": _export_tensorrt}[opts.format]
    return exporter(model, folded, shape, opts, output, console)


def _export_pt2(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                output: Path, console: Console) -> Path:
    r, dtype = opts.batches, opts.dtype
    device = _device_of(folded)
    program = _trace(folded.to(dtype), shape, r, dtype, device)
    with _staged(output) as tmp:
        torch.export.save(program, str(tmp / output.name))
    _wrote(console, output, f"torch.export program, {r}, {opts.precision}")
    if opts.verify:
        loaded = torch.export.load(str(output)).module()
        _verify(loaded, eager, shape, r, dtype, device, "pt2", opts.precision, output, console)
    return output


def _export_onnx(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                 output: Path, console: Console) -> Path:
    require_onnx()
    r = opts.batches
    folded = folded.cpu()
    example = torch.randn(r.example, *shape)
    big = sum(t.numel() * t.element_size() for t in folded.state_dict().values()) > _ONNX_INLINE_LIMIT
    with _staged(output) as tmp:
        how = write_onnx(folded, example, r, tmp / output.name, big)
    _wrote(console, output, f"ONNX opset {ONNX_OPSET}, {r}, fp32, {how}" + (", weights in a .data file" if big else ""))
    if opts.verify:
        session = _ort_session(output, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

        _verify(run, eager, shape, r, torch.float32, torch.device("cpu"), "onnx", opts.precision, output,
                console)
    return output


def write_onnx(model: nn.Module, example: torch.Tensor, r: BatchRange, path: Path, big: bool = False) -> str:
    """`model` as an ONNX file at `path`; returns which exporter wrote it. The TorchScript-based exporter
    first: on a network of a few hundred plain ops it takes seconds where the torch.export-based one takes
    a minute (it translates every decomposed op and then optimises the graph). The torch.export-based
    exporter where the other is missing from this torch or fails on the model, and for weights too large
    for one protobuf file, which it alone writes beside the graph."""
    with _quiet_onnx():
        if not big:
            try:
                _onnx_torchscript(model, example, r, path)
                return "TorchScript exporter"
            except Exception as e:  # an op it cannot translate, or a torch without it
                why = _first_line(e)
                path.unlink(missing_ok=True)
        else:
            why = "weights too large for one file"
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=ONNX_OPSET,
                                    dynamic_shapes=r.dynamic_shapes(), input_names=["x"], output_names=["logits"],
                                    verbose=False)
        program.save(str(path), external_data=big)
    return f"torch.export-based exporter ({why})"


def _onnx_torchscript(model: nn.Module, example: torch.Tensor, r: BatchRange, path: Path) -> None:
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if r.dynamic else None
    with torch.no_grad(), _one_thread():
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET, input_names=["x"],
                          output_names=["logits"], dynamic_axes=axes, verbose=False)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _export_tensorrt(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                     output: Path, console: Console) -> Path:
    trt = load_tensorrt()
    r, dtype, device = opts.batches, opts.dtype, torch.device("cuda")
    engine_path = output.with_suffix(".engine")
    model = folded.to(device=device, dtype=dtype)
    trt_gm = compile_tensorrt(trt, model, shape, r, dtype)
    engine = trt.dynamo.convert_exported_program_to_serialized_trt_engine(
        _trace(model, shape, r, dtype, device), inputs=[tensorrt_input(trt, shape, r, dtype)],
        **_typing_kwargs(trt.dynamo.convert_exported_program_to_serialized_trt_engine, dtype))
    if not engine:
        raise RunError(f"TensorRT built no engine for '{output.stem}' (its log above says why)",
                       "set ARCHSPEC_TRACEBACK=1 and see torch-tensorrt's messages")
    example = torch.randn(r.example, *shape, device=device).to(dtype)
    with _staged(output) as tmp:
        trt.save(trt_gm, str(tmp / output.name), **_save_kwargs(trt.save, example, r))
        (tmp / engine_path.name).write_bytes(bytes(engine))
    _wrote(console, output, f"TensorRT program (torch.export), {r}, {opts.precision}")
    _wrote(console, engine_path, f"serialized TensorRT engine, {r}, {opts.precision}")
    if opts.verify:
        loaded = torch.export.load(str(output)).module()
        _verify(loaded, eager, shape, r, dtype, device, "tensorrt", opts.precision, output, console)
    return output


# ---- TensorRT ----------------------------------------------------------------------------------------


def load_tensorrt(purpose: str = "TensorRT export"):
    """The `torch_tensorrt` module, or a RunError that says what `purpose` is missing: the package or a
    GPU."""
    try:
        import torch_tensorrt
    except ImportError:
        raise RunError(f"{purpose} needs torch-tensorrt, which is not installed",
                       "pip install 'archspec[tensorrt]' (needs a CUDA GPU and NVIDIA's TensorRT)") from None
    except OSError as e:  # installed, but its TensorRT or CUDA libraries do not load
        raise RunError(f"torch-tensorrt is installed but does not load: {e}",
                       "install the TensorRT and CUDA versions that this torch-tensorrt was built for") from None
    if not torch.cuda.is_available():
        raise RunError(f"{purpose} needs a CUDA GPU, and none is available here",
                       "run on a machine with an NVIDIA GPU, or use --format pt2 or onnx")
    return torch_tensorrt


def tensorrt_input(trt, shape: tuple[int, ...], r: BatchRange, dtype: torch.dtype):
    """The optimisation profile of the one input: batch `min`/`opt`/`max`, the rest fixed."""
    return trt.Input(min_shape=(r.min, *shape), opt_shape=(r.opt, *shape), max_shape=(r.max, *shape), dtype=dtype)


def compile_tensorrt(trt, model: nn.Module, shape: tuple[int, ...], r: BatchRange, dtype: torch.dtype):
    """`model` (on CUDA, already in `dtype`) compiled by torch-tensorrt's dynamo path: a GraphModule
    that runs TensorRT engines."""
    program = _trace(model, shape, r, dtype, torch.device("cuda"))
    return trt.dynamo.compile(program, inputs=[tensorrt_input(trt, shape, r, dtype)],
                              **_typing_kwargs(trt.dynamo.compile, dtype))


def _typing_kwargs(fn: Callable, dtype: torch.dtype) -> dict[str, Any]:
    """How to ask `fn` for `dtype`: releases with explicit typing take the dtypes of the (already cast)
    weights and input; older ones need `enabled_precisions`."""
    params = inspect.signature(fn).parameters
    if "use_explicit_typing" in params:
        return {"use_explicit_typing": True}
    return {"enabled_precisions": {dtype}}


def _save_kwargs(save: Callable, example: torch.Tensor, r: BatchRange) -> dict[str, Any]:
    params = inspect.signature(save).parameters
    kwargs: dict[str, Any] = {("arg_inputs" if "arg_inputs" in params else "inputs"): [example]}
    if r.dynamic and "dynamic_shapes" in params:
        kwargs["dynamic_shapes"] = r.dynamic_shapes()
    return kwargs


# ---- pieces ------------------------------------------------------------------------------------------


def _trace(model: nn.Module, shape: tuple[int, ...], r: BatchRange, dtype: torch.dtype,
           device: torch.device) -> torch.export.ExportedProgram:
    example = torch.randn(r.example, *shape, device=device).to(dtype)
    return torch.export.export(model, (example,), dynamic_shapes=r.dynamic_shapes())


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def require_onnx() -> None:
    """Both exporters' packages present; found, not imported (onnxscript takes seconds to import, and
    only the torch.export-based exporter uses it)."""
    for name in ("onnx", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise RunError(f"ONNX export needs the onnx and onnxscript packages ({name} is not installed)",
                           "pip install 'archspec[onnx]'")


def _ort_session(path: Path, providers: list[str]):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunError("checking an ONNX file needs onnxruntime, which is not installed",
                       "pip install 'archspec[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=providers)


@contextlib.contextmanager
def _quiet_onnx() -> Iterator[None]:
    """The ONNX exporter's progress lines and notes on optional packages are noise on a command line."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread while tracing: the traced arithmetic is thrown away, and on a busy machine a
    team of threads waits for each other at every op (a 1×1 convolution measured about 20× slower on
    two threads than on one with the cores shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A fresh folder beside `target` to write into, named for this process; its files replace their
    namesakes next to `target` only when the block succeeds, so a failed export never leaves a partial or
    stale artefact. The folders of exports whose process is gone (killed) are removed first."""
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_stages(target)
        tmp = tempfile.TemporaryDirectory(dir=parent, prefix=f".{target.name}.{os.getpid()}.")
    except OSError as e:
        raise RunError(f"cannot write {target}: {e.strerror or e}") from None
    with tmp as folder:
        yield Path(folder)
        for f in Path(folder).iterdir():
            os.replace(f, parent / f.name)


def _clear_stale_stages(target: Path) -> None:
    """Remove the staging folders (`.NAME.PID.XXXXXXXX`) that exports to `target` killed mid-way left: those
    whose process no longer runs. Only real folders of that name are removed, never through a link."""
    stage = re.compile(re.escape(f".{target.name}.") + r"(\d+)\.[A-Za-z0-9_]{8}")
    with os.scandir(target.parent) as entries:
        for e in entries:
            m = stage.fullmatch(e.name)
            if m and e.is_dir(follow_symlinks=False) and not alive(int(m.group(1))):
                shutil.rmtree(e.path, ignore_errors=True)


def _wrote(console: Console, path: Path, what: str) -> None:
    console.print(f"wrote {path}  ({what}, {path.stat().st_size:,} bytes)")


def _as_reference(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in eval mode, fp32, on `device`: itself where it already is (a copy costs seconds on a
    large network), a copy otherwise, so that the caller's module is left as it was."""
    ready = not any(m.training for m in model.modules()) and all(
        t.dtype == torch.float32 and t.device == device for t in itertools.chain(model.parameters(), model.buffers())
        if t.is_floating_point())
    return model if ready else copy.deepcopy(model).eval().float().to(device)


def _verify(run: Callable[[torch.Tensor], torch.Tensor], eager: nn.Module, shape: tuple[int, ...], r: BatchRange,
            dtype: torch.dtype, device: torch.device, fmt: str, precision: str, path: Path,
            console: Console) -> list[dict[str, float]]:
    """Run the artefact and eager fp32 PyTorch on the same random inputs at each checked batch size;
    print the errors and raise a RunError when the largest one, relative to the largest |eager output|,
    is above the tolerance of `fmt` at `precision`."""
    tol = TOLERANCES[fmt][precision]
    eager = _as_reference(eager, device)
    g = torch.Generator().manual_seed(0)
    table = Table(title=f"verify {path} against eager PyTorch (fp32, {device.type})", title_justify="left")
    for col in ("batch", "max abs error", "max rel error", "tolerance", "result"):
        table.add_column(col, justify="left" if col == "result" else "right")
    rows, worst = [], None
    for b in r.checked:
        x = torch.randn(b, *shape, generator=g).to(device)
        with torch.no_grad():
            want = eager(x).float()
            got = run(x.to(dtype)).float().to(device)
        if got.shape != want.shape:
            raise RunError(f"{path}: output shape {tuple(got.shape)} at batch {b}, expected {tuple(want.shape)}")
        abs_err = (got - want).abs().max().item()
        rel_err = abs_err / max(want.abs().max().item(), torch.finfo(torch.float32).tiny)
        ok = rel_err <= tol
        table.add_row(str(b), f"{abs_err:.3e}", f"{rel_err:.3e}", f"{tol:g}", "ok" if ok else "FAIL")
        rows.append({"batch": b, "max_abs_error": abs_err, "max_rel_error": rel_err, "tolerance": tol})
        if not ok and worst is None:
            worst = (b, rel_err)
    console.print(table)
    console.print(f"relative error: max |artefact − eager| / max |eager|; {fmt} {precision} allows {tol:g}")
    if worst is not None:
        b, rel = worst
        raise RunError(f"{path} differs from eager PyTorch by {rel:.3e} of the output's scale at batch {b}, "
                       f"above the {tol:g} allowed for {fmt} {precision}")
    return rows
