"""`predict`: the top classes of images by a checkpoint, an ONNX file or a torch.export program."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .common import AllowNonfiniteOpt, MaxMemoryOpt, ThreadsOpt, TrustLegacyOpt, app, guarded, memory_limit, out


@app.command()
def predict(
    source: Path = typer.Argument(..., metavar="CHECKPOINT|EXPORTED_FILE",
                                  help="A checkpoint (.safetensors), an ONNX file (.onnx) or a torch.export "
                                       "program (.pt2)."),
    images: List[Path] = typer.Argument(..., metavar="IMAGE|FOLDER...",
                                        help="Image files, or folders of them (their subfolders included)."),
    topk: int = typer.Option(5, "--topk", min=1, metavar="K", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as one JSON list."),
    backend: str = typer.Option("auto", "--backend", metavar="auto|torchvision|pil",
                                 help="What resizes the images: torchvision where it imports (auto), or PIL."),
    max_memory: Optional[str] = MaxMemoryOpt,
    threads: Optional[int] = ThreadsOpt,
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
) -> None:
    """The most probable classes of each image, by a checkpoint or an exported file, with the class names and
    preprocessing it carries."""

    def run():
        from archspec.runtime import predict as P
        from archspec.runtime.threads import use_threads

        use_threads(threads)
        files = P.image_paths(images)
        p = P.open_predictor(source, max_memory=memory_limit(max_memory), trust_legacy=trust_legacy,
                             allow_nonfinite=allow_nonfinite)
        if p.assumed and not as_json:
            out.print(f"{source} records no preprocessing: assuming mean {_numbers(p.preprocessing['mean'])}, "
                      f"std {_numbers(p.preprocessing['std'])}, crop {p.preprocessing['crop']:g}, numbered classes "
                      "where their names are unknown", markup=False, highlight=False, soft_wrap=True)
        results = P.predict_with(p, files, topk, backend)
        if as_json:
            print(json.dumps(results))
            return
        for r in results:
            out.print(r["image"], markup=False, highlight=False, soft_wrap=True)
            for t in r["top"]:
                out.print(f"  {t['probability']:.4f}  {t['class']}", markup=False, highlight=False, soft_wrap=True)

    guarded(run)


def _numbers(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
