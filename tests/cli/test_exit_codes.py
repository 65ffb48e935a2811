"""Exit 2, never 1, for what a user can give: the last exit-1 cases of the second red-team campaign, and
allocator failures (a MemoryError, torch's out-of-memory) in any command, each reported in one line."""

from __future__ import annotations

import os

import pytest
import torch
import torch.fx
import typer
from typer.testing import CliRunner

from archspec.cli import app
from archspec.cli.common import guarded
from archspec.graph.builder import MAX_DIM
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


def invoke(*args: str):
    r = CliRunner().invoke(app, list(args))
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r


def test_dynamic_batch_0_0_0(tmp_path):
    r = invoke("export", TINY, "--format", "pt2", "--dynamic-batch", "0:0:0", "-o", str(tmp_path / "m.pt2"))
    assert r.exit_code == 2 and "--dynamic-batch" in r.output and "1 <= MIN" in r.output, r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["bench", "infer", TINY, "--device", "cpu", "--backends", "eager",
                                      "--batch-size", "1"],
                                     ["bench", "train", TINY, "--device", "cpu", "--batch-size", "2", "--steps", "2"]])
@pytest.mark.parametrize("target", ["folder", "/dev/full"])
def test_bench_json_to_a_folder_or_dev_full(command, target, tmp_path):
    path = str(tmp_path) if target == "folder" else target
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    r = invoke(*command, "--json", path)
    assert r.exit_code == 2 and r.output.startswith(f"error: cannot write {path}"), r.output  # before any work


def test_graph_to_dev_full_is_refused_before_drawing():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    r = invoke("graph", TINY, "-o", "/dev/full")
    assert r.exit_code == 2 and "character device" in r.output, r.output


@pytest.mark.parametrize("empty", ["", "  "])
def test_allow_path_empty_is_refused_not_the_working_folder(empty):
    r = invoke("check", TINY, "--allow-path", empty)
    assert r.exit_code == 2 and "--allow-path" in r.output and "empty path" in r.output, r.output
    assert invoke("check", TINY, "--allow-path", ".").exit_code == 0  # the working folder, when named


@pytest.mark.parametrize("line", ["conv(3500000000000000000, 1)", "linear(3500000000000000000)",
                                  f"conv({MAX_DIM + 1}, 1)"])
def test_check_refuses_a_3_5e18_channel_network(tmp_path, line):
    spec = tmp_path / "wide.arch"
    spec.write_text(f"network w() {{\n  input(3, 8, 8)\n  {line}\n  gap\n}}\n")
    r = invoke("check", str(spec), "--max-params", "1e30")
    assert r.exit_code == 2 and "wide.arch:3:3" in r.output and f"{MAX_DIM:,}" in r.output, r.output
    spec.write_text(f"network w() {{\n  input({MAX_DIM + 1}, 1, 1)\n  gap\n}}\n")
    r = invoke("check", str(spec))
    assert r.exit_code == 2 and "wide.arch:2:3" in r.output, r.output  # an input too: it has no weights
    spec.write_text(f"network w() {{\n  input({MAX_DIM}, 1, 1)\n  gap\n}}\n")
    assert invoke("check", str(spec)).exit_code == 0  # the bound itself is allowed


def _alias_chain(tmp_path, n: int):
    lines = ["network a0(c: int = 4) {\n  input(3, 8, 8)\n  conv(c, 1)\n}"]
    lines += [f"network a{i} = a{i - 1}(c=4)" for i in range(1, n)]
    spec = tmp_path / "chain.arch"
    spec.write_text("\n".join(lines) + "\n")
    return str(spec)


def test_a_5000_long_alias_chain_is_refused_with_exit_2(tmp_path):
    r = invoke("check", _alias_chain(tmp_path, 5000))
    assert r.exit_code == 2 and "error" in r.output, r.output
    assert invoke("check", _alias_chain(tmp_path, 50)).exit_code == 0


def test_a_5000_long_alias_chain_is_refused_with_a_location(tmp_path):
    r = invoke("check", _alias_chain(tmp_path, 5000))
    assert r.exit_code == 2 and "chain.arch:" in r.output and "200 networks deep" in r.output, r.output


# ---- allocator failures (finding M8) --------------------------------------------------------------


def _exit_of(fn, capsys) -> tuple[int, str]:
    with pytest.raises(typer.Exit) as e:
        guarded(fn)
    return e.value.exit_code, capsys.readouterr().err


def _raise(err: BaseException):
    def fn():
        raise err
    return fn


@pytest.mark.parametrize("err,size", [
    (MemoryError(), None),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)"), "20.00 GiB"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 3221225472 bytes. Error code 12"), "3.0 GiB"),
])
def test_m8_an_allocator_failure_is_exit_2_in_one_line(err, size, capsys):
    code, err_text = _exit_of(_raise(err), capsys)
    assert code == 2 and err_text.count("\n") == 1 and err_text.startswith("error: out of memory"), err_text
    assert "internal error" not in err_text and (size is None or f"allocating {size}" in err_text), err_text


def test_a_real_cpu_allocation_failure_names_the_op_of_the_model(capsys):
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv7 = torch.nn.Identity()

        def forward(self, x):
            return self.conv7(x) + 1

    gm = torch.fx.symbolic_trace(M())

    class Huge(torch.nn.Module):  # asks the host for an exbibyte: refused at once, nothing allocated
        def forward(self, x):
            return torch.empty(1 << 60, dtype=torch.uint8)

    gm.conv7 = Huge()
    code, err_text = _exit_of(lambda: gm(torch.zeros(1)), capsys)
    assert code == 2 and "allocating 1.0 EiB in the model's op 'conv7'" in err_text, err_text


def test_m8_an_out_of_memory_in_a_command_is_exit_2(tmp_path, monkeypatch):
    import archspec.compiler.codegen as codegen

    def oom(net, init=True):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB")

    monkeypatch.setattr(codegen, "to_module", oom)
    r = invoke("compile", TINY, "-o", str(tmp_path / "m.py"))
    assert r.exit_code == 2 and "out of memory allocating 2.50 GiB" in r.output, r.output
    assert not (tmp_path / "m.py").exists()


def test_another_runtime_error_is_still_a_bug_in_archspec(capsys):
    code, err_text = _exit_of(_raise(RuntimeError("shape mismatch")), capsys)
    assert code == 1 and "internal error" in err_text
