"""Elaboration budgets count this thread's CPU time, not wall time: a spec is never refused
because the machine is busy, and a spec that spends its CPU seconds is still stopped."""

from __future__ import annotations

import time

import pytest

import archspec
from archspec import SpecError
from archspec.language import evaluate

TEXT = "network n() {\n  input(3, 8, 8)\n  repeat 200 { let x = 1 }\n  relu\n}\n"


class Racing:
    """A clock that jumps `step` seconds each time it is read."""

    def __init__(self, start: float, step: float):
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_m7_wall_time_is_not_counted(monkeypatch):
    """Every wall clock racing an hour per read (a machine too loaded to schedule us): still elaborates."""
    for name in ("monotonic", "time", "perf_counter"):
        monkeypatch.setattr(time, name, Racing(getattr(time, name)(), 3600.0))
    monkeypatch.setattr(evaluate, "MAX_SECONDS", 1.0)
    assert archspec.network(TEXT).name == "n"


def test_m7_thread_cpu_time_is_counted(monkeypatch):
    """This thread's CPU clock racing a second per read: refused at the statement that ran out."""
    monkeypatch.setattr(time, "thread_time", Racing(time.thread_time(), 1.0))
    monkeypatch.setattr(evaluate, "MAX_SECONDS", 30.0)
    with pytest.raises(SpecError, match=r"more than 30 seconds to elaborate \(CPU time\)") as err:
        archspec.network(TEXT)
    assert err.value.loc is not None and err.value.loc.line == 3


def test_budget_reports_the_seconds_it_was_given(monkeypatch):
    monkeypatch.setattr(time, "thread_time", Racing(0.0, 5.0))
    b = evaluate.Budget(seconds=2.0)
    with pytest.raises(SpecError, match=r"more than 2 seconds to elaborate \(CPU time\)"):
        b.clock(None)
