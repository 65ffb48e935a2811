"""The kernels of a buffered cross-layer merge (`merges/crossdepthwise.py`, grouped by `passes/merge_buffer.py`), over L inflows stacked
in one channels-last buffer X[L, M, C] (M = N·H·W):

    forward   y[m, c]    = Σ_l A[l, c]·X[l, m, c] + b[c]
    scale_grads  GA[l, c] = Σ_m g[m, c]·X[l, m, c]        gb[c] = Σ_m g[m, c]
    inflow_grad  GX_l[m, c] = Σ_k A_k[l, c]·g_k[m, c] + s[c]·X[l, m, c] + t[c]

where the merges k that read inflow l keep their gradients g_k until it gets its own, and s, t are the
terms of its batch moments.

Each (merge, inflow) pair costs one read forward and two backward (the inflow and the merge's
gradient), where batch norm per inflow moves each inflow four to six times. On CUDA they are Triton kernels, hand-written
because no torch op reads a stack of tensors with one scale per (slice, channel) in one pass; elsewhere
(or without Triton) the same sums in torch ops, which are also the tests' reference. Sums run in fp32."""

from __future__ import annotations

import functools

import torch


@functools.cache
def triton_kernels():
    """(forward, scale_grads, inflow_grad) Triton kernels, or None where Triton does not import."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None

    @triton.jit
    def forward(X, A, B, Y, M, C, S, L, BM: tl.constexpr, BC: tl.constexpr):
        m = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < C
        mask = (m[:, None] < M) & cm[None, :]
        off = m[:, None] * C + c[None, :]
        acc = tl.zeros([BM, BC], dtype=tl.float32)
        for l in range(L):
            a = tl.load(A + l * C + c, mask=cm, other=0.0)
            x = tl.load(X + l * S + off, mask=mask, other=0.0).to(tl.float32)
            acc += x * a[None, :]
        acc += tl.load(B + c, mask=cm, other=0.0)[None, :]
        tl.store(Y + off, acc.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def scale_grads(X, G, GA, GB, M, C, S, L, ROWS, BM: tl.constexpr, BC: tl.constexpr):
        # One program owns ROWS rows and BC channels; its partial sums go to row pid of GA and GB (summed
        # after), so no atomics and a deterministic result. Its slice of g stays in cache across the L passes.
        pid = tl.program_id(0)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < C
        first = pid.to(tl.int64) * ROWS
        gsum = tl.zeros([BC], dtype=tl.float32)
        for r in range(0, ROWS, BM):
            m = first + r + tl.arange(0, BM)
            mask = (m[:, None] < M) & cm[None, :]
            g = tl.load(G + m[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
            gsum += tl.sum(g, 0)
        tl.store(GB + pid * C + c, gsum, mask=cm)
        for l in range(L):
            part = tl.zeros([BC], dtype=tl.float32)
            for r in range(0, ROWS, BM):
                m = first + r + tl.arange(0, BM)
                mask = (m[:, None] < M) & cm[None, :]
                off = m[:, None] * C + c[None, :]
                g = tl.load(G + off, mask=mask, other=0.0).to(tl.float32)
                x = tl.load(X + l * S + off, mask=mask, other=0.0).to(tl.float32)
                part += tl.sum(g * x, 0)
            tl.store(GA + (pid * L + l) * C + c, part, mask=cm)

    @triton.jit
    def inflow_grad(G, A, X, S, T, GX, M, C, K, GS, AS, BM: tl.constexpr, BC: tl.constexpr):
        m = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cm = c < C
        mask = (m[:, None] < M) & cm[None, :]
        off = m[:, None] * C + c[None, :]
        s = tl.load(S + c, mask=cm, other=0.0)
        t = tl.load(T + c, mask=cm, other=0.0)
        acc = tl.load(X + off, mask=mask, other=0.0).to(tl.float32) * s[None, :] + t[None, :]
        for k in range(K):
            a = tl.load(A + k * AS + c, mask=cm, other=0.0)
            acc += a[None, :] * tl.load(G + k * GS + off, mask=mask, other=0.0).to(tl.float32)
        tl.store(GX + off, acc.to(GX.dtype.element_ty), mask=mask)

    return forward, scale_grads, inflow_grad


def _tiles(c: int) -> tuple[int, int]:
    """(rows, channels) of a tile: channels a power of two up to 64, about 4,096 elements."""
    bc = min(64, 1 << max(c - 1, 0).bit_length())
    return max(16, 4096 // bc), bc


def use_triton_for(dtype: torch.dtype) -> bool:
    """Whether the Triton kernels take CUDA inputs of `dtype`: 16 or 32 bits, where Triton imports."""
    return dtype in (torch.float16, torch.bfloat16, torch.float32) and triton_kernels() is not None


def use_triton(x: torch.Tensor, acc: torch.dtype) -> bool:
    """Triton for CUDA inputs of 16 or 32 bits summed in fp32, where it imports."""
    return x.is_cuda and acc == torch.float32 and use_triton_for(x.dtype)


def forward(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, triton: bool | None = None) -> torch.Tensor:
    """y[M, C] from x[L, M, C] (contiguous), a[L, C] and b[C] (fp32 at least), in x's dtype."""
    L, M, C = x.shape
    if not (use_triton(x, a.dtype) if triton is None else triton):
        with torch.autocast(x.device.type, enabled=False):
            acc = b.expand(M, C).clone()
            for l in range(L):  # one pass each: an einsum's bmm over C batches copies every slice on the CPU
                acc.addcmul_(x[l].to(a.dtype), a[l])
            return acc.to(x.dtype)
    y = torch.empty((M, C), dtype=x.dtype, device=x.device)
    bm, bc = _tiles(C)
    fwd = triton_kernels()[0]
    fwd[(triton_grid(M, bm), triton_grid(C, bc))](x, a, b, y, M, C, M * C, L, BM=bm, BC=bc, num_warps=4)
    return y


def scale_grads(x: torch.Tensor, g: torch.Tensor, acc: torch.dtype = torch.float32, *,
                triton: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ga[L, C], gb[C]) in `acc` from x[L, M, C] and g[M, C], both contiguous."""
    L, M, C = x.shape
    if not (triton if triton is not None else use_triton(x, acc)):
        with torch.autocast(x.device.type, enabled=False):
            g = g.to(acc)
            return torch.stack([(x[l].to(acc) * g).sum(0) for l in range(L)]), g.sum(0)
    bm, bc = _tiles(C)
    rows = bm * max(1, min(4, M // (bm * 2048)))  # enough programs to fill the GPU, few partial rows
    programs = triton_grid(M, rows)
    ga = torch.empty((programs, L, C), dtype=torch.float32, device=x.device)
    gb = torch.empty((programs, C), dtype=torch.float32, device=x.device)
    triton_kernels()[1][(programs, triton_grid(C, bc))](x, g, ga, gb, M, C, M * C, L, rows, BM=bm, BC=bc, num_warps=4)
    return ga.sum(0), gb.sum(0)


def inflow_grad(g: torch.Tensor, a: torch.Tensor, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, *,
                triton: bool | None = None) -> torch.Tensor:
    """gx[M, C] = Σ_k a[k]·g[k] + s·x + t, in x's dtype: g[K, M, C] holds the gradients of the K merges
    that read x (each [M, C] contiguous), a[K, C] their scales of x; s and t [C]; sums in a's dtype."""
    M, C = x.shape
    if not (use_triton(x, a.dtype) if triton is None else triton):
        with torch.autocast(x.device.type, enabled=False):
            acc = torch.addcmul(t, x.to(a.dtype), s)
            for k in range(g.shape[0]):
                acc.addcmul_(g[k].to(a.dtype), a[k])
            return acc.to(x.dtype)
    gx = torch.empty_like(x)
    bm, bc = _tiles(C)
    triton_kernels()[2][(triton_grid(M, bm), triton_grid(C, bc))](
        g, a, x, s, t, gx, M, C, g.shape[0], g.stride(0), a.stride(0), BM=bm, BC=bc, num_warps=4)
    return gx


def triton_grid(n: int, block: int) -> int:
    return (n + block - 1) // block
