"""`archspec inspect` on a hand-made checkpoint whose weights are set so that every strength is known:
crossdepthwise inflows scaled by constants, the first convolutions after concat merges (and the
classifier after the last one) with known magnitudes per input channel."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import RunError
from archspec.runtime.train.checkpoint import Checkpoint, save
from archspec.runtime.viz.connections import connection_strengths, per_input_channel, plot_connections
from archspec.runtime.train import spec_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = """
layer unit(k: int) { bn relu conv(k, 3, padding=1) }
network handmade() {
  input(3, 8, 8)
  stem { conv(4, 3, padding=1) }
  block dense crossdepthwise { repeat 3 { unit(4) } }
  transition { conv(4, 1) }
  block dense concat { repeat 3 { unit(2) } }
  head { bn relu gap linear(10) }
}
"""
CHAIN = "network plain() { input(3, 8, 8) conv(4, 3, padding=1) bn relu gap linear(10) }"


def write_checkpoint(text: str, path, set_weights=None):
    spec = archspec.parse(text)
    net = archspec.network(spec)
    model = archspec.build(net)
    if set_weights is not None:
        with torch.no_grad():
            set_weights(model)
    files, main = spec_files(spec)
    save(path, Checkpoint(model=model.state_dict(), optimizer=None, scheduler=None, epoch=1, rng={},
                          meta={"network": net.name, "params": net.params, "files": files, "main": main}))
    return path


def _known(model):
    # crossdepthwise: 4 channels per inflow, so an inflow scaled by c has norm 2c
    model.get_submodule("block1.merge").weight.copy_(torch.tensor([1.0, 2, 4, 8]).repeat_interleave(4))
    model.get_submodule("block1.layer3.merge").weight.copy_(torch.tensor([3.0, 0, 4]).repeat_interleave(4))
    # block1.layer2.merge keeps its initial 1/L: equal inflows
    # concat: layer 2 reads [transition (4), layer1 (2)]; its first conv weighs them 1 and -3
    w = model.get_submodule("block2.layer2.conv1").weight
    w[:, :4] = 1.0
    w[:, 4:] = -3.0
    # layer 3 reads [transition (4), layer1 (2), layer2 (2)]: channel c weighs ±(c + 1)
    w = model.get_submodule("block2.layer3.conv1").weight
    for c in range(8):
        w[:, c] = (c + 1) * (-1) ** c
    # the block's output [transition, layer1, layer2, layer3] (10 channels) reaches the classifier
    w = model.get_submodule("head.linear1").weight
    for c in range(10):
        w[:, c] = 0.1 * (c + 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(SPEC, tmp_path_factory.mktemp("ck") / "handmade.safetensors", _known)


@pytest.fixture(scope="module")
def report(checkpoint):
    return connection_strengths(checkpoint)


def test_crossdepthwise_strengths(report):
    cdw = [m for m in report["merges"] if m["kind"] == "crossdepthwise"]
    assert [m["node"] for m in cdw] == ["block1.merge", "block1.layer3.merge", "block1.layer2.merge"]
    out, l3, l2 = cdw
    assert out["sources"] == ["stem.conv1", "block1.layer1.conv1", "block1.layer2.conv1", "block1.layer3.conv1"]
    assert out["source_units"] == ["stem", "block1.layer1", "block1.layer2", "block1.layer3"]
    assert out["labels"] == ["stem", "layer1", "layer2", "layer3"]
    assert out["target"] == "block1 output" and l3["target"] == "block1.layer3"
    assert out["norms"] == pytest.approx([2.0, 4.0, 8.0, 16.0])
    assert out["strengths"] == pytest.approx([0.125, 0.25, 0.5, 1.0])
    assert l3["strengths"] == pytest.approx([0.75, 0.0, 1.0])
    assert l2["strengths"] == pytest.approx([1.0, 1.0])


def test_concat_heat_map(report):
    (m,) = [m for m in report["merges"] if m["kind"] == "concat"]
    assert m["block"] == "block2"
    assert m["sources"] == ["transition1", "block2.layer1", "block2.layer2", "block2.layer3"]
    assert m["targets"] == ["block2.layer2", "block2.layer3", "head"]
    assert m["target_nodes"] == ["block2.layer2.conv1", "block2.layer3.conv1", "head.linear1"]
    want = [[1.0, 2.5, 0.25], [3.0, 5.5, 0.55], [None, 7.5, 0.75], [None, None, 0.95]]
    for got_row, want_row in zip(m["weights"], want, strict=True):
        assert [None if v is None else pytest.approx(v) for v in want_row] == got_row


def test_grouped_convolution_channels():
    """A grouped convolution's input channel reaches only its own group's outputs."""
    w = torch.zeros(4, 2, 1, 1)  # 2 groups: outputs 0-1 see inputs 0-1, outputs 2-3 see inputs 2-3
    w[0:2, 0], w[0:2, 1], w[2:4, 0], w[2:4, 1] = 1.0, 2.0, -3.0, 4.0
    assert per_input_channel(w, 4).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_plot(report, tmp_path):
    out = tmp_path / "c.png"
    plot_connections(report, out)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000
    with pytest.raises(RunError, match="unknown file type '.txt'"):
        plot_connections(report, tmp_path / "c.txt")


def test_cli_json_and_png(checkpoint, report, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", str(checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(report))
    out = tmp_path / "conn.png"
    result = runner.invoke(app, ["inspect", str(checkpoint), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    result = CliRunner().invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert "not a readable archspec checkpoint" in result.output and "Traceback" not in result.output


def test_network_without_merges(tmp_path):
    ck = write_checkpoint(CHAIN, tmp_path / "plain.safetensors")
    with pytest.raises(RunError, match="network 'plain' has no cross-layer merges to inspect"):
        connection_strengths(ck)
    result = CliRunner().invoke(app, ["inspect", str(ck), "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 2
    assert "has no cross-layer merges to inspect" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.png").exists()
