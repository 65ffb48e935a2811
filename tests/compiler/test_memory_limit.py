"""The default memory limit is what is free now: the kernel's `MemAvailable`, what a cgroup's limit
leaves (v1 and v2), the smallest of them; read from fake kernel files here."""

from __future__ import annotations

import os

import pytest

import archspec
from archspec import SpecError
from archspec.compiler import activation_memory as am
from archspec.errors import RunError

NET = "network n() {\n  input(3, 32, 32)\n  conv(16, 3, padding=1)\n  gap\n  linear(10)\n}\n"


def meminfo(tmp_path, available_kb: int | None, total_kb: int = 64 << 20):
    lines = [f"MemTotal:       {total_kb} kB", "MemFree:         1000 kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    path = tmp_path / "meminfo"
    path.write_text("\n".join(lines + ["Buffers:  10 kB"]) + "\n")
    return path


def cgroup(tmp_path, v2: tuple[str, int, int] | None = None, v1: tuple[int, int, int] | None = None):
    """A fake /sys/fs/cgroup: v2 as (memory.max, memory.current, inactive_file), v1 likewise."""
    root = tmp_path / "cgroup"
    root.mkdir()
    if v2:
        (root / "memory.max").write_text(f"{v2[0]}\n")
        (root / "memory.current").write_text(f"{v2[1]}\n")
        (root / "memory.stat").write_text(f"anon 5\nfile 9\ninactive_file {v2[2]}\nactive_file 3\n")
    if v1:
        (root / "memory").mkdir()
        (root / "memory" / "memory.limit_in_bytes").write_text(f"{v1[0]}\n")
        (root / "memory" / "memory.usage_in_bytes").write_text(f"{v1[1]}\n")
        (root / "memory" / "memory.stat").write_text(f"cache 9\ninactive_file 1\ntotal_inactive_file {v1[2]}\n")
    return root


def test_mem_available_is_read_in_kib(tmp_path):
    assert am.mem_available(meminfo(tmp_path, 2048)) == 2 << 20
    assert am.mem_available(meminfo(tmp_path, None)) is None  # an old kernel: no reading


def test_a_cgroup_v2_limit_leaves_its_limit_less_usage_less_reclaimable_cache(tmp_path):
    root = cgroup(tmp_path, v2=(str(8 << 30), 5 << 30, 1 << 30))
    assert am.cgroup_free(root) == (8 << 30) - (5 << 30) + (1 << 30)


def test_no_cgroup_limit_is_no_reading(tmp_path):
    assert am.cgroup_free(cgroup(tmp_path, v2=("max", 5 << 30, 0), v1=(9223372036854771712, 1 << 30, 0))) is None
    assert am.cgroup_free(tmp_path / "absent") is None


def test_a_cgroup_v1_limit_counts_and_the_smaller_of_two_wins(tmp_path):
    root = cgroup(tmp_path, v2=(str(8 << 30), 1 << 30, 0), v1=(4 << 30, 3 << 30, 0))
    assert am.cgroup_free(root) == 1 << 30
    (tmp_path / "full").mkdir()
    over = cgroup(tmp_path / "full", v1=(1 << 30, 2 << 30, 0))
    assert am.cgroup_free(over) == 0  # usage above the limit leaves nothing, never a negative size


def test_m8_the_default_limit_is_the_smallest_reading(tmp_path):
    mem = meminfo(tmp_path, 6 << 20)  # 6 GiB available
    assert am.available_memory(meminfo=mem, cgroup=tmp_path / "none") == 6 << 30
    root = cgroup(tmp_path, v2=(str(4 << 30), 2 << 30, 0))
    assert am.available_memory(meminfo=mem, cgroup=root) == 2 << 30
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert am.available_memory(meminfo=tmp_path / "none", cgroup=tmp_path / "none") == total  # nothing read


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_or_a_huge_file_in_place_of_meminfo_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    assert am.mem_available(tmp_path / "fifo") is None  # refused at open: no wait for a writer
    big = tmp_path / "big"
    big.write_text("MemAvailable: 1 kB\n" + "x" * (1 << 17))
    assert am.mem_available(big) is None


def test_the_machine_has_a_reading_no_larger_than_its_ram():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < am.available_memory() <= total


def test_m8_a_step_above_the_free_memory_is_refused_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(am, "MEMINFO", str(meminfo(tmp_path, 256)))  # 256 KiB free, 64 GiB of RAM
    monkeypatch.setattr(am, "CGROUP", str(tmp_path / "none"))
    net = archspec.network(NET)
    with pytest.raises(SpecError, match=r"above the limit of 256\.0 KiB, the memory available now") as e:
        am.refuse_above(net, 16, training=True)
    assert e.value.loc.line == 3  # the conv makes the largest tensor
    monkeypatch.setattr(am, "MEMINFO", str(meminfo(tmp_path, 4 << 20)))
    assert am.refuse_above(net, 16, training=True).total < 4 << 30


def test_a_batch_below_one_is_a_run_error():
    with pytest.raises(RunError, match="at least 1"):
        am.refuse_above(archspec.network(NET), 0, training=False)
