"""Recipes as data: the optimizers and schedules a recipe names are torch's own, composed as torch composes
them; weight decay is left off norms, biases and scales where asked; label smoothing and gradient
clipping act in the one training step; the flags reach the recipe; the named recipes hold their papers'
settings."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler as S
from typer.testing import CliRunner

from archspec.cli import app
from archspec.compiler.modules import CrossDepthwise, Scale
from archspec.errors import RunError
from archspec.runtime.train import optim
from archspec.runtime.train.recipes import RECIPES, parse_fields, recipe
from archspec.runtime.train.step import Step, StepConfig
from conftest import SPECS, on_meta, stop_after_first_save

TINY = str(SPECS / "tiny_delugenet.arch")


def _lrs(sched: S.LRScheduler, opt: torch.optim.Optimizer, n: int) -> list[float]:
    """The rate of each of `n` schedule steps, read as the loop reads it, then stepped."""
    out = []
    for _ in range(n):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        sched.step()
    return out


def _ours(r, per_epoch: int) -> list[float]:
    opt = optim.make_optimizer(nn.Linear(2, 2), r)
    n = r.epochs * (per_epoch if r.schedule_per == "step" else 1)
    return _lrs(optim.make_scheduler(opt, r, per_epoch), opt, n)


def _plain(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)


def test_step_drops_per_epoch_are_multistep():
    r = recipe("cifar", epochs=8)
    opt = _plain(r.lr)
    want = _lrs(S.MultiStepLR(opt, [4, 6], gamma=0.1), opt, 8)
    assert _ours(r, 5) == want
    assert want[3] == 0.1 and math.isclose(want[4], 0.01) and math.isclose(want[6], 0.001)


def test_cosine_after_warmup_per_step_equals_torchs_composition():
    r = recipe("imagenet-convnext", epochs=6, warmup_epochs=2, batch_size=512, min_lr=1e-6)
    per, peak = 3, 4e-3 * 512 / 4096
    opt = _plain(peak)
    want = _lrs(S.SequentialLR(opt, [S.LinearLR(opt, start_factor=r.warmup_from, total_iters=6),
                                     S.CosineAnnealingLR(opt, T_max=12, eta_min=1e-6)], milestones=[6]), opt, 18)
    got = _ours(r, per)
    assert got == want
    assert math.isclose(got[0], peak * r.warmup_from) and math.isclose(got[6], peak)
    for t in range(6, 18):  # the closed form of cosine annealing
        assert math.isclose(got[t], 1e-6 + (peak - 1e-6) * (1 + math.cos(math.pi * (t - 6) / 12)) / 2, rel_tol=1e-9)


def test_staircase_per_step_after_warmup_equals_torchs_composition():
    r = recipe("imagenet-efficientnet", epochs=6, warmup_epochs=1)  # ×0.97 every 2.4 epochs
    per = 5
    assert r.milestone_steps(per) == [12, 24]
    opt = _plain(r.peak_lr())
    want = _lrs(S.SequentialLR(opt, [S.LinearLR(opt, start_factor=r.warmup_from, total_iters=5),
                                     S.MultiStepLR(opt, [7, 19], gamma=0.97)], milestones=[5]), opt, 30)
    got = _ours(r, per)
    assert got == want
    assert math.isclose(got[11], r.peak_lr()) and math.isclose(got[12], r.peak_lr() * 0.97)
    assert math.isclose(got[24], r.peak_lr() * 0.97**2)


def test_onecycle_equals_torchs():
    r = recipe("quick", epochs=4, schedule="onecycle", schedule_per="step", lr=0.2, pct_start=0.25)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.2, momentum=0.9)
    assert _ours(r, 5) == _lrs(S.OneCycleLR(opt, max_lr=0.2, total_steps=20, pct_start=0.25), opt, 20)


@pytest.mark.parametrize("name", ["cifar", "imagenet", "quick"])
def test_the_sgd_recipes_build_what_they_built_before(name):
    """SGD, Nesterov, one parameter group, MultiStepLR at the recipe's epochs: the optimizer and schedule
    state a checkpoint of these recipes has always held."""
    r = recipe(name)
    model = nn.Linear(3, 2)
    opt = optim.make_optimizer(model, r)
    ref = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    assert opt.state_dict() == ref.state_dict()
    sched = optim.make_scheduler(opt, r, 7)
    assert type(sched) is S.MultiStepLR and sorted(sched.milestones) == r.milestone_epochs()


def _normed() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.LayerNorm(4), Scale(4),
                         CrossDepthwise([4]), nn.Linear(4, 2, bias=False))


def test_no_decay_is_every_norm_bias_and_scale():
    model = _normed()
    assert optim.no_decay(model) == {"0.bias", "1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias",
                                     "4.weight", "5.weight", "5.bias"}
    convnext = on_meta(SPECS / "convnext_tiny.arch")  # timm's rule (1-d or bias), plus the C×1×1 layer scales
    scales = {f"{n}.weight" for n, m in convnext.named_modules() if isinstance(m, Scale)}
    assert scales and optim.no_decay(convnext) == scales | {n for n, p in convnext.named_parameters()
                                                            if p.ndim <= 1 or n.endswith(".bias")}


@pytest.mark.parametrize("kind", ["sgd", "adamw", "rmsprop"])
def test_decay_reaches_only_what_the_recipe_decays(kind):
    """With zero gradients an update is weight decay alone: the decayed weights shrink, the exempt stay."""
    torch.manual_seed(0)
    model = _normed()
    r = recipe("quick", optimizer=kind, weight_decay=0.1, no_decay_norms=True, lr=0.5, momentum=0.0)
    opt = optim.make_optimizer(model, r)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[kind]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    exempt = optim.no_decay(model)
    assert exempt and exempt != set(before)
    for n, p in model.named_parameters():
        if n in exempt:
            assert torch.equal(p, before[n]), n
        elif kind == "rmsprop":  # decay enters RMSprop's gradient, and is normalised with it
            assert not torch.equal(p, before[n]), n
        else:  # SGD's and AdamW's decay is a shrink by lr × weight_decay
            assert torch.allclose(p, before[n] * 0.95, rtol=1e-6, atol=0), n


def test_optimizer_settings_reach_torch():
    r = recipe("imagenet-efficientnet")
    opt = optim.make_optimizer(nn.Linear(2, 2), r)
    g = opt.param_groups[0]
    assert (g["alpha"], g["eps"], g["momentum"], g["weight_decay"]) == (0.9, 1e-3, 0.9, 1e-5)
    assert math.isclose(g["lr"], 0.016)  # 0.256 at batch 4096, scaled to 256
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-5, 0.0]  # none on norms (and biases)
    r = recipe("imagenet-convnext", betas=(0.8, 0.99), batch_size=256)
    opt = optim.make_optimizer(nn.Linear(2, 2), r)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["lr"] == 4e-3 * 256 / 4096


@pytest.mark.parametrize("kind", ["sgd", "adamw", "rmsprop"])
def test_a_captured_steps_rate_is_a_device_tensor_the_schedule_fills(kind):
    r = recipe("quick", optimizer=kind, schedule="cosine", warmup_epochs=1, epochs=3)
    opt = optim.build_optimizer(nn.Linear(2, 2), r, lr_device="cpu")
    lr = opt.param_groups[0]["lr"]
    assert torch.is_tensor(lr)
    sched = optim.make_scheduler(opt, r, 4)
    assert opt.param_groups[0]["lr"] is lr  # the same tensor: the replayed step reads the new value
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and math.isclose(float(lr), _ours(r, 4)[1], rel_tol=1e-6)


def test_a_captured_step_refuses_what_it_cannot_replay():
    assert torch.is_tensor(optim.make_optimizer(nn.Linear(2, 2), recipe("quick"), captures=True).param_groups[0]["lr"])
    with pytest.raises(RunError, match="one-cycle"):
        optim.make_optimizer(nn.Linear(2, 2), recipe("quick", schedule="onecycle"), captures=True)
    with pytest.raises(RunError, match="put back"):
        optim.make_optimizer(nn.Linear(2, 2), recipe("quick", optimizer="adamw"), captures=True)


def test_label_smoothing_and_clipping_in_the_step():
    torch.manual_seed(0)
    model, ref = nn.Linear(6, 3), nn.Linear(6, 3)
    ref.load_state_dict(model.state_dict())
    x, y = torch.randn(8, 6) * 10, torch.randint(0, 3, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from archspec.runtime.train.loop import make_loss

    step = Step(model, model, opt, StepConfig(), 8, loss_fn=make_loss(recipe("quick", label_smoothing=0.2)), clip=0.5)
    _, loss = step(x, y)
    want = F.cross_entropy(ref(x), y, label_smoothing=0.2)
    assert torch.allclose(loss, want)
    want.backward()
    norm = torch.cat([p.grad.flatten() for p in ref.parameters()]).norm()
    assert norm > 0.5  # so the clipping acts: the update is the gradient scaled to norm 0.5
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q - 0.1 * q.grad * 0.5 / norm, atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    ({"optimizer": "lamb"}, "optimizer"),
    ({"schedule": "onecycle", "warmup_epochs": 1}, "warmup"),
    ({"warmup_epochs": 30}, "fewer than"),
    ({"schedule_per": "epoch", "step_every": 2.5, "milestones": ()}, "schedule_per step"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"betas": (1.0, 0.5)}, "betas"),
])
def test_bad_recipe_fields_are_refused(fields, message):
    with pytest.raises(RunError, match=message):
        recipe("quick", **fields)


def test_named_recipes_cite_their_settings():
    c, e = RECIPES["imagenet-convnext"], RECIPES["imagenet-efficientnet"]
    assert (c.optimizer, c.weight_decay, c.schedule, c.warmup_epochs, c.label_smoothing, c.no_decay_norms) == \
        ("adamw", 0.05, "cosine", 20, 0.1, True)
    assert math.isclose(recipe("imagenet-convnext", batch_size=4096).peak_lr(), 4e-3)
    assert c.lr / c.lr_batch == 4e-3 / 4096 and e.lr / e.lr_batch == 0.256 / 4096
    assert (e.optimizer, e.alpha, e.eps, e.momentum, e.gamma, e.step_every, e.label_smoothing) == \
        ("rmsprop", 0.9, 1e-3, 0.9, 0.97, 2.4, 0.1)
    assert recipe("imagenet-convnext", lr=0.01).peak_lr() == 0.01  # an lr given is the rate applied
    assert recipe("quick", schedule="cosine").milestones == ()  # another schedule replaces the drops
    assert recipe("quick", **parse_fields(["milestones=0.5", "betas=0.8,0.9", "clip-grad=2"])).milestones == (0.5,)
    assert recipe("imagenet-convnext", epochs=30).warmup_epochs == 2  # the same share of a shorter run
    assert recipe("imagenet-convnext", epochs=30, warmup_epochs=5).warmup_epochs == 5


def test_flags_reach_the_optimizer_schedule_and_loss(tmp_path, monkeypatch):
    from archspec.runtime.train import Trainer

    built = []
    monkeypatch.setattr(Trainer, "fit", lambda self: built.append(self) or [])
    r = CliRunner().invoke(app, ["train", TINY, "--set", "n=1", "--set", "w=4", "--epochs", "3", "--lr", "0.01",
                                 "--optimizer", "adamw", "--schedule", "cosine", "--schedule-per", "step",
                                 "--warmup-epochs", "1", "--label-smoothing", "0.1", "--clip-grad", "2",
                                 "--no-decay-norms", "--weight-decay", "0.05", "--recipe-set", "betas=0.8,0.95",
                                 "--recipe-set", "warmup-from=0.1", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    [t] = built
    assert isinstance(t.opt, torch.optim.AdamW) and [g["weight_decay"] for g in t.opt.param_groups] == [0.05, 0.0]
    assert isinstance(t.sched, S.SequentialLR) and t.sched_each_step
    assert t.opt.param_groups[0]["betas"] == (0.8, 0.95) and math.isclose(float(t.opt.param_groups[0]["lr"]), 0.001)
    assert t.step.clip == 2.0 and t.step.loss_fn.keywords == {"label_smoothing": 0.1}
    rec = t._meta()["recipe"]
    assert (rec["optimizer"], rec["schedule"], rec["label_smoothing"], rec["clip_grad"]) == \
        ("adamw", "cosine", 0.1, 2.0)


@pytest.mark.parametrize("flags, message", [
    (["--optimizer", "adam"], "optimizer"),
    (["--recipe-set", "betaz=0.9,0.9"], "did you mean 'betas'"),
    (["--recipe-set", "eps=small"], "eps"),
    (["--recipe-set", "eps"], "FIELD=VALUE"),
])
def test_a_bad_flag_value_exits_2(tmp_path, flags, message):
    r = CliRunner().invoke(app, ["train", TINY, *flags, "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_a_per_step_schedule_moves_in_training(tmp_path):
    """Two epochs of a per-step cosine: the rate each epoch starts at is the schedule's after that
    epoch's steps, so the loop stepped it once a step."""
    from archspec.runtime.train import TrainConfig, train

    rows = train(TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, out=tmp_path / "run", epochs=2, batch_size=256,
                             progress=False, device="cpu", tensorboard=False,
                             tweaks={"schedule": "cosine", "schedule_per": "step", "optimizer": "adamw"}, lr=0.01),
                 log=lambda m: None)
    r = recipe("quick", epochs=2, batch_size=256, lr=0.01, schedule="cosine", schedule_per="step", optimizer="adamw")
    from archspec.runtime import data as D

    per = len(D.load(None).train_y) // 256  # the digits' training steps (the partial batch dropped)
    want = _ours(r, per)
    assert [row["lr"] for row in rows] == [want[0], want[per]]



def test_resume_is_bit_identical_under_a_modern_recipe(tmp_path, monkeypatch):
    """AdamW, per-step cosine after a warmup, smoothing, clipping, no decay on norms: 2 epochs straight, or
    stopped after the first and resumed, give the same weights, optimizer and schedule state, bit for bit."""
    from archspec.runtime.train import TrainConfig, checkpoint as ckpt, train

    tweaks = {"optimizer": "adamw", "schedule": "cosine", "schedule_per": "step", "warmup_epochs": 0.5,
              "label_smoothing": 0.1, "clip_grad": 1.0, "no_decay_norms": True, "weight_decay": 0.05}

    def run(out, resume=False):
        train(TrainConfig(spec=TINY, sets={"n": 1, "w": 4}, out=out, epochs=2, batch_size=256, lr=0.01,
                          tweaks=tweaks, progress=False, device="cpu", tensorboard=False, resume=resume),
              log=lambda m: None)
        return ckpt.load(out / "last.safetensors")

    straight = run(tmp_path / "a")
    stop_after_first_save(run, tmp_path / "b")
    assert ckpt.load(tmp_path / "b/last.safetensors").epoch == 1
    resumed = run(tmp_path / "b", resume=True)
    assert straight.scheduler == resumed.scheduler and straight.scheduler["last_epoch"] > 2
    for k, v in straight.model.items():
        assert torch.equal(v, resumed.model[k]), k
    for p, state in straight.optimizer["state"].items():
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(resumed.optimizer["state"][p][k])), (p, k)
