"""`--threads`: the count torch computes on, resolved from the cores this process may use, the load
other processes put on them, loader workers and torchrun's processes, and applied by every command
that computes."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from archspec.cli import app
from archspec.errors import RunError
from archspec.runtime import threads as T

from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


@pytest.fixture
def six_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)


@pytest.mark.parametrize("threads, workers, env, want", [
    (None, 0, {}, 6),  # every core this process may use
    (None, 2, {}, 4),  # loader workers take their cores
    (None, 8, {}, 1),  # never below one
    (3, 1, {}, 2),  # an explicit total, workers counted against it too
    (None, 0, {"OMP_NUM_THREADS": "2"}, 2),  # the environment's count where set
    (None, 0, {"OMP_NUM_THREADS": "many"}, 6),  # and ignored where it is not a count
    (None, 1, {"LOCAL_WORLD_SIZE": "2"}, 2),  # two processes of one launch share the six cores
    (5, 0, {"OMP_NUM_THREADS": "1"}, 5),  # the flag before the environment
])
def test_resolved_count(six_cores, threads, workers, env, want):
    assert T.resolve(threads, workers, environ=env, load=0.0) == want


@pytest.mark.parametrize("load, machine, want", [
    (0.9, 6, 6),  # under one busy core: all six
    (2.0, 6, 4),  # two busy cores: four left
    (9.0, 6, 1),  # more than busy: one thread, not a team waiting on each other
    (6.0, 12, 3),  # six cores of twelve: half the machine's load falls on them
])
def test_busy_cores_are_left_alone(six_cores, monkeypatch, load, machine, want):
    monkeypatch.setattr(os, "cpu_count", lambda: machine)
    assert T.resolve(environ={}, load=load) == want


def test_the_load_does_not_override_a_count(six_cores):
    assert T.resolve(4, environ={}, load=6.0) == T.resolve(environ={"OMP_NUM_THREADS": "4"}, load=6.0) == 4


def test_cores_without_affinity_or_load_average(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "getloadavg", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert T.usable_cores() == 3 and T.resolve(environ={}) == 3


@pytest.mark.parametrize("threads, workers", [(0, 0), (2, -1), (True, 0), (1.5, 0)])
def test_meaningless_counts_are_refused(threads, workers):
    with pytest.raises(RunError):
        T.resolve(threads, workers, environ={}, load=0.0)


def test_use_threads_sets_torch(monkeypatch):
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)  # once per process: not here
    said = []
    assert T.use_threads(1, log=said.append) == 1 and torch.get_num_threads() == 1
    assert said == []  # a count asked for is not remarked on


def test_a_count_cut_by_the_load_is_said(six_cores, monkeypatch):
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 4.0, 4.0))
    said = []
    assert T.use_threads(log=said.append) == 2
    assert len(said) == 1 and "2 CPU threads, not 6" in said[0]


class _Stop(RunError):
    pass


def _stop(*args, **kwargs):
    raise _Stop("stopped after the threads were set")


# each command, with the work after its threads are set replaced by a stop
COMMANDS = {
    "train": (["train", TINY, "--threads", "3", "--workers", "1"], "archspec.runtime.train.train", 2),
    "eval": (["eval", "missing.safetensors", "--threads", "2"], "archspec.runtime.train.evaluate_checkpoint", 2),
    "export": (["export", TINY, "--format", "onnx", "--threads", "2"],
               "archspec.cli.export._load_source", 2),
    "compile": (["compile", TINY, "-o", "{tmp}/m.py", "--threads", "2"], "archspec.compiler.codegen.to_module", 2),
    "inspect": (["inspect", "missing.safetensors", "--threads", "2"],
                "archspec.runtime.viz.connections.connection_strengths", 2),
    "bench train": (["bench", "train", TINY, "--threads", "2"], "archspec.cli.common.analyse", 2),
    "bench infer": (["bench", "infer", TINY, "--threads", "2"], "archspec.runtime.bench.infer.run_bench_infer", 2),
    "predict": (["predict", "m.safetensors", "x.png", "--threads", "2"], "archspec.runtime.predict.image_paths", 2),
    "bench data": (["bench", "data", "nowhere", "--threads", "3", "--workers", "2"],
                   "archspec.runtime.data.decode_throughput", 1),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_computing_command_applies_its_threads(name, monkeypatch, tmp_path):
    args, heavy, want = COMMANDS[name]
    import importlib

    module, _, attr = heavy.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module), attr, _stop)
    if name == "bench train":  # imported by name into the command's module
        monkeypatch.setattr("archspec.cli.bench.analyse", _stop)
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: None)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2 and "stopped after the threads were set" in r.output, r.output
    assert seen == [want]


def test_a_zero_thread_count_is_refused():
    r = CliRunner().invoke(app, ["train", TINY, "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output
