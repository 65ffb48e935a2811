"""Recipes, round two: the moving average of the weights (EMA), mixup and cutmix, random erasing and
RandAugment/TrivialAugment, each against the torch or torchvision version it stands for; and the recipe
each network trains with when none is named."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import references
from archspec.errors import RunError
from archspec.runtime.data.augment import (ERASE_RATIO, ERASE_SCALE, Mixing, cutmix, cutmix_box, erase, erasing_boxes,
                                           mixup, soft_targets)
from archspec.runtime.data.transforms import AutoAugment
from archspec.runtime.train import TrainConfig, Trainer, checkpoint as ckpt, train
from archspec.runtime.train.loop import make_loss, make_mixing
from archspec.runtime.train.recipes import RECIPES, recipe, spec_recipe
from conftest import SPECS, stop_after_first_save

TINY = str(SPECS / "tiny_delugenet.arch")


def _config(out, epochs=2, **tweaks) -> TrainConfig:
    return TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, out=out, epochs=epochs, batch_size=256, progress=False,
                       device="cpu", tensorboard=False, tweaks=tweaks)



def test_ema_equals_torchs_averaged_model_stepped_on_the_same_weights(tmp_path, monkeypatch):
    """The run's average, after every step of an epoch, is what torch's AveragedModel gives when it is
    stepped on the weights each step left; and each step moves it by the EMA's closed form."""
    seen: list[dict[str, torch.Tensor]] = []
    update = AveragedModel.update_parameters

    def record(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", record)
    made = []
    init = Trainer.__init__

    def keep(self, *a, **kw):
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(Trainer, "__init__", keep)
    rows = train(_config(tmp_path / "run", epochs=1, ema=True, ema_decay=0.8), log=lambda m: None)
    [t] = made
    assert len(seen) > 4 and {"ema_test_acc", "ema_test_loss"} <= rows[-1].keys()
    monkeypatch.setattr(AveragedModel, "update_parameters", update)

    module = copy.deepcopy(t.model)
    ref = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    want = {}
    for i, state in enumerate(seen):
        module.load_state_dict(state)
        before = {k: v.clone() for k, v in ref.module.state_dict().items()}
        ref.update_parameters(module)
        if i:  # the closed form: 0.8 of the average so far, 0.2 of the new weights
            want = {k: 0.8 * before[k] + 0.2 * state[k] for k, v in state.items() if v.is_floating_point()}
    got = ckpt.load(tmp_path / "run/last.safetensors").ema
    assert int(got["n_averaged"]) == len(seen)
    for k, v in ref.state_dict().items():
        assert torch.equal(got[k], v), k
    for k, v in want.items():
        assert torch.allclose(got[f"module.{k}"], v, rtol=1e-6, atol=1e-7), k
    moved = [k for k, v in seen[-1].items() if v.is_floating_point() and not torch.equal(got[f"module.{k}"], v)]
    assert moved  # the average is not the last weights


def test_ema_is_saved_evaluated_and_resumed_bit_identically(tmp_path, monkeypatch):
    """Two epochs straight, or stopped after the first and resumed, give the same weights and the same
    average, bit for bit (with mixup and CutMix drawing their batches); `load(weights="ema")` gives the
    average under the model's own names, and the metrics score it as the loop scores the weights."""
    def run(out, resume=False):
        cfg = _config(out, ema=True, ema_decay=0.7, optimizer="adamw", mixup_alpha=0.2, cutmix_alpha=1.0)
        cfg.lr, cfg.resume = 0.01, resume
        return train(cfg, log=lambda m: None)

    straight = run(tmp_path / "a")
    stop_after_first_save(run, tmp_path / "b")
    resumed = run(tmp_path / "b", resume=True)
    a, b = (ckpt.load(tmp_path / d / "last.safetensors") for d in "ab")
    assert a.ema.keys() == b.ema.keys()
    assert a.model.keys() == {k.removeprefix("module.") for k in a.ema} - {"n_averaged"}
    for k in a.ema:
        assert torch.equal(a.ema[k], b.ema[k]), k
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    assert straight[-1]["ema_test_acc"] == resumed[-1]["ema_test_acc"]

    averaged = ckpt.load(tmp_path / "a/last.safetensors", weights="ema").model
    assert averaged.keys() == a.model.keys()
    assert all(torch.equal(v, a.ema[f"module.{k}"]) and v.shape == a.model[k].shape for k, v in averaged.items())


def test_a_run_without_ema_saves_none_and_eval_of_its_average_is_refused(tmp_path):
    train(_config(tmp_path / "run", epochs=1), log=lambda m: None)
    path = tmp_path / "run/last.safetensors"
    assert ckpt.load(path).ema is None
    with pytest.raises(RunError, match="no moving average"):
        ckpt.load(path, weights="ema")
    with pytest.raises(RunError, match="without a moving average"):  # resuming it with ema asked for
        cfg = _config(tmp_path / "run", ema=True)
        cfg.resume = True
        Trainer(cfg, log=lambda m: None)


def test_ema_fields_are_checked():
    assert recipe("quick").ema is False
    assert recipe("quick", ema=True, ema_decay=0.999).ema_decay == 0.999
    with pytest.raises(RunError, match="ema_decay"):
        recipe("quick", ema_decay=1.0)


def _v2():
    references.torchvision()
    return __import__("torchvision.transforms.v2").transforms.v2


def _batch(n=6, classes=5, h=8, w=10):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, h, w, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_mixup_equals_torchvisions_at_the_same_lam():
    v2 = _v2()
    x, y = _batch()
    m = v2.MixUp(alpha=0.4, num_classes=5)
    for seed in range(3):
        torch.manual_seed(seed)
        want_x, want_y = m(x, y)
        torch.manual_seed(seed)
        lam = float(m._dist.sample(()))
        got_x, got_y = mixup(x, y, 5, lam)
        assert 0 < lam < 1 and torch.equal(got_x, want_x) and torch.equal(got_y, want_y)


def test_cutmix_equals_torchvisions_at_the_same_lam_and_centre():
    v2 = _v2()
    x, y = _batch()
    m = v2.CutMix(alpha=1.0, num_classes=5)
    pasted = 0
    for seed in range(6):
        torch.manual_seed(seed)
        want_x, want_y = m(x, y)
        torch.manual_seed(seed)  # torchvision's draws, in its order: lam, then the centre's column and row
        lam = float(m._dist.sample(()))
        cx, cy = int(torch.randint(10, (1,))), int(torch.randint(8, (1,)))
        box = cutmix_box(8, 10, lam, cx, cy)
        got_x, got_y = cutmix(x, y, 5, box)
        assert torch.equal(got_x, want_x) and torch.equal(got_y, want_y), seed
        pasted += (box[2] - box[0]) * (box[3] - box[1]) > 0
    assert pasted  # some box was not empty


def test_label_smoothing_composes_with_mixed_targets():
    """The loss on mixed targets with smoothing is cross-entropy against the mix of the two smoothed
    one-hot targets (timm's mixup_target)."""
    x, y = _batch(classes=7)
    logits = torch.randn(6, 7, generator=torch.Generator().manual_seed(1))
    eps, lam = 0.1, 0.3
    smooth = F.one_hot(y, 7).float() * (1 - eps) + eps / 7
    target = lam * smooth + (1 - lam) * smooth.roll(1, 0)
    want = -(target * logits.log_softmax(1)).sum(1).mean()
    got = make_loss(recipe("quick", label_smoothing=eps))(logits, soft_targets(y, 7, lam))
    assert torch.allclose(got, want, atol=1e-6)


def test_mixing_draws_as_its_fields_say():
    g = torch.Generator().manual_seed(0)
    both = Mixing(5, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, switch_prob=0.25)
    draws = [both.draw(g, 8, 10) for _ in range(800)]
    count = {k: sum(d[0] == k for d in draws) for k in ("none", "mixup", "cutmix")}
    assert 340 < count["none"] < 460 and 40 < count["cutmix"] < 160  # 400 and 100 expected
    lams = [lam for kind, lam, _ in draws if kind == "mixup"]
    assert sum(lam < 0.1 or lam > 0.9 for lam in lams) > len(lams) / 2  # Beta(0.2, 0.2) sits at the ends
    assert all(kind == "cutmix" for kind, _, _ in (Mixing(5, cutmix_alpha=1.0).draw(g, 8, 10) for _ in range(20)))
    assert make_mixing(recipe("quick"), 5) is None
    assert make_mixing(recipe("quick", mixup_alpha=0.2, mix_prob=0), 5) is None
    x, y = _batch()
    a = both(x, y, torch.Generator().manual_seed(4))
    b = both(x, y, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.allclose(a[1].sum(1), torch.ones(6))


def test_a_mixing_recipe_trains_on_soft_targets(tmp_path, monkeypatch):
    from archspec.runtime.train.step import Step

    seen = []
    call = Step.__call__

    def record(self, x, y):
        seen.append(y)
        return call(self, x, y)

    monkeypatch.setattr(Step, "__call__", record)
    rows = train(_config(tmp_path / "run", epochs=1, mixup_alpha=0.4, label_smoothing=0.1), log=lambda m: None)
    assert seen and all(y.dtype == torch.float32 and y.shape[1] == 10 for y in seen)
    assert all(torch.allclose(y.sum(1), torch.ones(len(y))) for y in seen)
    assert any(((y > 0) & (y < 1)).any() for y in seen)  # mixed, not one-hot
    assert 0 <= rows[0]["train_acc"] <= 1


def test_erasing_equals_torchvisions_random_erasing_on_the_same_box(monkeypatch):
    v2 = _v2()
    x, _ = _batch(n=4, h=12, w=10)
    boxes = [(2, 3, 5, 4), None, (0, 0, 11, 9), (7, 1, 5, 2)]
    t = v2.RandomErasing(p=1.0, value=0)
    want = []
    for img, box in zip(x, boxes):
        if box is None:
            want.append(img)
            continue
        i, j, h, w = box
        monkeypatch.setattr(t, "make_params", lambda _, b=box: dict(i=b[0], j=b[1], h=b[2], w=b[3],
                                                                   v=torch.zeros(3, 1, 1)))
        want.append(t(img.clone()))
    assert torch.equal(erase(x, boxes), torch.stack(want))
    assert not torch.equal(erase(x, boxes), x) and torch.equal(erase(x, [None] * 4), x)


def test_erasing_boxes_follow_torchvisions_rule():
    g = torch.Generator().manual_seed(0)
    boxes = erasing_boxes(2000, 32, 32, 0.25, g)
    drawn = [b for b in boxes if b is not None]
    assert 400 < len(drawn) < 600  # a quarter of the images
    for top, left, h, w in drawn:
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32 and h < 32 and w < 32
        assert ERASE_SCALE[0] * 0.5 < h * w / 1024 < ERASE_SCALE[1] * 1.5  # rounding moves the area a little
        assert ERASE_RATIO[0] * 0.5 < h / w < ERASE_RATIO[1] * 2
    assert len({b[:2] for b in drawn}) > 100  # placed all over
    again = erasing_boxes(2000, 32, 32, 0.25, torch.Generator().manual_seed(0))
    assert again == boxes


def test_auto_augment_is_torchvisions_policy_seeded_per_image():
    v2 = _v2()
    img = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for policy, ref in (("randaugment", v2.RandAugment(num_ops=2, magnitude=9)), ("trivialaugment",
                                                                                  v2.TrivialAugmentWide())):
        aug = AutoAugment(policy, 2, 9)
        state = torch.get_rng_state()
        outs = [aug(img, seed) for seed in range(6)]
        assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
        for seed, out in enumerate(outs):
            torch.manual_seed(seed)
            assert torch.equal(out, ref(img)) and out.dtype == torch.uint8, (policy, seed)
        assert any(not torch.equal(out, img) for out in outs)


def test_auto_augment_without_torchvision_or_on_memory_data_is_refused(tmp_path, monkeypatch):
    with pytest.raises(RunError, match="auto_augment trivialaugment augments image folders"):
        Trainer(_config(tmp_path / "run", auto_augment="trivialaugment"), log=lambda m: None)
    assert not (tmp_path / "run").exists()
    monkeypatch.setitem(__import__("sys").modules, "torchvision.transforms", None)
    with pytest.raises(RunError, match="needs torchvision"):
        AutoAugment("randaugment")


def test_a_folder_run_augments_its_decoded_images(tmp_path, monkeypatch):
    _v2()
    from PIL import Image

    for split in ("train", "val"):
        for c, cls in enumerate(("cat", "dog")):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(4):
                pixels = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8,
                                       generator=torch.Generator().manual_seed(10 * c + i)).numpy()
                Image.fromarray(pixels).save(tmp_path / "imgs" / split / cls / f"{i}.png")
    seen = []
    call = AutoAugment.__call__

    def record(self, x, seed):
        seen.append(seed)
        return call(self, x, seed)

    monkeypatch.setattr(AutoAugment, "__call__", record)
    cfg = _config(tmp_path / "run", epochs=1, auto_augment="randaugment", random_erasing=0.5)
    cfg.data, cfg.workers, cfg.image_size, cfg.batch_size, cfg.sets = str(tmp_path / "imgs"), 0, 16, 4, {"n": 1, "w": 4}
    rows = train(cfg, log=lambda m: None)
    assert len(seen) == 8 and len(set(seen)) == 8 and rows[0]["test_acc"] >= 0  # each training image, its own draw


def test_augment_fields_are_checked():
    with pytest.raises(RunError, match="auto_augment"):
        recipe("quick", auto_augment="autoaugment")
    with pytest.raises(RunError, match="random_erasing"):
        recipe("quick", random_erasing=1.5)


def test_each_network_has_its_papers_recipe_by_default():
    """A network's recipe is declared in its spec (`recipe "..."` after the parameters, an alias's own or
    the network's it names), every declared one exists, and a spec that declares none trains `quick`."""
    import archspec
    from archspec import library

    declared = {n: spec_recipe(archspec.parse(n)) for n in library.names()}
    assert set(declared.values()) <= RECIPES.keys()
    assert (declared["convnext_tiny"], declared["efficientnet_b0"], declared["densenet40_k12"],
            declared["resnet50"], declared["tiny_delugenet"]) == \
        ("imagenet-convnext", "imagenet-efficientnet", "cifar", "imagenet", "quick")
    assert declared["efficientnet_v2_s"] == "quick"  # its paper's recipe is not one of these
    text = "network mine() recipe \"cifar\" { input(3, 8, 8) conv(4, 1) }\nnetwork yours = mine()"
    assert spec_recipe(archspec.parse(text)) == "cifar"
    assert spec_recipe(archspec.parse(text + " recipe \"quick\"")) == "quick"
    assert spec_recipe(archspec.parse("network n() { input(3, 8, 8) conv(4, 1) }")) == "quick"


def test_an_unknown_declared_recipe_is_a_located_error():
    import archspec
    from archspec.errors import SpecError

    with pytest.raises(SpecError) as e:
        spec_recipe(archspec.parse("network n() recipe \"cifra\" { input(3, 8, 8) conv(4, 1) }"))
    assert "unknown recipe 'cifra'" in e.value.message and "cifar" in e.value.hint
    assert (e.value.loc.line, e.value.loc.column) == (1, 20)  # the name, in its quotes


def test_a_run_without_a_recipe_takes_its_networks(tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "fit", lambda self: [])
    said = []
    cfg = _config(tmp_path / "run")
    cfg.recipe = None
    t = Trainer(cfg, log=said.append)
    assert t.recipe.name == "quick" and t.recipe.epochs == 2 and not any("recipe" in m for m in said)
    monkeypatch.setattr("archspec.runtime.train.loop.spec_recipe", lambda spec: "cifar")
    assert Trainer(cfg, log=said.append).recipe.milestones == RECIPES["cifar"].milestones
    assert any("recipe cifar: tiny_delugenet's own" in m for m in said)  # said where it is not quick
