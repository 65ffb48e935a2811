"""What a weight transfer did or why it refused: `TransferError` (a RunError counting the pairs found
before the first mismatch), `Pair` (one target tensor and the source tensor or tensors it was given), and
`TransferReport` (every pair in order, the batch counters one side lacked, the hyper-parameter differences
copied anyway), with its one-line summary and per-pair lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from archspec.errors import RunError


class TransferError(RunError):
    """The source's structure is not the target's, or the source cannot be read; nothing was written.
    `matched` counts the pairs found before the first mismatch."""

    def __init__(self, message: str, hint: str | None = None, matched: int = 0):
        super().__init__(message, hint)
        self.matched = matched


@dataclass(frozen=True)
class Pair:
    """One target tensor and the source tensor(s) it was given: one, or several stacked."""

    source: tuple[str, ...]
    target: str
    source_shapes: tuple[tuple[int, ...], ...]
    target_shape: tuple[int, ...]

    @property
    def how(self) -> str:
        if len(self.source) > 1:
            return "stack"
        return "copy" if self.source_shapes[0] == self.target_shape else "reshape"


@dataclass
class TransferReport:
    """What `transfer_weights` wrote: every pair, in order, and the batch counters one side lacked."""

    order: str  # how the source was walked: registration, execution, names, file
    pairs: list[Pair] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # target counters the source has none for: left as they were
    ignored: list[str] = field(default_factory=list)  # source counters the target has no place for
    warnings: list[str] = field(default_factory=list)  # hyper-parameters that differ, copied anyway (force)

    @property
    def tensors(self) -> int:
        return len(self.pairs)

    @property
    def values(self) -> int:
        return sum(prod(p.target_shape) for p in self.pairs)

    def counts(self) -> dict[str, int]:
        """Pairs per kind: copy, reshape, stack."""
        out = {"copy": 0, "reshape": 0, "stack": 0}
        for p in self.pairs:
            out[p.how] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        how = "by name" if self.order == "names" else f"in {self.order} order"
        line = (f"transferred {self.tensors} tensors ({self.values:,} values) {how}: "
                f"{c['copy']} copied, {c['reshape']} reshaped, {c['stack']} stacked")
        if self.kept:
            line += f"; {len(self.kept)} batch counters kept"
        if self.ignored:
            line += f"; {len(self.ignored)} source batch counters unused"
        if self.warnings:
            line += f"; {len(self.warnings)} hyper-parameters differ (forced)"
        return line

    def lines(self) -> list[str]:
        """One line per pair: source name(s) and shape(s) → target name and shape."""
        return [f"{' + '.join(p.source)} {' + '.join(fmt_shape(s) for s in p.source_shapes)} -> {p.target} "
                f"{fmt_shape(p.target_shape)}" + ("" if p.how == "copy" else f" ({p.how})") for p in self.pairs]

    def __str__(self) -> str:
        return "\n".join([self.summary(), *(f"warning: {w}" for w in self.warnings), *self.lines()])


def fmt_shape(shape: tuple[int, ...]) -> str:
    """A shape as 3×32×32, or "scalar"."""
    return "×".join(str(d) for d in shape) if shape else "scalar"
