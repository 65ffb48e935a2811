"""Pairing and writing: two walks' groups paired in order, shapes agreeing element for element (a
`crossdepthwise` merge's group taking one source group per inflow, stacked channel-wise); the pairs by
name where the source is an archspec module of the same spec; the first mismatch named with positions,
shapes and how the source was walked. A plan is written all or nothing: every value is staged in its
target's type, device and shape before the first is copied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ..modules import CrossDepthwise
from .groups import Group, fits, same_layout
from .report import Pair, TransferError, TransferReport, fmt_shape


def stacked_widths(gm: nn.Module) -> dict[str, list[int]]:
    """Modules that keep several inflows' tensors stacked: module name → the inflows' widths."""
    return {name: list(m.widths) for name, m in gm.named_modules() if isinstance(m, CrossDepthwise)}


@dataclass
class Plan:
    """The pairs found in one walk: the values to copy into the target's tensors, and the report."""

    order: str
    writes: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (target, value)
    report: TransferReport | None = None


def plan_pairs(src: list[Group], dst: list[Group], widths: Mapping[str, list[int]], order: str) -> Plan:
    """`src`'s groups paired with `dst`'s in order (see the module's docstring); a TransferError at the
    first that do not line up, or where one side has tensors left over."""
    plan = Plan(order, report=TransferReport(order))
    n_src = sum(len(g.names) + (g.counter is not None) for g in src)
    n_dst = sum(len(g.names) + (g.counter is not None) for g in dst)
    i = 0
    for t in dst:
        s = src[i] if i < len(src) else None
        if s is not None and fits(s, t):
            _one(plan, s, t)
            i += 1
            continue
        w = widths.get(t.module, [])
        if len(w) > 1 and _stack_fits(src[i:i + len(w)], t, w):
            _stack(plan, src[i:i + len(w)], t)
            i += len(w)
            continue
        raise _mismatch(s, t, n_src, n_dst, len(plan.report.pairs), order)
    if i < len(src):
        s = src[i]
        raise TransferError(
            f"the source has more tensors than the target: source tensor {s.start + 1} of {n_src}, "
            f"'{s.names[0] if s.names else s.counter[0]}' ({fmt_shape(_shape_of(s))}), has no counterpart after the "
            f"target's last ({n_dst} tensors)", _hint(order), matched=len(plan.report.pairs))
    return plan


def _stack_fits(groups: list[Group], t: Group, widths: list[int]) -> bool:
    """Whether `groups` (one per inflow) stacked channel-wise give `t`'s tensors."""
    if len(groups) != len(widths) or any(len(g.tensors) != len(t.tensors) for g in groups):
        return False
    for j, target in enumerate(t.tensors):
        per, rest = divmod(target.numel(), sum(widths))
        if rest or any(g.tensors[j].numel() != w * per for g, w in zip(groups, widths)):
            return False
    return True


def _one(plan: Plan, s: Group, t: Group) -> None:
    for sn, st, tn, tt in zip(s.names, s.tensors, t.names, t.tensors):
        plan.writes.append((tt, st.detach().reshape(tt.shape)))
        plan.report.pairs.append(Pair((sn,), tn, (tuple(st.shape),), tuple(tt.shape)))
    _counters(plan, [s.counter] if s.counter else [], t)


def _stack(plan: Plan, groups: list[Group], t: Group) -> None:
    for j, (tn, tt) in enumerate(zip(t.names, t.tensors)):
        parts = [g.tensors[j].detach().reshape(-1) for g in groups]
        plan.writes.append((tt, torch.cat([p.to(parts[0].device) for p in parts]).reshape(tt.shape)))
        plan.report.pairs.append(Pair(tuple(g.names[j] for g in groups), tn,
                                      tuple(tuple(g.tensors[j].shape) for g in groups), tuple(tt.shape)))
    _counters(plan, [g.counter for g in groups if g.counter], t)


def _counters(plan: Plan, sources: list[tuple[str, torch.Tensor]], t: Group) -> None:
    """A target batch counter takes the source's (the largest, for stacked inflows); without one it keeps
    its own."""
    if t.counter is None:
        plan.report.ignored += [name for name, _ in sources]
        return
    if not sources:
        plan.report.kept.append(t.counter[0])
        return
    name, tt = t.counter
    value = max((v.detach().reshape(()).cpu() for _, v in sources), key=lambda v: int(v))
    plan.writes.append((tt, value))
    plan.report.pairs.append(Pair(tuple(n for n, _ in sources), name, tuple(tuple(v.shape) for _, v in sources),
                                  tuple(tt.shape)))


def by_name(items: list[tuple[str, torch.Tensor]], gm: nn.Module) -> Plan | None:
    """Where the source's names and shapes are the target's own (an archspec module of the same spec), the
    pairs by name; otherwise None."""
    target = gm.state_dict(keep_vars=True)
    source = dict(items)
    if set(source) != set(target) or any(tuple(source[k].shape) != tuple(v.shape) for k, v in target.items()):
        return None
    plan = Plan("names", report=TransferReport("names"))
    for k, tt in target.items():
        plan.writes.append((tt, source[k].detach()))
        plan.report.pairs.append(Pair((k,), k, (tuple(source[k].shape),), tuple(tt.shape)))
    return plan


def write_plan(plan: Plan) -> TransferReport:
    """Stage every value in its target's type, device and shape, then copy them all: a value that cannot
    be staged leaves the module as it was."""
    assert plan.report is not None
    staged: list[tuple[torch.Tensor, torch.Tensor]] = []
    for (target, value), pair in zip(plan.writes, plan.report.pairs):
        if value.dtype.is_floating_point != target.dtype.is_floating_point:
            raise TransferError(f"source tensor '{pair.source[0]}' ({str(value.dtype).removeprefix('torch.')}) "
                                f"cannot become target tensor '{pair.target}' "
                                f"({str(target.dtype).removeprefix('torch.')}); nothing was written")
        try:
            staged.append((target, value.detach().to(device=target.device, dtype=target.dtype).reshape(target.shape)))
        except (RuntimeError, MemoryError) as e:
            raise TransferError(f"cannot stage source tensor '{pair.source[0]}' for target tensor '{pair.target}': "
                                f"{type(e).__name__}: {e}".splitlines()[0][:400] + "; nothing was written") from None
    with torch.no_grad():
        for target, value in staged:
            target.copy_(value)
    return plan.report


def _mismatch(s: Group | None, t: Group, n_src: int, n_dst: int, matched: int, order: str) -> TransferError:
    """The first tensors of `s` and `t` that do not line up, named with their shapes and positions."""
    if s is None:
        name, shape = (t.names[0], tuple(t.tensors[0].shape)) if t.names else (t.counter[0], ())
        return TransferError(
            f"the target has more tensors than the source: target tensor {t.start + 1} of {n_dst}, "
            f"'{name}' ({fmt_shape(shape)}), has no counterpart after the source's last ({n_src} tensors)",
            _hint(order), matched=matched)
    j = next((j for j, (a, b) in enumerate(zip(s.tensors, t.tensors))
              if not same_layout(tuple(a.shape), tuple(b.shape))), min(len(s.tensors), len(t.tensors)))
    return TransferError(f"the structures differ at {_where('source', s, j, n_src)} and "
                         f"{_where('target', t, j, n_dst)}; {matched} tensors matched before them",
                         _hint(order), matched=matched)


def _where(side: str, g: Group, j: int, n: int) -> str:
    """Tensor `j` of group `g`, or what the group holds when it has fewer tensors."""
    if j < len(g.tensors):
        return f"{side} tensor {g.start + j + 1} of {n}, '{g.names[j]}' ({fmt_shape(tuple(g.tensors[j].shape))})"
    held = ", ".join(fmt_shape(tuple(x.shape)) for x in g.tensors) or "none"
    return f"{side} module '{g.module}', which has only {len(g.tensors)} tensors ({held})"


def _hint(order: str) -> str:
    walked = {"registration": "in the order the source registers its modules",
              "execution": "in the order the source's forward pass calls its modules",
              "name-sorted": "in the order of their names (a .safetensors file keeps no order: save the state "
                             "dict with torch.save, or with archspec's save_state_dict)",
              "dataflow": "in the order of both forward passes' dataflow",
              "name-tree": "along the target's modules, the source's named modules in any order that fits"
              }.get(order, "in file order")
    return (f"tensors are paired module by module, {walked}, each module's tensors in order, shapes equal; "
            "the source must be the same network, layer for layer")


def _shape_of(g: Group) -> tuple[int, ...]:
    return tuple(g.tensors[0].shape) if g.tensors else tuple(g.counter[1].shape)
