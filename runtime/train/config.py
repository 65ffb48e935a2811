"""What a training run is asked to do: everything `archspec train` takes, as one value."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archspec.errors import RunError

MAX_SEED = 2**63 - 1  # torch's generators take seeds up to 2**64 - 1; derived seeds are reduced mod 2**63


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
    compile: str | bool = "none"  # step.COMPILE_MODES (True: regional)
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    memory: str | None = None  # fast, lean or auto; None: fast, or on --resume the mode the run was trained in
    progress: bool = True
    workers: int | None = None  # image folders only; None: data.default_workers() (one per core, at most 8)
    # training images held out to choose `best` on: a count, or a fraction of the training set; 0: none (the
    # papers' practice: train on every training image, report the test split); None: 0, or on --resume the run's
    val_split: int | float | None = None
    allow_paths: tuple[str, ...] = ()
    max_memory: int | None = None  # bytes a training step may need (estimated first); None: the device's  # folders `use` may read besides the spec's own tree and the library
    tensorboard: bool = True  # event files beside metrics.jsonl, where TensorBoard is installed
    threads: int | None = None  # the CPU threads asked for (`--threads`); None: as set, or on --resume the run's
    image_size: int | None = None  # image folders: the side images are cropped to; None: 224
    crop: float | None = None  # image folders: the evaluation centre crop's share; None: 0.875
    trust_legacy: bool = False  # --resume from a checkpoint without digests
    allow_nonfinite: bool = False  # --resume from a checkpoint holding non-finite weights

    def __post_init__(self) -> None:
        check_seed(self.seed)


def check_seed(seed: Any) -> None:
    """A seed is a whole number in 0..2**63-1: beyond it torch's generators overflow mid-run."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RunError(f"--seed {seed} is not a whole number from 0 to {MAX_SEED}")


def check_out_dir(path: Path) -> None:
    """Refuse an output folder that cannot be created or written, before a spec is read or a step is
    taken, so that no run's work is lost at its first checkpoint. The folders this creates to find
    out are removed again: a refused or failed run leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} is a file, not a folder", "give a new folder, or an existing run's")
    created: list[Path] = []
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        created.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise RunError(f"cannot create --out {path}: {p} is a file, not a folder")
    try:
        for d in reversed(created):
            d.mkdir()
        fd, probe = tempfile.mkstemp(dir=path, prefix=".archspec-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunError(f"cannot write to --out {path}: {err.strerror or err}",
                       "give a folder this user may create and write") from None
    finally:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                pass
