"""Hand-written eager equivalents of the four CIFAR families, the baselines the benchmarks compare
archspec's modules with. A family is recognised by its network's parameters; a module is a baseline
only where it has exactly the spec's parameter count."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from archspec.compiler.costs import summarize
from archspec.graph.ir import Network

from .delugenet import DelugeNetCifar
from .densenet import DenseNetBCCifar
from .gunn import GunnCifar
from .seqresnet import SeqResNetCifar

Maker = Callable[[dict[str, Any]], nn.Module]

# network parameters of the spec library's CIFAR templates → the hand-written module
FAMILIES: dict[frozenset[str], tuple[str, Maker]] = {
    frozenset({"classes", "n", "w"}): ("DelugeNet", lambda p: DelugeNetCifar(p["n"], p["w"], p["classes"])),
    frozenset({"classes", "depth", "k", "compression"}): (
        "DenseNet-BC", lambda p: DenseNetBCCifar(p["depth"], p["k"], p["compression"], p["classes"])),
    frozenset({"classes", "widths", "segments", "k", "m", "order", "identity"}): (
        "GUNN", lambda p: GunnCifar(p["widths"], p["segments"], p["k"], p["m"], p["order"], p["identity"],
                                    p["classes"])),
    frozenset({"classes", "r", "k", "blocks", "bottleneck", "windowed", "drop"}): (
        "SeqResNet", lambda p: SeqResNetCifar(p["r"], p["k"], p["blocks"], p["bottleneck"], p["windowed"],
                                              p["drop"], p["classes"])),
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def handwritten_for(net: Network) -> Callable[[], nn.Module] | None:
    """A constructor of the hand-written equivalent of `net`, or None where there is none: the family
    is unknown, or its hand-written module would not have exactly the spec's parameters."""
    family = FAMILIES.get(frozenset(net.params))
    if family is None or tuple(net.shape(net.input)) != (3, 32, 32):
        return None
    make = family[1]
    params = dict(net.params)
    try:
        with torch.device("meta"):  # counted without allocating a weight
            n = count(make(params))
    except (ValueError, TypeError, KeyError):
        return None
    return (lambda: make(params)) if n == summarize(net).params else None


def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Copy `src`'s parameters into `dst`'s, in registration order, each reshaped to its target; the
    two must agree parameter by parameter in element count."""
    a, b = list(src.parameters()), list(dst.parameters())
    if len(a) != len(b) or any(p.numel() != q.numel() for p, q in zip(a, b)):
        raise ValueError("the modules' parameters do not line up: "
                         f"{[tuple(p.shape) for p in a][:8]}… vs {[tuple(q.shape) for q in b][:8]}…")
    with torch.no_grad():
        for p, q in zip(a, b):
            q.copy_(p.reshape(q.shape))


__all__ = ["DelugeNetCifar", "DenseNetBCCifar", "GunnCifar", "SeqResNetCifar", "FAMILIES", "handwritten_for",
           "copy_parameters", "count"]
