"""The public entry points: parse a spec, build a module from it, summarise it without building."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from . import library
from .compiler.codegen import to_module
from .compiler.costs import summarize
from .compiler.passes import memory as memory_policy
from .graph.elaborate import elaborate
from .graph.ir import Network
from .language.errors import SpecError
from .language.loader import Spec, load, load_file

DEFAULT_MAX_PARAMS = 2_000_000_000


AllowPaths = Iterable[str | os.PathLike] | None


def parse(source: str | os.PathLike | Spec, allow_paths: AllowPaths = None) -> Spec:
    """A spec from a path, a shipped model's name (`"delugenet146"`), spec text, or an already parsed
    spec. One line without braces is a path or a name, not spec text, when it has no spaces, ends in
    `.arch` or names a file.

    Its `use` lines may read files in the spec file's folder tree (the working folder's, for text), the
    shipped library and the folders in `allow_paths`, nothing else."""
    if isinstance(source, Spec):
        return source
    text = os.fspath(source)
    one_line = text and "\n" not in text and "{" not in text
    if isinstance(source, os.PathLike) or (
            one_line and (not any(c.isspace() for c in text) or text.endswith(".arch") or Path(text).exists())):
        return load_file(library.find(text), allow_paths=allow_paths)
    return load(text, allow_paths=allow_paths)


def network(spec: str | os.PathLike | Spec, *, allow_paths: AllowPaths = None, **overrides: Any) -> Network:
    """The elaborated graph of `spec` with its parameters set by `overrides`."""
    return elaborate(parse(spec, allow_paths), overrides)


def summary(spec: str | os.PathLike | Spec | Network, *, allow_paths: AllowPaths = None, **overrides: Any):
    """Per-group and total parameters, MACs and shapes, computed from the graph alone."""
    return summarize(spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides))


def build(spec: str | os.PathLike | Spec | Network, *, memory: str = "fast", max_params: int = DEFAULT_MAX_PARAMS,
          allow_paths: AllowPaths = None, **overrides: Any):
    """A `torch.fx.GraphModule` for `spec`. Refuses networks above `max_params` before allocating.
    `memory` is the training-memory policy: `fast` (plain ops), `lean` (memory linear in depth) or `auto`
    (lean only where a batch of 64 would not fit the free memory of the first CUDA device; fast without one)."""
    net = spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides)
    s = summarize(net)
    if s.params > max_params:
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        None, "raise the limit with --max-params (or max_params=) if this is intended")
    if memory not in memory_policy.MODES:
        raise SpecError(f"unknown memory mode {memory!r}", None, f"memory modes: {', '.join(memory_policy.MODES)}")
    free = torch.cuda.mem_get_info()[0] if memory == "auto" and torch.cuda.is_available() else None
    return memory_policy.apply(to_module(net), memory_policy.resolve(memory, net, 64, free))
