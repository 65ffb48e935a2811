"""`archspec bench train`: what it counts as held for backward, and that it prints its figures."""

import torch
from torch import nn
from typer.testing import CliRunner

from archspec.cli import app
from archspec.runtime.bench_train import saved_bytes
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
    assert "archspec / naive (plain codegen): step time " in r.output and "held for backward 1.00×" in r.output


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
