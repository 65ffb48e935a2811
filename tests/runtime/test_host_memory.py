"""`keep_freed_memory`: a buffer freed and allocated again is reused without page faults."""

import subprocess
import sys

import pytest

PROBE = r"""
import resource, sys, torch
from archspec.runtime.train.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(64 * 2**20, dtype=torch.uint8).fill_(1)  # 64 MiB, every page touched
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_buffers_are_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    runs = {mode: int(subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("default", "keep")}
    assert runs["default"] > pages // 2, runs  # glibc gives the block back and faults it in again
    assert runs["keep"] < pages // 20, runs
