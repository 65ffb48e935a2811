"""HarDNet-85 and HarDNet-39DS against PingoLH/Pytorch-HarDNet's module (written out below as its hardnet.py
defines it), VoVNet-57 and SelecSLS-60 against timm's: the wiring each spec states as a rule (harmonic
links, one-shot aggregation, an earlier block's output read by name) read back from the graph; and, after
`transfer_weights`, the outputs in evaluation, and in training the outputs, the input's and every
parameter's gradient, and the weights and running statistics after an SGD step, agree in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import archspec
from conftest import SPECS, built, network_of, on_meta
from references import TOL, assert_same_after_transfer, timm_model, with_random_norms



# ---- PingoLH/Pytorch-HarDNet's hardnet.py, its loading of pretrained weights left out -------------------

class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.data.size(0), -1)


class CombConvLayer(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel=1, stride=1, dropout=0.1, bias=False):
        super().__init__()
        self.add_module('layer1', ConvLayer(in_channels, out_channels, kernel))
        self.add_module('layer2', DWConvLayer(out_channels, out_channels, stride=stride))


class DWConvLayer(nn.Sequential):
    def __init__(self, in_channels, out_channels, stride=1, bias=False):
        super().__init__()
        groups = in_channels
        self.add_module('dwconv', nn.Conv2d(groups, groups, kernel_size=3, stride=stride, padding=1,
                                            groups=groups, bias=bias))
        self.add_module('norm', nn.BatchNorm2d(groups))


class ConvLayer(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel=3, stride=1, dropout=0.1, bias=False):
        super().__init__()
        self.add_module('conv', nn.Conv2d(in_channels, out_channels, kernel_size=kernel, stride=stride,
                                          padding=kernel // 2, groups=1, bias=bias))
        self.add_module('norm', nn.BatchNorm2d(out_channels))
        self.add_module('relu', nn.ReLU6(True))


class HarDBlock(nn.Module):
    def get_link(self, layer, base_ch, growth_rate, grmul):
        if layer == 0:
            return base_ch, 0, []
        out_channels = growth_rate
        link = []
        for i in range(10):
            dv = 2 ** i
            if layer % dv == 0:
                k = layer - dv
                link.append(k)
                if i > 0:
                    out_channels *= grmul
        out_channels = int(int(out_channels + 1) / 2) * 2
        in_channels = 0
        for i in link:
            ch, _, _ = self.get_link(i, base_ch, growth_rate, grmul)
            in_channels += ch
        return out_channels, in_channels, link

    def get_out_ch(self):
        return self.out_channels

    def __init__(self, in_channels, growth_rate, grmul, n_layers, keepBase=False, residual_out=False,
                 dwconv=False):
        super().__init__()
        self.keepBase = keepBase
        self.links = []
        layers_ = []
        self.out_channels = 0
        for i in range(n_layers):
            outch, inch, link = self.get_link(i + 1, in_channels, growth_rate, grmul)
            self.links.append(link)
            if dwconv:
                layers_.append(CombConvLayer(inch, outch))
            else:
                layers_.append(ConvLayer(inch, outch))
            if (i % 2 == 0) or (i == n_layers - 1):
                self.out_channels += outch
        self.layers = nn.ModuleList(layers_)

    def forward(self, x):
        layers_ = [x]
        for layer in range(len(self.layers)):
            link = self.links[layer]
            tin = []
            for i in link:
                tin.append(layers_[i])
            if len(tin) > 1:
                x = torch.cat(tin, 1)
            else:
                x = tin[0]
            out = self.layers[layer](x)
            layers_.append(out)
        t = len(layers_)
        out_ = []
        for i in range(t):
            if (i == 0 and self.keepBase) or (i == t - 1) or (i % 2 == 1):
                out_.append(layers_[i])
        out = torch.cat(out_, 1)
        return out


class HarDNet(nn.Module):
    def __init__(self, depth_wise=False, arch=85):
        super().__init__()
        first_ch = [32, 64]
        second_kernel = 3
        max_pool = True
        grmul = 1.7
        drop_rate = 0.1
        # HarDNet68
        ch_list = [128, 256, 320, 640, 1024]
        gr = [14, 16, 20, 40, 160]
        n_layers = [8, 16, 16, 16, 4]
        downSamp = [1, 0, 1, 1, 0]
        if arch == 85:
            first_ch = [48, 96]
            ch_list = [192, 256, 320, 480, 720, 1280]
            gr = [24, 24, 28, 36, 48, 256]
            n_layers = [8, 16, 16, 16, 16, 4]
            downSamp = [1, 0, 1, 0, 1, 0]
            drop_rate = 0.2
        elif arch == 39:
            first_ch = [24, 48]
            ch_list = [96, 320, 640, 1024]
            grmul = 1.6
            gr = [16, 20, 64, 160]
            n_layers = [4, 16, 8, 4]
            downSamp = [1, 1, 1, 0]
        if depth_wise:
            second_kernel = 1
            max_pool = False
            drop_rate = 0.05
        blks = len(n_layers)
        self.base = nn.ModuleList([])
        self.base.append(ConvLayer(in_channels=3, out_channels=first_ch[0], kernel=3, stride=2, bias=False))
        self.base.append(ConvLayer(first_ch[0], first_ch[1], kernel=second_kernel))
        if max_pool:
            self.base.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:
            self.base.append(DWConvLayer(first_ch[1], first_ch[1], stride=2))
        ch = first_ch[1]
        for i in range(blks):
            blk = HarDBlock(ch, gr[i], grmul, n_layers[i], dwconv=depth_wise)
            ch = blk.get_out_ch()
            self.base.append(blk)
            if i == blks - 1 and arch == 85:
                self.base.append(nn.Dropout(0.1))
            self.base.append(ConvLayer(ch, ch_list[i], kernel=1))
            ch = ch_list[i]
            if downSamp[i] == 1:
                if max_pool:
                    self.base.append(nn.MaxPool2d(kernel_size=2, stride=2))
                else:
                    self.base.append(DWConvLayer(ch, ch, stride=2))
        ch = ch_list[blks - 1]
        self.base.append(nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), Flatten(), nn.Dropout(drop_rate),
                                       nn.Linear(ch, 1000)))

    def forward(self, x):
        for layer in self.base:
            x = layer(x)
        return x


# ---- the wiring, read back from the graph -------------------------------------------------------------

def _layer_outputs(net, block: int) -> list[str]:
    """The last node of each layer of block `block`, in order, after the block's input."""
    outs: dict[int, str] = {}
    for n in net.nodes():
        head, _, rest = n.name.partition(".")
        if head == f"block{block}" and rest.startswith("layer"):
            outs[int(rest.split(".")[0].removeprefix("layer"))] = n.name
    return [outs[k] for k in sorted(outs)]


def _reads(net, node: str) -> list[str]:
    """What a layer's first op reads: a merge's inflows in order, or the one tensor."""
    (src,) = net.inputs(node)
    return net.inputs(src) if net.node(src).op == "concat" and src.endswith(".merge") else [src]


@pytest.mark.parametrize("name,depths", [("hardnet85", [8, 16, 16, 16, 16, 4]), ("hardnet39ds", [4, 16, 8, 4])])
def test_harmonic_blocks_read_layers_k_minus_powers_of_two_and_return_the_odd_ones(name, depths):
    """Layer k reads the concat of layers k − 2ⁿ for each 2ⁿ dividing k, newest first (layer 0 the block
    input), each one edge of the graph, no channel copied; the block returns its odd layers and its last.
    No `split` anywhere."""
    net = network_of(name)
    assert not [n for n in net.nodes() if n.op == "split"]
    for b, depth in enumerate(depths, 1):
        outs = _layer_outputs(net, b)
        assert len(outs) == depth
        first = [n.name for n in net.nodes() if n.name.startswith(f"block{b}.layer1.")][0]
        x0 = net.inputs(first)[0]
        layer = [x0] + outs
        for k in range(1, depth + 1):
            start = next(n.name for n in net.nodes() if n.name.startswith(f"block{b}.layer{k}.")
                         and n.op == "conv")
            want = [layer[k - 2 ** n] for n in range(5) if k % 2 ** n == 0]
            assert _reads(net, start) == want, (b, k)
        ends = [n for n in net.nodes() if n.name.startswith(f"block{b}.concat")]
        assert len(ends) == 1
        assert net.inputs(ends[0].name) == [layer[k] for k in range(1, depth + 1) if k % 2 == 1 or k == depth]


def test_hardnet85_is_a_small_graph():
    """The fx graph of the built module: one node per op, link and merge (the reference's symbolic trace
    has 309)."""
    gm = on_meta("hardnet85")
    assert len(gm.graph.nodes) <= 371


def test_hardnet85_is_written_in_40_lines():
    """The library's pattern and templates and the model's file, comments included."""
    lines = [ln for f in ("lib/hardnet.arch", "hardnet85.arch") for ln in (SPECS / f).read_text().splitlines()]
    assert len(lines) <= 40


def test_one_shot_aggregation_concatenates_the_input_and_every_layer_once():
    """Each VoVNet block: five 3×3s in a chain, the block input and their five outputs concatenated once,
    in that order."""
    net = network_of("vovnet57a")
    blocks = [n for n in net.nodes() if n.op == "concat"]
    assert len(blocks) == 1 + 1 + 4 + 3
    for cat in blocks:
        ins = net.inputs(cat.name)
        assert len(ins) == 6
        chain = [ins[0]]
        for y in ins[1:]:  # each layer's conv reads the one before it (the first, the block input)
            conv = y
            while net.node(conv).op != "conv":
                (conv,) = net.inputs(conv)
            assert net.inputs(conv) == [chain[-1]] and net.node(conv).args.kernel in (3, [3, 3], (3, 3))
            chain.append(y)
    assert not [n for n in net.nodes() if n.op == "split"]


def test_selecsls_later_blocks_read_their_stages_first_block_by_name():
    """Every block concatenates its three branch outputs; the later blocks of a stage add the output of
    the stage's first block (not the previous block's), as the fourth inflow."""
    net = network_of("selecsls60")
    readers: dict[str, list[str]] = {}
    for n in net.nodes():
        for i in net.inputs(n.name):
            readers.setdefault(i, []).append(n.name)
    cats = [n.name for n in net.nodes() if n.op == "concat"]
    per_stage = [2, 3, 4]
    assert len(cats) == sum(per_stage)
    i = 0
    for blocks in per_stage:
        assert len(net.inputs(cats[i])) == 3
        first = cats[i]
        for op in ("conv", "bn", "relu"):  # the 1×1 conv-BN-ReLU after the first block's concat
            (first,) = [r for r in readers[first] if net.node(r).op == op]
        for c in cats[i + 1:i + blocks]:
            ins = net.inputs(c)
            assert len(ins) == 4 and ins[3] == first, c
        i += blocks
    assert not [n for n in net.nodes() if n.op == "split"]


# ---- the same function as the references ----------------------------------------------------------------

REFERENCES = [
    ("hardnet85", lambda: HarDNet(arch=85)),
    ("hardnet39ds", lambda: HarDNet(depth_wise=True, arch=39)),
    ("vovnet57a", lambda: timm_model("vovnet57a")),
    ("selecsls60", lambda: timm_model("selecsls60")),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,reference", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_reference_weights_transfer_and_compute_the_same(name, reference):
    """At 64×64, two images: the same outputs in evaluation, and the same training step (dropout
    included). timm's VoVNet holds each ReLU inside its batch norm module (BatchNormAct2d), where the
    transfer's comparison of activations sees none: its weights are copied with `force`, every difference
    the transfer reports is such an activation, and the comparison of outputs and gradients is what shows
    the two compute the same."""
    torch.manual_seed(0)
    ref = with_random_norms(reference()).eval()
    gm = copy.deepcopy(built(name, size=64)).double().eval()
    report = archspec.transfer_weights(ref, gm, force=True)
    assert all(w.startswith("activation: ") for w in report.warnings)
    assert report.tensors == len(gm.state_dict()) - len(report.kept)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), ref(x), **TOL)
    assert_same_after_transfer(ref, gm, report.pairs, x)
