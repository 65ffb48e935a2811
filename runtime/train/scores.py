"""An epoch's running scores (summed loss, top-1 and top-5 hits, images seen), kept on the device that
computes them so that no step waits for a copy to the host; read once, summed over the ranks, at the
end of the epoch. Top-5 is counted only where there are more than 5 classes (it is 1 otherwise). A
tally asked for a confusion matrix (at most `MAX_CONFUSION_CLASSES` classes) also counts each (true,
predicted) pair, one `bincount` of `label * K + prediction` per batch. `tally_batches` is the one
evaluation loop: the trainer's and a checkpoint's."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

TOP = 5
MAX_CONFUSION_CLASSES = 100


class Tally:
    def __init__(self, device: torch.device, classes: int, confusion: bool = False):
        """Scores for `classes` classes on `device`; with `confusion`, the (true, predicted) pairs too,
        where there are at most `MAX_CONFUSION_CLASSES` classes (`confusion` stays None otherwise)."""
        self.classes = classes
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.top1 = torch.zeros((), dtype=torch.int64, device=device)
        self.top5 = torch.zeros((), dtype=torch.int64, device=device) if classes > TOP else None
        self.confusion = (torch.zeros(classes * classes, dtype=torch.int64, device=device)
                          if confusion and classes <= MAX_CONFUSION_CLASSES else None)
        self.seen = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> None:
        """One batch: its logits, labels and summed (not mean) loss."""
        logits = logits.detach()
        self.loss += loss_sum.detach()
        pred = logits.argmax(1)
        self.top1 += (pred == y).sum()
        if self.confusion is not None:
            self.confusion += torch.bincount(y * self.classes + pred, minlength=self.classes ** 2)
        if self.top5 is not None:
            self.top5 += (logits.topk(TOP, 1).indices == y[:, None]).any(1).sum()
        self.seen += len(y)

    def totals(self, reduce: Callable[..., list[float]] | None = None) -> dict[str, float]:
        """`loss`, `acc` and (where counted) `top5` over every rank's images (`reduce` sums a list of
        device tensors over the ranks; None: this process alone), and the image count as `images`."""
        count = torch.full((), float(self.seen), dtype=torch.float64, device=self.loss.device)
        vals = [self.loss, self.top1, count] + ([self.top5] if self.top5 is not None else [])
        if reduce is None:
            sums = torch.stack([v.double() for v in vals]).tolist()
        else:
            sums = reduce(*vals)
        n = max(sums[2], 1.0)
        out = {"loss": sums[0] / n, "acc": sums[1] / n}
        if self.top5 is not None:
            out["top5"] = sums[3] / n
        out["images"] = int(sums[2])
        return out

    def matrix(self, reduce: Callable[[torch.Tensor], None] | None = None) -> list[list[int]] | None:
        """The confusion counts (row = true class, column = predicted) over every rank's images
        (`reduce` sums a device tensor over the ranks in place, as `torch.distributed.all_reduce` does;
        None: this process alone), or None where they were not counted."""
        if self.confusion is None:
            return None
        counts = self.confusion.clone()
        if reduce is not None:
            reduce(counts)
        return counts.view(self.classes, self.classes).tolist()


@torch.no_grad()
def tally_batches(forward: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, tally: Tally) -> Tally:
    """`tally` with every (x, y) of `batches` added: `forward(x)`'s logits (read in float32) and their
    summed cross-entropy; no gradients are kept. The caller sets the module's mode."""
    for x, y in batches:
        logits = forward(x).float()
        tally.add(logits, y, F.cross_entropy(logits, y, reduction="sum"))
    return tally
