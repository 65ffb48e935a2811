"""`archspec bench train`: what it counts as held for backward, that it interleaves the modules' steps,
and that it prints and saves its figures, batch size by batch size."""

import json
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from archspec import cli
from archspec.cli import app
from archspec.runtime.bench.train import interleave, saved_bytes
from conftest import SPECS

TINY = str(SPECS / "tiny_delugenet.arch")


def test_saved_bytes_counts_activations_not_weights():
    conv = nn.Conv2d(3, 5, 3, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(5 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([0, 1])
    # the conv keeps its input; the linear keeps its (flattened) input; the loss its log-softmax, the
    # targets and its total weight (a float scalar)
    want = x.numel() * 4 + 2 * 5 * 6 * 6 * 4 + 2 * 4 * 4 + y.numel() * 8 + 4
    assert saved_bytes(model, x, y) == want
    assert all(p.grad is None for p in model.parameters())  # the step's gradients are not left behind


def test_saved_bytes_counts_a_shared_storage_once():
    class Twice(nn.Module):
        def forward(self, x):
            return (x * x.sigmoid()).flatten(1)[:, :3] + (x * 2).sigmoid().flatten(1)[:, :3]

    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.tensor([0, 2])
    got = saved_bytes(Twice(), x, y)
    # x (read by two ops, one storage), sigmoid(x), sigmoid(2x), and the loss's log-softmax, targets, weight
    assert got == 3 * x.numel() * 4 + 2 * 3 * 4 + y.numel() * 8 + 4


def test_cli_prints_figures_and_ratios():
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--set", "n=1", "--set", "w=4", "--batch", "4",
                                 "--steps", "2", "--warmup", "0", "--baseline", "naive"])
    assert r.exit_code == 0, r.output
    assert "images/s" in r.output and "GiB" in r.output
    assert "archspec / naive (plain codegen): step time " in r.output
    # the fast policy's buffered merges hold no more for backward than the plain merges do
    held = re.search(r"held for backward (\d+\.\d+)×", r.output)
    assert held and float(held.group(1)) <= 1.0, r.output


def test_depth_sweep_is_linear_for_delugenet():
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--set", "w=4", "--batch", "2", "--depth-sweep", "n"])
    assert r.exit_code == 0, r.output
    growth = [float(line.split()[-2]) for line in r.output.splitlines() if line.strip().startswith("│")
              and line.split()[1] in ("8", "16", "32")]
    assert len(growth) == 3 and all(0.9 < g < 1.1 for g in growth), r.output


def test_bad_baseline_and_sweep_parameter():
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--baseline", "handwritten"])
    assert r.exit_code == 2 and "no hand-written module" in r.output
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--depth-sweep", "layers"])
    assert r.exit_code == 2 and "no parameter 'layers'" in r.output


def test_interleave_runs_one_step_of_each_module_per_round():
    calls = []

    def run(name):
        def step():
            calls.append(name)
            return float(len(calls))
        return step

    times = interleave(3, [run("a"), run("b")])
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert times == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]  # each module's own results, in its call order


def test_batch_list_rows_ratios_and_json(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(cli.out, "width", 200)  # one table row per line
    path = tmp_path / "figures" / "train.json"
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--set", "n=1", "--set", "w=4", "--batch", "2,3",
                                 "--steps", "2", "--warmup", "1", "--baseline", "naive", "--memory", "lean",
                                 "--json", str(path)])
    assert r.exit_code == 0, r.output
    assert "threads: " in r.output and "torch: " in r.output and "memory: lean" in r.output
    rows = [line.split("│")[1:3] for line in r.output.splitlines() if line.startswith("│")]
    assert [(m.strip(), b.strip()) for m, b in rows] == [
        ("archspec (lean)", "2"), ("naive (plain codegen)", "2"), ("archspec (lean)", "3"), ("naive (plain codegen)", "3")]
    for b in (2, 3):
        assert f"batch {b}: archspec (lean) / naive (plain codegen): step time " in r.output
    data = json.loads(path.read_text())
    assert data["environment"]["network"] == "tiny_delugenet" and data["environment"]["steps"] == 2
    assert [(row["name"], row["batch"]) for row in data["rows"]] == [
        ("archspec (lean)", 2), ("naive (plain codegen)", 2), ("archspec (lean)", 3), ("naive (plain codegen)", 3)]
    for row in data["rows"]:
        assert row["range_ms"][0] <= row["spread_ms"][0] <= row["step_ms"] <= row["spread_ms"][1] <= row["range_ms"][1]
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["step_ms"])
        assert row["saved"] > 0 and row["peak"] is None  # no CUDA here
    by = {(row["name"], row["batch"]): row for row in data["rows"]}
    for q in data["ratios"]:
        a, b = by[(q["module"], q["batch"])], by[(q["baseline"], q["batch"])]
        assert q["step_time"] == pytest.approx(a["step_ms"] / b["step_ms"])
        assert q["held_for_backward"] == pytest.approx(a["saved"] / b["saved"]) and q["held_for_backward"] <= 1.0


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "batch sizes must be >= 1"),
    (["--batch", "4,x"], "is not a number"),
    (["--memory", "tiny"], "unknown memory mode 'tiny'"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'"),
    (["--compile", "partial"], "unknown compile mode 'partial'"),
    (["--compile", "none,wholes"], "unknown compile mode 'wholes'"),
    (["--compile", "none,cudagraph"], "--compile cudagraph needs a CUDA device"),
    (["--compile", "regional+cudagraph"], "--compile regional+cudagraph needs a CUDA device"),
])
def test_bad_options_are_clear_errors(args, message):
    r = CliRunner().invoke(app, ["bench", "train", TINY, "--steps", "2", *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output
