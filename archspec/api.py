"""The public entry points: parse a spec, build a module from it (whole, or as a backbone returning feature
maps), summarise it without building, and load a trained one back from its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from . import library
from .compiler import features as backbone
from .compiler.codegen import to_module
from .compiler.costs import summarize
from .compiler.passes import memory as memory_policy
from .graph.builder import DEFAULT_MAX_PARAMS
from .graph.elaborate import elaborate
from .graph.ir import Network
from .errors import RunError, SpecError
from .language.loader import Spec, load_file
from .language.loader import load as load_text

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
    return load_text(text, allow_paths=allow_paths)


def network(spec: str | os.PathLike | Spec, *, allow_paths: AllowPaths = None, **overrides: Any) -> Network:
    """The elaborated graph of `spec` with its parameters set by `overrides`."""
    return elaborate(parse(spec, allow_paths), overrides)


def summary(spec: str | os.PathLike | Spec | Network, *, allow_paths: AllowPaths = None, **overrides: Any):
    """Per-group and total parameters, MACs and shapes, computed from the graph alone."""
    return summarize(spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides))


def build(spec: str | os.PathLike | Spec | Network, *, memory: str = "fast", max_params: int = DEFAULT_MAX_PARAMS,
          allow_paths: AllowPaths = None, features_only: bool = False, out_indices: Iterable[int] | int | None = None,
          **overrides: Any):
    """A `torch.fx.GraphModule` for `spec`. Refuses networks above `max_params` before allocating.
    `memory` is the training-memory policy: `fast` (plain ops), `lean` (memory linear in depth) or `auto`
    (lean only where a batch of 64 would not fit the free memory of the first CUDA device; fast without one).

    `features_only=True` gives a backbone instead (timm's convention): its forward returns a list of
    feature maps, described by its `feature_info`; they are the spec's `tap`s, or else one per
    resolution, and `out_indices` picks among them (all by default; an int n, the last n)."""
    net = spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides)
    s = summarize(net)
    if s.params > max_params:
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        None, "raise the limit with --max-params (or max_params=) if this is intended")
    _check_options(memory, features_only, out_indices)
    return _finish(to_module(net), net, memory, features_only, out_indices)


def _check_options(memory: str, features_only: bool, out_indices: Any) -> None:
    """The build options, before anything is allocated."""
    memory_policy.check_mode(memory)
    if out_indices is not None and not features_only:
        raise RunError("out_indices picks the features of a backbone", "build it with features_only=True")


def _finish(gm: torch.fx.GraphModule, net: Network, memory: str, features_only: bool, out_indices: Any):
    """`gm`, made from `net`, with its taps recorded, cut to its features if asked, then under `memory`."""
    gm = backbone.mark_taps(gm, net)
    if features_only:
        gm = backbone.features_only(gm, out_indices)
    free = torch.cuda.mem_get_info()[0] if memory == "auto" and torch.cuda.is_available() else None
    return memory_policy.apply(gm, memory_policy.resolve(memory, net, 64, free))


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", memory: str = "fast",
         features_only: bool = False, out_indices: Iterable[int] | int | None = None):
    """The trained module in a checkpoint of `archspec train` (`run/best.safetensors`), in eval mode, on
    `device`: rebuilt from the spec the file carries, with its weights. The file is read as the trainer
    reads it: never unpickled, every tensor checked against its digest. `memory`, `features_only` and
    `out_indices` are `build`'s."""
    from .runtime.train.evaluation import load_trained  # the training runtime loads only when asked

    _check_options(memory, features_only, out_indices)
    net, gm, _ = load_trained(path, device)
    return _finish(gm, net, memory, features_only, out_indices).eval()


def state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint of `archspec train` under the plain keys `load_state_dict` takes
    (older files store them under `model/`), read and checked as `load` reads them."""
    from .runtime.train import checkpoint  # the training runtime loads only when asked

    return checkpoint.load(path).model
