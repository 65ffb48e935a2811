"""TensorBoard scalars of a run, written into the run folder beside metrics.jsonl through
`torch.utils.tensorboard`. TensorBoard is an optional extra (`pip install 'archspec[tensorboard]'`):
without it a run says so once and writes everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

# metric names of a metrics row that are not `<split>_<measure>`, with the tag each is shown under
_TAGS = {"lr": "train/lr", "seconds": "time/seconds_per_epoch", "images_per_s": "time/images_per_s"}


def tag(key: str) -> str:
    """`train_loss` → `train/loss`, `val_top5` → `val/top5`: TensorBoard groups by the part before `/`."""
    if key in _TAGS:
        return _TAGS[key]
    split, _, measure = key.partition("_")
    return f"{split}/{measure}" if measure else key


class Board:
    """An event-file writer for one run, or nothing where TensorBoard is not installed or `enabled` is
    false. `resumed_after` epochs were logged before: later events an interrupted run left are dropped."""

    def __init__(self, folder: Path, *, enabled: bool = True, resumed_after: int = 0,
                 log: Callable[[str], None] = print):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log("TensorBoard is not installed: no event file for this run (pip install tensorboard)")
            return
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=resumed_after + 1 if resumed_after else None)

    def epoch(self, row: dict) -> None:
        """Every number of one metrics row, at step `row['epoch']`."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
