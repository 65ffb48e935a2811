"""`export`: a spec or a checkpoint as a torch.export program, ONNX or a TensorRT engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import RunError
from ..files import output_target
from .common import (AllowNonfiniteOpt, AllowPathOpt, MaxMemoryOpt, SetOpt, ThreadsOpt, TrustLegacyOpt, app, guarded,
                     memory_limit, out, parse_sets)



def _load_source(source: Path, sets: dict[str, Any], seed: int, allow_path: Optional[List[Path]] = None,
                 batch: int = 1, max_memory: Optional[str] = None, trust_legacy: bool = False,
                 allow_nonfinite: bool = False):
    """A spec or a shipped model's name (fresh weights from `seed`, no preprocessing), or a training
    checkpoint (its weights, its spec, the preprocessing it records or one inferred from its metadata; see
    `--trust-legacy` and `--allow-nonfinite`): (network, module in eval mode, preprocessing or None)."""
    from archspec.library import find
    from archspec.runtime.data.preprocessing import checkpoint_preprocessing
    from archspec.runtime.train import load_trained, model_from_source

    if source.suffix != ".safetensors":
        net, model = model_from_source(find(str(source)), sets, seed, allow_path, batch, memory_limit(max_memory))
        return net, model, None
    if sets:
        raise RunError("--set applies to a spec; a checkpoint carries its own parameters")
    net, model, ck = load_trained(source, batch=batch, max_memory=memory_limit(max_memory), trust_legacy=trust_legacy,
                                  allow_nonfinite=allow_nonfinite)
    shape, out_shape = tuple(net.shape(net.input)), tuple(net.shape(net.output))
    if len(shape) != 3 or len(out_shape) != 1:
        return net, model.eval(), None
    return net, model.eval(), checkpoint_preprocessing(ck.meta, shape, out_shape[0], str(source))[0]


@app.command()
def export(
    source: Path = typer.Argument(..., metavar="SOURCE", help="A spec (.arch) or a checkpoint (.safetensors)."),
    fmt: str = typer.Option(..., "--format", metavar="FORMAT", help="pt2, onnx or tensorrt."),
    output: Optional[Path] = typer.Option(None, "-o", "--out", "--output", metavar="FILE",
                                          show_default="the network's name with .pt2, .onnx or .ep",
                                          help="Where to write the artefact (TensorRT writes the raw engine beside "
                                               "it, as .engine)."),
    batch: int = typer.Option(1, "--batch-size", "--batch", min=1, metavar="N",
                              help="The batch size of a static export."),
    dynamic_batch: Optional[str] = typer.Option(None, "--dynamic-batch", metavar="MIN:OPT:MAX",
                                                help="Export with a dynamic batch dimension."),
    precision: str = typer.Option("fp32", "--precision", metavar="TYPE", help="fp32, fp16 or bf16."),
    verify: bool = typer.Option(False, "--verify", help="Run the artefact and compare it with eager PyTorch."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, metavar="N",
                             help="Weights of a spec source start from this seed."),
    set_: Optional[List[str]] = SetOpt,
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
    threads: Optional[int] = ThreadsOpt,
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
) -> None:
    """Export SOURCE for deployment: a torch.export program, ONNX, or a TensorRT engine."""

    def run():
        from archspec.runtime.export import ExportOptions, export_model, parse_dynamic_batch
        from archspec.runtime.threads import use_threads

        use_threads(threads)
        if output is not None:
            output_target(output)  # a device, folder or special file is refused before any work
        largest = parse_dynamic_batch(dynamic_batch).max if dynamic_batch else batch  # checked before any work
        net, model, preprocessing = _load_source(source, parse_sets(set_), seed, allow_path, largest, max_memory,
                                                 trust_legacy, allow_nonfinite)
        opts = ExportOptions(format=fmt, output=output, batch=batch, dynamic_batch=dynamic_batch,
                             precision=precision, verify=verify)
        export_model(net, model, opts, out, preprocessing)

    guarded(run)
