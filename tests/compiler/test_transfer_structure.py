"""Weights paired by structure, not by registration order: hand-written modules that register their
modules in another order than they run them (a layer scale first, a projection before the body, branches
in another order than summed, an aggregation tree) transfer by their dataflow with the same function;
hyper-parameters that differ (batch norm eps, convolution padding, an activation) are refused with both
modules named, and copied anyway with `force`; a safetensors file of another library, in no order,
pairs along the target's modules by its names' tree. Where torchvision and timm import: ConvNeXt-T and
RegNet-X-400MF (in the README's residual form) transfer with identical outputs, timm's MobileNetV3 is
refused for its batch norms' eps, and a timm ConvNeXt file transfers."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import archspec
import references
from archspec.cli import app
from archspec.compiler.transfer import TransferError, load_state_dict, transfer_weights
from conftest import SPECS
from test_transfer import TINY_RESNET, ConvBnRelu, TinyResNet, _build, _randomise, _same_function


def _changed(before: dict, gm: nn.Module) -> bool:
    return any(not torch.equal(v, before[k]) for k, v in gm.state_dict().items())


# ---- a layer scale registered first (torchvision's ConvNeXt) ---------------------------------------------

TINY_CONVNEXT = """
network tiny_convnext() {
  input(3, 8, 8)
  stem { conv(8, 2, stride=2, bias=true) layernorm }
  block residual sum {
    {
      conv(8, 3, padding=1, groups=8, bias=true) layernorm
      conv(16, 1, bias=true) gelu conv(8, 1, bias=true) scale(1e-6)
    }
  }
  head { gap linear(4) }
}
"""


class LayerScaleFirst(nn.Module):
    """A ConvNeXt block as torchvision writes it: the layer scale registered before the layers it scales,
    the pointwise layers linear over channels-last positions."""

    def __init__(self, c: int):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 1e-6))
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1 = nn.Linear(c, 2 * c)
        self.pw2 = nn.Linear(2 * c, c)

    def forward(self, x):
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.pw2(F.gelu(self.pw1(y))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class TinyConvNeXt(nn.Module):
    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.head = nn.Linear(8, 4)  # registered first, run last
        self.block = LayerScaleFirst(8)
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.stem_norm = nn.LayerNorm(8, eps=eps)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(self.block(x).mean((2, 3)))


def test_a_layer_scale_registered_first_pairs_by_dataflow(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyConvNeXt().double(), 1)
    gm = _build(TINY_CONVNEXT, 2)
    report = transfer_weights(hand, gm)
    assert report.order == "dataflow" and report.tensors == len(hand.state_dict())
    assert next(p.target for p in report.pairs if p.source == ("block.layer_scale",)).endswith("scale1.weight")
    _same_function(hand, gm, (3, 8, 8))


def test_a_layer_norm_eps_that_differs_is_refused():
    gm = _build(TINY_CONVNEXT, 2)
    with pytest.raises(TransferError, match=r"^LayerNorm eps: source stem_norm has 1e-05, target "
                                            r"stem\.layernorm1 has 1e-06; nothing was written"):
        transfer_weights(TinyConvNeXt(eps=1e-5).double(), gm)


# ---- a projection registered before the body (RegNet as the README writes it) ----------------------------

TINY_REGNET = """
network tiny_regnet() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) bn relu }
  block residual(projection="conv_bn") {
    { conv(16, 1) bn relu conv(16, 3, stride=2, padding=1, groups=2) bn relu conv(16, 1) bn }
  }
  relu
  head { gap linear(4) }
}
"""


class ProjectionFirst(nn.Module):
    """torchvision's RegNet unit: `proj` registered (and called) before the body `f`, summed, a ReLU."""

    def __init__(self, cin: int, w: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, w, 1, stride=2, bias=False), nn.BatchNorm2d(w))
        self.f = nn.Sequential(nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                               nn.Conv2d(w, w, 3, stride=2, padding=1, groups=2, bias=False), nn.BatchNorm2d(w),
                               nn.ReLU(), nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w))

    def forward(self, x):
        return F.relu(self.proj(x) + self.f(x))


class TinyRegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBnRelu(3, 8)
        self.unit = ProjectionFirst(8, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.unit(self.stem(x)).mean((2, 3)))


def test_a_projection_registered_before_the_body_pairs_by_dataflow(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyRegNet().double(), 3)
    gm = _build(TINY_REGNET, 4)
    report = transfer_weights(hand, gm)
    assert report.order == "dataflow"
    assert next(p.target for p in report.pairs if p.source == ("unit.proj.0.weight",)).endswith("shortcut.weight")
    _same_function(hand, gm, (3, 8, 8))


class UntraceableRegNet(TinyRegNet):
    """TinyRegNet whose forward branches on a tensor's value, which torch.fx cannot trace."""

    def forward(self, x):
        x = self.stem(x)
        if x.abs().sum() >= 0:  # always: the pass is recorded as it runs
            x = self.unit(x)
        return self.fc(x.mean((2, 3)))


def test_a_module_fx_cannot_trace_is_recorded_as_it_runs(one_thread):
    torch.manual_seed(0)
    hand = _randomise(UntraceableRegNet().double(), 3)
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(hand)
    gm = _build(TINY_REGNET, 4)
    assert transfer_weights(hand, gm).order == "dataflow"
    _same_function(hand, gm, (3, 8, 8))


SAME_SHAPED_BRANCHES = """
network branches() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) bn relu }
  block parallel sum { { conv(8, 1) bn relu } { conv(8, 1) bn } }
  head { gap linear(4) }
}
"""


class SameShapedBranches(nn.Module):
    """Two branches of the same shapes, the one without its ReLU registered first: registration order
    fits every shape and pairs them the wrong way round."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBnRelu(3, 8)
        self.plain = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.active = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        return self.fc((self.active(x) + self.plain(x)).mean((2, 3)))


def test_same_shaped_branches_pair_as_the_data_flows_not_as_registered(one_thread):
    torch.manual_seed(0)
    hand = _randomise(SameShapedBranches().double(), 5)
    gm = _build(SAME_SHAPED_BRANCHES, 6)
    report = transfer_weights(hand, gm)
    assert report.order == "dataflow"
    _same_function(hand, gm, (3, 8, 8))


# ---- branches registered in another order than summed (RepVGG) -------------------------------------------

TINY_REPVGG = """
network tiny_repvgg() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) bn relu }
  block parallel sum { { conv(8, 3, padding=1) bn } { conv(8, 1) bn } { bn } }
  relu
  head { gap linear(4) }
}
"""


class RepVggBlock(nn.Module):
    """RepVGG's training-time block: identity batch norm, 1×1 and 3×3 branches registered and called in
    that order, summed as 1×1 + 3×3, then the identity (a sum of sums)."""

    def __init__(self, c: int):
        super().__init__()
        self.identity = nn.BatchNorm2d(c)
        self.conv_1x1 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.conv_kxk = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        identity = self.identity(x)  # called first too, as timm's RepVggBlock does
        y = self.conv_1x1(x) + self.conv_kxk(x)
        return F.relu(y + identity)


class TinyRepVgg(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.block = RepVggBlock(8)
        self.stem = ConvBnRelu(3, 8)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


def test_branches_registered_in_another_order_than_summed(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyRepVgg().double(), 7)
    gm = _build(TINY_REPVGG, 8)
    assert transfer_weights(hand, gm).order == "dataflow"
    _same_function(hand, gm, (3, 8, 8))


# ---- an aggregation tree (DLA) -----------------------------------------------------------------------------

TINY_TREE = """
layer unit(c: int) { conv(c, 3, padding=1) bn relu }
layer tree1(c: int) {
  unit(c)
  block parallel concat { { unit(c) } identity }
  conv(c, 1) bn relu
}
network tiny_tree() {
  input(3, 8, 8)
  stem { conv(8, 3, padding=1) bn relu }
  tree1(8)
  block parallel concat { { tree1(8) } identity }
  conv(8, 1) bn relu
  head { gap linear(4) }
}
"""


class Unit(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)  # registered before the convolution it follows
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Tree(nn.Module):
    """DLA's aggregation: the root (registered first) aggregates the second child's output and the first's,
    concatenated in that order; the second child registered before the first."""

    def __init__(self, c: int, level: int):
        super().__init__()
        self.root = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.tree2 = Tree(c, level - 1) if level > 1 else Unit(c)
        self.tree1 = Tree(c, level - 1) if level > 1 else Unit(c)

    def forward(self, x):
        a = self.tree1(x)
        return self.root(torch.cat([self.tree2(a), a], 1))


class TinyDla(nn.Module):
    def __init__(self):
        super().__init__()
        self.tree = Tree(8, 2)
        self.stem = ConvBnRelu(3, 8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.tree(self.stem(x)).mean((2, 3)))


def test_an_aggregation_tree_pairs_by_dataflow(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyDla().double(), 9)
    gm = _build(TINY_TREE, 10)
    report = transfer_weights(hand, gm)
    assert report.order in ("execution", "dataflow") and report.tensors == len(hand.state_dict())
    _same_function(hand, gm, (3, 8, 8))


# ---- hyper-parameters ------------------------------------------------------------------------------------


def test_a_batch_norm_eps_that_differs_is_refused_and_forced():
    hand = _randomise(TinyResNet().double(), 1)
    hand.unit[1].bn.eps = 1e-3
    gm = _build(TINY_RESNET, 2)
    bn = [n for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d)][2]
    before = copy.deepcopy(gm.state_dict())
    with pytest.raises(TransferError) as e:
        transfer_weights(hand, gm)
    assert e.value.message == f"BN eps: source unit.1.bn has 0.001, target {bn} has 1e-05; nothing was written"
    assert "force" in e.value.hint and not _changed(before, gm)
    report = transfer_weights(hand, gm, force=True)
    assert report.warnings == [f"BN eps: source unit.1.bn has 0.001, target {bn} has 1e-05"]
    assert "1 hyper-parameters differ (forced)" in report.summary() and "warning: BN eps" in str(report)
    for a, b in zip(hand.state_dict().values(), gm.state_dict().values()):
        assert torch.equal(a, b)


def test_padding_momentum_and_activation_differences_are_named():
    gm = _build(TINY_RESNET, 2)
    conv = [n for n, m in gm.named_modules() if isinstance(m, nn.Conv2d)]
    hand = TinyResNet().double()
    hand.down.conv.padding = (2, 2)
    hand.down.conv.dilation = (2, 2)
    hand.stem.bn.momentum = None
    report = transfer_weights(hand, gm, force=True)
    assert f"conv padding: source down.conv has (2, 2), target {conv[3]} has (1, 1)" in report.warnings
    assert f"conv dilation: source down.conv has (2, 2), target {conv[3]} has (1, 1)" in report.warnings
    assert any(w.startswith("BN momentum: source stem.bn has None") for w in report.warnings)

    class Relu6Stem(TinyResNet):
        def forward(self, x):
            x = F.relu6(self.stem.bn(self.stem.conv(x)))
            x = x + self.unit(x)
            return self.fc(F.adaptive_avg_pool2d(self.down(x), 1).flatten(1))

    bn = next(n for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(TransferError) as e:
        transfer_weights(Relu6Stem().double(), gm)
    assert e.value.message == (f"activation: source stem.bn is followed by relu6, target {bn} by relu; "
                               "nothing was written")


PADDED = "network padded() { input(3, 8, 8) conv(4, 3, padding=1) bn relu }"


def _pad_first(pad: nn.Module) -> nn.Sequential:
    return _randomise(nn.Sequential(pad, nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU()), 3).double()


@pytest.mark.parametrize("pad", [nn.ZeroPad2d(1), nn.ConstantPad2d(1, 0.0)], ids=["ZeroPad2d", "ConstantPad2d"])
def test_zero_padding_before_a_convolution_is_its_padding(pad):
    """A padding module of zeros right before an unpadded convolution (as FractalNet's reference writes
    it) pads as the convolution's own padding would: the weights pair with no warning, and compute the
    same."""
    gm = _build(PADDED, 0)
    hand = _pad_first(pad)
    report = transfer_weights(hand, gm)
    assert report.warnings == [] and report.tensors == len(gm.state_dict())
    _same_function(hand, gm, (3, 8, 8))


@pytest.mark.parametrize("pad, has", [(nn.ZeroPad2d(2), "(2, 2)"), (nn.ZeroPad2d((1, 0, 1, 0)), "(0, 0)"),
                                      (nn.ConstantPad2d(1, 0.5), "(0, 0)")], ids=["wider", "uneven", "not-zero"])
def test_other_padding_before_a_convolution_is_refused(pad, has):
    """Zero padding of another amount counts with the convolution's own and still differs; padding that
    is uneven or not of zeros is no convolution's padding, and leaves the convolution's own to compare."""
    gm = _build(PADDED, 0)
    conv = next(n for n, m in gm.named_modules() if isinstance(m, nn.Conv2d))
    before = {k: v.clone() for k, v in gm.state_dict().items()}
    with pytest.raises(TransferError) as e:
        transfer_weights(_pad_first(pad), gm)
    assert e.value.message.startswith(f"conv padding: source 1 has {has}, target {conv} has (1, 1)")
    assert not _changed(before, gm)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a batch norm module that holds its ReLU, which a trace does not see into."""

    def __init__(self, c: int):
        super().__init__(c)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


class ConvBnAct(ConvBnRelu):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, stride)
        self.bn = BatchNormAct(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class TinyResNetAct(TinyResNet):
    def __init__(self):
        nn.Module.__init__(self)
        self.stem = ConvBnAct(3, 8)
        self.unit = nn.Sequential(ConvBnAct(8, 8), ConvBnAct(8, 8))
        self.down = ConvBnAct(8, 16, stride=2)
        self.fc = nn.Linear(16, 5)


def test_an_activation_inside_a_module_is_not_called_missing(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyResNetAct().double(), 4)
    gm = _build(TINY_RESNET, 5)
    report = transfer_weights(hand, gm)
    assert not report.warnings
    _same_function(hand, gm, (3, 8, 8))


# ---- files of other libraries ------------------------------------------------------------------------------


class TimmStyleConvNeXt(nn.Module):
    """timm's names for a ConvNeXt (`stem.0`, `stages.0.blocks.0.conv_dw`, `mlp.fc1`, `gamma`, `head.fc`),
    whose natural name order (head, stages, stem; conv_dw, gamma, mlp, norm) is not the order they run."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), nn.LayerNorm(8, eps=1e-6))
        block = nn.Module()
        block.conv_dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        block.norm = nn.LayerNorm(8, eps=1e-6)
        block.mlp = nn.Module()
        block.mlp.fc1, block.mlp.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        block.gamma = nn.Parameter(torch.full((8,), 1e-6))
        self.stages = nn.ModuleList([nn.Module()])
        self.stages[0].blocks = nn.ModuleList([block])
        self.head = nn.Module()
        self.head.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem[1](self.stem[0](x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        b = self.stages[0].blocks[0]
        y = b.mlp.fc2(F.gelu(b.mlp.fc1(b.norm(b.conv_dw(x).permute(0, 2, 3, 1))))) * b.gamma
        return self.head.fc((x + y.permute(0, 3, 1, 2)).mean((2, 3)))


def test_a_foreign_safetensors_file_pairs_by_its_names_tree(tmp_path, one_thread):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    hand = _randomise(TimmStyleConvNeXt().double(), 11)
    state = dict(sorted(hand.state_dict().items(), reverse=True))  # no order to go by, and no archspec record
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"),
              metadata={"format": "pt"})
    gm = _build(TINY_CONVNEXT, 12)
    report = transfer_weights(tmp_path / "model.safetensors", gm)
    assert report.order == "name-tree" and report.tensors == len(state)
    _same_function(hand, gm, (3, 8, 8))
    gm2 = _build(TINY_CONVNEXT, 13)
    assert transfer_weights(state, gm2).order == "name-tree"  # a state dict in no useful order, the same way
    _same_function(hand, gm2, (3, 8, 8))


# ---- the command line --------------------------------------------------------------------------------------


def eps_resnet() -> nn.Module:
    """TinyResNet with one batch norm's eps at 1e-3 (built by `--like test_transfer_structure:eps_resnet`)."""
    m = TinyResNet()
    m.stem.bn.eps = 1e-3
    return m


def test_cli_like_refuses_a_hyper_parameter_and_force_copies(tmp_path):
    spec = tmp_path / "tiny_resnet.arch"
    spec.write_text(TINY_RESNET)
    hand = _randomise(eps_resnet(), 3)
    torch.save(hand.state_dict(), tmp_path / "hand.pt")
    like = f"{__name__}:eps_resnet"
    assert __name__ in sys.modules
    args = ["transfer", str(tmp_path / "hand.pt"), str(spec), "-o", str(tmp_path / "w.safetensors"), "--like", like]
    done = CliRunner().invoke(app, args)
    gm = archspec.build(spec)
    bn = next(n for n, m in gm.named_modules() if isinstance(m, nn.BatchNorm2d))
    conv = next(n for n, m in gm.named_modules() if isinstance(m, nn.Conv2d))
    assert done.exit_code == 2 and f"BN eps: source stem.bn has 0.001, target {bn} has 1e-05" in done.output
    assert not (tmp_path / "w.safetensors").exists() and "Traceback" not in done.output
    done = CliRunner().invoke(app, [*args, "--force"])
    assert done.exit_code == 0, done.output
    assert f"warning: BN eps: source stem.bn has 0.001, target {bn} has 1e-05" in done.output
    written = load_state_dict(tmp_path / "w.safetensors")
    assert torch.equal(written[f"{conv}.weight"], hand.state_dict()["stem.conv.weight"])
    for bad, words in ((f"{__name__}:nothing_here", "cannot build --like"), ("plain", "cannot read --like"),
                       (f"{__name__}:TinyConvNeXt", "is not the --like model's state dict")):
        done = CliRunner().invoke(app, [*args[:-1], bad])
        assert done.exit_code == 2 and words in done.output and "Traceback" not in done.output, (bad, done.output)


# ---- other libraries, where they import --------------------------------------------------------------------

REGNET_README = (SPECS / "lib" / "regnet.arch").read_text().split("# Residual bottleneck unit")[0] + """
layer res_bottleneck(w: int, stride: int, group_width: int) {
  let g = min(group_width, w)
  block residual(projection="conv_bn") {
    { conv(w, 1) bn relu conv(w, 3, stride=stride, padding=1, groups=w // g) bn relu conv(w, 1) bn }
  }
  relu
}
network regnet_x_400mf_readme(size: int = 64) {
  input(3, size, size)
  stem { conv(32, 3, stride=2, padding=1) bn relu }
  let depths = [1, 2, 7, 12]
  let widths = [32, 64, 160, 400]
  for i in range(4) {
    block chain { for j in range(depths[i]) { res_bottleneck(widths[i], 2 if j == 0 else 1, 16) } }
  }
  head { gap linear(1000) }
}
"""


def _identical(source: nn.Module, gm: nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    source.eval()
    gm.eval()
    with torch.no_grad():
        assert torch.equal(source(x), gm(x))


@pytest.mark.slow
@pytest.mark.parametrize("name,spec,order", [("convnext_tiny", "convnext_tiny", "dataflow"),
                                             ("regnet_x_400mf", REGNET_README, "dataflow"),
                                             ("regnet_x_400mf", "regnet_x_400mf", "registration")],
                         ids=["convnext_tiny", "regnet_x_400mf_readme", "regnet_x_400mf"])
def test_torchvision_transfers_into_the_shipped_specs(name, spec, order, one_thread):
    """The shipped RegNet sums the projection first, as torchvision registers it; the README's residual
    form registers it after the body."""
    models = references.torchvision().models
    torch.manual_seed(0)
    tv = _randomise(getattr(models, name)(weights=None).double(), 13)
    gm = _build(spec, 14, **({} if spec is REGNET_README else {"size": 64}))
    report = transfer_weights(tv, gm)
    assert report.order == order and report.tensors == len(tv.state_dict())
    _identical(tv, gm)


def test_timm_mobilenetv3_is_refused_for_its_batch_norm_eps():
    timm_net = references.timm_model("mobilenetv3_large_100")
    gm = archspec.build("mobilenet_v3_large", size=64)
    with pytest.raises(TransferError, match=r"^BN eps: source bn1 has 1e-05, target stem\.bn1 has 0\.001"):
        transfer_weights(timm_net, gm)


def test_a_timm_safetensors_file_transfers(tmp_path, one_thread):
    from safetensors.torch import save_file

    timm_net = _randomise(references.timm_model("convnext_atto").double(), 15)
    save_file({k: v.contiguous() for k, v in timm_net.state_dict().items()}, str(tmp_path / "model.safetensors"))
    gm = _build(SPECS / "lib" / "convnext.arch", 16, depths=[2, 2, 6, 2], widths=[40, 80, 160, 320], size=64)
    assert transfer_weights(tmp_path / "model.safetensors", gm).order == "name-tree"
    _identical(timm_net, gm)
