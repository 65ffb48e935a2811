"""Backbones: a built network's feature maps as its outputs, found from the structure codegen records in
each fx node's `meta`, with timm's conventions where timm has one.

- The default features are the network's stages: one per resolution, each the last tensor at that
  resolution that every path from input to output crosses, preferring the output of a block (so a
  transition's batch norm stays in the next stage), and, for the last resolution, the map the global
  pooling reads (timm's `forward_features`: a pre-activation head's norm and activation included).
- A spec that writes `tap` ops states its features instead: every tap, in order.

`features_only` copies the graph, makes its output the list of chosen maps and drops what they do not
read (the head); `forward_intermediates` runs a whole model and collects them. `get_classifier` and
`reset_classifier` reach the last linear, as timm's models of those names do. `ClassifierNet`, which
`build` returns, carries them as methods, with the rest of a timm model's interface: `forward_features`
and `forward_head` (the graph cut at the map the pooling reads), `num_features` and `pretrained_cfg`."""

from __future__ import annotations

import math
import operator
from collections import Counter
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from archspec.graph.ir import Network
from archspec.graph.ops import OPS, LinearArgs
from archspec.errors import RunError, SpecError

from .init import initialise_module

TAPS = "taps"  # fx node meta: names of the spec taps on this node's output; GraphModule meta: all of them


class FeatureInfo(list):
    """One dict per returned feature map, in output order: `num_chs`, `reduction` (input size over the
    map's), `module` (the spec path of the op that makes it), `name` (a tap's name, else `module`) and
    `index` (its place among all the network's features, which `out_indices` counts). The helpers are
    timm's; unlike timm's `FeatureInfo`, the list holds only the features returned."""

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [f[key] for f in self]
        if isinstance(idx, int):
            return self[idx][key]
        return [self[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        pick = (lambda f: dict(f)) if keys is None else (lambda f: {k: f[k] for k in keys})
        if idx is None:
            return [pick(f) for f in self]
        return pick(self[idx]) if isinstance(idx, int) else [pick(self[i]) for i in idx]

    @property
    def out_indices(self) -> tuple[int, ...]:
        return tuple(f["index"] for f in self)


class FeatureNet(fx.GraphModule):
    """A GraphModule whose forward returns a list of feature maps. `feature_info` lives in the module's
    `meta`, which deep copies keep."""

    @property
    def feature_info(self) -> FeatureInfo:
        return self.meta["feature_info"]


# -- which tensors are features

def mark_taps(gm: fx.GraphModule, net: Network) -> fx.GraphModule:
    """Record `net`'s `tap` ops on `gm`, which codegen made from `net`: a tap lowers to nothing, so its
    name goes into the `meta` of the fx node whose output it marks. Two taps of one name are an error
    at the second."""
    last = {n.meta["spec_path"]: n for n in gm.graph.nodes if "spec_path" in n.meta}
    ops_in_layer = Counter(n.layer for n in net.nodes() if n.role == "op" and n.layer)
    names: list[str] = []
    for node in net.nodes():
        if node.op != "tap":
            continue
        if node.layer and ops_in_layer[node.layer] == 1:
            raise SpecError(f"this tap is a whole layer of {node.block}: the block would wire it as one",
                            node.loc, "tap after the block, or inside a layer template with the ops it follows",
                            sources=net.sources)
        name = node.args.name or node.name
        if name in names:
            raise SpecError(f"two taps are named '{name}'", node.loc, "give each tap its own name (a layer template's "
                            "tap can take it from a parameter: `tap(name)`)", sources=net.sources)
        names.append(name)
        src = net.inputs(node.name)[0]
        while src not in last:  # an identity or another tap: no fx node of its own
            src = net.inputs(src)[0]
        target = last[src]
        target.meta[TAPS] = (*target.meta.get(TAPS, ()), name)
    gm.meta[TAPS] = tuple(names)
    return gm


def _data_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes the input flows through, in graph order (not the module references a pass may add)."""
    reached: set[fx.Node] = set()
    out = []
    for n in gm.graph.nodes:
        if n.op == "placeholder" or any(a in reached for a in n.all_input_nodes):
            reached.add(n)
            out.append(n)
    return out


def _trunk(nodes: list[fx.Node]) -> list[fx.Node]:
    """The nodes every path from input to output crosses: in graph order, those no data edge jumps over."""
    pos = {n: i for i, n in enumerate(nodes)}
    trunk, reach = [], 0
    for i, n in enumerate(nodes):
        if reach <= i:
            trunk.append(n)
        reach = max([reach] + [pos[u] for u in n.users if u in pos])
    return trunk


def _is_map(n: fx.Node) -> bool:
    """A node computing one C×H×W tensor (not a module reference, not a fused op's tuple of them)."""
    shape = n.meta.get("shape")
    return (n.op in ("call_module", "call_function", "call_method") and isinstance(shape, tuple) and len(shape) == 3
            and all(isinstance(d, int) for d in shape))


def _stages(gm: fx.GraphModule) -> list[fx.Node]:
    """The default features: see the module docstring."""
    nodes = _data_nodes(gm)
    block_end = {n.meta["block"]: n for n in nodes if n.meta.get("block")}
    ends = set(block_end.values())
    maps = [n for n in _trunk(nodes) if _is_map(n)]
    groups: list[list[fx.Node]] = []
    for n in maps:
        if groups and groups[-1][-1].meta["shape"][1:] == n.meta["shape"][1:]:
            groups[-1].append(n)
        else:
            groups.append([n])
    stages = [next((n for n in reversed(g) if n in ends), g[-1]) for g in groups[:-1]]
    return stages + [groups[-1][-1]] if groups else stages


def _spec_taps(gm: fx.GraphModule) -> list[tuple[str, fx.Node]]:
    """(name, node) for every tap recorded by `mark_taps`, in graph order. A memory pass may leave a name
    on several nodes (a fused op and the item taken from its result): the last is the tensor. It may also
    have fused away a tapped tensor that nothing else returned: that is an error, not a shorter list."""
    found: dict[str, fx.Node] = {}
    order: dict[fx.Node, int] = {}
    for i, n in enumerate(gm.graph.nodes):
        order[n] = i
        if _is_map(n) or n.op == "placeholder":
            for name in n.meta.get(TAPS, ()):
                found[name] = n
    lost = [t for t in gm.meta.get(TAPS, ()) if t not in found]
    if lost:
        raise RunError(f"the tap '{lost[0]}' is no longer in this module: a memory pass fused its tensor away",
                       "build it with memory='fast', or with features_only=True, which keeps every tap")
    return sorted(found.items(), key=lambda item: order[item[1]])


def features(gm: fx.GraphModule) -> list[tuple[str, fx.Node]]:
    """(name, node) for each of `gm`'s features, in order: its spec's taps, or else its stages."""
    taps = _spec_taps(gm)
    if taps:
        return taps
    stages = _stages(gm)
    if not stages:
        raise RunError(f"network '{type(gm).__name__}' has no feature maps (C×H×W tensors) to return")
    return [(n.meta["spec_path"], n) for n in stages]


def take(count: int, indices: int | Iterable[int] | None, what: str = "out_indices") -> list[int]:
    """`indices` among `count` features as sorted non-negative positions: None is all of them, an int n
    the last n (timm's `feature_take_indices`), a sequence those (negative ones count from the end)."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= count:
            raise RunError(f"{what}={indices}: asks for the last {indices} of {count} features",
                           f"give 1 to {count}, or a list of indices from 0 to {count - 1}")
        return list(range(count - indices, count))
    try:
        items = list(indices)  # type: ignore[arg-type]
    except TypeError:
        raise RunError(f"{what} must be a list of feature indices, got {type(indices).__name__}") from None
    if not items:
        raise RunError(f"{what} is empty", f"give indices from 0 to {count - 1}")
    out = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise TypeError
            i = operator.index(item)  # an int, or an integer numpy or 0-d tensor value
        except TypeError:
            raise RunError(f"{what} holds {item!r}, which is not an index",
                           f"give indices from 0 to {count - 1}") from None
        if not -count <= i < count:
            raise RunError(f"{what} holds {i}, but the network has {count} features",
                           f"give indices from 0 to {count - 1} (or -{count} to -1 from the end)")
        if i % count in out:
            raise RunError(f"{what} names feature {i % count} twice")
        out.append(i % count)
    return sorted(out)


def _reduction(gm: fx.GraphModule, node: fx.Node) -> int:
    """The input's height over the map's, as timm's nominal stride."""
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    return max(1, round(x.meta["shape"][1] / node.meta["shape"][1]))


def _info(gm: fx.GraphModule, chosen: list[tuple[int, str, fx.Node]]) -> FeatureInfo:
    return FeatureInfo(dict(num_chs=n.meta["shape"][0], reduction=_reduction(gm, n), module=n.meta["spec_path"],
                            name=name, index=i) for i, name, n in chosen)


def _chosen(gm: fx.GraphModule, out_indices: int | Iterable[int] | None, what: str
            ) -> list[tuple[int, str, fx.Node]]:
    feats = features(gm)
    return [(i, *feats[i]) for i in take(len(feats), out_indices, what)]


# -- the transforms

def _live(graph: fx.Graph) -> None:
    """Drop every node the output does not read (dead-code elimination that also drops dropout)."""
    keep, todo = set(), [n for n in graph.nodes if n.op == "output"]
    while todo:
        n = todo.pop()
        if n not in keep:
            keep.add(n)
            todo.extend(n.all_input_nodes)
    for n in reversed(list(graph.nodes)):
        if n not in keep and n.op != "placeholder":
            graph.erase_node(n)


def features_only(gm: fx.GraphModule, out_indices: int | Iterable[int] | None = None) -> FeatureNet:
    """A module whose forward returns the feature maps `out_indices` picks (all by default), in network
    order, sharing `gm`'s weights; the ops after the last of them are gone, so are their parameters."""
    chosen = _chosen(gm, out_indices, "out_indices")
    graph, env = fx.Graph(), {}
    graph.graph_copy(gm.graph, env)
    graph.output([env[n] for _, _, n in chosen])
    _live(graph)
    kept = {name for _, name, n in chosen if name in n.meta.get(TAPS, ())}
    for n in graph.nodes:
        if TAPS in n.meta:
            n.meta[TAPS] = tuple(t for t in n.meta[TAPS] if t in kept)
    net = FeatureNet(gm, graph, class_name=type(gm).__name__ + "Features")
    net.meta.update(gm.meta, feature_info=_info(gm, chosen))
    net.meta[TAPS] = tuple(t for t in gm.meta.get(TAPS, ()) if t in kept)
    return net


class _StopEarly(Exception):
    pass


class _Collect(fx.Interpreter):
    """Runs a GraphModule, keeping the values of `want` and stopping once it has them all if `early`."""

    def __init__(self, gm: fx.GraphModule, want: set[fx.Node], early: bool):
        super().__init__(gm)
        self.want, self.early, self.got = want, early, {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.want:
            self.got[n] = out
            if self.early and len(self.got) == len(self.want):
                raise _StopEarly
        return out


def forward_intermediates(gm: fx.GraphModule, x: torch.Tensor, indices: int | Iterable[int] | None = None, *,
                          intermediates_only: bool = False) -> Any:
    """`(output, [feature maps])` from one run of `gm` on `x`, or only the maps with `intermediates_only`
    (which stops after the last). Names as timm's `forward_intermediates`, whose `indices` these are
    (an int n: the last n); unlike timm, `output` is the model's own output (its logits), not the map
    its pooling reads, which is the last default feature."""
    chosen = _chosen(gm, indices, "indices")
    run = _Collect(gm, {n for _, _, n in chosen}, early=intermediates_only)
    try:
        out = run.run(x)
    except _StopEarly:
        out = None
    maps = [run.got[n] for _, _, n in chosen]
    return maps if intermediates_only else (out, maps)


def feature_info(gm: fx.GraphModule, out_indices: int | Iterable[int] | None = None) -> FeatureInfo:
    """What `features_only(gm, out_indices)` would return, without building it."""
    return _info(gm, _chosen(gm, out_indices, "out_indices"))


# -- the classifier

def _last_linear(gm: fx.GraphModule) -> fx.Node | None:
    return next((n for n in reversed(gm.graph.nodes) if n.op == "call_module" and n.meta.get("op") == "linear"), None)


def _classifier_node(gm: fx.GraphModule) -> fx.Node:
    node = _last_linear(gm)
    if node is None:
        raise RunError(f"network '{type(gm).__name__}' has no linear classifier",
                       "get_classifier and reset_classifier act on the last `linear` of a spec")
    return node


def get_classifier(gm: fx.GraphModule) -> nn.Module:
    """The module of the network's last `linear` (timm's `get_classifier`)."""
    return gm.get_submodule(_classifier_node(gm).target)


@torch.no_grad()
def reset_classifier(gm: fx.GraphModule, num_classes: int) -> fx.GraphModule:
    """Replace the last `linear` by a fresh one of `num_classes` outputs, on the old one's device and
    dtype, initialised as the compiler initialises a `linear`; 0 replaces it by an identity, so the
    model returns its pooled features (as timm's `reset_classifier`). Modifies `gm` and returns it."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise RunError(f"num_classes must be a whole number ≥ 0, got {num_classes!r}")
    node = _classifier_node(gm)
    old = gm.get_submodule(node.target)
    weight = next(iter(old.parameters()), next(iter(gm.parameters()), None))
    fan_in = old.in_features if isinstance(old, nn.Linear) else math.prod(node.meta["shape"])
    if num_classes == 0:
        new: nn.Module = nn.Identity()
        shape = (fan_in,)
    else:
        bias = True if not isinstance(old, nn.Linear) else old.bias is not None
        kw = {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
        new = nn.Linear(fan_in, num_classes, bias=bias, **kw)
        initialise_module(OPS["linear"], new, LinearArgs(out=num_classes, bias=bias))
        shape = (num_classes,)
    parent, _, leaf = node.target.rpartition(".")
    setattr(gm.get_submodule(parent), leaf, new)
    node.meta["shape"] = shape
    return gm


# -- timm's model interface

_PARTS = "_timm_parts"  # instance attribute (not a submodule): the cached feature and head modules


def _pooled_input(gm: fx.GraphModule) -> fx.Node:
    """The last default feature: the map the global pooling reads (timm's `forward_features` output)."""
    stages = _stages(gm)
    if not stages:
        raise RunError(f"network '{type(gm).__name__}' has no feature maps (C×H×W tensors) for forward_features")
    return stages[-1]


def _sub_module(gm: fx.GraphModule, start: fx.Node | None, end: fx.Node, name: str) -> fx.GraphModule:
    """A module sharing `gm`'s weights that computes `end`'s value from `start`'s (from the input where
    `start` is None): a copy of the graph, `start` made its input, cut to what `end` reads."""
    graph, env = fx.Graph(), {}
    graph.graph_copy(gm.graph, env)
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if start is not None:
        with graph.inserting_before(next(iter(graph.nodes))):
            x = graph.placeholder("features")
        env[start].replace_all_uses_with(x)
    graph.output(env[end])
    _live(graph)
    if start is not None:
        for p in inputs:
            if p.users:
                raise RunError(f"network '{type(gm).__name__}': its head reads the input, not only the features")
            graph.erase_node(p)
    return fx.GraphModule(gm, graph, class_name=f"{type(gm).__name__}{name}")


class ClassifierNet(fx.GraphModule):
    """A whole network (its forward returns the logits) with the interface of a timm model, so code written
    against timm finds it: `forward_features` (the map the global pooling reads), `forward_head(x,
    pre_logits=False)` (the rest: pooling, any hidden layers and dropout, the classifier; with
    `pre_logits` the classifier's input), `get_classifier`, `reset_classifier`, `forward_intermediates`,
    `num_features` (channels of `forward_features`), `head_hidden_size` (the classifier's input size),
    `num_classes`, `feature_info` (every feature, as `features_only` would return) and `pretrained_cfg`
    (kept in the module's `meta`, with the taps; deep copies keep both). The state_dict is the plain
    module's. The feature and head modules share the weights; they are rebuilt when the classifier or a
    child module is replaced, not when a module deeper down is (rebuild the model after such surgery)."""

    def _part(self, which: str) -> fx.GraphModule:
        """The module of `which` part (features, head, pre_logits), built on first use and again once the
        classifier or a child module has been replaced."""
        node = _last_linear(self)
        key = (None if node is None else id(self.get_submodule(node.target)), *map(id, self.children()))
        cached = self.__dict__.get(_PARTS)
        if cached is None or cached[0] != key:
            cached = self.__dict__[_PARTS] = (key, {})
        parts = cached[1]
        if which not in parts:
            cut = _pooled_input(self)
            if which == "features":
                parts[which] = _sub_module(self, None, cut, "Features")
            elif which == "head":
                parts[which] = _sub_module(self, cut, _output(self), "Head")
            else:
                parts[which] = _sub_module(self, cut, _classifier_node(self).args[0], "PreLogits")
        return parts[which]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._part("features")(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._part("pre_logits" if pre_logits else "head")(x)

    def get_classifier(self) -> nn.Module:
        return get_classifier(self)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier of `num_classes` outputs (0: none, the model returns its pooled features).
        The pooling is the spec's: `global_pool` may only name average pooling."""
        if global_pool not in (None, "avg"):
            raise RunError(f"reset_classifier(global_pool={global_pool!r}): the pooling is the spec's",
                           "leave global_pool out, or change the spec's head")
        reset_classifier(self, num_classes)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Iterable[int] | None = None, *,
                              intermediates_only: bool = False) -> Any:
        return forward_intermediates(self, x, indices, intermediates_only=intermediates_only)

    @property
    def num_features(self) -> int:
        return _pooled_input(self).meta["shape"][0]

    @property
    def head_hidden_size(self) -> int:
        return math.prod(_classifier_node(self).args[0].meta["shape"])

    @property
    def num_classes(self) -> int:
        """The classifier's outputs (0 once reset to none); the output's size where no `linear` ends it."""
        node = _last_linear(self)
        if node is None:
            return math.prod(_output(self).meta["shape"])
        head = self.get_submodule(node.target)
        return head.out_features if isinstance(head, nn.Linear) else 0

    @property
    def feature_info(self) -> FeatureInfo:
        return feature_info(self)

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.meta.setdefault("pretrained_cfg", {})

    default_cfg = pretrained_cfg  # timm's older name


def _output(gm: fx.GraphModule) -> Any:
    return next(n for n in gm.graph.nodes if n.op == "output").args[0]


def classifier_net(gm: fx.GraphModule, pretrained_cfg: dict[str, Any] | None = None) -> ClassifierNet:
    """`gm` as a `ClassifierNet`: the same weights, graph and `meta`. The graph moves to the new module:
    use it in place of `gm` from then on."""
    net = ClassifierNet(gm, gm.graph, class_name=type(gm).__name__)
    net.meta.update(gm.meta)
    if pretrained_cfg is not None:
        net.meta["pretrained_cfg"] = dict(pretrained_cfg)
    return net
