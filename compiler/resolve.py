"""Dotted names from the op catalogue → the torch code they name. The graph layer declares torch code by
name only (`Build`, `Call`, an activation's `function` and `Gradient`); it is imported here, when the
compiler needs it."""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch

from archspec.graph.ops import Op
from archspec.graph.ops.activation import Gradient


def named(path: str) -> Any:
    """The class or function at a dotted path (`"torch.nn.Conv2d"`), its module imported now."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"a lowering names {path!r}, which cannot be imported: {e}") from e


def gradient(g: Gradient) -> Callable:
    """backward(grad_out, x_in, y_out) → grad_in, as aten computes it."""
    fn = getattr(torch.ops.aten, g.aten)
    extra, kwargs, output = g.extra, dict(g.kwargs), g.reads == "output"

    def backward(grad, x, y):
        return fn(grad, y if output else x, *extra, **kwargs)

    return backward


def activation(op: type[Op]) -> tuple[Callable, Callable]:
    """(forward, backward) of a recomputable activation op; backward(grad_out, x_in, y_out) → grad_in."""
    if not op.recomputable or not hasattr(op, "function") or not hasattr(op, "backward"):
        raise NotImplementedError(f"op '{op.kind}' is not a recomputable activation")
    return named(op.function), gradient(op.backward)
