"""`archspec train` and `archspec eval` on the CPU: the default data set, metrics and checkpoints,
resuming bit-exactly, refusing to overwrite a run, and two processes under torchrun staying in step."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from archspec.cli import app
from archspec.runtime.train import checkpoint as ckpt
from archspec.runtime.train import TrainConfig, train
from conftest import ROOT, SPECS

TINY = str(SPECS / "tiny_delugenet.arch")
SMALL = {"n": 1, "w": 4}  # a few thousand parameters: seconds per epoch


def _cfg(out, **kw) -> TrainConfig:
    base = dict(spec=TINY, sets=dict(SMALL), out=out, epochs=2, batch_size=128, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_metrics_and_checkpoints(tmp_path):
    rows = train(_cfg(tmp_path / "run"), log=lambda m: None)
    assert [r["epoch"] for r in rows] == [1, 2]
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert lines == rows
    for r in rows:
        assert {"epoch", "train_loss", "train_acc", "train_top5", "test_loss", "test_acc", "test_top5", "lr",
                "seconds"} <= set(r)
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and r["seconds"] > 0
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    ck = ckpt.load(tmp_path / "run/last.safetensors")
    assert ck.epoch == 2 and ck.meta["network"] == "tiny_delugenet" and ck.meta["params"]["n"] == 1
    assert ck.meta["params"]["channels"] == 1 and ck.meta["params"]["size"] == 8  # followed the data
    assert not (tmp_path / "run/best.safetensors").exists()  # no validation split asked for: no `best`


def test_resume_is_bit_identical(tmp_path):
    """2 epochs straight, or 1 epoch then `--resume` to 2: the same weights, bit for bit (dropout on, so
    the random state must be restored too), the resume back on the thread count the run was trained with."""
    sets = {**SMALL}
    straight = tmp_path / "straight"
    train(_cfg(straight, sets=sets), log=lambda m: None)
    split = tmp_path / "split"
    train(_cfg(split, sets=sets, epochs=1), log=lambda m: None)
    first = ckpt.load(split / "last.safetensors")
    assert first.epoch == 1
    assert first.meta["threads"] == torch.get_num_threads() == 1
    with pytest.raises(Exception, match="already holds a run"):
        train(_cfg(split, sets=sets), log=lambda m: None)
    torch.set_num_threads(2)  # a resume on a machine that now offers more
    rows = train(_cfg(split, sets=sets, resume=True), log=lambda m: None)
    assert torch.get_num_threads() == 1
    assert [r["epoch"] for r in rows] == [1, 2]
    a, b = ckpt.load(straight / "last.safetensors"), ckpt.load(split / "last.safetensors")
    assert a.model.keys() == b.model.keys()
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert not all(torch.equal(a.model[k], first.model[k]) for k in a.model)  # the second epoch did train


def test_resume_with_other_parameters_is_refused(tmp_path):
    train(_cfg(tmp_path, epochs=1), log=lambda m: None)
    with pytest.raises(Exception, match="was trained as network"):
        train(_cfg(tmp_path, sets={"n": 2, "w": 4}, resume=True), log=lambda m: None)


def test_cli_train_then_eval(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(app, ["train", TINY, "--set", "n=1", "--set", "w=4", "--epochs", "1", "--out", str(out),
                            "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "done: test accuracy" in r.output
    assert ": 1 epoch, batch" in r.output and "after 1 epoch;" in r.output  # singular for one
    r = runner.invoke(app, ["eval", str(out / "last.safetensors"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert got["test_acc"] == pytest.approx(row["test_acc"]) and got["images"] == 360


@pytest.mark.parametrize("args,words", [
    (["--data", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--recipe", "cifr"], "did you mean 'cifar'"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_cli_train_errors(tmp_path, args, words):
    r = CliRunner().invoke(app, ["train", TINY, "--out", str(tmp_path / "x"), "--quiet", *args])
    assert r.exit_code == 2 and "Traceback" not in r.output and words in r.output, r.output


def test_corrupt_checkpoint_cli(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    r = CliRunner().invoke(app, ["eval", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output and str(bad) in r.output, r.output


@pytest.mark.slow
def test_two_processes_under_torchrun_stay_identical(tmp_path):
    """DDP over gloo: both ranks end with the same weights, and only rank 0 writes the run; DDP wraps
    what the step runs (the compiled regions under --compile regional)."""
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from archspec.runtime.train import TrainConfig, Trainer, Dist
        import torch.distributed as dist
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        t = Trainer(TrainConfig(spec={TINY!r}, sets={SMALL!r}, out={str(tmp_path / 'run')!r}, epochs=1,
                                batch_size=64, progress=False, device="cpu"),
                    Dist(rank, dist.get_world_size(), rank), log=lambda m: None)
        t.fit()
        torch.save({{k: v.clone() for k, v in t.model.state_dict().items()}}, {str(tmp_path)!r} + f"/rank{{rank}}.pt")
        from archspec.compiler.passes.regional import Region  # DDP wraps the regionally compiled module
        r = Trainer(TrainConfig(spec={TINY!r}, sets={SMALL!r}, out={str(tmp_path / 'regional')!r}, epochs=1,
                                batch_size=64, progress=False, device="cpu", compile="regional"),
                    Dist(rank, dist.get_world_size(), rank), log=lambda m: None)
        assert any(isinstance(m, Region) for m in r.run.module.modules()), r.run
        dist.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in w0:
        if "running" in k or "num_batches" in k:
            continue  # batch-norm statistics are each rank's own, as in DDP
        assert torch.equal(w0[k], w1[k]), k
    assert (tmp_path / "run/last.safetensors").exists()
    rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1


def test_every_recipe_field_can_be_overridden(tmp_path, monkeypatch):
    """The flags reach the recipe a run records and the schedule it steps, without a training run: the
    trainer is built as `archspec train` builds it, and its fit is replaced."""
    from archspec.runtime.train import Trainer

    built = []
    monkeypatch.setattr(Trainer, "fit", lambda self: built.append(self) or [])
    r = CliRunner().invoke(app, ["train", TINY, "--set", "n=1", "--set", "w=4", "--epochs", "2", "--lr", "0.05",
                                 "--momentum", "0.8", "--no-nesterov", "--weight-decay", "0.0005",
                                 "--milestones", "0.5", "--gamma", "0.5", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    [t] = built
    recipe = t._meta()["recipe"]  # what every checkpoint of the run records
    assert (recipe["lr"], recipe["momentum"], recipe["nesterov"], recipe["weight_decay"], recipe["gamma"]) == \
        (0.05, 0.8, False, 0.0005, 0.5)
    group = t.opt.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, False, 0.0005)
    lrs = []
    for _ in range(t.recipe.epochs):  # the rate each epoch trains at, as the loop reads and steps it
        lrs.append(float(group["lr"]))
        t.sched.step()
    assert lrs == [0.05, 0.025]
