"""Residual streams carried raw: everything the `shortcut` mark and `residual(embedded=true)` share.

A layer's raw tensor is the tensor its last `shortcut` mark tapped (before its normalisation), kept as
the list of tensors that laid side by side along channels make it, so that a stream read range by range
needs no concatenation. An embedded residual layer opens a stream — the raw tensor of its input, or the
input itself — and each `shortcut` mark inside the layer adds the stream's next channels, as many as the
mark's own input has."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ..errors import Loc, SpecError
from .builder import Builder, Scope
from .ops import fmt_shape


@dataclass
class Stream:
    """A residual stream open over one layer: its tensors side by side, and how many channels the layer's
    marks have added so far."""

    parts: list[str]
    channels: int  # the stream's width: all its parts together
    taken: int = 0


class Streams:
    """The open streams (innermost last), every mark made so far and each tensor's raw tensor."""

    def __init__(self, builder: Builder) -> None:
        self._b = builder
        self._open: list[Stream] = []
        self._taps: list[str] = []
        self._raw: dict[str, list[str]] = {}

    @contextmanager
    def embedded(self, x: str) -> Iterator[Stream]:
        """Open the stream of `x` (its raw tensor, or `x` itself) for the marks of the layer run inside."""
        parts = self._raw.get(x, [x])
        stream = Stream(parts, sum(self._b.shape(p)[0] for p in parts))
        self._open.append(stream)
        try:
            yield stream
        finally:
            self._open.pop()

    def mark(self, x: str, scope: Scope, loc: Loc, at: Loc) -> str:
        """A `shortcut` mark on `x`: with a stream open, `x` plus the stream's next channels; `x` otherwise.
        Either way what it returns is tapped as the raw tensor. `at` is where errors point."""
        tap = x
        if self._open:
            stream = self._open[-1]
            sx = self._b.shape(x)
            ss = (stream.channels,) + self._b.shape(stream.parts[0])[1:]
            start, stop = stream.taken, stream.taken + sx[0]
            if stop > ss[0]:
                raise SpecError(f"shortcut: this mark would add channels [{start}, {stop}) of a residual stream "
                                f"of only {ss[0]}", at, "each mark adds as many channels as its input has; the "
                                "marks of an embedded residual layer together add the stream exactly once")
            if sx[1:] != ss[1:]:
                raise SpecError(f"shortcut: the residual stream is {fmt_shape(ss)}, but this mark's input is "
                                f"{fmt_shape(sx)}", at, "the layer must keep the stream's spatial size")
            s = self._channel_range(stream.parts, start, stop, scope, loc)
            tap = self._b.add("add", {}, [x, s], scope, "shortcut", loc, pattern="residual", role="shortcut",
                              numbered=False)
            stream.taken = stop
        self._taps.append(tap)
        return tap

    def taps_made(self) -> int:
        """How many marks have been made so far: a layer template notes it before it runs."""
        return len(self._taps)

    def layer_done(self, out: str, taps_before: int) -> None:
        """A layer template that made marks has, as its output's raw tensor, its last mark — unless a block
        inside it already gave the output one."""
        if len(self._taps) > taps_before and out not in self._raw:
            self._raw[out] = [self._taps[-1]]

    def join(self, out: str, parts: list[str]) -> None:
        """`out` is `parts` side by side: where every part has a raw tensor, so has `out` (theirs, in order),
        and a stream carried raw runs on through the join."""
        if parts and all(p in self._raw for p in parts):
            self._raw[out] = [r for p in parts for r in self._raw[p]]

    def _channel_range(self, parts: list[str], start: int, stop: int, scope: Scope, loc: Loc) -> str:
        """Channels [start, stop) of `parts` laid side by side: a part itself where the range is one, else
        slices of the parts it crosses, concatenated."""
        pieces, offset = [], 0
        for p in parts:
            c = self._b.shape(p)[0]
            lo, hi = max(start, offset), min(stop, offset + c)
            if lo < hi:
                pieces.append(p if (lo, hi) == (offset, offset + c) else
                              self._b.add("slice", {"start": lo - offset, "stop": hi - offset}, [p], scope,
                                          "shortcut_slice", loc, pattern="residual", role="shortcut",
                                          numbered=False))
            offset += c
        if len(pieces) == 1:
            return pieces[0]
        return self._b.add("concat", {}, pieces, scope, "shortcut_join", loc, pattern="residual", role="shortcut",
                           numbered=False)
