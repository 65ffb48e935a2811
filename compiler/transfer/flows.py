"""Both sides' dataflows for an nn.Module source, traced once when first needed: their tensors walked in
the canonical order, the pairs that order gives (preferred where the registration or call order pairs
otherwise), and the zero padding each convolution's input gets from a padding module."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .dataflow import canonical_order, flow_items, input_shape, zero_pads
from .groups import module_groups
from .plan import Plan, plan_pairs
from .report import TransferError
from .trace import Flow, trace_flow


class Flows:
    """Both sides' dataflows in canonical order, traced once, when first needed; the zero padding
    modules give each side's convolutions, seen once, when first needed."""
    """Both sides' dataflows in canonical order, traced once, when first needed."""

    def __init__(self, source: nn.Module, gm: nn.Module):
        self.source, self.gm = source, gm
        self._flows: tuple[Flow, Flow] | None = None
        self._traced = False
        self._plan: Plan | None = None
        self._planned = False
        self._pads: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]] | None = None

    def get(self) -> tuple[Flow, Flow] | None:
        """Both sides' flows (source, target) in canonical order; None where either cannot be traced."""
        if not self._traced:
            self._traced = True
            shape = input_shape(self.gm)
            src = trace_flow(self.source, shape)
            dst = trace_flow(self.gm, shape) if src is not None else None
            if src is not None and dst is not None:
                canonical_order([src, dst])
                self._flows = (src, dst)
        return self._flows

    def walk(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]] | None:
        """Both sides' tensors in their canonical dataflow order."""
        flows = self.get()
        if flows is None:
            return None
        return (flow_items(flows[0], list(self.source.state_dict().items())),
                flow_items(flows[1], list(self.gm.state_dict(keep_vars=True).items())))

    def prefer(self, plan: Plan, widths: Mapping[str, list[int]]) -> Plan:
        """`plan`, or the dataflow's own pairs where they fit too and differ: the order modules are registered
        or called in can pair same-shaped modules that the data does not connect alike."""
        if not self._planned:
            self._planned = True
            walk = self.walk()
            if walk is not None:
                try:
                    self._plan = plan_pairs(module_groups(walk[0]), module_groups(walk[1]), widths, "dataflow")
                except TransferError:
                    self._plan = None
        other = self._plan
        if other is None or other.report is None or plan.report is None:
            return plan
        return plan if _pairs(plan) == _pairs(other) else other

    def pads(self) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
        """For each side (source, target), the zero padding its convolutions' inputs get from padding
        modules (`zero_pads`): conv name → padding per dimension."""
        if self._pads is None:
            shape = input_shape(self.gm)
            self._pads = (zero_pads(self.source, shape), zero_pads(self.gm, shape))
        return self._pads


def _pairs(plan: Plan) -> list[tuple[tuple[str, ...], str]]:
    assert plan.report is not None
    return sorted((p.source, p.target) for p in plan.report.pairs)
