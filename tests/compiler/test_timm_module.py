"""timm's model interface on a built module: `build` takes timm's keywords (mapped onto the spec's own
parameters, a located error where a spec has none), and the module has `forward_features`,
`forward_head`, `get_classifier`, `reset_classifier`, `num_features`, `feature_info` and
`pretrained_cfg`, with the state_dict of the plain module."""

from __future__ import annotations

import copy

import pytest
import torch

import archspec
from archspec import api
from archspec.errors import SpecError
from archspec.runtime.data import IMAGENET_MEAN, IMAGENET_STD

SMALL = dict(num_classes=10, in_chans=1, img_size=32)  # ResNet-18 on 32×32 grey images: 1×1 at the end
X = (2, 1, 32, 32)

DROPPING = """
network dropping(classes: int = 10, channels: int = 3, size: int = 8, drop: float = 0.0,
                 stochastic_depth: float = 0.0) {
  input(channels, size, size)
  stem { conv(8, 3, padding=1) }
  head { bn relu gap dropout(drop) linear(classes) }
}
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small tensors on a shared CPU."""


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return archspec.build("resnet18", **SMALL).eval()


def test_timm_keywords_build_the_module_the_spec_names_build(resnet):
    torch.manual_seed(0)
    plain = archspec.build("resnet18", classes=10, channels=1, size=32)
    mine, theirs = resnet.state_dict(), plain.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_head_after_features_is_the_forward(resnet):
    x = torch.randn(X)
    feats = resnet.forward_features(x)
    assert feats.shape[:2] == (2, resnet.num_features) == (2, 512)
    assert torch.equal(resnet.forward_head(feats), resnet(x))
    pre = resnet.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, resnet.head_hidden_size)
    assert torch.allclose(resnet.get_classifier()(pre), resnet(x), atol=1e-6)


def test_reset_classifier_keeps_the_interface():
    torch.manual_seed(1)
    model = archspec.build("resnet18", **SMALL).eval()
    x = torch.randn(X)
    model.reset_classifier(5)
    assert model.get_classifier().out_features == model.num_classes == 5
    assert model(x).shape == (2, 5)
    assert torch.equal(model.forward_head(model.forward_features(x)), model(x))
    model.reset_classifier(0)  # no classifier: the pooled features
    assert model.num_classes == 0
    assert torch.equal(model(x), model.forward_head(model.forward_features(x), pre_logits=True))
    assert model(x).shape == (2, model.num_features)


def test_no_classes_as_timm_builds_it():
    model = archspec.build("resnet18", num_classes=0, in_chans=1, img_size=32).eval()
    assert model.num_classes == 0 and model(torch.randn(X)).shape == (2, 512)


def test_feature_info_describes_the_intermediates(resnet):
    maps = resnet.forward_intermediates(torch.randn(X), intermediates_only=True)
    info = resnet.feature_info
    assert info.channels() == [m.shape[1] for m in maps]
    assert info.reduction() == [32 // m.shape[-1] for m in maps]


def test_pretrained_cfg_follows_the_input(resnet):
    cfg = resnet.pretrained_cfg
    assert cfg["input_size"] == (1, 32, 32) and len(cfg["mean"]) == len(cfg["std"]) == 1
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    imagenet = api.pretrained_cfg(api.network("resnet18"))
    assert imagenet["input_size"] == (3, 224, 224)
    assert imagenet["mean"] == IMAGENET_MEAN and imagenet["std"] == IMAGENET_STD and imagenet["crop_pct"] < 1


def test_a_deep_copy_keeps_the_interface(resnet):
    twin = copy.deepcopy(resnet)
    x = torch.randn(X)
    assert twin.pretrained_cfg == resnet.pretrained_cfg
    assert torch.equal(twin.forward_head(twin.forward_features(x)), resnet(x))


def test_dropout_names_map_onto_the_spec():
    net = api.network(DROPPING, drop_rate=0.3, drop_path_rate=0.1, num_classes=4, in_chans=2)
    assert (net.params["drop"], net.params["stochastic_depth"], net.params["classes"], net.params["channels"]) \
        == (0.3, 0.1, 4, 2)
    model = archspec.build(DROPPING, drop_rate=0.5)
    model.train()
    x = torch.randn(3, 3, 8, 8)
    feats = model.forward_features(x)
    torch.manual_seed(2)
    whole = model.forward_head(feats, pre_logits=True)
    assert (whole == 0).any()  # the head's dropout is before the classifier, as timm's drop_rate


def test_a_name_the_spec_has_no_parameter_for_is_located():
    with pytest.raises(SpecError) as err:
        archspec.build("resnet18", drop_path_rate=0.1)
    e = err.value
    assert e.loc is not None and e.loc.file.endswith("resnet18.arch")
    assert "drop_path_rate" in e.message and "classes" in e.render()


def test_both_names_for_one_parameter_are_refused():
    with pytest.raises(SpecError, match="num_classes and classes"):
        api.network("resnet18", num_classes=10, classes=5)


def test_a_timm_training_script_runs_unchanged():
    """The shape of timm's train.py: the data config and transform resolved from the model, timm's
    optimizer factory (no weight decay on norms and biases), its scheduler, its loss and its EMA, a few
    steps on images through the transform; then the timm-style head calls agree with the forward."""
    from PIL import Image

    from references import timm

    timm()  # or a skip where timm does not import
    from timm.data import create_transform, resolve_data_config
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    torch.manual_seed(0)
    model = archspec.build("resnet18", num_classes=10, in_chans=1, img_size=32)
    cfg = resolve_data_config({}, model=model)
    assert cfg["input_size"] == (1, 32, 32) and cfg["mean"] == model.pretrained_cfg["mean"]
    transform = create_transform(**cfg, is_training=True)
    images = [Image.fromarray((torch.rand(40, 40) * 255).byte().numpy(), mode="L") for _ in range(4)]
    x = torch.stack([transform(im) for im in images])
    y = torch.tensor([0, 1, 2, 3])
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    assert len(optimizer.param_groups) == 2  # timm's own split: no decay on norms and biases
    scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=2, warmup_epochs=0)
    ema = ModelEmaV3(model, decay=0.9)
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    model.train()
    losses = []
    for epoch in range(2):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update(model)
        scheduler.step(epoch + 1)
        losses.append(loss.item())
    assert losses[1] < losses[0]
    model.eval()
    model.reset_classifier(5)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), model(x), rtol=0, atol=0)
        assert ema.module(x).shape == (4, 10)
