"""`archspec bench infer` on the CPU: the thread count is set and printed, the CUDA-graph backend is a
row that says why it cannot run, the figures can be saved as JSON; onnxruntime runs one exported file on
the run's threads."""

import json

import torch
from rich.console import Console
from typer.testing import CliRunner

import archspec
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


def test_onnxruntime_exports_once_and_runs_on_the_thread_count(monkeypatch, tmp_path):
    """One ONNX file for every batch size of the run, and a session on the run's intra-op threads."""
    import onnxruntime as ort

    from archspec.runtime.bench import infer

    written, sessions = [], []
    real_write, real_session = infer.write_onnx, ort.InferenceSession

    def write(*args, **kwargs):
        written.append(args)
        return real_write(*args, **kwargs)

    def session(path, options=None, **kwargs):
        sessions.append(options)
        return real_session(path, options, **kwargs)

    monkeypatch.setattr(infer, "write_onnx", write)
    monkeypatch.setattr(ort, "InferenceSession", session)
    before = torch.get_num_threads()
    try:
        rows = infer.run_bench_infer(archspec.network(TINY, n=1, w=4), ["onnxruntime"], [1, 2, 3], "cpu", 3,
                                     Console(quiet=True), threads=1)
    finally:
        torch.set_num_threads(before)
    assert [r["batch"] for r in rows] == [1, 2, 3] and all(r["median_ms"] > 0 for r in rows)
    assert len(written) == 1 and len(sessions) == 1
    assert sessions[0].intra_op_num_threads == 1 and sessions[0].inter_op_num_threads == 1
    assert "1 intra-op threads" in rows[0]["note"]


def test_images_per_second_keeps_four_significant_digits():
    from archspec.runtime.bench.infer import significant

    assert significant(123456.7) == "123,457"
    assert significant(1234.5678) == "1,235"
    assert significant(123.4567) == "123.5"
    assert significant(3.14159) == "3.142"
    assert significant(0.0123456) == "0.01235"
