"""What is refused before anything is copied: a source tensor that is not weights (not dense, quantized,
complex, not floating point, not finite; a batch counter that is not a whole number), a transfer whose
memory is above its limit, and paired modules whose hyper-parameters differ (norm eps and momentum,
convolution stride, padding, dilation, groups and padding mode, the activations between modules). A
convolution fed straight by a zero-padding module has that padding counted as its own."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..activation_memory import default_limit, human
from .files import WeightsFile
from .flows import Flows
from .groups import COUNTER
from .plan import Plan
from .report import TransferError
from .trace import Flow


def check_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Refuse (a TransferError naming the first) a tensor that is not weights: sparse or otherwise not
    dense, quantized, complex, of a type that is not floating point (a batch counter: a whole number), or
    holding a value that is not finite."""
    for name, t in items:
        what = _not_weights(name, t)
        if what is not None:
            raise TransferError(f"source tensor '{name[:200]}' {what}; nothing was written",
                                "weights are dense, real, finite floating-point tensors (batch counters whole "
                                "numbers)")


def _not_weights(name: str, t: torch.Tensor) -> str | None:
    if t.layout != torch.strided:
        return f"is not dense ({str(t.layout).removeprefix('torch.')})"
    if t.is_quantized:
        return f"is quantized ({str(t.dtype).removeprefix('torch.')})"
    if t.is_meta:
        return "holds no values (a meta tensor)"
    if t.is_complex():
        return f"is complex ({str(t.dtype).removeprefix('torch.')})"
    counter = name.rsplit(".", 1)[-1] == COUNTER
    if counter:
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            return f"is a batch counter of type {str(t.dtype).removeprefix('torch.')}, not a whole number"
        return None
    if not t.dtype.is_floating_point:
        return f"is of type {str(t.dtype).removeprefix('torch.')}, not floating point"
    if t.numel() and not _finite(t.detach()):
        return "holds values that are not finite (inf or nan)"
    return None


def _finite(t: torch.Tensor) -> bool:
    try:
        return bool(torch.isfinite(t).all())
    except (RuntimeError, NotImplementedError):  # a type isfinite has no kernel for (float8): as float32
        return bool(torch.isfinite(t.float()).all())


def check_memory(weights: WeightsFile, params: int, limit: int | None, bytes_per_value: int = 4) -> None:
    """Refuse a transfer whose memory, counted before the target is built, is above `limit` bytes (by
    default the host's memory): the source's tensors, the target's `params` weights, and each converted
    value staged before the first copy."""
    limit = default_limit("cpu") if limit is None else limit
    need = weights.bytes + 2 * params * bytes_per_value
    if need > limit:
        raise TransferError(f"transferring {weights.path} needs about {human(need)} (its tensors "
                            f"{human(weights.bytes)}, the target's {params:,} parameters twice), above the limit "
                            f"of {human(limit)}", "raise --max-memory if this is meant")


def differences(plan: Plan, source: nn.Module, gm: nn.Module, flows: Flows) -> list[str]:
    """The hyper-parameters in which `plan`'s paired modules differ, in the target's order: each module
    pair's, then the activations that follow paired steps of both traced forward passes."""
    assert plan.report is not None
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    for p in plan.report.pairs:
        if len(p.source) != 1:
            continue
        pair = (p.source[0].rpartition(".")[0], p.target.rpartition(".")[0])
        if pair in seen:
            continue
        seen.add(pair)
        try:
            a, b = source.get_submodule(pair[0]), gm.get_submodule(pair[1])
        except AttributeError:
            continue
        out += module_differences(pair[0], a, pair[1], b, flows)
    return out + activation_differences(flows.get())


def module_differences(sname: str, s: nn.Module, tname: str, t: nn.Module, flows: Flows) -> list[str]:
    """How module `s` (the source's `sname`) and its pair `t` (the target's `tname`) differ, one line per
    hyper-parameter. A convolution's padding counts the zero padding a padding module gives its input
    (`Flows.pads`, looked up only where the convolutions' own paddings differ)."""
    checks: list[tuple[str, object, object]] = []
    if isinstance(s, nn.modules.batchnorm._BatchNorm) and isinstance(t, nn.modules.batchnorm._BatchNorm):
        checks += [("BN eps", s.eps, t.eps), ("BN momentum", s.momentum, t.momentum)]
    elif isinstance(s, nn.LayerNorm) and isinstance(t, nn.LayerNorm):
        checks.append(("LayerNorm eps", s.eps, t.eps))
    elif isinstance(s, nn.GroupNorm) and isinstance(t, nn.GroupNorm):
        checks += [("GroupNorm eps", s.eps, t.eps), ("GroupNorm groups", s.num_groups, t.num_groups)]
    elif isinstance(s, nn.modules.conv._ConvNd) and isinstance(t, nn.modules.conv._ConvNd):
        ps, pt = _padding(s), _padding(t)
        if ps != pt:
            before = flows.pads()
            ps, pt = _padded(s, ps, before[0].get(sname)), _padded(t, pt, before[1].get(tname))
        checks += [("conv stride", tuple(s.stride), tuple(t.stride)), ("conv padding", ps, pt),
                   ("conv dilation", tuple(s.dilation), tuple(t.dilation)), ("conv groups", s.groups, t.groups),
                   ("conv padding mode", s.padding_mode, t.padding_mode)]
    return [f"{what}: source {sname} has {a}, target {tname} has {b}" for what, a, b in checks if a != b]


def _padding(m: nn.modules.conv._ConvNd) -> object:
    """A convolution's padding as numbers per side where it is fixed and even."""
    if type(m).__name__.endswith("Same"):  # padding computed from the input (TensorFlow's "SAME")
        return "same (from the input)"
    p = m.padding
    if p == "valid":
        return (0,) * len(m.kernel_size)
    if p == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        return tuple(x // 2 for x in total) if all(x % 2 == 0 for x in total) else "same"
    return tuple(p)


def _padded(m: nn.modules.conv._ConvNd, own: object, before: tuple[int, ...] | None) -> object:
    """`m`'s padding `own` with the zero padding `before` its input added, where the two pad alike: the
    convolution pads with zeros, or not at all."""
    if before is None or not isinstance(own, tuple) or len(own) != len(before):
        return own
    if m.padding_mode != "zeros" and any(own):
        return own
    return tuple(a + b for a, b in zip(own, before))


def activation_differences(got: tuple[Flow, Flow] | None) -> list[str]:
    """Where both traced forward passes (source, target) have the same structure, the activations folded
    into each pair of steps that differ (steps whose folded ops archspec does not know are left out)."""
    if got is None:
        return []
    src, dst = got
    if src.keys != dst.keys:
        return []
    out = []
    last = ("the input", "the input")
    for i, j in zip(src.order, dst.order):
        a, b = src.nodes[i], dst.nodes[j]
        where = (a.groups[0], b.groups[0]) if a.groups and b.groups else None
        ka, kb = [x for x in a.acts if x != ""], [x for x in b.acts if x != ""]
        if None not in ka and None not in kb and ka != kb:
            sa, sb = (where or (f"the {a.kind} after {last[0]}", f"the {b.kind} after {last[1]}"))
            out.append(f"activation: source {sa} is followed by {', '.join(ka) or 'none'}, target {sb} by "
                       f"{', '.join(kb) or 'none'}")
        if where is not None:
            last = where
    return out
