"""The benchmarks on a CUDA GPU: `bench train` names the GPU and its settings and reports CUDA peaks
against the hand-written baseline; `bench infer` runs eager and CUDA-graph backends, and the graph's
replay computes what the eager module computes."""

import json

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import archspec
from archspec import cli
from archspec.cli import app
from archspec.compiler.passes.fold_bn import fold
from archspec.runtime.bench.infer import prepare
from conftest import SPECS

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DENSENET = str(SPECS / "densenet_bc100_k12.arch")
SMALL = ["--set", "depth=16", "--set", "k=4"]


def test_bench_train_on_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.out, "width", 240)
    path = tmp_path / "train.json"
    r = CliRunner().invoke(app, ["bench", "train", DENSENET, *SMALL, "--device", "cuda", "--batch", "8,16",
                                 "--steps", "3", "--warmup", "1", "--json", str(path)])
    assert r.exit_code == 0, r.output
    assert f"device: {torch.cuda.get_device_name()}" in r.output
    assert "cudnn.benchmark: on" in r.output and "matmul TF32: " in r.output and "cuDNN TF32: " in r.output
    assert f"cuda: {torch.version.cuda}" in r.output and "channels_last: on" in r.output
    data = json.loads(path.read_text())
    assert [(row["name"], row["batch"]) for row in data["rows"]] == [
        ("archspec", 8), ("hand-written nn.Module", 8), ("archspec", 16), ("hand-written nn.Module", 16)]
    for row in data["rows"]:
        assert row["step_ms"] > 0 and row["peak"] > row["saved"] > 0
    for b in (8, 16):
        assert f"batch {b}: archspec / hand-written nn.Module: step time " in r.output
    assert all(q["cuda_peak"] is not None for q in data["ratios"])


def test_bench_train_cuda_graph_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.out, "width", 240)
    path = tmp_path / "train.json"
    r = CliRunner().invoke(app, ["bench", "train", DENSENET, *SMALL, "--device", "cuda", "--batch", "8",
                                 "--steps", "3", "--warmup", "1", "--compile", "none,cudagraph", "--json", str(path)])
    assert r.exit_code == 0, r.output
    names = [row["name"] for row in json.loads(path.read_text())["rows"]]
    assert names == ["archspec", "archspec (CUDA graph step)", "hand-written nn.Module",
                     "hand-written nn.Module (CUDA graph step)"]
    assert "batch 8: archspec (CUDA graph step) / hand-written nn.Module (CUDA graph step): step time " in r.output
    assert "batch 8: archspec (CUDA graph step) / hand-written nn.Module: step time " in r.output


def test_bench_infer_on_cuda_eager_and_cudagraph(monkeypatch):
    monkeypatch.setattr(cli.out, "width", 240)
    r = CliRunner().invoke(app, ["bench", "infer", DENSENET, *SMALL, "--device", "cuda", "--backends",
                                 "eager,cudagraph", "--batch", "1,8", "--repeat", "3"])
    assert r.exit_code == 0, r.output
    assert f"device: {torch.cuda.get_device_name()}" in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("│")]
    for backend in ("eager", "cudagraph"):
        rows = [line for line in lines if line.startswith(f"│ {backend} ")]
        assert len(rows) == 2 and not any("skipped" in x or "failed" in x for x in rows), r.output


def test_cudagraph_replay_equals_eager():
    net = archspec.network(DENSENET, depth=16, k=4)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = fold(archspec.build(net)).to(dev)
    shape = tuple(net.shape(net.input))
    eager, graph = (prepare(name, model, net, shape, [4], dev, None) for name in ("eager", "cudagraph"))
    with torch.inference_mode():
        for seed in (1, 2):  # a second input through the same captured graph
            x = torch.randn(4, *shape, device=dev, generator=torch.Generator(device=dev).manual_seed(seed))
            want = eager.run(x)
            got = graph.run(x).clone()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
