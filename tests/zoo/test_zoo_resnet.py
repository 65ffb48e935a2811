"""torchvision's ResNet, ResNeXt, Wide ResNet, RegNet, VGG (with and without batch norms) and AlexNet as
specs (`specs/lib/resnet.arch`, `regnet.arch`, `vgg.arch`, `alexnet.arch`): small variants of each family
hold the same tensors in the same order as torchvision's modules (written out below as torchvision defines
them), so that weights copied one to one give the same function; the data set the stem and the classifier.
torchvision's parameter counts and GMACs are in `tests/reference_counts.py`, checked with every model's
build by `test_specs.py`."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

import archspec
from archspec import SpecError
from conftest import SPECS
from reference_counts import BY_NAME


def spec(name: str) -> str:
    return str(SPECS / f"{name}.arch")


def test_channels_and_classes_follow_the_data():
    """One input channel drops two thirds of the stem's 7×7 weights; 10 classes shrink the classifier."""
    s = archspec.summary(spec("resnet18"), channels=1, classes=10)
    assert s.input_shape == (1, 224, 224) and s.output_shape == (10,)
    assert s.params == BY_NAME["resnet18"].params - 2 * 64 * 7 * 7 - 990 * (512 + 1)


def test_an_unknown_unit_is_refused_where_the_network_is_chosen():
    with pytest.raises(SpecError) as e:
        archspec.network(spec("resnet50"), unit="bottle")
    assert "unit must be 'basic' or 'bottleneck'" in e.value.message


# ---- torchvision's modules, as its source defines them (registration order included) ----------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet; `widths` (its fixed 64/128/256/512) narrows it for a quick test."""

    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64, widths=(64, 128, 256, 512)):
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_norm_act(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU()] if act else []))


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class ResBottleneckBlock(nn.Module):
    def __init__(self, width_in, width_out, stride, group_width, bottleneck_multiplier, se_ratio):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = conv_norm_act(width_in, width_out, 1, stride, act=False)
        w_b = int(round(width_out * bottleneck_multiplier))
        f = OrderedDict(a=conv_norm_act(width_in, w_b, 1),
                        b=conv_norm_act(w_b, w_b, 3, stride, groups=w_b // group_width))
        if se_ratio:
            f["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)))
        f["c"] = conv_norm_act(w_b, width_out, 1, act=False)
        self.f = nn.Sequential(f)
        self.activation = nn.ReLU()

    def forward(self, x):
        return self.activation((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, depths, widths, group_width, se_ratio, num_classes):
        super().__init__()
        self.stem = conv_norm_act(3, 32, 3, 2)
        stages, width_in = [], 32
        for depth, width in zip(depths, widths):
            stages.append(nn.Sequential(*[ResBottleneckBlock(width_in if i == 0 else width, width, 2 if i == 0 else 1,
                                                             group_width, 1.0, se_ratio) for i in range(depth)]))
            width_in = width
        self.trunk_output = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width_in, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk_output(self.stem(x))), 1))


class VGG(nn.Module):
    """torchvision's VGG, with batch norms or without; `hidden` (its fixed 4096) narrows it for a quick test."""

    def __init__(self, cfg, num_classes, hidden=4096, batch_norm=True):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), *([nn.BatchNorm2d(v)] if batch_norm else []), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(cin * 7 * 7, hidden), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    """torchvision's AlexNet; `widths` and `hidden` (its fixed 64/192/384/256/256 and 4096) narrow it."""

    def __init__(self, num_classes, widths=(64, 192, 384, 256, 256), hidden=4096):
        super().__init__()
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, a, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(a, b, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, d, 3, padding=1), nn.ReLU(),
            nn.Conv2d(d, e, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(e * 6 * 6, hidden), nn.ReLU(),
                                        nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def copied_one_to_one(reference: nn.Module, gm: nn.Module) -> None:
    """Give `reference` random weights and batch statistics, and copy its state into `gm` tensor by
    tensor, in module order, where every shape must agree."""
    g = torch.Generator().manual_seed(0)
    src, dst = reference.state_dict(), gm.state_dict()
    assert len(src) == len(dst)
    with torch.no_grad():
        for (name, a), (target, b) in zip(src.items(), dst.items()):
            assert a.shape == b.shape, (name, target)
            if a.is_floating_point():
                a.copy_(torch.rand(a.shape, generator=g, dtype=a.dtype) + 0.5 if "running_var" in name
                        else torch.randn(a.shape, generator=g, dtype=a.dtype) * 0.2)
            b.copy_(a)


# (spec, overrides for a small variant, torchvision's module of that variant)
NARROW = [16, 32, 32, 64]
SMALL = [
    ("resnet18", dict(blocks=[2, 1, 1, 1], widths=NARROW, classes=10),
     lambda: ResNet(BasicBlock, [2, 1, 1, 1], 10, widths=NARROW)),
    ("resnet50", dict(blocks=[1, 2, 1, 1], widths=NARROW, classes=10),
     lambda: ResNet(Bottleneck, [1, 2, 1, 1], 10, widths=NARROW)),
    ("resnext50_32x4d", dict(blocks=[1, 2, 1, 1], widths=NARROW, classes=10),
     lambda: ResNet(Bottleneck, [1, 2, 1, 1], 10, groups=32, width_per_group=4, widths=NARROW)),
    ("wide_resnet50_2", dict(blocks=[1, 1, 1, 1], widths=NARROW, classes=10),
     lambda: ResNet(Bottleneck, [1, 1, 1, 1], 10, width_per_group=128, widths=NARROW)),
    ("regnet_x_400mf", dict(depths=[1, 2, 1, 1], widths=[16, 32, 32, 64], classes=10),
     lambda: RegNet([1, 2, 1, 1], [16, 32, 32, 64], 16, 0.0, 10)),
    ("regnet_y_400mf", dict(depths=[1, 2, 1, 1], widths=[16, 24, 32, 48], classes=10),
     lambda: RegNet([1, 2, 1, 1], [16, 24, 32, 48], 8, 0.25, 10)),
    ("vgg11_bn", dict(widths=[8, 8, 16, 16, 16], hidden=32, classes=10),
     lambda: VGG([8, "M", 8, "M", 16, 16, "M", 16, 16, "M", 16, 16, "M"], 10, hidden=32)),
    ("vgg16_bn", dict(widths=[8, 8, 16, 16, 16], hidden=32, classes=10),
     lambda: VGG([8, 8, "M", 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M", 16, 16, 16, "M"], 10, hidden=32)),
    ("vgg19", dict(widths=[8, 8, 16, 16, 16], hidden=32, classes=10),
     lambda: VGG([8, 8, "M", 8, 8, "M", 16, 16, 16, 16, "M", 16, 16, 16, 16, "M", 16, 16, 16, 16, "M"], 10, hidden=32,
                 batch_norm=False)),
    # AlexNet needs 63×63 or more: three 3×3/2 max pools after an 11×11/4 stem
    ("alexnet", dict(widths=[8, 16, 16, 16, 16], hidden=32, classes=10, size=64),
     lambda: AlexNet(10, widths=(8, 16, 16, 16, 16), hidden=32)),
]


@pytest.mark.parametrize("name,overrides,reference", SMALL, ids=[s[0] for s in SMALL])
def test_torchvisions_weights_copy_one_to_one_and_compute_the_same(name, overrides, reference):
    """Same tensors in the same order: projections after the body in ResNet, before it in RegNet (as
    torchvision registers them), the squeeze-and-excitation gate's two biased 1×1s, VGG's and AlexNet's
    biased convolutions (VGG's with a batch norm or none)."""
    torch.manual_seed(0)
    ref = reference().double().eval()
    overrides = {"size": 32, **overrides}
    gm = archspec.build(spec(name), **overrides).double().eval()
    copied_one_to_one(ref, gm)
    x = torch.randn(2, 3, overrides["size"], overrides["size"], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), ref(x), rtol=1e-10, atol=1e-10)
