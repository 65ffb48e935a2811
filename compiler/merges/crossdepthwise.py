"""DelugeNet's cross-layer depthwise merge (Eq. 1), y = Σ_l BN_l(x_l)·w_l + b: every inflow batch-normalised
with its own statistics, scaled and shifted per channel by its own (weight, bias), the results summed, inflows
of different widths aligned at channel 0.

- The reference formula, the definition: one `F.batch_norm` per inflow (`CrossDepthwise.reference`, on the
  module in `compiler/modules.py` so that a standalone file carries it).
- Batch moments: `moments`, the one function every implementation but the reference (`F.batch_norm`'s own)
  uses in training.
- Running statistics: `update_running`, likewise the one function for them.
- Scale and shift: `affine`, each inflow's normalisation (by batch moments in training, running statistics
  in eval) and the merge's (weight, bias) as one scale per (inflow, channel) and one shift per channel.
- Implementations, each named in `IMPLEMENTATIONS`: `reference`, `concatenated`, `from_moments`,
  `running_affine`, `buffered` (torch sums), `buffered_triton` (Triton kernels, CUDA) and `folded`.
- `choose`: which implementation runs where, with a one-line reason; `run`: the module's forward once a
  pass has set it (`CrossDepthwise.dispatch`), which asks `choose` at run time.

Imports torch and the compiler's modules and kernels only."""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .. import merge_kernels as kernels
from ..modules import CrossDepthwise, ScaleSum, sum_slices, width_runs
from .registry import Choice, Implementation, Implementations, register

# A training merge whose inflows have at most this many elements each is normalised as one concatenation:
# a small merge is bound by kernel launches, and the concatenation's constant kernel count wins. Above it the
# merge is bound by memory traffic, and one batch norm per inflow moves fewer bytes than concatenating twice
# (H200, bf16: DelugeNet-146 with every merge concatenated trained at 1.56× a per-inflow hand-written module's
# images/s at batch 128, and at 0.76× at batch 1,024).
CONCAT_BELOW = 2**24


def full_precision(device: torch.device):
    """Autocast off on `device` (sums in the inflows' own dtype or fp32), where autocast exists: the meta
    device, which shape-only builds run on, has none."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


# ---------------------------------------------------------------- moments, running statistics, eval form

def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Batch statistics in fp32 at least, as batch norm keeps them for reduced-precision inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (biased var, mean) per channel of x (N, C, …, any memory format), in fp32 at least, as
    constants to autograd. On CUDA, batch norm's own statistics kernel (one read, Welford sums in fp32)."""
    if x.numel() // x.shape[1] == 1:  # F.batch_norm's own check, with its message
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.size()}")
    with torch.no_grad(), full_precision(x.device):
        if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16, torch.float32):
            mean, invstd = torch.batch_norm_stats(x, 0.0)
            return invstd.pow(-2), mean
        return torch.var_mean(x.to(_stat_dtype(x)), dim=[0] + list(range(2, x.dim())), correction=0)


_moments = moments  # for the implementations, whose `moments` argument holds given moments


@torch.no_grad()
def update_running(m: CrossDepthwise, var: torch.Tensor, mean: torch.Tensor, n: int) -> None:
    """`m`'s running statistics after one training batch of `n` values per channel with batch moments
    (var, mean) over all its channels, as `F.batch_norm` updates them: unbiased variance, momentum None a
    cumulative average; `num_batches_tracked` counts the batch."""
    m.num_batches_tracked.add_(1)
    momentum = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
    m.running_mean.lerp_(mean.flatten().to(m.running_mean.dtype), momentum)
    m.running_var.lerp_((var * (n / (n - 1))).flatten().to(m.running_var.dtype), momentum)


def affine(m: CrossDepthwise, var: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift): y = Σ_l scale_l·x_l + shift, scale one entry per input channel (inflow after inflow),
    shift one per output channel, from the moments (var, mean) of every input channel; in fp32 at least,
    differentiable in `m.weight` and `m.bias`."""
    return _scale_shift(m.weight, m.bias, var, mean, m.widths, m.eps)


def _scale_shift(weight, bias, var, mean, widths, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`affine` from the tensors themselves."""
    dt = torch.promote_types(weight.dtype, torch.float32)
    scale = weight.to(dt) * torch.rsqrt(var.to(dt) + eps)
    shifts = bias.to(dt) - scale * mean.to(dt)
    width = max(widths)
    if all(c == width for c in widths):
        return scale, shifts.view(len(widths), width).sum(0)
    shift = shifts.new_zeros(width)
    for s, c in zip(shifts.split(list(widths)), widths):
        shift = shift + F.pad(s, (0, width - c))
    return scale, shift


def _weighted_sum(xs, scales, shift: torch.Tensor, widths) -> torch.Tensor:
    """Σ_l scales_l·x_l + shift per channel, narrower inputs added to the first channels, in the dtype the
    per-inflow batch norms' sum has."""
    width = max(widths)
    shape = (1, -1) + (1,) * (xs[0].dim() - 2)
    first = list(widths).index(width)
    out = torch.addcmul(shift.view(shape), xs[first], scales[first].view(shape))
    for i, (x, s, c) in enumerate(zip(xs, scales, widths)):
        if i != first:
            (out if c == width else out.narrow(1, 0, c)).addcmul_(x, s.view(shape))
    return out.to(functools.reduce(torch.promote_types, (x.dtype for x in xs)))


def _bn_backward(g, x, weight, mean, invstd, eps: float, mask):
    """Gradients (x, weight, bias) of weight·(x − mean)·invstd + bias, the batch statistics being those
    of x: batch norm's training-mode backward."""
    return torch.ops.aten.native_batch_norm_backward(g, x, weight, None, None, mean, invstd, True, eps, mask)


# ---------------------------------------------------------------- implementations

def reference(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
    """The definition: one batch norm per inflow (`CrossDepthwise.reference`)."""
    return m.reference(*xs)


class _FromMoments(torch.autograd.Function):
    """Σ_l scale_l·x_l + shift from the inflows' batch moments. Saves the weight, the inflows and their
    moments (held anyway or shared with the other merges reading them) and nothing of its own; backward
    runs one training-mode batch-norm backward per inflow, as the per-inflow graph does."""

    @staticmethod
    def forward(ctx, widths: tuple[int, ...], eps: float, weight, bias, *tensors):
        k = len(widths)
        vars_, means, xs = tensors[:k], tensors[k:2 * k], tensors[2 * k:]
        with full_precision(xs[0].device):
            scale, shift = _scale_shift(weight, bias, torch.cat(vars_), torch.cat(means), widths, eps)
            out = _weighted_sum(xs, scale.split(widths), shift, widths)
        ctx.save_for_backward(weight, *vars_, *means, *xs)
        ctx.widths, ctx.eps = widths, eps
        return out

    @staticmethod
    def backward(ctx, g):
        widths, eps = ctx.widths, ctx.eps
        k = len(widths)
        weight, *rest = ctx.saved_tensors
        vars_, means, xs = rest[:k], rest[k:2 * k], rest[2 * k:]
        need_w, need_b = ctx.needs_input_grad[2:4]
        need_x = ctx.needs_input_grad[4 + 2 * k:]
        gxs, gws, gbs = [], [], []
        with full_precision(g.device):
            invstds = torch.rsqrt(torch.cat(vars_) + eps).split(widths)
            for x, w, mean, invstd, c, nx in zip(xs, weight.split(widths), means, invstds, widths, need_x):
                if not (nx or need_w or need_b):
                    gxs.append(None)
                    continue
                gx, gw, gb = _bn_backward(g.narrow(1, 0, c).to(x.dtype), x, w, mean, invstd, eps, [nx, need_w, need_b])
                gxs.append(gx), gws.append(gw), gbs.append(gb)
            gw = torch.cat(gws).to(weight.dtype) if need_w else None
            gb = torch.cat(gbs).to(weight.dtype) if need_b else None
        return (None, None, gw, gb, *(None,) * (2 * k), *gxs)


def from_moments(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
    """Training, from each inflow's batch moments as given (shared by every merge reading the inflow; the
    lean policy's `normalise_once` pass computes them once per producer), or computed here when not given."""
    ms = moments if moments is not None and not any(t is None for t in moments) else [_moments(x) for x in xs]
    vars_, means = tuple(v for v, _ in ms), tuple(u for _, u in ms)
    update_running(m, torch.cat(vars_), torch.cat(means), xs[0].numel() // xs[0].shape[1])
    return _FromMoments.apply(tuple(m.widths), float(m.eps), m.weight, m.bias, *vars_, *means, *xs)


class _Concatenated(torch.autograd.Function):
    """k inflows of one width normalised as one concatenation `x` (made for its moments, no gradient of its
    own) from its moments, and summed. Saves only the inflows (held anyway) and per-channel statistics;
    backward concatenates again rather than keeping the concatenation, so memory stays linear in the number
    of inflows while the kernel count stays constant."""

    @staticmethod
    def forward(ctx, weight, bias, mean, invstd, eps: float, x, *xs):
        k = len(xs)
        with full_precision(x.device):
            scale = weight.to(invstd.dtype) * invstd
            shift = bias.to(invstd.dtype) - scale * mean
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = torch.addcmul(shift.view(shape), x, scale.view(shape)).to(x.dtype)
        ctx.save_for_backward(weight, mean, invstd, *xs)
        ctx.eps = eps
        return sum_slices(y, k)

    @staticmethod
    def backward(ctx, g):
        weight, mean, invstd, *xs = ctx.saved_tensors
        k = len(xs)
        need_w, need_b = ctx.needs_input_grad[0:2]
        need_x = any(ctx.needs_input_grad[6:])
        x = torch.cat(xs, 1) if k > 1 else xs[0]
        gx, gw, gb = _bn_backward(torch.cat([g.to(x.dtype)] * k, 1) if k > 1 else g.to(x.dtype), x, weight,
                                  mean, invstd, ctx.eps, [need_x, need_w, need_b])
        gxs = gx.split(xs[0].shape[1], 1) if need_x else (None,) * k
        return (gw, gb, None, None, None, None, *gxs)


def concatenated(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
    """Training: each run of inflows of one width concatenated, its moments taken at once, normalised and
    summed: a kernel count that does not grow with the number of inflows."""
    width, out, start, stats = max(m.widths), None, 0, []
    for a, b in width_runs(m.widths):
        with torch.no_grad():
            cat = torch.cat(xs[a:b], 1) if b - a > 1 else xs[a].detach()
        var, mean = _moments(cat)
        stats.append((var, mean))
        end = start + m.widths[a] * (b - a)
        y = _Concatenated.apply(m.weight[start:end], m.bias[start:end], mean, torch.rsqrt(var + m.eps),
                                float(m.eps), cat, *xs[a:b])
        if m.widths[a] < width:
            y = F.pad(y, (0, 0, 0, 0, 0, width - m.widths[a]))
        out = y if out is None else out + y
        start = end
    update_running(m, torch.cat([v for v, _ in stats]), torch.cat([u for _, u in stats]),
                   xs[0].numel() // xs[0].shape[1])
    return out


def running_affine(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
    """Eval: the running statistics as one scale per (inflow, channel) and one shift, summed in one pass
    per inflow."""
    with full_precision(xs[0].device):
        scale, shift = affine(m, m.running_var, m.running_mean)
        return _weighted_sum(xs, scale.split(m.widths), shift, m.widths)


def folded(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
    """Eval, as the inference form runs it: the module `merge_form` makes (`fold_bn.fold`)."""
    return merge_form(m)(*xs)


def merge_form(m: CrossDepthwise) -> ScaleSum:
    """A merge in eval mode as a ScaleSum: each inflow's batch norm and the merge's weight and bias one
    scale per channel, and the shifts of all inflows one sum."""
    with torch.no_grad():
        scale, shift = affine(m, m.running_var, m.running_mean)
    return ScaleSum(list(scale.to(m.weight.dtype).split(m.widths)), shift.to(m.weight.dtype))


# ---------------------------------------------------------------- buffered: one buffer for a group of merges

class Buffer:
    """One group's inflows for one step: `x[slot]` (N, H, W, C); `a[k, slot]`, merge k's scale of each
    inflow it reads (zero elsewhere); `g[k]`, merge k's output gradient (N·H·W, C), kept from its backward
    until its inflows take theirs. `readers[slot]` is the range of merges reading the slot. `nchw`: the
    inflows are laid out contiguously (not channels last), and so are the merges' outputs and the inflows'
    gradients, as the plain ops would give them. `triton`: the kernels run in Triton (None: as `choose` names
    it for the first inflow)."""

    __slots__ = ("readers", "x", "a", "g", "nchw", "triton")

    def __init__(self, readers: tuple[tuple[int, int], ...], triton: bool | None = None):
        self.readers, self.x, self.a, self.g, self.nchw, self.triton = readers, None, None, None, False, triton

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


def _laid_out(t: torch.Tensor, buf: Buffer) -> torch.Tensor:
    """`t` (channels last, from the buffer) in the inflows' layout: one layout reaches the next layers,
    so compiled regions see one stride pattern and no convolution converts."""
    return t.contiguous() if buf.nchw else t


class _Put(torch.autograd.Function):
    """Writes x into its slot; returns its batch (var, mean) in training, empty tokens otherwise (merges
    take them as inputs, so that this backward runs after theirs). Backward hands on the slot's gradient,
    with the moments' terms added."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, buf: Buffer, slot: int, training: bool):
        n, c, h, w = x.shape
        if buf.x is None:
            buf.x = torch.empty((buf.slots, n, h, w, c), dtype=x.dtype, device=x.device)
            buf.nchw = x.is_contiguous()
            if buf.triton is None:
                buf.triton = choose(training=training, buffer=True, device=x.device.type,
                                    dtype=x.dtype).name == "buffered_triton"
        elif buf.x.shape[1:] != (n, h, w, c) or buf.x.dtype != x.dtype:
            raise ValueError(f"merge buffer slot {slot}: got {tuple(x.shape)} {x.dtype}, the buffer holds "
                             f"{tuple(buf.x.shape[1:])} {buf.x.dtype} (N, H, W, C)")
        dst = buf.x[slot]
        dst.copy_(x.permute(0, 2, 3, 1))
        ctx.buf, ctx.slot, ctx.training = buf, slot, training
        if not training:
            empty = torch.empty(0, dtype=torch.float32, device=x.device)
            return empty, empty.clone()
        var, mean = moments(dst.permute(0, 3, 1, 2))
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
        gx = kernels.inflow_grad(buf.g[lo:hi], a, x.view(-1, c), scale, shift, triton=buf.triton)
        return _laid_out(gx.view(x.shape).permute(0, 3, 1, 2), buf), None, None, None


def put(buf: Buffer, x: torch.Tensor, slot: int, merges: tuple[CrossDepthwise, ...]):
    """x into `buf`; its moments if any merge of the group trains."""
    return _Put.apply(x, buf, slot, any(m.training for m in merges))


class _Merge(torch.autograd.Function):
    """y = Σ_l a[l]·x_l + b over the buffer's slots lo:hi, merge k of its group. The inflows and the scales
    are the buffer's; backward keeps g for the inflows' backward."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, buf: Buffer, k: int, lo: int, hi: int, *tokens: torch.Tensor):
        x = buf.x[lo:hi]
        L, n, h, w, c = x.shape
        if buf.a is None:
            buf.a = torch.zeros((buf.merges, buf.slots, c), dtype=a.dtype, device=a.device)
        buf.a[k, lo:hi] = a.detach()
        y = kernels.forward(x.view(L, -1, c), a, b, triton=buf.triton)
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
        ga, gb = kernels.scale_grads(x.view(L, -1, c), kept, ctx.acc, triton=buf.triton)
        return ga, gb, None, None, None, None, *(None,) * ctx.tokens


def merge(m: CrossDepthwise, buf: Buffer, k: int, lo: int, *moments: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The merge `m` (merge k of its group) over slots lo:lo+L, from the slots' (var, mean): batch-norm
    statistics in training, `m`'s running statistics in eval mode."""
    L = len(moments)
    with full_precision(m.weight.device):
        if m.training:
            var = torch.cat([v for v, _ in moments])
            mean = torch.cat([u for _, u in moments])
            update_running(m, var.detach(), mean.detach(), buf.x[0].numel() // m.widths[0])
        else:
            var, mean = m.running_var, m.running_mean
        a, b = affine(m, var, mean)
    return _Merge.apply(a.view(L, -1), b, buf, k, lo, lo + L, *(v for v, _ in moments))


def _buffered(triton: bool):
    def run(m: CrossDepthwise, *xs: torch.Tensor, moments=None) -> torch.Tensor:
        """One merge with a buffer of its own (the `merge_buffer` pass shares one among a group)."""
        buf = Buffer(((0, 1),) * len(xs), triton=triton)
        return merge(m, buf, 0, 0, *(put(buf, x, i, (m,)) for i, x in enumerate(xs)))
    return run


# ---------------------------------------------------------------- the choice

def choose(*, training: bool, policy: str = "fast", compile_mode: str = "none", buffer: bool = False,
           device: str = "cpu", dtype: torch.dtype = torch.float32, numel: int = 0,
           moments: bool = False) -> Choice:
    """Which implementation runs a merge, and why. `policy`: the memory policy ("fast", "lean") or
    "inference" (the folded form); `buffer`: the graph lets its group of merges share a buffer (every
    inflow as wide as the merge, read in the order the graph makes them); `numel`: elements per inflow;
    `moments`: the inflows' batch moments are given (computed once per producer)."""
    if policy == "inference":
        return Choice("folded", "inference form: the running statistics folded into one weighted sum, as exported")
    if policy == "fast" and compile_mode != "whole" and buffer:
        if device == "cuda" and kernels.use_triton_for(dtype):
            return Choice("buffered_triton", "fast training on CUDA: each inflow read once per merge, by Triton")
        return Choice("buffered", "fast training: each inflow written once and read once per merge, moments once")
    if not training:
        return Choice("running_affine", "eval: fixed per-channel scales and one shift, one pass per inflow")
    if moments:
        return Choice("from_moments", "lean training: moments shared per producer, no normalised copy held")
    if numel > CONCAT_BELOW:
        return Choice("reference", "large inflows are memory-bound: per-inflow batch norm moves the fewest bytes")
    return Choice("concatenated", "small inflows are launch-bound: a kernel count constant in the inflows")


def run(m: CrossDepthwise, *xs: torch.Tensor, moments=None, policy: str = "fast",
        compile_mode: str = "none") -> torch.Tensor:
    """`m`'s forward under a policy (set as `m.dispatch` by the `merge_dispatch` pass): the implementation
    `choose` names for this call."""
    given = moments is not None and not any(t is None for t in moments)
    c = choose(training=m.training, policy=policy, compile_mode=compile_mode, device=xs[0].device.type,
               dtype=xs[0].dtype, numel=xs[0].numel(), moments=given)
    return IMPLEMENTATIONS.all()[c.name].run(m, *xs, moments=moments)


def _uniform(m: CrossDepthwise) -> bool:
    return len(set(m.widths)) == 1


IMPLEMENTATIONS = register("crossdepthwise", Implementations(
    CrossDepthwise,
    Implementation("reference", "one F.batch_norm per inflow: the definition", reference)))
IMPLEMENTATIONS.add(Implementation("concatenated", "one concatenation per run of equal widths", concatenated,
                                   modes=("train",)))
IMPLEMENTATIONS.add(Implementation("from_moments", "Σ scale·x + shift from shared moments", from_moments,
                                   modes=("train",)))
IMPLEMENTATIONS.add(Implementation("running_affine", "Σ scale·x + shift from running statistics", running_affine,
                                   modes=("eval",)))
IMPLEMENTATIONS.add(Implementation("folded", "the inference form's ScaleSum", folded, modes=("eval",),
                                   learns=False))
IMPLEMENTATIONS.add(Implementation("buffered", "one stacked buffer, torch sums", _buffered(False),
                                   accepts=_uniform))
IMPLEMENTATIONS.add(Implementation("buffered_triton", "one stacked buffer, Triton kernels", _buffered(True),
                                   devices=("cuda",), accepts=_uniform,
                                   available=lambda: kernels.triton_kernels() is not None))
