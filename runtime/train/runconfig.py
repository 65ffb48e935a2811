"""`config.json` of a run folder: what this run resolved its request to — the network and its
parameters, the overrides given, the recipe with every field, seed, data and split sizes, device and
the versions of archspec, torch and Python — so that a run can be read, compared and repeated later
without its command line, or replayed (`archspec train --config config.json`: `config.read_config_file`).
Rewritten (atomically) each time the run starts or resumes."""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any

import torch

import archspec
from archspec.files import write_atomic


def versions() -> dict[str, Any]:
    return {"archspec": archspec.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda}


def _plain(value: Any) -> Any:
    """JSON's view of a value: paths and other objects as text."""
    return json.loads(json.dumps(value, default=str))


def run_config(trainer: Any) -> dict[str, Any]:
    """The resolved configuration of a `Trainer` that is about to run."""
    cfg, ds, feed = trainer.cfg, trainer.ds, trainer.feed
    spec = cfg.spec if isinstance(cfg.spec, (str, Path)) else getattr(cfg.spec, "file", None)
    return _plain({
        "network": trainer.net.name,
        "spec": str(spec) if spec is not None else None,
        "overrides": dict(cfg.sets),
        "params": trainer.net.params,
        "recipe": trainer.recipe.model_dump(),
        "seed": cfg.seed,
        "val_split": trainer.val_split,
        "data": {"name": ds.name, "source": cfg.data, "classes": ds.classes, "shape": list(ds.shape),
                 "train_images": feed.size("train"), "val_images": feed.size("val"),
                 "test_images": feed.size("test")},
        "device": str(trainer.device),
        "processes": trainer.dist.world,
        "memory": trainer.memory,
        "amp": trainer.amp,
        "channels_last": trainer.channels_last,
        "compile": cfg.compile,
        "image_size": cfg.image_size,
        "crop": cfg.crop,
        "threads": torch.get_num_threads(),
        "resumed_after_epoch": trainer.start_epoch if cfg.resume else None,
        "versions": versions(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })


def write_run_config(path: Path, config: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(config, indent=2) + "\n")
