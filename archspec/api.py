"""The public entry points: parse a spec, build a module from it (whole, with timm's model interface, or
as a backbone returning feature maps), summarise it without building, and load a trained one back from
its checkpoint."""

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
from .graph.elaborate import Elaborator, elaborate
from .graph.ir import Network
from .errors import RunError, SpecError, loc_of
from .language.loader import Spec, load_file
from .language.loader import load as load_text
from .runtime.data.transforms import CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD

AllowPaths = Iterable[str | os.PathLike] | None

# timm's `create_model` keywords → the spec parameters they set, the first a spec declares
TIMM_NAMES = {
    "num_classes": ("classes",),
    "in_chans": ("channels",),
    "img_size": ("size",),
    "drop_rate": ("dropout", "drop"),  # the dropout before the classifier (or a spec's one dropout rate)
    "drop_path_rate": ("stochastic_depth", "drop_path"),
}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10's training images, per channel
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def parse(source: str | os.PathLike | Spec, allow_paths: AllowPaths = None) -> Spec:
    """A spec from a path, a shipped model's name (`"delugenet146"`), spec text, or an already parsed
    spec. A `Path` is always a path; a string of one line without braces is a path or a name, not spec
    text, when it has no spaces, ends in `.arch` or names a file.

    Its `use` lines may read files in the spec file's folder tree (for text: none), the shipped library
    and the folders in `allow_paths`, nothing else; never a dotfile or anything under /proc, /sys, /dev."""
    if isinstance(source, Spec):
        return source
    text = os.fspath(source)
    one_line = text and "\n" not in text and "{" not in text
    if isinstance(source, os.PathLike):  # a path object is a path, never a model's name
        return load_file(source, allow_paths=allow_paths)
    if one_line and (not any(c.isspace() for c in text) or text.endswith(".arch") or Path(text).exists()):
        return load_file(library.find(text), allow_paths=allow_paths)
    return load_text(text, allow_paths=allow_paths)


def network(spec: str | os.PathLike | Spec, *, allow_paths: AllowPaths = None, **overrides: Any) -> Network:
    """The elaborated graph of `spec` with its parameters set by `overrides`, which may also use timm's
    names (`num_classes`, `in_chans`, `img_size`, `drop_rate`, `drop_path_rate`: see `TIMM_NAMES`)."""
    parsed = parse(spec, allow_paths)
    return elaborate(parsed, timm_overrides(parsed, overrides))


def timm_overrides(spec: Spec, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with timm's names replaced by the spec parameters they set; a SpecError located at
    the network, naming its parameters, where the spec declares none for one, or where both are given."""
    used = [k for k in overrides if k in TIMM_NAMES]
    if not used:
        return overrides
    main = spec.networks[spec.main]
    where = loc_of(main.name, main.loc)
    _, params = Elaborator(spec).signature(spec.main, where)
    out = dict(overrides)
    for k in used:
        target = next((p for p in TIMM_NAMES[k] if p in params), None)
        if k in params:  # the spec's own parameter of that name
            continue
        if target is None:
            raise SpecError(f"network '{spec.main}' has no parameter that timm's {k} sets"
                            f" (it sets the first of: {', '.join(TIMM_NAMES[k])})",
                            where, f"its parameters: {', '.join(params) or 'none'}", spec.sources)
        if target in overrides:
            raise SpecError(f"network '{spec.main}': {k} and {target} both set its parameter '{target}'", where,
                            "give one of them", spec.sources)
        out[target] = out.pop(k)
    return out


def pretrained_cfg(net: Network) -> dict[str, Any]:
    """timm's `pretrained_cfg` for `net`'s input: its size, CIFAR-10's mean and std for 32×32 or
    smaller inputs (taken whole, crop fraction 1) and ImageNet's otherwise (crop fraction 0.875), each
    averaged over the channels for an input that is not RGB; bilinear resizing, as archspec's loaders do."""
    shape = tuple(net.shape(net.input))
    channels, size = shape[0], shape[-1]
    small = len(shape) == 3 and size <= 32
    mean, std = (CIFAR_MEAN, CIFAR_STD) if small else (IMAGENET_MEAN, IMAGENET_STD)
    if channels != 3:
        mean, std = (sum(mean) / 3,) * channels, (sum(std) / 3,) * channels
    return {"architecture": net.name, "input_size": shape, "mean": tuple(mean), "std": tuple(std),
            "crop_pct": 1.0 if small else CROP_FRACTION, "crop_mode": "center", "interpolation": "bilinear",
            "num_classes": net.shape(net.output)[0] if len(net.shape(net.output)) == 1 else 0}


def summary(spec: str | os.PathLike | Spec | Network, *, allow_paths: AllowPaths = None, **overrides: Any):
    """Per-group and total parameters, MACs and shapes, computed from the graph alone."""
    return summarize(spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides))


def build(spec: str | os.PathLike | Spec | Network, *, memory: str = "fast", max_params: int = DEFAULT_MAX_PARAMS,
          allow_paths: AllowPaths = None, features_only: bool = False, out_indices: Iterable[int] | int | None = None,
          **overrides: Any):
    """A `torch.fx.GraphModule` for `spec`, with timm's model interface (`compiler.features.ClassifierNet`:
    `forward_features`, `forward_head`, `reset_classifier`, `pretrained_cfg`, …); `overrides` set the
    spec's parameters, by their names or by timm's (`network`). `num_classes=0`, as in timm, builds the
    spec's classifier and replaces it by an identity, so the model returns its pooled features.
    Refuses networks above `max_params` before allocating.
    `memory` is the training-memory policy: `fast` (plain ops), `lean` (memory linear in depth) or `auto`
    (lean only where a batch of 64 would not fit the free memory of the first CUDA device; fast without one).

    `features_only=True` gives a backbone instead (timm's convention): its forward returns a list of
    feature maps, described by its `feature_info`; they are the spec's `tap`s, or else one per
    resolution, and `out_indices` picks among them (all by default; an int n, the last n)."""
    no_classes = overrides.get("num_classes") == 0 and not isinstance(overrides.get("num_classes"), bool)
    if no_classes:
        overrides = {k: v for k, v in overrides.items() if k != "num_classes"}
    net = spec if isinstance(spec, Network) else network(spec, allow_paths=allow_paths, **overrides)
    s = summarize(net)
    if s.params > max_params:
        raise SpecError(f"network '{net.name}' has {s.params:,} parameters, above the limit of {max_params:,}",
                        None, "raise the limit with --max-params (or max_params=) if this is intended")
    _check_options(memory, features_only, out_indices)
    gm = _finish(to_module(net), net, memory, features_only, out_indices)
    if no_classes and not features_only:
        gm.reset_classifier(0)
    return gm


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
    gm = memory_policy.apply(gm, memory_policy.resolve(memory, net, 64, free))
    return gm if features_only else backbone.classifier_net(gm, pretrained_cfg(net))


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu", memory: str = "fast",
         features_only: bool = False, out_indices: Iterable[int] | int | None = None, trust_legacy: bool = False,
         allow_nonfinite: bool = False):
    """The trained module in a checkpoint of `archspec train` (`run/best.safetensors`), in eval mode, on
    `device`: rebuilt from the spec the file carries, with its weights. The file is read as the trainer
    reads it: never unpickled, its header and every tensor checked against their digests (a file without
    them only with `trust_legacy=True`), non-finite weights refused unless `allow_nonfinite=True`.
    `memory`, `features_only` and `out_indices` are `build`'s."""
    from .runtime.train.evaluation import load_trained  # the training runtime loads only when asked

    _check_options(memory, features_only, out_indices)
    net, gm, _ = load_trained(path, device, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite)
    return _finish(gm, net, memory, features_only, out_indices).eval()


def state_dict(path: str | os.PathLike, *, trust_legacy: bool = False,
               allow_nonfinite: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint of `archspec train` under the plain keys `load_state_dict` takes
    (older files store them under `model/`), read and checked as `load` reads them."""
    from .runtime.train import checkpoint  # the training runtime loads only when asked

    return checkpoint.load(path, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite).model
