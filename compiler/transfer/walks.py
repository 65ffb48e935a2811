"""The orders in which a source's tensors can be walked, most likely first: by name; a module's in the
order it registers its modules, the order its forward pass first calls them, and the canonical order of
its dataflow; a state dict's or file's in its own order (or natural name order where a .safetensors file
keeps none) and along the target's name tree."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import torch
from torch import nn

from .dataflow import input_shape
from .files import Source, WeightsFile, load_state_dict
from .flows import Flows
from .groups import module_groups, name_sorted
from .nametree import tree_walks
from .report import TransferError


def source_walks(source: Source, gm: nn.Module, flows: Flows | None
                 ) -> Iterable[tuple[str, list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]] | None]]:
    """The ways to walk `source`, most likely first: (how, [(name, tensor), ...], the target's tensors in
    the order to pair them, or None for its own)."""
    if isinstance(source, (str, os.PathLike, WeightsFile)):
        state = source.state if isinstance(source, WeightsFile) else load_state_dict(source)
        ordered = getattr(state, "ordered", True)
        yield "names", list(state.items()), None
        yield ("file", list(state.items()), None) if ordered else ("name-sorted", name_sorted(state), None)
        yield from tree_walks(state, gm)
        return
    if isinstance(source, nn.Module):
        items = list(source.state_dict().items())
        yield "names", items, None
        yield "registration", items, None
        executed = _execution_order(source, gm, items)
        if executed is not None and [k for k, _ in executed] != [k for k, _ in items]:
            yield "execution", executed, None
        walk = flows.walk() if flows is not None else None
        if walk is not None:
            yield "dataflow", *walk
        return
    if isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise TransferError(f"a state dict maps names to tensors; {bad[0]!r} is {type(source[bad[0]]).__name__}")
        yield "names", list(source.items()), None
        yield "state-dict", list(source.items()), None
        yield from tree_walks(source, gm)
        return
    raise TransferError(f"cannot take weights from a {type(source).__name__}",
                        "give an nn.Module, a state dict, or the path of a .safetensors or torch file")


def _execution_order(model: nn.Module, gm: nn.Module, items: list[tuple[str, torch.Tensor]]
                     ) -> list[tuple[str, torch.Tensor]] | None:
    """`items` reordered module by module as `model`'s forward pass first calls the modules (one sample
    of `gm`'s input shape, in eval mode, no gradients; nothing in `model` changes), or None where that
    cannot be run."""
    shape = input_shape(gm)
    first = next(iter(model.parameters()), None)
    if shape is None or first is None:
        return None
    called: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def seen(module: nn.Module, args: object) -> None:
        called.setdefault(names[id(module)], len(called))

    hooks = [m.register_forward_pre_hook(seen) for m in model.modules()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), dtype=first.dtype, device=first.device))
    except Exception:  # a module that will not run on a zero sample of this shape: registration order only
        return None
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    late = len(called)
    groups = module_groups(items)
    ranked = sorted(range(len(groups)), key=lambda i: (called.get(groups[i].module, late), i))
    out: list[tuple[str, torch.Tensor]] = []
    for i in ranked:
        g = groups[i]
        out += list(zip(g.names, g.tensors))
        if g.counter is not None:
            out.append(g.counter)
    return out
