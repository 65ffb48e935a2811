"""`archspec bench compile`: the time of each compile stage, and of constructing the equivalent
hand-written module where there is one, in the same run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from archspec.compiler.codegen import to_module
from archspec.compiler.costs import summarize
from archspec.graph.elaborate import elaborate
from archspec.language.loader import load, read_text

from .handwritten import handwritten_for


def _median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run_bench(spec: Path, overrides: dict[str, Any], repeat: int, out: Console) -> None:
    """Median time of parse, elaborate, the cost passes and codegen, of text → module end to end, and
    of constructing the hand-written module (where the family has one), with their ratio."""
    text = read_text(spec)
    base = spec.resolve().parent
    t_parse, parsed = _median_time(lambda: load(text, str(spec), base), repeat)
    t_elab, net = _median_time(lambda: elaborate(parsed, overrides), repeat)
    t_pass, summary = _median_time(lambda: summarize(net), repeat)
    t_gen, gm = _median_time(lambda: to_module(net), repeat)
    stages = [("parse", t_parse), ("elaborate", t_elab), ("passes (params, MACs, depth)", t_pass),
              ("codegen (fx graph, module, init)", t_gen)]
    total = sum(t for _, t in stages)
    end_to_end = lambda: to_module(elaborate(load(text, str(spec), base), overrides))  # noqa: E731
    hand = handwritten_for(net)
    # text → module and the hand-written module's construction, alternately: the ratio of their medians
    # sees the same load on a shared machine
    ends, hands = [], []
    for _ in range(repeat):
        ends.append(_median_time(end_to_end, 1)[0])
        if hand is not None:
            hands.append(_median_time(hand, 1)[0])
    t_end = statistics.median(ends)

    table = Table(title=f"compile {spec}  ({summary.params:,} params, {len(net.graph)} graph nodes, "
                        f"median of {repeat})", title_justify="left")
    table.add_column("stage")
    table.add_column("ms", justify="right")
    for name, t in stages:
        table.add_row(name, f"{t * 1e3:.1f}")
    table.add_section()
    table.add_row("sum of stages", f"{total * 1e3:.1f}")
    table.add_row("text → GraphModule, end to end", f"{t_end * 1e3:.1f}")
    if hand is not None:
        t_hand = statistics.median(hands)
        table.add_row("hand-written nn.Module construction", f"{t_hand * 1e3:.1f}")
        table.add_section()
        table.add_row("ratio compile / hand-written", f"{t_end / t_hand:.2f}×")
        table.add_row("median of the paired ratios", f"{statistics.median(e / h for e, h in zip(ends, hands)):.2f}×")
    out.print(table)
