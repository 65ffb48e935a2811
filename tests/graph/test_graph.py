"""`archspec graph`: every level writes a real PNG, SVG or DOT; the DOT of small hand-written specs has
exactly the units and edges their patterns make; bad levels and file types are user errors."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

import archspec
from archspec.cli import app
from archspec.errors import RunError
from archspec.runtime.viz import draw, units_of
from conftest import SPECS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UNIT = "layer unit(k: int) { bn relu conv(k, 3, padding=1) }\n"
DENSE = UNIT + """
network tiny_dense() {
  input(3, 8, 8)
  stem { conv(4, 3, padding=1) }
  block dense concat { repeat 3 { unit(2) } }
  head { gap linear(10) }
}
"""
# layer 1 widens 4 → 8 channels, so its residual shortcut is a 1×1 projection of the block input
RESIDUAL = UNIT + """
network tiny_residual() {
  input(3, 8, 8)
  stem { conv(4, 3, padding=1) }
  block residual { unit(8) unit(8) }
  head { gap linear(10) }
}
"""
GRADUAL = """
layer upd(o: int) { conv(o, 1) bn relu }
network tiny_gradual() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) }
  block gradual(4) { upd(2) }
  head { gap linear(10) }
}
"""
WINDOW = UNIT + """
network tiny_window() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) }
  block window(16) crossdepthwise { repeat 4 { unit(8) } }
  head { gap linear(10) }
}
"""

NODE = re.compile(r'^\s*"([^"]+)" \[label=', re.M)
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)"', re.M)


def dot_of(text: str, tmp_path: Path, level: str = "layer") -> tuple[list[str], list[tuple[str, str]], str]:
    out = draw(archspec.network(text), tmp_path / f"net-{level}.dot", level)
    dot = out.read_text(encoding="utf-8")
    return NODE.findall(dot), EDGE.findall(dot), dot


def test_layer_dot_has_every_dense_inflow_once(tmp_path):
    nodes, edges, dot = dot_of(DENSE, tmp_path)
    assert dot.startswith('digraph "tiny_dense" {') and dot.rstrip().endswith("}")
    assert nodes == ["input", "stem", "block1.layer1", "block1.layer2.merge", "block1.layer2",
                     "block1.layer3.merge", "block1.layer3", "block1.merge", "head"]
    assert len(edges) == 14 and len(set(edges)) == 14
    layers = ["block1.layer1", "block1.layer2", "block1.layer3"]
    # layer k's merge reads the block input and every earlier layer; the block's merge reads all of them
    for k, merge in ((2, "block1.layer2.merge"), (3, "block1.layer3.merge"), (4, "block1.merge")):
        assert sorted(a for a, b in edges if b == merge) == sorted(["stem"] + layers[:k - 1])
    assert "block1.layer1.merge" not in nodes  # one inflow needs no merge
    assert 'subgraph "cluster_block1"' in dot and "dense · concat, 3 layers" in dot


def test_block_and_op_dot(tmp_path):
    nodes, edges, _ = dot_of(DENSE, tmp_path, "block")
    assert nodes == ["input", "stem", "block1", "head"]
    assert edges == [("input", "stem"), ("stem", "block1"), ("block1", "head")]
    net = archspec.network(DENSE)
    nodes, edges, _ = dot_of(DENSE, tmp_path, "op")
    assert sorted(nodes) == sorted(net.graph.nodes)
    assert sorted(edges) == sorted(net.graph.edges)


def test_layer_edges_collapse(tmp_path):
    """The block input feeds layer 1 twice (its first op and its projection shortcut): one edge."""
    net = archspec.network(RESIDUAL)
    units = units_of(net)
    node_edges = [(a, b) for a, b in net.graph.edges if units[a] == "stem" and units[b] == "block1.layer1"]
    assert len(node_edges) == 2
    nodes, edges, dot = dot_of(RESIDUAL, tmp_path)
    assert edges.count(("stem", "block1.layer1")) == 1
    assert len(edges) == len(set(edges)) == 7
    # the identity skip of layer 2 runs from merge to merge
    assert ("block1.layer1.merge", "block1.layer2.merge") in edges
    line = next(l for l in dot.splitlines() if '"stem" -> "block1.layer1"' in l)
    assert 'class="chain residual"' in line


def test_gradual_and_window_units(tmp_path):
    nodes, edges, _ = dot_of(GRADUAL, tmp_path)
    # segment i's update reads the segments updated before it and the block input's rest
    assert sorted(a for a, b in edges if b == "block1.layer3") == ["block1.layer1.merge", "block1.layer2.merge",
                                                                   "stem"]
    assert sorted(a for a, b in edges if b == "block1.join") == [f"block1.layer{i}.merge" for i in range(1, 5)]
    nodes, edges, _ = dot_of(WINDOW, tmp_path)
    # a window of 16 channels over 8-channel inflows: each group merges the last two, no older ones
    assert sorted(a for a, b in edges if b == "block1.layer3.merge") == ["block1.layer1", "block1.layer2"]
    assert sorted(a for a, b in edges if b == "block1.layer4.merge") == ["block1.layer2", "block1.layer3"]
    assert sorted(a for a, b in edges if b == "block1.merge") == [f"block1.layer{i}" for i in range(1, 5)]


@pytest.mark.parametrize("level", ["block", "layer", "op"])
@pytest.mark.parametrize("text", [DENSE, RESIDUAL, GRADUAL, WINDOW], ids=["dense", "residual", "gradual", "window"])
def test_png_at_every_level(tmp_path, text, level):
    out = draw(archspec.network(text), tmp_path / "g.png", level)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000


def test_svg_is_xml_and_redraws_the_same(tmp_path):
    net = archspec.network(str(SPECS / "tiny_delugenet.arch"))
    out = draw(net, tmp_path / "sub" / "g.svg")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    for suffix in (".svg", ".png"):
        first = draw(net, tmp_path / f"a{suffix}").read_bytes()
        assert draw(net, tmp_path / f"b{suffix}").read_bytes() == first


def test_bad_suffix_and_level(tmp_path):
    net = archspec.network(DENSE)
    with pytest.raises(RunError, match="unknown file type '.jpg'"):
        draw(net, tmp_path / "g.jpg")
    with pytest.raises(RunError, match="unknown drawing level 'layers'"):
        draw(net, tmp_path / "g.png", "layers")
    assert not list(tmp_path.iterdir())


def test_cli(tmp_path):
    spec = tmp_path / "dense.arch"
    spec.write_text(DENSE, encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "dense.png"
    result = runner.invoke(app, ["graph", str(spec), "-o", str(out), "--level", "block"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output.replace("\n", "")
    assert out.read_bytes()[:8] == PNG_MAGIC
    result = runner.invoke(app, ["graph", str(spec), "-o", str(tmp_path / "d.svg"), "--level", "blocks"])
    assert result.exit_code == 2
    assert "unknown drawing level 'blocks'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["graph", str(spec), "-o", str(tmp_path / "d.gif")])
    assert result.exit_code == 2 and ".svg, .png or .dot" in result.output
