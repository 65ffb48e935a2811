"""The bytes one step of a network needs, read off the graph before any tensor exists, so that a spec too
large for the machine (an `input(3, 100000, 100000)`, a billion weights) is refused with a located error
instead of being allocated until the process dies.

The estimate is meant to be an over-estimate, never an under-estimate: weights, their gradients and the
optimizer's state; the input batch; the tensors autograd saves for backward (training) or the most
tensors alive at once (inference); and, on top, the most tensors alive at once again as working space
(fresh outputs and gradients in flight). The default limit is the memory available now (`available_memory`:
the kernel's `MemAvailable`, less where a cgroup's limit leaves less; a CUDA device's free memory).
Imports no torch: `available_memory` loads it only for CUDA."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from math import prod

from pathlib import Path

from archspec.graph.ir import Network, node_params
from archspec.graph.ops import OPS, Saves
from archspec.errors import Loc, RunError, SpecError
from archspec.files import read_bounded

_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human(n: int | float) -> str:
    """`n` bytes in binary units, as a person reads them: `1.5 GiB`."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Largest:
    """The largest single tensor the step makes (or the node with the most weights), to point at."""

    node: str
    bytes: int
    loc: Loc | None
    what: str  # "output" or "weights"


@dataclass(frozen=True)
class MemoryEstimate:
    network: str
    batch: int
    training: bool
    params: int  # weights
    grads: int  # a gradient per weight (training)
    optimizer: int  # optimizer state (training)
    input: int  # the input batch
    activations: int  # training: what autograd saves for backward; inference: the most tensors alive at once
    workspace: int  # the most tensors alive at once, again: outputs and gradients in flight
    largest: Largest

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.input + self.activations + self.workspace

    def parts(self) -> str:
        names = ("weights", "gradients", "optimizer state", "input", "saved activations" if self.training
                 else "activations", "working space")
        values = (self.params, self.grads, self.optimizer, self.input, self.activations, self.workspace)
        return ", ".join(f"{n} {human(v)}" for n, v in zip(names, values) if v)


def _saves(op: str) -> Saves:
    """What op `op` keeps for backward, as its class declares (see `Saves`)."""
    return OPS[op].saves if op in OPS else Saves()


def _root(net: Network, name: str, roots: dict[str, str]) -> str:
    node = net.node(name)
    return roots[net.inputs(name)[0]] if _saves(node.op).view else name


def estimate(net: Network, batch: int = 1, *, training: bool = True, bytes_per_element: int = 4,
             param_bytes: int = 4, optimizer_states: int = 1) -> MemoryEstimate:
    """The bytes one step of `net` needs at `batch` samples: a training step (forward, backward and an
    optimizer update keeping `optimizer_states` tensors per weight: 1 for SGD with momentum, 2 for Adam)
    or an inference forward. Activations take `bytes_per_element` each, weights `param_bytes`."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    roots: dict[str, str] = {}
    size: dict[str, int] = {}  # root tensor → bytes for the whole batch
    last_use: dict[str, int] = {}  # root tensor → position of the last op reading it or a view of it
    order = list(net.nodes())
    params = saved_extra = 0
    saved: set[str] = set()
    largest = Largest(net.input, 0, None, "output")
    heaviest = Largest(net.input, 0, None, "weights")
    for pos, node in enumerate(order):
        roots[node.name] = _root(net, node.name, roots)
        ins = [roots[i] for i in net.inputs(node.name)]
        for r in ins:
            last_use[r] = pos
        if node.role != "input":
            p = node_params(net, node) * param_bytes
            params += p
            if p > heaviest.bytes:
                heaviest = Largest(node.name, p, node.loc, "weights")
        if roots[node.name] == node.name:
            size[node.name] = prod(node.shape) * batch * bytes_per_element
            last_use.setdefault(node.name, pos)
            if size[node.name] > largest.bytes:
                largest = Largest(node.name, size[node.name], node.loc, "output")
        keeps = _saves(node.op)
        if training and node.role != "input":
            saved.update(ins if keeps.inputs else ())
            if keeps.output:
                saved.add(roots[node.name])
            saved_extra += keeps.extra * prod(node.shape) * batch
            if keeps.mask == "activation":
                saved_extra += prod(node.shape) * batch * bytes_per_element
            if keeps.mask == "channel":  # one value per sample and channel
                saved_extra += node.shape[0] * batch * bytes_per_element
            if keeps.stats:
                saved_extra += 2 * 4 * sum(net.shape(i)[0] for i in net.inputs(node.name))
    last_use[roots[net.output]] = len(order)  # the output outlives the forward
    inp = size[net.input]
    peak = _peak(order, roots, size, last_use, exclude=net.input)
    held = sum(size[r] for r in saved if r != net.input) + saved_extra
    return MemoryEstimate(
        network=net.name, batch=batch, training=training, params=params,
        grads=params if training else 0, optimizer=params * optimizer_states if training else 0,
        input=inp, activations=held if training else peak, workspace=peak,
        largest=heaviest if heaviest.bytes > largest.bytes else largest)


def _peak(order: list, roots: dict[str, str], size: dict[str, int], last_use: dict[str, int], exclude: str) -> int:
    """The most bytes of tensors alive at once when the ops run in `order` and each tensor is freed after
    the last op that reads it (as generated code does), counting a partial result for ops that make one."""
    frees: dict[int, int] = {}
    for r, pos in last_use.items():
        if r != exclude:
            frees[pos] = frees.get(pos, 0) + size[r]
    live = peak = 0
    for pos, node in enumerate(order):
        if roots[node.name] == node.name and node.name != exclude:
            live += size[node.name]
        temporary = size[roots[node.name]] if _saves(node.op).temporary else 0
        peak = max(peak, live + temporary)
        live -= frees.get(pos, 0)
    return peak


def check_memory(est: MemoryEstimate, limit: int, sources: dict[str, str] | None = None, *,
                 limit_is: str | None = None) -> None:
    """Refuse a step whose estimate is above `limit` bytes, before anything is allocated: a SpecError at
    the node making the largest tensor (or holding the most weights), with the estimate in human units;
    `limit_is` says what the limit is ("the memory available now") where it was not given."""
    if est.total <= limit:
        return
    step = "a training step" if est.training else "a forward pass"
    big = est.largest
    where = f"its largest tensor is the {big.what} of '{big.node}' ({human(big.bytes)})"
    raise SpecError(
        f"{step} of network '{est.network}' at batch {est.batch} needs about {human(est.total)}, above the "
        f"limit of {human(limit)}{', ' + limit_is if limit_is else ''}", big.loc,
        f"{est.parts()}; {where}. Lower the batch size or the input size, or raise --max-memory if this is meant",
        sources)


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgtp]?)(i?)b?\s*", re.IGNORECASE)


MAX_SIZE = 2.0**60  # the largest --max-memory taken: one exbibyte


def parse_size(text: str) -> int:
    """Bytes from a size a person writes on a command line: `8GiB`, `500MB`, `1.5g`, `123456`.
    Binary units (`GiB`) and bare letters (`8g`) count in 1024s, decimal ones (`GB`) in 1000s."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise RunError(f"--max-memory needs a size such as 8GiB, 500MB or 1000000, got {text!r}")
    number, prefix, binary = m.groups()
    base = 1024 if binary or not text.strip().lower().endswith("b") else 1000
    size = float(number) * base ** "_kmgtp".index(prefix.lower() or "_")
    if not size < MAX_SIZE:
        raise RunError(f"--max-memory {text[:40]!r} is beyond any machine's memory", "give at most 1 EiB (2**60 bytes)")
    return int(size)


MEMINFO = "/proc/meminfo"
CGROUP = "/sys/fs/cgroup"  # the cgroup this process sees: a container's own where cgroups are namespaced
_READING_BYTES = 1 << 16  # a kernel memory file is a few KiB at most
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as about 2**63


def _reading(path: Path) -> str | None:
    """The text of a kernel memory file, or None where it cannot be read (absent, not a regular file,
    larger than such a file can be)."""
    try:
        return read_bounded(path, _READING_BYTES, "memory reading").decode("ascii", "replace")
    except (RunError, OSError):
        return None


def _number(path: Path) -> int | None:
    text = _reading(path)
    word = text.split()[0] if text and text.split() else ""
    return int(word) if word.isdigit() else None  # "max" (cgroup v2's no limit) and the unreadable: None


def mem_available(meminfo: str | Path | None = None) -> int | None:
    """The kernel's estimate of the memory a new allocation can have without swapping (`MemAvailable` in
    `meminfo`, by default `MEMINFO`), in bytes; None where it is not given."""
    for line in (_reading(Path(meminfo or MEMINFO)) or "").splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if name == "MemAvailable" and words and words[0].isdigit():
            return int(words[0]) * (1024 if words[1:] == ["kB"] else 1)
    return None


def _stat(path: Path, key: str) -> int:
    """The value of `key` in a cgroup's `memory.stat` (0 where absent)."""
    for line in (_reading(path) or "").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == key and words[1].isdigit():
            return int(words[1])
    return 0


def cgroup_free(root: str | Path | None = None) -> int | None:
    """What the memory cgroup under `root` (by default `CGROUP`) still lets this process have: its limit
    less its usage (less the page cache the kernel can reclaim, `inactive_file`), for cgroup v2
    (`memory.max`, `memory.current`) and v1 (`memory/memory.limit_in_bytes`, `memory/memory.usage_in_bytes`),
    the smaller where both are set; None where no limit is set."""
    root = Path(root or CGROUP)
    free = []
    for folder, limit_name, usage_name, cache in ((root, "memory.max", "memory.current", "inactive_file"),
                                                  (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                                                   "total_inactive_file")):
        limit = _number(folder / limit_name)
        if limit is not None and limit < _NO_LIMIT:
            usage = _number(folder / usage_name) or 0
            usage -= min(_stat(folder / "memory.stat", cache), usage)
            free.append(max(limit - usage, 0))
    return min(free, default=None)


def available_memory(device: str = "cpu", *, meminfo: str | Path | None = None,
                     cgroup: str | Path | None = None) -> int:
    """The memory a step may use on `device` now: a CUDA device's free memory; for the CPU the smallest of
    the kernel's `MemAvailable` and what the memory cgroup's limit leaves, or the host's total RAM where
    neither can be read."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0]
    readings = [v for v in (mem_available(meminfo), cgroup_free(cgroup)) if v is not None]
    return min(readings) if readings else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_limit(device: str = "cpu") -> int:
    """The memory a step may use by default: what is available on `device` now (`available_memory`)."""
    return available_memory(device)


def refuse_above(net: Network, batch: int, *, training: bool, device: str = "cpu", limit: int | None = None,
                 bytes_per_element: int = 4) -> MemoryEstimate:
    """Estimate a step of `net` at `batch` and refuse it (a located SpecError) above `limit` bytes, by
    default the memory available on the device now; the estimate, when it fits. A batch below 1 is a
    RunError."""
    if batch < 1:
        raise RunError(f"a batch of {batch} samples: the batch size must be at least 1")
    est = estimate(net, batch, training=training, bytes_per_element=bytes_per_element)
    if limit is None:
        check_memory(est, default_limit(device), net.sources, limit_is="the memory available now")
    else:
        check_memory(est, limit, net.sources)
    return est
