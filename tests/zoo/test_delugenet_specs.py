"""DelugeNet's cross-layer depthwise convolutions as the reference counts them. The DelugeNet and
ResNet-like specs' parameter counts, MACs and builds are in `test_specs.py`."""

import archspec
from conftest import SPECS


def test_cldc_parameters_of_delugenet146():
    net = archspec.network(SPECS / "delugenet146.arch")
    cldc = [n for n in net.nodes() if n.op == "crossdepthwise"]
    assert sum(archspec.graph.ir.node_params(net, n) for n in cldc) == 209_280
    assert max(len(net.inputs(n.name)) for n in cldc) == 25

