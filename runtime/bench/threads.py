"""Training under load: `archspec train` with its default threads against `OMP_NUM_THREADS=1`, while other
processes keep every core this process may use busy, run alternately and printed as seconds and their
ratio. On a shared small machine torch's default team of threads waits on busy cores; archspec's default
(`runtime.threads`) must not.

    python -m archspec.runtime.bench.threads [SPEC] [--epochs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time

from .. import threads


def _spin(stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _train(spec: str, epochs: int, env: dict[str, str]) -> float:
    """Seconds one `archspec train` takes, end to end, in its own process and run folder."""
    with tempfile.TemporaryDirectory(prefix="archspec-threads-") as out:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "archspec", "train", spec, "--epochs", str(epochs), "--out", out],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default="tiny_delugenet")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two runs")
    a = p.parse_args(argv)
    cores = threads.usable_cores()
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores)]
    for h in hogs:
        h.start()
    time.sleep(2.0)  # let the load average see them
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    default, one = [], []
    try:
        for _ in range(a.rounds):
            default.append(_train(a.spec, a.epochs, base))
            one.append(_train(a.spec, a.epochs, {**base, "OMP_NUM_THREADS": "1"}))
    finally:
        stop.set()
        for h in hogs:
            h.join(5)
    d, o = statistics.median(default), statistics.median(one)
    print(f"archspec train {a.spec} --epochs {a.epochs}, {cores} cores kept busy by {len(hogs)} other processes, "
          f"{a.rounds} alternations")
    print(f"  default threads:    {d:7.1f} s  ({', '.join(f'{t:.1f}' for t in default)})")
    print(f"  OMP_NUM_THREADS=1:  {o:7.1f} s  ({', '.join(f'{t:.1f}' for t in one)})")
    print(f"  ratio default / one thread: {d / o:.2f}×")


if __name__ == "__main__":
    main()
