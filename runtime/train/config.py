"""What a training run is asked to do: everything `archspec train` takes, as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    spec: Any  # a spec file's path, or a parsed `Spec`
    sets: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    recipe: str = "quick"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    tweaks: dict[str, Any] = field(default_factory=dict)  # any other recipe field
    seed: int = 0
    out: Path = Path("runs/last")
    resume: bool = False
    device: str = "auto"
    compile: bool = False
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    memory: str | None = None  # fast, lean or auto; None: fast, or on --resume the mode the run was trained in
    progress: bool = True
    workers: int = 4  # image folders only
