"""`transfer_weights`: a source's tensors paired with an archspec module's along each walk in turn
(`walks`), the first plan whose shapes fit and whose modules' hyper-parameters agree written; where only
plans with differing hyper-parameters fit, the dataflow's is refused, or copied with its differences
listed when forced."""

from __future__ import annotations

from torch import nn

from .checks import check_tensors, differences
from .files import Source
from .flows import Flows
from .groups import module_groups
from .plan import Plan, by_name, plan_pairs, stacked_widths, write_plan
from .report import TransferError, TransferReport
from .walks import source_walks


def transfer_weights(source: Source, gm: nn.Module, force: bool = False) -> TransferReport:
    """Copy `source`'s parameters and buffers into `gm` (an archspec-built module), paired by structure,
    and say what went where. `source` is an nn.Module, a state dict (name → tensor), a `WeightsFile`, or
    the path of a `.safetensors` or torch file (read within the host's memory). Raises TransferError, and
    changes nothing in `gm`, when a source tensor is not dense, real, finite weights, or when the
    structures differ (naming the first tensors that do not line up).

    An nn.Module source is paired by the dataflow of both forward passes where the order it registers or
    calls its modules does not give the same pairs, and its modules' hyper-parameters are compared with
    their targets' (norm eps, batch norm momentum, convolution stride, padding, dilation and groups, and
    the activations between modules where both traces show them; a zero-padding module right before a
    convolution counts as its padding): the first that differs is refused, naming both modules and values,
    unless `force`, which copies anyway and lists every difference in the report's `warnings`."""
    target = list(gm.state_dict(keep_vars=True).items())
    widths = stacked_widths(gm)
    flows = Flows(source, gm) if isinstance(source, nn.Module) else None
    best: TransferError | None = None
    fitted: list[tuple[Plan, list[str]]] = []  # plans whose shapes fit, with their hyper-parameter differences
    checked = False
    for order, items, dst in source_walks(source, gm, flows):  # lazily: traces and forward passes only if needed
        if not checked:  # every walk holds the same tensors: checked once, before any is paired
            check_tensors(items)
            checked = True
        if order == "names":
            plan = by_name(items, gm)
            if plan is None:
                continue
        else:
            try:
                plan = plan_pairs(module_groups(items), module_groups(dst if dst is not None else target), widths,
                                  order)
            except TransferError as e:
                if best is None or e.matched > best.matched:
                    best = e
                continue
        if flows is not None and order in ("registration", "execution"):
            plan = flows.prefer(plan, widths)
        problems = differences(plan, source, gm, flows) if flows is not None else []
        if not problems:
            return write_plan(plan)
        fitted.append((plan, problems))
    if fitted:
        plan, problems = next(((p, q) for p, q in fitted if p.order == "dataflow"), fitted[0])
        if not force:
            raise TransferError(f"{problems[0]}; nothing was written",
                                "the source computes something else with these weights; pass force=True "
                                "(archspec transfer --force) to copy them anyway", matched=len(plan.report.pairs))
        assert plan.report is not None
        plan.report.warnings = list(problems)
        return write_plan(plan)
    assert best is not None
    raise best
