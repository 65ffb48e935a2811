"""Weights from other modules into archspec's, paired by structure: round trips between archspec modules,
the hand-written baselines of every family and hand-written torch modules give the same function (float64,
train and eval), and the same training step; per-inflow batch norms stack into a crossdepthwise merge;
a module registered out of forward order is walked in forward order; files are read without unpickling;
a different structure is refused with the first mismatching tensors named, and nothing is written."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import archspec
import references
from archspec.cli import app
from archspec.compiler.transfer import (TransferError, load_state_dict, save_state_dict, transfer_weights)
from archspec.runtime.bench.handwritten import handwritten_for
from conftest import SPECS
from reference_counts import BY_NAME

SMALL = {  # small members of each hand-written family (as tests/runtime/test_handwritten.py)
    "delugenet146": dict(n=2, w=0.25),
    "densenet_bc100_k12": dict(depth=16, k=4),
    "gunn15": dict(widths=[8, 12, 16], segments=[2, 3, 4]),
    "seqresnet_k8r4": dict(r=1, k=4, drop=0.0, blocks=[2, 1, 2]),
}


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and running statistic off its initial value, so that every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))
    return model


def _same_function(a: nn.Module, b: nn.Module, shape: tuple[int, ...]) -> None:
    """`a` and `b` compute the same, in eval and in train mode (on copies: training moves the statistics)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        a.train(train)
        b.train(train)
        with torch.no_grad():
            torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-10)


def _build(spec, seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return archspec.build(spec, **kw).double()


# ---- archspec to archspec -------------------------------------------------------------------------------


def _renamed(state: dict) -> dict:
    """`state` with no name in common with it: module `m0`, `m1`, ... in order, tensor names kept."""
    modules = {k.rsplit(".", 1)[0]: None for k in state}
    index = {m: i for i, m in enumerate(modules)}
    return {f"m{index[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v for k, v in state.items()}


def test_round_trip_by_name_and_by_structure(one_thread):
    kw = dict(n=1, w=4)
    src = _randomise(_build(SPECS / "tiny_delugenet.arch", 0, **kw), 0)
    by_name = _build(SPECS / "tiny_delugenet.arch", 1, **kw)
    assert transfer_weights(src.state_dict(), by_name).order == "names"
    by_structure = _build(SPECS / "tiny_delugenet.arch", 2, **kw)
    report = transfer_weights(_renamed(src.state_dict()), by_structure)
    assert report.order == "state-dict" and report.tensors == len(src.state_dict())
    for m in (by_name, by_structure):
        _same_function(src, m, (1, 8, 8))
        for (k, a), b in zip(src.state_dict().items(), m.state_dict().values()):
            assert torch.equal(a, b), k


def test_densenet_round_trip_by_structure(one_thread):
    src = _randomise(_build(SPECS / "densenet_bc100_k12.arch", 0, depth=16, k=4), 3)
    dst = _build(SPECS / "densenet_bc100_k12.arch", 5, depth=16, k=4)
    report = transfer_weights(_renamed(src.state_dict()), dst)
    assert report.counts()["copy"] == report.tensors == len(src.state_dict())
    _same_function(src, dst, (3, 32, 32))


# ---- hand-written modules -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", list(SMALL))
def test_from_each_hand_written_baseline(spec, one_thread):
    net = archspec.network(SPECS / f"{spec}.arch", **SMALL[spec])
    torch.manual_seed(0)
    hand = _randomise(handwritten_for(net)().double(), 7)
    gm = _build(net, 1)
    report = transfer_weights(hand, gm)
    assert report.order == "registration"
    assert report.tensors == len(hand.state_dict())
    _same_function(hand, gm, (3, 32, 32))


class ConvBnRelu(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class TinyResNet(nn.Module):
    """conv-bn-relu, a residual unit of two of them, a strided one, a head: `TINY_RESNET` by hand."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = ConvBnRelu(3, 8)
        self.unit = nn.Sequential(ConvBnRelu(8, 8), ConvBnRelu(8, 8))
        self.down = ConvBnRelu(8, 16, stride=2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.unit(x)
        x = self.down(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


TINY_RESNET = """
layer cbr(c: int, stride: int = 1) { conv(c, 3, stride=stride, padding=1) bn relu }
layer unit(c: int) { cbr(c) cbr(c) }
network tiny_resnet(classes: int = 5) {
  input(3, 8, 8)
  stem { cbr(8) }
  block residual { unit(8) }
  cbr(16, stride=2)
  head { gap linear(classes) }
}
"""


def test_hand_written_module_trains_the_same_after_transfer(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyResNet().double(), 1)
    gm = _build(TINY_RESNET, 2)
    report = transfer_weights(hand, gm)
    assert report.tensors == len(hand.state_dict()) == len(gm.state_dict())
    _same_function(hand, gm, (3, 8, 8))
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    grads = []
    for m in (hand, gm):
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
        opt.step()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert all(g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(hand.state_dict().values(), gm.state_dict().values()):  # weights and running statistics
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    _same_function(hand, gm, (3, 8, 8))


class PerInflowBn(nn.Module):
    """A cross-layer depthwise merge written as one BatchNorm2d per inflow, summed."""

    def __init__(self, channels: int, inflows: int):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(inflows))

    def forward(self, xs):
        return sum(bn(x) for bn, x in zip(self.bns, xs))


class TinyDeluge(nn.Module):
    """`TINY_DELUGE` by hand: a stem, a dense block of three convolutions with per-inflow batch norms."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.layers = nn.ModuleList()
        for j in range(3):
            layer = nn.Module()
            layer.merge = PerInflowBn(4, j + 1) if j > 0 else None
            layer.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.layers.append(layer)
        self.out = PerInflowBn(4, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer.conv(layer.merge(feats) if layer.merge else feats[-1]))
        return self.fc(F.adaptive_avg_pool2d(self.out(feats), 1).flatten(1))


TINY_DELUGE = """
network tiny_deluge() {
  input(1, 6, 6)
  stem { conv(4, 3, padding=1) }
  block dense crossdepthwise { repeat 3 { conv(4, 3, padding=1) } }
  head { gap linear(3) }
}
"""


def test_per_inflow_batch_norms_stack_into_a_crossdepthwise_merge(one_thread):
    torch.manual_seed(0)
    hand = _randomise(TinyDeluge().double(), 3)
    gm = _build(TINY_DELUGE, 4)
    report = transfer_weights(hand, gm)
    stacked = [p for p in report.pairs if p.how == "stack"]
    assert stacked and {len(p.source) for p in stacked} >= {2, 4}
    assert any(p.target.endswith("num_batches_tracked") for p in stacked)
    _same_function(hand, gm, (1, 6, 6))
    gm.train()
    hand.train()
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    hand(x)
    gm(x)
    means = [b for n, b in gm.named_buffers() if n.endswith("running_mean")]
    want = [torch.cat([bn.running_mean for bn in m.bns]) for m in hand.modules() if isinstance(m, PerInflowBn)]
    for a, b in zip(sorted(means, key=len), sorted(want, key=len)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class ShuffledRegistration(TinyResNet):
    """TinyResNet with its head registered first: registration order is not forward order."""

    def __init__(self):
        nn.Module.__init__(self)
        self.fc = nn.Linear(16, 5)
        self.down = ConvBnRelu(8, 16, stride=2)
        self.stem = ConvBnRelu(3, 8)
        self.unit = nn.Sequential(ConvBnRelu(8, 8), ConvBnRelu(8, 8))


def test_a_module_registered_out_of_order_is_walked_as_its_forward_runs(one_thread):
    torch.manual_seed(0)
    hand = _randomise(ShuffledRegistration().double(), 5)
    hand.train()
    gm = _build(TINY_RESNET, 6)
    report = transfer_weights(hand, gm)
    assert report.order == "execution"
    assert hand.training and all(m.training for m in hand.modules())  # the walk left the module as it was
    _same_function(hand, gm, (3, 8, 8))


# ---- refusals -------------------------------------------------------------------------------------------


def test_a_different_structure_is_refused_and_nothing_is_written(one_thread):
    hand = TinyResNet().double()
    hand.down = ConvBnRelu(8, 12, stride=2)
    hand.fc = nn.Linear(12, 5)
    gm = _build(TINY_RESNET, 0)
    before = copy.deepcopy(gm.state_dict())
    with pytest.raises(TransferError) as e:
        transfer_weights(hand, gm)
    names, targets = list(hand.state_dict()), list(gm.state_dict())
    at = names.index("down.conv.weight")
    assert e.value.message == (
        f"the structures differ at source tensor {at + 1} of {len(names)}, 'down.conv.weight' (12×8×3×3) and "
        f"target tensor {at + 1} of {len(targets)}, '{targets[at]}' (16×8×3×3); "
        f"{at} tensors matched before them")
    for k, v in gm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_more_tensors_on_one_side_is_refused():
    gm = _build(TINY_RESNET, 0)
    state = dict(TinyResNet().double().state_dict())
    extra = {**state, "tail.weight": torch.zeros(3)}
    with pytest.raises(TransferError, match="the source has more tensors than the target.*'tail.weight' \\(3\\)"):
        transfer_weights(extra, gm)
    short = dict(list(state.items())[:-2])
    with pytest.raises(TransferError, match="the target has more tensors than the source"):
        transfer_weights(short, gm)
    biased = TinyResNet().double()
    biased.stem.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    with pytest.raises(TransferError) as e:
        transfer_weights(biased, gm)
    conv = next(iter(gm.state_dict())).rsplit(".", 1)[0]
    assert (f"source tensor 2 of 27, 'stem.conv.bias' (8) and target module '{conv}', which has only 1 tensors "
            "(8×3×3×3)") in e.value.message
    with pytest.raises(TransferError, match="maps names to tensors"):
        transfer_weights({"a": 1}, gm)
    with pytest.raises(TransferError, match="cannot take weights from a int"):
        transfer_weights(3, gm)


# ---- files ----------------------------------------------------------------------------------------------


def test_files_torch_and_safetensors(tmp_path, one_thread):
    hand = _randomise(TinyResNet().double(), 8)
    torch.save({"state_dict": hand.state_dict(), "epoch": 3}, tmp_path / "hand.pt")
    save_state_dict(hand.state_dict(), tmp_path / "hand.safetensors")
    from safetensors.torch import save_file

    for name in ("hand.pt", "hand.safetensors"):
        gm = _build(TINY_RESNET, 9)
        assert transfer_weights(tmp_path / name, gm).order == "file", name
        _same_function(hand, gm, (3, 8, 8))
    assert list(load_state_dict(tmp_path / "hand.safetensors")) == list(hand.state_dict())
    # a plain safetensors file keeps no order: names the target shares pair by name, others along the
    # target's modules by their names' tree; a structure that differs is refused
    save_file({k: v.contiguous() for k, v in gm.state_dict().items()}, str(tmp_path / "own.safetensors"))
    assert transfer_weights(tmp_path / "own.safetensors", _build(TINY_RESNET, 10)).order == "names"
    save_file({k: v.contiguous() for k, v in hand.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    gm = _build(TINY_RESNET, 10)
    assert transfer_weights(tmp_path / "bare.safetensors", gm).order == "name-tree"
    _same_function(hand, gm, (3, 8, 8))
    other = {k: v.contiguous() for k, v in hand.state_dict().items() if not k.startswith("fc.")}
    other.update({"fc.weight": torch.zeros(7, 16), "fc.bias": torch.zeros(7)})
    save_file(other, str(tmp_path / "other.safetensors"))
    with pytest.raises(TransferError, match="structures differ"):
        transfer_weights(tmp_path / "other.safetensors", _build(TINY_RESNET, 10))


def test_a_training_checkpoints_model_tensors(tmp_path, one_thread):
    from archspec.runtime.train.checkpoint import Checkpoint, save

    src = _randomise(_build(TINY_RESNET, 0), 1)
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(src(torch.randn(2, 3, 8, 8, dtype=torch.float64)), torch.tensor([0, 1])).backward()
    opt.step()
    save(tmp_path / "last.safetensors", Checkpoint(dict(src.state_dict()), opt.state_dict(), None, 1,
                                                   {"cpu": torch.get_rng_state()}, {}))
    gm = _build(TINY_RESNET, 2)
    assert transfer_weights(tmp_path / "last.safetensors", gm).order == "names"  # optimizer and rng left out
    _same_function(src, gm, (3, 8, 8))


UNPICKLED = []


def _side_effect():
    UNPICKLED.append(True)
    return {}


class Payload:
    def __reduce__(self):
        return (_side_effect, ())


def test_a_torch_file_is_never_unpickled_into_objects(tmp_path):
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(TransferError, match="evil.pt"):
        load_state_dict(tmp_path / "evil.pt")
    assert not UNPICKLED
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(TransferError, match="unknown kind of file '.npz'"):
        load_state_dict(tmp_path / "w.npz")
    with pytest.raises(TransferError, match="no such file"):
        load_state_dict(tmp_path / "missing.safetensors")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(TransferError, match="holds no state dict"):
        load_state_dict(tmp_path / "list.pt")


# ---- torchvision ----------------------------------------------------------------------------------------

RESNET18 = """
layer basic(w: int, stride: int = 1) { conv(w, 3, stride=stride, padding=1) bn relu conv(w, 3, padding=1) bn }
network resnet18(classes: int = 1000, size: int = 64) {
  input(3, size, size)
  stem { conv(64, 7, stride=2, padding=3) bn relu maxpool(3, 2, 1) }
  let widths = [64, 128, 256, 512]
  for i in range(4) {
    for j in range(2) {
      if i > 0 and j == 0 {
        block residual(projection="conv_bn") { basic(widths[i], 2) }
      } else {
        block residual { basic(widths[i]) }
      }
      relu
    }
  }
  head { gap linear(classes) }
}
"""

DENSENET121 = """
layer bottleneck(k: int) { bn relu conv(4 * k, 1) bn relu conv(k, 3, padding=1) }
network densenet121(classes: int = 1000, size: int = 64) {
  input(3, size, size)
  stem { conv(64, 7, stride=2, padding=3) bn relu maxpool(3, 2, 1) }
  let layers = [6, 12, 24, 16]
  for i in range(4) {
    if i > 0 {
      transition { bn relu conv(channels // 2, 1) avgpool(2) }
    }
    block dense concat { repeat layers[i] { bottleneck(32) } }
  }
  head { bn relu gap linear(classes) }
}
"""

TORCHVISION = {"resnet18": RESNET18, "densenet121": DENSENET121}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_specs_have_torchvisions_parameter_count(name):
    assert archspec.summary(TORCHVISION[name]).params == BY_NAME[name].params


def _torchvision():
    return references.torchvision().models


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TORCHVISION))
def test_from_torchvision(name, one_thread):
    models = _torchvision()
    torch.manual_seed(0)
    tv = _randomise(getattr(models, name)(weights=None).double(), 11)
    gm = _build(TORCHVISION[name], 12)
    report = transfer_weights(tv, gm)
    assert report.tensors == len(tv.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tv.eval()
    gm.eval()
    with torch.no_grad():
        torch.testing.assert_close(gm(x), tv(x), rtol=1e-9, atol=1e-9)


def test_cli_transfer(tmp_path):
    spec = tmp_path / "tiny_resnet.arch"
    spec.write_text(TINY_RESNET)
    hand = _randomise(TinyResNet(), 1)
    torch.save(hand.state_dict(), tmp_path / "hand.pt")
    done = CliRunner().invoke(app, ["transfer", str(tmp_path / "hand.pt"), str(spec), "-o",
                                    str(tmp_path / "w.safetensors"), "-v"])
    assert done.exit_code == 0, done.output
    assert f"transferred {len(hand.state_dict())} tensors" in done.output and "down.conv.weight" in done.output
    gm = archspec.build(spec)
    gm.load_state_dict(load_state_dict(tmp_path / "w.safetensors"))
    _same_function(hand.double(), gm.double(), (3, 8, 8))
    hand.fc = nn.Linear(16, 7)
    torch.save(hand.state_dict(), tmp_path / "other.pt")
    done = CliRunner().invoke(app, ["transfer", str(tmp_path / "other.pt"), str(spec), "-o",
                                    str(tmp_path / "x.safetensors")])
    assert done.exit_code == 2 and "structures differ" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "x.safetensors").exists()
