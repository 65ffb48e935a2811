"""Fuzzing the files archspec reads from strangers: checkpoints (header JSON edited, length field changed,
bytes flipped, cut or appended), run folders resumed (metrics.jsonl cut, non-UTF-8, deeply nested, huge
numbers; a FIFO or a symlink in place of a file), transfer sources (.pth zips with changed member sizes
and compression, .safetensors with changed dtype labels), CIFAR pickles (shared sub-objects nested deep,
huge declared sizes) and images (huge declared dimensions, truncated, other formats under image names).

Every case must succeed or be refused (RunError/SpecError; exit 0 or 2 through the CLI, no traceback),
within 10 s of CPU and 1 GiB above the worker's baseline, writing nothing outside its own folder and
opening nothing outside the roots (its folder, the installation, archspec's fixed system reads). The
default run is a small deterministic guard; `pytest -m fuzz tests/runtime/test_fuzz_files.py` (or
ARCHSPEC_FUZZ_CASES=N) runs a campaign of 10,000 cases (N) over all generators and prints its figures.
A case is reproduced by its generator and seed: `GENERATORS[kind](random.Random(seed), seeds)`."""

from __future__ import annotations

import os
import random

import pytest

import fuzz_files_support as FF


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return FF.make_seeds(tmp_path_factory.mktemp("fuzz-files-seeds"))


@pytest.fixture(scope="module")
def worker(seeds):
    w = FF.Worker(seeds)
    yield w
    print(f"\nfuzz files: {w.stats.line()}")
    w.close()


def holds(worker: FF.Worker, kind: str, seed: int, cli: bool) -> None:
    files = FF.GENERATORS[kind](random.Random(seed), worker.seeds)
    out = worker.run(kind, files, cli=cli, label=f"{kind} seed {seed}")
    why = FF.problem(out)
    assert why is None, f"{why}\n--- the case: {kind}, seed {seed}, cli {cli} ---"


QUICK = {"checkpoint": 6, "run": 4, "transfer": 8, "cifar": 8, "image": 12}  # seconds in all, with the worker's start


@pytest.mark.parametrize("kind", list(QUICK))
def test_every_file_is_read_or_refused_within_its_bounds(worker, kind):
    for seed in range(QUICK[kind]):
        holds(worker, kind, seed, cli=seed == 0 and kind in ("checkpoint", "transfer"))


def test_the_seeds_themselves_are_read(worker):
    """The generators start from files the entry points accept: a mutation is what any refusal is about."""
    for kind in FF.KINDS:
        out = worker.run(kind, worker.seeds[kind], cli=True)
        assert FF.problem(out) is None and {o.get("outcome", "ok") for o in out["outcomes"]} == {"ok"}, out
        assert all(o.get("exit", 0) == 0 for o in out["outcomes"]), out


def test_the_harness_catches_a_crash_a_bad_exit_a_bomb_and_a_stray_file():
    """The property is not vacuous: each way a case can fail is reported."""
    ok = {"cpu": 0, "wall": 0, "peak": 0, "outside": []}
    crash = {"outcome": "crash", "type": "KeyError", "message": "m"}
    assert FF.problem({**ok, "outcomes": [crash]}).startswith("KeyError")
    assert "exit 1" in FF.problem({**ok, "outcomes": [{"exit": 1, "traceback": False}]})
    assert "traceback" in FF.problem({**ok, "outcomes": [{"exit": 2, "traceback": True}]})
    assert "CPU" in FF.problem({**ok, "cpu": 11.0, "outcomes": [{"outcome": "ok"}]})
    assert "MiB" in FF.problem({**ok, "peak": 2 << 30, "outcomes": [{"outcome": "ok"}]})
    assert "outside" in FF.problem({**ok, "outside": ["/tmp/x"], "outcomes": [{"outcome": "ok"}]})
    assert "outside the roots" in FF.problem({**ok, "read": ["/etc/passwd"], "outcomes": [{"outcome": "ok"}]})

    refused = [{"outcome": "refused", "message": "bad"}, {"exit": 2, "traceback": False}]
    assert FF.problem({**ok, "outcomes": refused}) is None


def test_reads_outside_the_roots_are_seen(tmp_path):
    """The audit hook's paths are judged as opened: the case folder's own files (a link it holds
    included: the case named its target), the installation and the fixed system reads are inside; a path
    the case never handed over is outside."""
    outside = tmp_path / "secret"
    outside.write_text("x")
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "link").symlink_to(outside)
    roots = FF._roots(folder)
    got = FF.reads_outside([str(folder / "a.png"), "link", os.__file__, "/proc/meminfo", "/etc/hostname"],
                           roots, folder)
    assert got == ["/etc/hostname"]
    assert FF.reads_outside([str(outside)], roots, folder) == [str(outside)]


def test_the_worker_measures_what_a_case_costs(worker):
    """A large image the loader is allowed to decode shows in the worker's figures: the memory and CPU
    limits are checked against real measurements, not zeros."""
    out = worker.run("image", {"x.png": worker.seeds["large_png"]})
    assert out["outcomes"] == [{"outcome": "ok"}], out
    assert 3 * FF.LARGE_SIDE**2 // 2 < out["peak"] < FF.MEMORY_LIMIT and out["cpu"] > 0.01, out


@pytest.mark.fuzz
def test_long_campaign(worker, request):
    """ARCHSPEC_FUZZ_CASES random cases (10,000) spread evenly over the generators, one in ten also through
    the CLI where the kind has a command; every problem is collected and listed with its reproducer."""
    total, seed = FF.campaign(request.config)
    if not total:
        pytest.skip("the long campaign runs with -m fuzz or ARCHSPEC_FUZZ_CASES=N")
    rng = random.Random(seed)
    problems = []
    for k in range(total):
        kind = FF.KINDS[k % len(FF.KINDS)]
        case_seed = rng.randrange(2**32)
        cli = kind in ("checkpoint", "transfer") and rng.random() < 0.1
        files = FF.GENERATORS[kind](random.Random(case_seed), worker.seeds)
        out = worker.run(kind, files, cli=cli, label=f"{kind} seed {case_seed}")
        why = FF.problem(out)
        if why:
            problems.append(f"{why}\n--- case {k}: {kind}, seed {case_seed}, cli {cli} ---")
        if (k + 1) % 500 == 0:
            print(f"fuzz files: {worker.stats.line()}; {len(problems)} problems", flush=True)
    print(f"fuzz files (seed {seed}): {worker.stats.line()}", flush=True)
    assert not problems, f"{len(problems)} problems:\n" + "\n\n".join(problems[:20])
