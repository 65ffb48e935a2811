"""The progress bar of a run: one line for the epoch under way, one for the whole run with the time
it still needs. An epoch's own bar cannot say when a 300-epoch run ends; the run's estimate counts the
evaluations and checkpoints between epochs too, which a per-step rate would leave out."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text


def clock(seconds: float | None) -> str:
    """`H:MM:SS` (or `M:SS` under an hour); `-:--` when there is nothing to go on yet."""
    if seconds is None:
        return "-:--"
    s = max(int(round(seconds)), 0)
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunClock:
    """Estimates the time left in a run from the epochs finished (train, evaluation and checkpoint
    together) and the share of the current epoch's steps done."""

    def __init__(self, epochs_left: int):
        self.epochs_left = epochs_left  # counting the one under way
        self.finished: list[tuple[float, float]] = []  # (training seconds, whole-epoch seconds)
        self.started = time.perf_counter()

    def start_epoch(self) -> None:
        self.started = time.perf_counter()

    def end_epoch(self, train_seconds: float) -> None:
        self.finished.append((train_seconds, time.perf_counter() - self.started))
        self.epochs_left -= 1

    def remaining(self, fraction: float, now: float | None = None) -> float | None:
        """Seconds left with `fraction` of the current epoch's training steps done (None: no estimate)."""
        elapsed = (now if now is not None else time.perf_counter()) - self.started
        if self.finished:
            recent = self.finished[-5:]  # the learning-rate schedule does not change the speed; data caches may
            train_s = sum(t for t, _ in recent) / len(recent)
            epoch_s = sum(e for _, e in recent) / len(recent)
        elif fraction > 0:
            train_s = epoch_s = elapsed / fraction
        else:
            return None
        this_train = elapsed / fraction if fraction > 0 else train_s
        this_left = this_train * (1 - fraction) + (epoch_s - train_s)
        return this_left + epoch_s * max(self.epochs_left - 1, 0)

    def between(self) -> float | None:
        """Seconds left after an epoch has ended (`end_epoch`), before the next begins."""
        if self.epochs_left <= 0:
            return 0.0
        if not self.finished:
            return None
        recent = self.finished[-5:]
        return self.epochs_left * sum(e for _, e in recent) / len(recent)


class _Eta(ProgressColumn):
    """A task's own `eta` field (seconds), or rich's estimate for tasks that have none."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta", task.time_remaining)
        return Text(clock(eta), style="progress.remaining")


def progress_bar(enabled: bool, console: Console | None = None) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), _Eta(), transient=True, disable=not enabled,
                    console=console)
