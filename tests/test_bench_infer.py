"""`archspec bench infer` on the CPU: the thread count is set and printed, the CUDA-graph backend is a
row that says why it cannot run, and the figures can be saved as JSON."""

import json

import torch
from typer.testing import CliRunner

from archspec import cli
from archspec.cli import app
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


def test_threads_cudagraph_skip_and_json(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.out, "width", 200)
    before = torch.get_num_threads()
    path = tmp_path / "infer.json"
    try:
        r = CliRunner().invoke(app, ["bench", "infer", TINY, "--set", "n=1", "--set", "w=4", "--device", "cpu",
                                     "--backends", "eager,cudagraph", "--batch", "1,2", "--repeat", "3",
                                     "--threads", "1", "--json", str(path)])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    assert "threads: 1" in r.output and "on cpu, 1 threads" in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("│")]
    assert sum(line.startswith("│ eager ") for line in lines) == 2
    [graph] = [line for line in lines if line.startswith("│ cudagraph ")]
    assert "skipped: CUDA graphs need a CUDA device" in graph
    data = json.loads(path.read_text())
    assert data["environment"]["threads"] == 1
    assert [(row["backend"], row.get("batch")) for row in data["rows"]] == [("eager", 1), ("eager", 2), ("cudagraph", None)]
    assert all(row["median_ms"] > 0 for row in data["rows"][:2])


def test_bad_thread_count_is_a_clear_error():
    r = CliRunner().invoke(app, ["bench", "infer", TINY, "--threads", "0", "--repeat", "3"])
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output
