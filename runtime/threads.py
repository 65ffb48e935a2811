"""How many CPU threads torch computes on, decided in one place for every command that computes.

The total is `threads` where given, else `OMP_NUM_THREADS` where set to a whole number, else the cores
this process may run on (its affinity, which a container or `taskset` narrows; `os.cpu_count()` where
the platform has no affinity) less those other processes keep busy (the one-minute load average, as a
share of the machine's cores). Processes of one launch (torchrun's `LOCAL_WORLD_SIZE`) share the total,
and each process's DataLoader workers (one core each) are counted against its share:
torch gets `max(1, total // processes - workers)` intra-op threads.

The load matters on a small machine: a team of threads waits for its slowest member at every op, so
two threads on two cores that another process keeps busy ran a small network's training steps about
ten times slower than one thread did."""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch

from archspec.errors import RunError


def usable_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores(usable: int, load: float | None = None) -> int:
    """Of `usable` cores, how many other processes keep busy: the one-minute load average (`load`
    where given) spread evenly over all the machine's cores; 0 where the platform has no load average."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0
    return min(usable, int(load * usable / max(usable, os.cpu_count() or 1)))


def _whole(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise RunError(f"{what} {value!r}: needs a whole number >= {least}")
    return value


def _from_env(environ: Mapping[str, str], name: str) -> int | None:
    """A positive whole number in `environ[name]`, None where unset or not one."""
    text = environ.get(name, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def resolve(threads: int | None = None, workers: int = 0, *, environ: Mapping[str, str] | None = None,
            load: float | None = None) -> int:
    """The intra-op thread count for this process: see the module docstring. `threads` is the total for
    the whole launch, `workers` this process's loader processes; `environ` and `load` (the load average)
    are read from the system where not given."""
    environ = os.environ if environ is None else environ
    if threads is not None:
        _whole(threads, "--threads", 1)
    _whole(workers, "--workers", 0)
    if threads is None:
        threads = _from_env(environ, "OMP_NUM_THREADS")
    if threads is None:
        cores = usable_cores()
        threads = max(1, cores - busy_cores(cores, load))
    processes = _from_env(environ, "LOCAL_WORLD_SIZE") or 1
    return max(1, threads // processes - workers)


def use_threads(threads: int | None = None, workers: int = 0, log: Callable[[str], Any] | None = None) -> int:
    """Resolve the thread count (`resolve`) and set it: torch's intra-op threads, and its inter-op
    threads where this process has not yet started them (torch allows that once). Returns the count;
    says so through `log` where the load made it smaller than the cores would."""
    n = resolve(threads, workers)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or inter-op work already ran: the intra-op count is what matters
        pass
    idle = resolve(threads, workers, load=0.0)
    if log is not None and n < idle:
        log(f"{n} CPU thread{'' if n == 1 else 's'}, not {idle}: other processes keep the machine's cores busy "
            "(--threads N sets the count)")
    return n
