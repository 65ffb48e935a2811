"""Trained networks back from their checkpoints: rebuilt from the spec text each carries, loaded with
its weights, and measured on test data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from archspec.graph.builder import DEFAULT_MAX_PARAMS
from archspec.compiler.codegen import to_module
from archspec.compiler.passes import memory as memory_policy
from archspec.compiler.activation_memory import refuse_above
from archspec.compiler.costs import summarize
from archspec.graph.elaborate import elaborate
from archspec.graph.ir import Network
from archspec.errors import RunError
from archspec.runtime import data as D

from . import checkpoint as ckpt
from .devices import Dist, pick_device
from .feed import Feed
from .scores import Tally, tally_batches
from .specfiles import read_spec, spec_from_files


def network_of(ck: ckpt.Checkpoint, path: str | Path, max_params: int = DEFAULT_MAX_PARAMS) -> Network:
    """The network a checkpoint was trained as, rebuilt from the spec text it carries. The spec may come
    from a stranger, so `archspec.build`'s size limit holds before anything is allocated for it."""
    missing = [k for k in ("files", "main", "params") if k not in ck.meta]
    if missing:
        raise RunError(f"{path} does not say what network it holds (no '{missing[0]}' in its metadata)")
    try:
        spec = spec_from_files(ck.meta["files"], ck.meta["main"])
    except RunError as e:
        raise RunError(f"{path}: {e.message}", e.hint) from None
    net = elaborate(spec, ck.meta["params"])
    params = summarize(net).params
    if params > max_params:
        raise RunError(f"{path} holds network '{net.name}' of {params:,} parameters, above the limit of "
                       f"{max_params:,}", "a checkpoint from archspec train holds a network it could build")
    return net


def load_trained(path: str | Path, device: torch.device | str = "cpu", batch: int = 1,
                 max_memory: int | None = None, *, trust_legacy: bool = False,
                 allow_nonfinite: bool = False) -> tuple[Network, nn.Module, ckpt.Checkpoint]:
    """A checkpoint's network, its module (plain ops) with the trained weights, and the checkpoint itself.
    The embedded spec may come from a stranger: a forward pass at `batch` must fit `max_memory` (the
    device's memory by default) before any weight is allocated. A file without digests loads only with
    `trust_legacy`, NaN or infinite weights only with `allow_nonfinite` (see `checkpoint.load`)."""
    ck = ckpt.load(path, map_location=device, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite)
    return _trained(ck, path, device, batch, max_memory)


def _trained(ck: ckpt.Checkpoint, path: str | Path, device: torch.device | str, batch: int,
             max_memory: int | None) -> tuple[Network, nn.Module, ckpt.Checkpoint]:
    net = network_of(ck, path)
    refuse_above(net, batch, training=False, device=str(device), limit=max_memory)
    model = to_module(net, init=False).to(device)
    try:
        model.load_state_dict(ck.model)
    except RuntimeError as e:
        raise RunError(f"{path}: the weights do not fit network '{net.name}': {e}") from None
    return net, model, ck


def model_from_source(source: str | Path, sets: Mapping[str, Any], seed: int = 0,
                      allow_paths: Iterable[str | Path] | None = None, batch: int = 1,
                      max_memory: int | None = None, *, trust_legacy: bool = False,
                      allow_nonfinite: bool = False) -> tuple[Network, nn.Module]:
    """A spec (weights initialised from `seed`) or a checkpoint (its trained weights, read as
    `load_trained` reads them), in eval mode; a forward pass at `batch` must fit `max_memory` before
    anything is allocated."""
    if Path(source).suffix == ".safetensors":
        if sets:
            raise RunError("--set applies to a spec; a checkpoint carries its own parameters")
        net, model, _ = load_trained(source, batch=batch, max_memory=max_memory, trust_legacy=trust_legacy,
                                     allow_nonfinite=allow_nonfinite)
    else:
        net = elaborate(read_spec(source, allow_paths), sets)
        refuse_above(net, batch, training=False, limit=max_memory)
        torch.manual_seed(seed)
        model = to_module(net)
    return net, model.eval()


def eval_source(path: str | Path, data: str | None, meta: Mapping[str, Any]) -> str | None:
    """The data to test a checkpoint on: `data` where given; otherwise the data set its metadata names,
    only when that is a built-in set at its built-in size (`data.built_in_default`). The metadata is
    the file's, not the user's: a path or a size there is never followed, and is not shown."""
    if data is not None:
        return data
    source = meta.get("data_source")
    if D.built_in_default(source):
        return source
    raise RunError(f"{path} was not trained on a built-in data set at its built-in size, so archspec does "
                   "not choose its test data", "name the test data: --data SOURCE")


def evaluate_checkpoint(path: str | Path, data: str | None = None, device: str = "auto",
                        batch_size: int = 256, max_memory: int | None = None, *, trust_legacy: bool = False,
                        allow_nonfinite: bool = False, confusion: bool = False, weights: str = "model") -> dict:
    """Test loss and accuracy (and top-5 accuracy, where there are more than 5 classes) of a checkpoint,
    rebuilt from the spec it carries, on `data` (see `eval_source` for the default). The file is read as
    `load_trained` reads it (`trust_legacy`, `allow_nonfinite`). With `confusion`, the report's
    `confusion` holds the test images' counts per (true, predicted) class pair, a list of rows, where
    there are at most `scores.MAX_CONFUSION_CLASSES` classes (`runtime.viz.confusion` draws them). With
    `weights` "ema", the moving average of the weights the run kept is evaluated."""
    dev = pick_device(device, Dist())
    ck = ckpt.load(path, map_location=dev, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite,
                   weights=weights)
    meta = ck.meta
    source = eval_source(path, data, meta)  # before the network is built or any data is read
    net, model, ck = _trained(ck, path, dev, batch_size, max_memory)
    model = memory_policy.apply(model, "fast")  # each merge runs the implementation its `choose` names
    ds = D.load(source, seed=int(meta.get("seed", 0)))
    if tuple(net.shape(net.input)) != ds.shape or tuple(net.shape(net.output)) != (ds.classes,):
        raise RunError(f"{path} holds network '{net.name}' for {'×'.join(map(str, net.shape(net.input)))} "
                       f"images and {net.shape(net.output)[0]} classes; data set '{ds.name}' does not match")
    model.eval()
    feed = Feed(ds, batch_size, dev)
    tally = tally_batches(model, feed.batches("test")[0], Tally(dev, ds.classes, confusion=confusion))
    scores = tally.totals()
    report = {"network": net.name, "data": ds.name, "epoch": ck.epoch, "test_loss": scores["loss"],
              "test_acc": scores["acc"]}
    if "top5" in scores:
        report["test_top5"] = scores["top5"]
    report["images"] = feed.size("test")
    if tally.confusion is not None:
        report["confusion"] = tally.matrix()
    return report
