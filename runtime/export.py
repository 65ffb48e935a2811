"""`archspec export`: a network as a deployment artefact — a torch.export program (needs only torch to
load), ONNX, or a TensorRT program and engine — always from its inference form (eval mode, each batch
norm folded into a convolution or merge beside it where that is exact: `fold_bn.fold`), optionally
checked against eager PyTorch. The torch.export program and the ONNX file carry what `archspec predict`
needs (`artefact_metadata`): the class names and preprocessing, the spec's name and archspec's version."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import importlib.metadata
import inspect
import itertools
import json
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

from archspec import __version__
from archspec.compiler.passes.fold_bn import fold
from archspec.graph.ir import Network
from archspec.errors import RunError, did_you_mean
from archspec.runtime.data.preprocessing import default_preprocessing
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
# the metadata keys of an artefact: ONNX metadata_props, and the extra files of a torch.export program
META_SPEC, META_VERSION, META_CLASSES, META_PREPROCESSING = (
    "archspec.spec", "archspec.version", "archspec.classes", "archspec.preprocessing")
META_KEYS = (META_SPEC, META_VERSION, META_CLASSES, META_PREPROCESSING)


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


def artefact_metadata(net: Network, preprocessing: dict[str, Any] | None = None) -> dict[str, str]:
    """The metadata an exported file carries, as strings: the spec's name, archspec's version, the class
    names (a JSON list) and the rest of `preprocessing` (a JSON object: size, channels, crop, mean, std,
    interpolation; `data.preprocessing.default_preprocessing` for a network not trained here)."""
    prep = dict(preprocessing) if preprocessing is not None else default_preprocessing(
        tuple(net.shape(net.input)), _classes(net))
    classes = prep.pop("classes")
    return {META_SPEC: net.name, META_VERSION: __version__, META_CLASSES: json.dumps(classes),
            META_PREPROCESSING: json.dumps(prep, sort_keys=True)}


def _classes(net: Network) -> int:
    out = tuple(net.shape(net.output))
    return int(out[0]) if len(out) == 1 else 0


def export_model(net: Network, model: nn.Module, opts: ExportOptions, console: Console,
                 preprocessing: dict[str, Any] | None = None) -> Path:
    """Write `model` (the network `net`) as `opts` asks, print what was written and, with `verify`, how
    far the artefact's outputs are from eager PyTorch's; returns the artefact's path. pt2 and ONNX files
    carry `artefact_metadata(net, preprocessing)`."""
    shape = tuple(net.shape(net.input))
    output = Path(opts.output) if opts.output is not None else Path(f"{net.name}{SUFFIXES[opts.format]}")
    if output.is_dir():
        raise RunError(f"cannot write {output}: it is a directory", "name a file with -o")
    if opts.format == "tensorrt" and output.suffix == ".engine":
        raise RunError(f"-o {output}: name the .ep program; the raw engine is written beside it as .engine")
    folded = fold(model) if isinstance(model, fx.GraphModule) else copy.deepcopy(model).eval()
    exporter = {"pt2": _export_pt2, "onnx": _export_onnx, "tensorrt": _export_tensorrt}[opts.format]
    return exporter(model, folded, shape, opts, output, console, artefact_metadata(net, preprocessing))


def _export_pt2(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                output: Path, console: Console, metadata: dict[str, str]) -> Path:
    r, dtype = opts.batches, opts.dtype
    device = _device_of(folded)
    program = _trace(folded.to(dtype), shape, r, dtype, device)
    with _staged(output) as tmp:
        torch.export.save(program, str(tmp / output.name), extra_files=metadata)
    _wrote(console, output, f"torch.export program, {r}, {opts.precision}")
    if opts.verify:
        loaded = torch.export.load(str(output)).module()
        _verify(loaded, eager, shape, r, dtype, device, "pt2", opts.precision, output, console)
    return output


def _export_onnx(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                 output: Path, console: Console, metadata: dict[str, str]) -> Path:
    require_onnx()
    r = opts.batches
    folded = folded.cpu()
    example = torch.randn(r.example, *shape)
    big = sum(t.numel() * t.element_size() for t in folded.state_dict().values()) > _ONNX_INLINE_LIMIT
    with _staged(output) as tmp:
        how = write_onnx(folded, example, r, tmp / output.name, big, metadata)
    if how.startswith("TorchScript"):
        console.print(f"the torch.export-based ONNX exporter failed on this network, so PyTorch's TorchScript-based "
                      f"exporter (deprecated) wrote {output}")
    _wrote(console, output, f"ONNX opset {ONNX_OPSET}, {r}, fp32, {how}" + (", weights in a .data file" if big else ""))
    if opts.verify:
        session = ort_session(output, ["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

        _verify(run, eager, shape, r, torch.float32, torch.device("cpu"), "onnx", opts.precision, output,
                console)
    return output


def write_onnx(model: nn.Module, example: torch.Tensor, r: BatchRange, path: Path, big: bool = False,
               metadata: dict[str, str] | None = None) -> str:
    """`model` as an ONNX file at `path` with `metadata` as its metadata_props, constants folded and no
    Identity node; returns which exporter wrote it. PyTorch's torch.export-based exporter, which optimises
    the graph itself and alone writes weights too large for one protobuf file beside it (`big`); the
    TorchScript-based exporter where that one is missing from this torch or fails on the model, its graph
    then optimised here (`tidy_onnx`)."""
    with _quiet_onnx():
        try:
            _onnx_dynamo(model, example, r, path, big, metadata or {})
            return "torch.export-based exporter"
        except Exception as e:  # an op it cannot translate, no onnxscript, or a torch without it
            if big:
                raise RunError(f"the torch.export-based ONNX exporter failed: {_first_line(e)}",
                               "the weights are too large for one ONNX file, which only that exporter "
                               "writes; use --format pt2") from None
            why = _first_line(e)
            for leftover in (path, path.with_name(path.name + ".data")):
                leftover.unlink(missing_ok=True)
        _onnx_torchscript(model, example, r, path)
        how = tidy_onnx(path, metadata or {})
    return f"TorchScript exporter, {how} (the torch.export-based exporter failed: {why})"


def _onnx_dynamo(model: nn.Module, example: torch.Tensor, r: BatchRange, path: Path, big: bool,
                 metadata: dict[str, str]) -> None:
    with torch.no_grad(), _one_thread():
        program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=ONNX_OPSET,
                                    dynamic_shapes=r.dynamic_shapes(), input_names=["x"], output_names=["logits"],
                                    optimize=True, verbose=False)
    program.model.metadata_props.update(metadata)
    program.save(str(path), external_data=big)


def _onnx_torchscript(model: nn.Module, example: torch.Tensor, r: BatchRange, path: Path) -> None:
    axes = {"x": {0: "batch"}, "logits": {0: "batch"}} if r.dynamic else None
    with torch.no_grad(), _one_thread():
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET, input_names=["x"],
                          output_names=["logits"], dynamic_axes=axes, verbose=False)


def tidy_onnx(path: Path, metadata: dict[str, str]) -> str:
    """Rewrite the ONNX file at `path` with its constants folded and its Identity nodes removed (by
    onnxscript's optimizer where it imports; else by `remove_identities` alone) and `metadata` in its
    metadata_props; says which optimiser ran."""
    import onnx

    model = onnx.load(str(path))
    try:
        from onnxscript import optimizer
    except ImportError:  # onnx itself no longer ships an optimiser, so the one pass needed is written here
        how = "Identity nodes removed (constants not folded: onnxscript is not installed)"
    else:
        model = optimizer.optimize(model)
        how = "optimised by onnxscript"
    remove_identities(model.graph)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return how


def remove_identities(graph) -> int:
    """Remove the Identity nodes of an ONNX `graph` (a GraphProto) by rewiring their consumers to their
    input; an Identity whose output is a graph output renames its input's producer instead. A graph with
    subgraphs (If, Loop, Scan) is left as it is: their nodes may read the names rewired. Returns the
    count removed."""
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        return 0
    outputs = {o.name for o in graph.output}
    fixed = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    removed = 0
    for node in [n for n in graph.node if n.op_type == "Identity" and len(n.input) == 1 and len(n.output) == 1]:
        src, dst = node.input[0], node.output[0]
        if dst in outputs:
            if src in fixed or src in outputs:
                continue  # a graph input or weight that is also an output keeps its Identity
            old, new = src, dst
        else:
            old, new = dst, src
        graph.node.remove(node)
        for n in graph.node:
            for names in (n.input, n.output):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new
        for info in [v for v in graph.value_info if v.name == old]:
            graph.value_info.remove(info)
        removed += 1
    return removed


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def _export_tensorrt(eager: nn.Module, folded: fx.GraphModule, shape: tuple[int, ...], opts: ExportOptions,
                     output: Path, console: Console, metadata: dict[str, str]) -> Path:
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


def tensorrt_requirement(torch_version: str | None = None) -> str:
    """The torch-tensorrt releases built for a torch version (this one's by default): those of its
    major.minor, as `torch-tensorrt>=2.13,<2.14` for torch 2.13.x."""
    major, minor = _major_minor(torch_version or torch.__version__)
    return f"torch-tensorrt>={major}.{minor},<{major}.{minor + 1}"


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def load_tensorrt(purpose: str = "TensorRT export"):
    """The `torch_tensorrt` module, or a RunError that says what `purpose` is missing (the package, one
    built for this torch, or a GPU) and which torch-tensorrt to install."""
    want = tensorrt_requirement()
    install = f"pip install '{want}' (needs a CUDA GPU and NVIDIA's TensorRT; 'archspec[tensorrt]' pins the same)"
    try:
        installed = importlib.metadata.version("torch-tensorrt")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None and _major_minor(installed) != _major_minor(torch.__version__):
        raise RunError(f"{purpose} needs the torch-tensorrt built for torch "
                       f"{'.'.join(map(str, _major_minor(torch.__version__)))}; torch-tensorrt {installed} is "
                       "installed, built for another torch", install)
    try:
        import torch_tensorrt
    except ImportError:
        raise RunError(f"{purpose} needs torch-tensorrt, which is not installed", install) from None
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
    """The onnx package present; found, not imported. onnxscript is optional: without it the
    torch.export-based exporter fails and the TorchScript-based one writes the file (`write_onnx`)."""
    if importlib.util.find_spec("onnx") is None:
        raise RunError("ONNX export needs the onnx package, which is not installed", "pip install 'archspec[onnx]'")


def ort_session(path: Path, providers: list[str], purpose: str = "checking an ONNX file"):
    """An onnxruntime session of the file at `path`, quiet, on torch's thread count (the one `--threads`
    set); a RunError naming `purpose` where onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunError(f"{purpose} needs onnxruntime, which is not installed", "pip install 'archspec[onnx]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = torch.get_num_threads()
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
