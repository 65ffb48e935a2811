"""What every benchmark prints and saves alongside its figures: the machine and the settings that
decide them (GPU model, versions, cuDNN autotuning, TF32, threads), and the spread of a sample."""

from __future__ import annotations

import json
import math
import platform
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from archspec.errors import RunError
from archspec.files import write_atomic
from archspec.runtime.threads import usable_cores

MAX_BATCH = 65536
MAX_INPUT_BYTES = 4 * 2**30


def check_batches(batches: list[int], shape: tuple[int, ...], example: str) -> None:
    """Batch sizes a benchmark can allocate an input for: refused here with a message, rather than by
    the allocator with an internal error."""
    if not batches:
        raise RunError("--batch-size: no batch size given", f"for example --batch-size {example}")
    per_image = 4 * math.prod(shape)  # float32
    for b in batches:
        if b < 1:
            raise RunError(f"--batch-size: batch sizes must be >= 1, got {', '.join(map(str, batches))}")
        if b > MAX_BATCH or b * per_image > MAX_INPUT_BYTES:
            shown = "×".join(map(str, shape))
            raise RunError(f"--batch-size {b:,}: an input batch of {b:,} images of {shown} is "
                           f"{b * per_image / 2**30:,.1f} GiB, above the limit of {MAX_INPUT_BYTES // 2**30} GiB "
                           f"and {MAX_BATCH:,} images",
                           f"use at most {min(MAX_BATCH, MAX_INPUT_BYTES // per_image):,} images per batch")


@dataclass
class Spread:
    """Median, 10th and 90th percentiles, minimum and maximum of a sample."""

    median: float
    p10: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, xs: list[float]) -> "Spread":
        if not xs:
            raise ValueError("no samples to summarise")
        q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) >= 2 else [xs[0]] * 9
        return cls(statistics.median(xs), q[0], q[-1], min(xs), max(xs))


def environment(device: torch.device, **settings: Any) -> dict[str, Any]:
    """The machine and the settings that decide the figures, with `settings` (dtype, layout, …) after."""
    env: dict[str, Any] = {"device": device_name(device), "torch": torch.__version__}
    if device.type == "cuda":
        with warnings.catch_warnings():  # newer torch deprecates the TF32 flags in favour of fp32_precision
            warnings.simplefilter("ignore")
            matmul_tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
            cudnn_tf32 = bool(torch.backends.cudnn.allow_tf32)
        env.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "cudnn.benchmark": bool(torch.backends.cudnn.benchmark),
                    "matmul TF32": matmul_tf32, "cuDNN TF32": cudnn_tf32})
    env["threads"] = torch.get_num_threads()
    env.update(settings)
    return env


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({usable_cores()} cores)"


def print_header(env: dict[str, Any], out: Console) -> None:
    out.print(escape("  ".join(f"{k}: {_show(v)}" for k, v in env.items())))


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def write_json(path: Path, payload: dict[str, Any], out: Console) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")
    out.print(escape(f"figures written to {path}"))
