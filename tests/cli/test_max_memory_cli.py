"""`--max-memory`: every command that allocates refuses a step above the limit before any tensor exists,
with a located error and exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from archspec.cli import app
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")
HUGE = """network huge(classes: int = 10, channels: int = 3, size: int = 30000) {
  input(channels, size, size)
  conv(8, 3, padding=1)
  head { gap linear(classes) }
}
"""


@pytest.fixture
def huge(tmp_path):
    path = tmp_path / "huge.arch"
    path.write_text(HUGE)
    return str(path)


@pytest.mark.parametrize("command", [
    ["compile", "{huge}", "-o", "{tmp}/m.py"],
    ["export", "{huge}", "--format", "pt2", "-o", "{tmp}/m.pt2"],
    # one input image of 3×8000×8000 passes the benchmarks' own input bound; the step does not fit 1 GiB
    ["bench", "train", "{huge}", "--set", "size=8000", "--device", "cpu", "--batch-size", "1", "--steps", "2",
     "--max-memory", "1GiB"],
    ["bench", "infer", "{huge}", "--set", "size=8000", "--device", "cpu", "--batch-size", "1", "--backends", "eager",
     "--max-memory", "1GiB"],
])
def test_a_step_above_the_device_memory_is_refused_before_allocating(command, huge, tmp_path):
    args = [a.format(huge=huge, tmp=tmp_path) for a in command]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "huge.arch:3:3" in r.output and "above the limit" in r.output and "Traceback" not in r.output
    assert not any(tmp_path.glob("m.*")) and not (tmp_path / "run").exists()


def test_train_refuses_a_step_above_the_limit_before_allocating(tmp_path):
    r = CliRunner().invoke(app, ["train", TINY, "--epochs", "1", "--quiet", "--device", "cpu", "--max-memory", "64KiB",
                                 "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "a training step of network 'tiny_delugenet'" in r.output, r.output
    assert "above the limit of 64.0 KiB" in r.output and "lib/delugenet.arch:" in r.output  # the largest tensor's op
    assert not (tmp_path / "run").exists()


def test_an_explicit_limit_refuses_a_real_spec_and_a_generous_one_passes(tmp_path):
    r = CliRunner().invoke(app, ["export", TINY, "--format", "pt2", "-o", str(tmp_path / "a.pt2"),
                                 "--max-memory", "1KiB"])
    assert r.exit_code == 2 and "above the limit of 1.0 KiB" in r.output, r.output
    r = CliRunner().invoke(app, ["export", TINY, "--format", "pt2", "-o", str(tmp_path / "a.pt2"),
                                 "--max-memory", "4GiB"])
    assert r.exit_code == 0, r.output


def test_a_meaningless_size_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["compile", TINY, "-o", str(tmp_path / "m.py"), "--max-memory", "lots"])
    assert r.exit_code == 2 and ("--max-memory" in r.output or "size" in r.output), r.output
    assert "Traceback" not in r.output


def test_the_default_limit_is_the_memory_free_now(tmp_path, monkeypatch):
    from archspec.compiler import activation_memory as am

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 67108864 kB\nMemAvailable: 16 kB\n")  # 64 GiB of RAM, 16 KiB of it free
    monkeypatch.setattr(am, "MEMINFO", str(meminfo))
    monkeypatch.setattr(am, "CGROUP", str(tmp_path / "no-cgroup"))
    r = CliRunner().invoke(app, ["compile", TINY, "-o", str(tmp_path / "m.py")])
    assert r.exit_code == 2 and "above the limit of 16.0 KiB, the memory available now" in r.output, r.output
    assert not (tmp_path / "m.py").exists()
    r = CliRunner().invoke(app, ["compile", TINY, "-o", str(tmp_path / "m.py"), "--max-memory", "1GiB"])
    assert r.exit_code == 0, r.output  # an explicit limit is taken as given
