"""The public entry points: parse a spec, build a module from it, summarise it without building."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .graph.elaborate import elaborate
from .graph.ir import Network
from .language.errors import SpecError
from .language.loader import Spec, load, load_file

DEFAULT_MAX_PARAMS = 2_000_000_000


def parse(source: str | os.PathLike | Spec) -> Spec:
    """A spec from a path, from spec text, or an already parsed spec."""
    if isinstance(source, Spec):
        return source
    if isinstance(source, os.PathLike):
        return load_file(source)
    if "\n" not in source and "{" not in source and (source.endswith(".arch") or Path(source).exists()):
        return load_file(source)
    return load(source)


def network(spec: str | os.PathLike | Spec, **overrides: Any) -> Network:
    """The elaborated graph of `spec` with its parameters set by `overrides`."""
    return elaborate(parse(spec), overrides)


def summary(spec: str | os.PathLike | Spec | Network, **overrides: Any):
    """Per-group and total parameters, MACs and shapes, computed from the graph alone."""
    from archspec.compiler.costs import summarize

    return summarize(spec if isinstance(spec, Network) else network(spec, **overrides))


def build(spec: str | os.PathLike | Spec | Network, *, max_params: int = DEFAULT_MAX_PARAMS, **overrides: Any):
    """A `torch.fx.GraphModule` for `spec`. Refuses networks above `max_params` before allocating."""
    from archspec.compiler.codegen import to_module
    from archspec.compiler.costs import summarize

    net = spec if isinstance(spec, Network) else network(spec, **overrides)
    s = summarize(net)
    if s.params > max_params:
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        None, "raise the limit with --max-params (or max_params=) if this is intended")
    return to_module(net)
