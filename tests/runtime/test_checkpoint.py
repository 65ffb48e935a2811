"""Checkpoints: exact resumes, atomic writes that survive a kill, and damaged or hostile files refused
with a RunError instead of a traceback or an unpickle."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from archspec.errors import RunError
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train.checkpoint import Checkpoint


def same(a, b) -> bool:
    """Equal values of exactly the same types all the way down (NaN equals NaN; tensors bit for bit)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(type(k) is type(j) for k, j in zip(a, b)) and all(
            same(a[k], b[k]) for k in a)
    return a == b


def tiny(tmp_path: Path, epoch: int = 1, **meta) -> tuple[Path, Checkpoint]:
    path = tmp_path / "ck.safetensors"
    ck = Checkpoint(model={"w": torch.arange(6.0).reshape(2, 3)}, optimizer=None, scheduler=None, epoch=epoch,
                    rng=ckpt.rng_state(), meta={"name": "tiny", **meta})
    ckpt.save(path, ck)
    return path, ck


# -- flatten / unflatten

def test_flatten_round_trip_keeps_types():
    obj = {
        "state": {0: {"step": torch.tensor(3.0), "buf": torch.randn(2, 2)}, 1: {"buf": None}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "nesterov": True, "foreach": None, "params": [0, 1]}],
        "floats": [math.inf, -math.inf, math.nan, -0.0, 1e-300, 0.1, 2**70],
        "strings": ["", "$tensor", "a/b", "ünïcode"],
        "$weird": {"1": "str key", 1: "int key"},
        "milestones": Counter({30: 1, 60: 2}),
        "empty": [{}, [], ()],
        "nested": ((torch.zeros(0), (torch.ones(1, dtype=torch.int64),)), False),
    }
    tensors, skeleton = ckpt.flatten(obj, "optimizer")
    assert all(k.startswith("optimizer/") for k in tensors) and len(tensors) == 4
    assert "optimizer/state/0/buf" in tensors and "optimizer/nested/0/1/0" in tensors
    text = json.dumps(skeleton, allow_nan=False)  # strict JSON: no NaN/Infinity literals
    back = ckpt.unflatten(json.loads(text), tensors)
    assert same(back, obj)
    assert isinstance(back["milestones"], Counter)


def test_flatten_names_are_unique_and_tensors_alone():
    tensors, skeleton = ckpt.flatten({"1": torch.ones(1), 1: torch.zeros(1)}, "p")
    assert len(tensors) == 2
    assert same(ckpt.unflatten(skeleton, tensors), {"1": torch.ones(1), 1: torch.zeros(1)})
    tensors, skeleton = ckpt.flatten(torch.ones(2), "x")
    assert list(tensors) == ["x"] and torch.equal(ckpt.unflatten(skeleton, tensors), torch.ones(2))


def test_flatten_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="set"):
        ckpt.flatten({"a": {1, 2}}, "p")
    with pytest.raises(TypeError, match="key"):
        ckpt.flatten({(1, 2): 3}, "p")


@pytest.mark.parametrize("skeleton", [{"$tensor": "missing"}, {"$tuple": 3}, {"$dict": [[1]]}, {"$nope": 1},
                                      {"$float": "huge"}, {"$tensor": "x", "y": 1}])
def test_unflatten_rejects_malformed_skeletons(skeleton):
    with pytest.raises(ValueError):
        ckpt.unflatten(skeleton, {"x": torch.ones(1)})


# -- exact resume

def make_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5))


def make_optimizer(kind: str, model: nn.Module):
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1, 3], gamma=0.5)


def batches():
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(4)]


def train(model, opt, sched, data) -> None:
    model.train()
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_resume_is_bit_identical(tmp_path, kind):
    data = batches()
    torch.manual_seed(0)
    straight = make_model()
    opt, sched = make_optimizer(kind, straight)
    train(straight, opt, sched, data)

    torch.manual_seed(0)
    first = make_model()
    opt, sched = make_optimizer(kind, first)
    train(first, opt, sched, data[:2])
    path = tmp_path / "run" / "last.safetensors"  # the folder is created
    ckpt.save(path, Checkpoint(model=first.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                               epoch=2, rng=ckpt.rng_state(), meta={"network": "tiny", "best": -math.inf}))
    saved_opt = opt.state_dict()

    torch.manual_seed(1234)  # a fresh process: other weights, other RNG
    resumed = make_model()
    opt, sched = make_optimizer(kind, resumed)
    ck = ckpt.load(path)
    assert ck.epoch == 2 and ck.meta == {"network": "tiny", "best": -math.inf}
    assert same(ck.optimizer, saved_opt)
    assert isinstance(ck.scheduler["milestones"], Counter)
    resumed.load_state_dict(ck.model)
    opt.load_state_dict(ck.optimizer)
    sched.load_state_dict(ck.scheduler)
    ckpt.set_rng_state(ck.rng)
    train(resumed, opt, sched, data[2:])

    want, got = straight.state_dict(), resumed.state_dict()
    assert list(want) == list(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert sched.get_last_lr() == make_lr_after(kind, 4)


def make_lr_after(kind: str, steps: int) -> list[float]:
    opt, sched = make_optimizer(kind, nn.Linear(1, 1))
    for _ in range(steps):
        opt.step()
        sched.step()
    return sched.get_last_lr()


def test_shared_and_strided_tensors_are_saved(tmp_path):
    model = nn.Linear(4, 4)
    base = torch.arange(16.0).reshape(4, 4)
    sd = {"a": base, "tied": base, "t": base.t(), "row": base[1], "gpu_free": model.weight}
    path = tmp_path / "ck.safetensors"
    ckpt.save(path, Checkpoint(model=sd, optimizer=None, scheduler=None, epoch=0, rng={}, meta={}))
    back = ckpt.load(path).model
    assert list(back) == list(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k].detach()), k


# -- atomic writes

CHILD = textwrap.dedent("""
    import os, sys, time, torch
    from archspec.runtime.train import checkpoint as ckpt
    path = sys.argv[1]
    ckpt.save(path, ckpt.Checkpoint(model={"w": torch.arange(10.0)}, optimizer=None, scheduler=None, epoch=1,
                                    rng={}, meta={"name": "A"}))
    print("saved A", flush=True)
    os.fsync = lambda fd: time.sleep(600)  # never durable: the kill lands before the rename
    ckpt.save(path, ckpt.Checkpoint(model={"w": torch.ones(50_000_000)}, optimizer=None, scheduler=None,
                                    epoch=2, rng={}, meta={"name": "B"}))
    print("saved B", flush=True)
""")


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved A"
        deadline = time.monotonic() + 60
        while True:
            temps = [p for p in tmp_path.iterdir() if p.name != path.name]
            if temps and temps[0].stat().st_size > 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the second save never started"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    ck = ckpt.load(path)
    assert ck.epoch == 1 and ck.meta == {"name": "A"} and torch.equal(ck.model["w"], torch.arange(10.0))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    # hidden temporaries only (ours, and the one safetensors itself writes through); never the target
    assert all(name.startswith(".") for name in leftovers), leftovers
    for name in leftovers:
        (tmp_path / name).unlink()


def test_failed_save_removes_temp_and_keeps_previous(tmp_path, monkeypatch):
    path, _ = tiny(tmp_path, epoch=1)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(RunError, match="cannot write .*ck.safetensors: No space left"):
        tiny(tmp_path, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]
    assert ckpt.load(path).epoch == 1


def test_save_into_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    ck = Checkpoint(model={}, optimizer=None, scheduler=None, epoch=0, rng={}, meta={})
    with pytest.raises(RunError, match="cannot write"):
        ckpt.save(tmp_path / "file" / "ck.safetensors", ck)
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(RunError, match="cannot write"):
        ckpt.save(tmp_path / "dir.safetensors", ck)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.safetensors", "file"]


# -- damaged and foreign files

def damaged(tmp_path: Path) -> dict[str, Path]:
    good, _ = tiny(tmp_path)
    data = good.read_bytes()
    out = tmp_path / "bad"
    out.mkdir()
    files = {
        "random": random.Random(0).randbytes(4096),
        "truncated": data[: len(data) // 2],
        "cut in header": data[:20],
        "empty": b"",
        "tiny": b"\x01\x02",
    }
    for name, content in files.items():
        (out / name).write_bytes(content)
    x = {"model/w": torch.ones(2)}
    header = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "epoch": "1", "model": '{"w":{"$tensor":"model/w"}}',
              "optimizer": "null", "scheduler": "null", "rng": "{}", "meta": "{}"}
    variants = {
        "no metadata": None,
        "foreign format": {"format": "pt"},
        "future version": {**header, "version": "2"},
        "bad json": {**header, "model": '{"w":'},
        "missing tensor": {**header, "model": '{"w":{"$tensor":"model/gone"}}'},
        "missing entry": {k: v for k, v in header.items() if k != "rng"},
        "bad epoch": {**header, "epoch": '"two"'},
        "model not tensors": {**header, "model": '{"w":1}'},
    }
    for name, metadata in variants.items():
        save_file(x, out / name, metadata=metadata)
    paths = {name: out / name for name in [*files, *variants]}
    (out / "a folder").mkdir()
    paths["a folder"] = out / "a folder"
    return paths


def test_damaged_files_are_run_errors(tmp_path):
    for name, path in damaged(tmp_path).items():
        with pytest.raises(RunError) as err:
            ckpt.load(path)
        assert str(path) in err.value.message and "not a readable archspec checkpoint" in err.value.message, name


def test_missing_checkpoint(tmp_path):
    with pytest.raises(RunError, match="no checkpoint at .*nowhere.safetensors"):
        ckpt.load(tmp_path / "nowhere.safetensors")


class Evil:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch.save", "torch.save legacy", "pickle"])
def test_pickles_are_refused_unopened(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "ck.safetensors"
    payload = {"model": {"w": torch.ones(2)}, "evil": Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    elif how == "torch.save legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    with pytest.raises(RunError) as err:
        ckpt.load(path)
    assert str(path) in err.value.message and "pickle" in err.value.render()
    assert not marker.exists()


# -- RNG

def test_rng_round_trip(tmp_path):
    torch.manual_seed(5)
    state = ckpt.rng_state()
    want = torch.rand(4)
    torch.manual_seed(99)
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(4), want)
    path = tmp_path / "r.safetensors"
    ckpt.save(path, Checkpoint(model={}, optimizer=None, scheduler=None, epoch=0, rng=state, meta={}))
    torch.manual_seed(99)
    ckpt.set_rng_state(ckpt.load(path).rng)
    assert torch.equal(torch.rand(4), want)
    with pytest.raises(RunError, match="random number generator"):
        ckpt.set_rng_state({"torch": torch.zeros(3, dtype=torch.float32)})


# -- tensor names

def test_model_tensors_keep_their_state_dict_names(tmp_path):
    """A weights-only checkpoint is a state_dict as safetensors stores one: `load_file` gives it back."""
    from safetensors.torch import load_file

    model = make_model()
    path = tmp_path / "w.safetensors"
    ckpt.save(path, Checkpoint(model=model.state_dict(), optimizer=None, scheduler=None, epoch=1, rng={}, meta={}))
    fresh = make_model()
    fresh.load_state_dict(load_file(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    opt, sched = make_optimizer("sgd", model)
    train(model, opt, sched, batches()[:1])
    ckpt.save(path, Checkpoint(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                               epoch=1, rng=ckpt.rng_state(), meta={}))
    names = set(load_file(path))
    assert set(model.state_dict()) <= names
    assert {n.split("/")[0] for n in names - set(model.state_dict())} == {"optimizer", "rng"}


def test_checkpoints_with_model_prefixed_names_still_load(tmp_path):
    """Files written with `model/` before every weight name load to the same state_dict names."""
    x = {"model/w": torch.arange(4.0), "optimizer/state/0/momentum_buffer": torch.ones(4)}
    header = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "epoch": "3", "model": '{"w":{"$tensor":"model/w"}}',
              "optimizer": '{"state":{"$dict":[[0,{"momentum_buffer":{"$tensor":"optimizer/state/0/momentum_buffer"}}]]}}',
              "scheduler": "null", "rng": "{}", "meta": "{}"}
    header["digests"] = json.dumps({k: ckpt._digest(t) for k, t in x.items()})
    save_file(x, tmp_path / "old.safetensors", metadata=header)
    ck = ckpt.load(tmp_path / "old.safetensors", trust_legacy=True)
    assert list(ck.model) == ["w"] and torch.equal(ck.model["w"], torch.arange(4.0)) and ck.epoch == 3
    assert torch.equal(ck.optimizer["state"][0]["momentum_buffer"], torch.ones(4))


def test_a_weight_named_like_another_part_is_refused(tmp_path):
    ck = Checkpoint(model={"rng/torch": torch.ones(1)}, optimizer=None, scheduler=None, epoch=0,
                    rng={"torch": torch.zeros(2, dtype=torch.uint8)}, meta={})
    with pytest.raises(TypeError, match="name of a rng tensor"):  # a caller's mistake, as a wrong epoch type is
        ckpt.save(tmp_path / "ck.safetensors", ck)
    assert not list(tmp_path.iterdir())
