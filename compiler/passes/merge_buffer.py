"""Buffered cross-layer merges: a training-speed pass for the fast policy. A DelugeNet block of L layers
runs O(L²) per-inflow batch norms, each moving its inflow four to six times per step. Here the tensors
that a group of CrossDepthwise merges reads (a block's outputs) are written once into one channels-last
buffer as they are made, with their batch moments computed once; each merge is then one kernel
(Σ_l scale·x_l + shift, `merge_kernels.py`) that reads each inflow once, and its backward keeps its
gradient and reads each inflow once more for the scales' gradients. Once every merge reading an inflow
is done, one kernel sums their kept gradients into the inflow's, with the moments' terms added.

Exact, as the per-inflow batch norms are: each inflow is normalised by its own batch statistics
(mean, biased variance, each merge's eps), scaled and shifted per (inflow, channel); each merge updates
its own running statistics as batch norm does. In eval mode the merges use their running statistics.
Parameters, buffers and state_dict keys do not change, and the merge modules are not called (their
hooks do not run). The buffer is a Python object flowing through the graph, so the result runs eagerly,
captured as a CUDA graph, or regionally compiled with these calls left out of the regions (their nodes
carry `meta["eager"]`); not under whole-model torch.compile (which fuses merges itself) or export."""

from __future__ import annotations

import torch
import torch.fx as fx

from .. import merge_kernels as kernels
from ..modules import CrossDepthwise


class Buffer:
    """One group's inflows for one step: `x[slot]` (N, H, W, C); `a[k, slot]`, merge k's scale of each
    inflow it reads (zero elsewhere); `g[k]`, merge k's output gradient (N·H·W, C), kept from its
    backward until its inflows take theirs. `readers[slot]` is the range of merges reading the slot.
    `nchw`: the inflows are laid out contiguously (not channels last), and so are the merges' outputs
    and the inflows' gradients, as the plain ops would give them."""

    __slots__ = ("readers", "x", "a", "g", "nchw")

    def __init__(self, readers: tuple[tuple[int, int], ...]):
        self.readers, self.x, self.a, self.g, self.nchw = readers, None, None, None, False

    @property
    def slots(self) -> int:
        return len(self.readers)

    @property
    def merges(self) -> int:
        return max(hi for _, hi in self.readers)

    def __repr__(self) -> str:
        return f"Buffer(slots={self.slots}, merges={self.merges})"


def open_buffer(readers: tuple[tuple[int, int], ...]) -> Buffer:
    return Buffer(readers)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(biased var, mean) per channel of x (N, H, W, C), in fp32 at least, as batch norm keeps them. On
    CUDA, batch norm's own statistics kernel (one read of x, Welford sums in fp32)."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16, torch.float32):
        mean, invstd = torch.batch_norm_stats(x.permute(0, 3, 1, 2), 0.0)
        return invstd.pow(-2), mean
    flat = x.reshape(-1, x.shape[-1])
    return torch.var_mean(flat.to(torch.promote_types(x.dtype, torch.float32)), dim=0, correction=0)


class _Put(torch.autograd.Function):
    """Writes x into its slot; returns its batch (var, mean) in training, empty tokens otherwise (merges
    take them as inputs, so that this backward runs after theirs). Backward hands on the slot's
    gradient, with the moments' terms added."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, buf: Buffer, slot: int, training: bool):
        n, c, h, w = x.shape
        if buf.x is None:
            buf.x = torch.empty((buf.slots, n, h, w, c), dtype=x.dtype, device=x.device)
            buf.nchw = x.is_contiguous()
        elif buf.x.shape[1:] != (n, h, w, c) or buf.x.dtype != x.dtype:
            raise ValueError(f"merge buffer slot {slot}: got {tuple(x.shape)} {x.dtype}, the buffer holds "
                             f"{tuple(buf.x.shape[1:])} {buf.x.dtype} (N, H, W, C)")
        dst = buf.x[slot]
        dst.copy_(x.permute(0, 2, 3, 1))
        ctx.buf, ctx.slot, ctx.training = buf, slot, training
        if not training:
            empty = torch.empty(0, dtype=torch.float32, device=x.device)
            return empty, empty.clone()
        if n * h * w == 1:  # batch norm's own check, with its message
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
        var, mean = _moments(dst)
        ctx.save_for_backward(mean)
        return var, mean

    @staticmethod
    def backward(ctx, g_var: torch.Tensor, g_mean: torch.Tensor):
        buf, slot = ctx.buf, ctx.slot
        x = buf.x[slot]
        if buf.g is None:  # no merge reading it took part in the loss
            return torch.zeros_like(x).permute(0, 3, 1, 2), None, None, None
        c = x.shape[-1]
        lo, hi = buf.readers[slot]
        a = buf.a[lo:hi, slot]
        if ctx.training:
            (mean,) = ctx.saved_tensors
            m = x.numel() // c
            scale = g_var.to(a.dtype) * (2.0 / m)  # d var / d x = 2 (x − mean) / M; d mean / d x = 1 / M
            shift = g_mean.to(a.dtype) / m - scale * mean
        else:
            scale = shift = torch.zeros(c, dtype=a.dtype, device=x.device)
        gx = kernels.inflow_grad(buf.g[lo:hi], a, x.view(-1, c), scale, shift)
        return _laid_out(gx.view(x.shape).permute(0, 3, 1, 2), buf), None, None, None


def _laid_out(t: torch.Tensor, buf: Buffer) -> torch.Tensor:
    """`t` (channels last, from the buffer) in the inflows' layout: one layout reaches the next layers,
    so compiled regions see one stride pattern and no convolution converts."""
    return t.contiguous() if buf.nchw else t


def put(buf: Buffer, x: torch.Tensor, slot: int, merges: tuple[CrossDepthwise, ...]):
    """x into `buf`; its moments if any merge of the group trains."""
    return _Put.apply(x, buf, slot, any(m.training for m in merges))


class _Merge(torch.autograd.Function):
    """y = Σ_l a[l]·x_l + b over the buffer's slots lo:hi, merge k of its group. The inflows and the
    scales are the buffer's; backward keeps g for the inflows' backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, buf: Buffer, k: int, lo: int, hi: int,
                *tokens: torch.Tensor):
        x = buf.x[lo:hi]
        L, n, h, w, c = x.shape
        if buf.a is None:
            buf.a = torch.zeros((buf.merges, buf.slots, c), dtype=a.dtype, device=a.device)
        buf.a[k, lo:hi] = a.detach()
        y = kernels.forward(x.view(L, -1, c), a, b)
        ctx.buf, ctx.k, ctx.lo, ctx.hi, ctx.tokens, ctx.acc = buf, k, lo, hi, len(tokens), a.dtype
        return _laid_out(y.view(n, h, w, c).permute(0, 3, 1, 2), buf)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        buf, lo, hi = ctx.buf, ctx.lo, ctx.hi
        x = buf.x[lo:hi]
        L, c = x.shape[0], x.shape[-1]
        if buf.g is None:  # zeros: a merge left out of the loss adds nothing to its inflows
            buf.g = torch.zeros((buf.merges, x[0].numel() // c, c), dtype=x.dtype, device=x.device)
        kept = buf.g[ctx.k]
        kept.view(x.shape[1:]).copy_(g.permute(0, 2, 3, 1))
        ga, gb = kernels.scale_grads(x.view(L, -1, c), kept, ctx.acc)
        return ga, gb, None, None, None, None, *(None,) * ctx.tokens


def merge(m: CrossDepthwise, buf: Buffer, k: int, lo: int, *moments: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The merge `m` (merge k of its group) over slots lo:lo+L, from the slots' (var, mean): batch-norm
    statistics in training, `m`'s running statistics in eval mode."""
    L, c = len(moments), m.widths[0]
    with torch.autocast(m.weight.device.type, enabled=False):
        if m.training:
            var = torch.stack([v for v, _ in moments])
            mean = torch.stack([u for _, u in moments])
            _update_running(m, var.detach(), mean.detach(), buf.x[0].numel() // c)
        else:
            var, mean = m.running_var.view(L, c), m.running_mean.view(L, c)
        dt = torch.promote_types(m.weight.dtype, torch.float32)
        a = m.weight.view(L, c).to(dt) * torch.rsqrt(var.to(dt) + m.eps)
        b = (m.bias.view(L, c).to(dt) - a * mean.to(dt)).sum(0)
    return _Merge.apply(a, b, buf, k, lo, lo + L, *(v for v, _ in moments))


@torch.no_grad()
def _update_running(m: CrossDepthwise, var: torch.Tensor, mean: torch.Tensor, n: int) -> None:
    """Running statistics as `F.batch_norm` updates them (unbiased variance; momentum None averages)."""
    m.num_batches_tracked.add_(1)
    momentum = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
    m.running_mean.lerp_(mean.flatten().to(m.running_mean.dtype), momentum)
    m.running_var.lerp_((var * (n / (n - 1))).flatten().to(m.running_var.dtype), momentum)


def _merges(gm: fx.GraphModule) -> list[fx.Node]:
    """The CrossDepthwise calls the pass can take: plain modules, every inflow a node of one shape, and
    every inflow as wide as the merge."""
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.kwargs:
            continue
        m = gm.get_submodule(node.target)
        if type(m) is not CrossDepthwise or not node.args or not all(isinstance(a, fx.Node) for a in node.args):
            continue
        shapes = {a.meta.get("shape") for a in node.args}
        if len(set(m.widths)) == 1 and len(shapes) == 1 and None not in shapes:
            out.append(node)
    return out


def _groups(merges: list[fx.Node]) -> list[list[fx.Node]]:
    """Merges that share an inflow, transitively: each group gets one buffer."""
    parent: dict[fx.Node, fx.Node] = {}

    def root(n: fx.Node) -> fx.Node:
        while parent.setdefault(n, n) is not n:
            n = parent[n]
        return n

    for node in merges:
        for a in node.args[1:]:
            parent[root(a)] = root(node.args[0])
    groups: dict[fx.Node, list[fx.Node]] = {}
    for node in merges:
        groups.setdefault(root(node.args[0]), []).append(node)
    return list(groups.values())


def apply(gm: fx.GraphModule) -> fx.GraphModule:
    """`gm` with each group of CrossDepthwise merges reading one buffer: a `put` after every inflow, and
    every merge a `merge` call on its module. A group whose merges read their inflows in another order
    than the graph makes them (so that a merge's inflows are not consecutive slots) keeps its plain
    merges, as does one where the merges reading an inflow are not consecutive. Modifies `gm` in place and
    returns it."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    changed = False
    for group in _groups(_merges(gm)):
        slots = sorted({a for node in group for a in node.args}, key=order.__getitem__)
        index = {n: i for i, n in enumerate(slots)}
        if not all([index[a] for a in node.args] == list(range(index[node.args[0]], index[node.args[0]] + len(node.args)))
                   for node in group):
            continue
        readers = [[k for k, node in enumerate(group) if a in node.args] for a in slots]
        if not all(r == list(range(r[0], r[-1] + 1)) for r in readers):
            continue
        g = gm.graph
        anchor = slots[0] if slots[0].op != "placeholder" else [n for n in g.nodes if n.op == "placeholder"][-1]
        with g.inserting_after(anchor):
            buf = g.call_function(open_buffer, (tuple((r[0], r[-1] + 1) for r in readers),))
        with g.inserting_before(buf):  # in order, each before the buffer
            modules = tuple(g.get_attr(node.target) for node in group)
        buf.meta.update(op="buffer", spec_path=group[-1].meta.get("spec_path"), eager=True)
        puts: dict[fx.Node, fx.Node] = {}
        for i, src in enumerate(slots):
            with g.inserting_after(buf if i == 0 or src.op == "placeholder" else src):
                puts[src] = g.call_function(put, (buf, src, i, modules))
            puts[src].meta.update(src.meta, op="buffer", eager=True)
        for k, (node, module) in enumerate(zip(group, modules)):
            with g.inserting_before(node):
                new = g.call_function(merge, (module, buf, k, index[node.args[0]], *(puts[a] for a in node.args)))
            new.meta.update(node.meta, eager=True)
            node.replace_all_uses_with(new)
            g.erase_node(node)
        changed = True
    if changed:
        gm.graph.lint()
        gm.recompile()
    return gm
