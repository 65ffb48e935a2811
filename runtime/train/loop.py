"""The training loop: one rank's model, optimizer and data, epoch after epoch, each ending in an
evaluation, a metrics line and an atomic checkpoint. Every tensor the loop makes is made on the
training device, so one code path serves the CPU, a GPU and DDP ranks."""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from archspec.compiler.codegen import to_module
from archspec.compiler.passes import memory
from archspec.graph.ir import Network
from archspec.language.errors import RunError, did_you_mean
from archspec.runtime import data as D

from . import checkpoint as ckpt
from .config import TrainConfig
from .devices import Dist, join_process_group, launched_by_torchrun, leave_process_group, pick_device
from .feed import Feed, Readout
from .metrics import read_metrics, write_metrics
from .recipes import Recipe, recipe as get_recipe
from .specfiles import fit_network, read_spec, spec_files


def make_optimizer(model: nn.Module, r: Recipe) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                          weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, r.milestone_epochs(), gamma=r.gamma)
    return opt, sched


def memory_mode(requested: str, net: Network, batch: int, device: torch.device) -> str:
    """`fast` or `lean` for the requested policy; `auto` weighs the plain step against the memory the
    training GPU has free (on the CPU it stays fast)."""
    if requested not in memory.MODES:
        raise RunError(f"unknown memory mode '{requested}'",
                       did_you_mean(requested, memory.MODES) or f"memory modes: {', '.join(memory.MODES)}")
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    return memory.resolve(requested, net, batch, free)


def training_module(net: Network, mode: str) -> torch.fx.GraphModule:
    """The network's module under a resolved memory mode; both modes hold the same parameters and
    buffers under the same names, so a checkpoint of one loads into the other."""
    return memory.apply(to_module(net), mode)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True,
                    disable=not enabled)


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None, log: Callable[[str], None] = print):
        self.cfg, self.dist = cfg, dist or Dist()
        self.log = log if self.dist.main else (lambda s: None)
        self.device = pick_device(cfg.device, self.dist)
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp if cfg.amp is not None else cuda
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else cuda
        self.recipe = get_recipe(cfg.recipe, **{**cfg.tweaks, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                                                "lr": cfg.lr})
        self.ds = D.load(cfg.data, seed=cfg.seed)
        self.spec = read_spec(cfg.spec)
        self.net = fit_network(self.spec, cfg.sets, self.ds)
        self.start_epoch, self.best = 0, -1.0
        self.out = Path(cfg.out)
        self.metrics: list[dict] = []
        self._prepare_out()
        resumed = self._resumed_checkpoint() if cfg.resume else None
        recorded = resumed.meta.get("memory") if resumed is not None else None
        self.memory = memory_mode(cfg.memory or recorded or "fast", self.net, self.recipe.batch_size, self.device)

        torch.manual_seed(cfg.seed)
        model = training_module(self.net, self.memory).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the module whose state is saved
        self.opt, self.sched = make_optimizer(model, self.recipe)
        torch.manual_seed((cfg.seed * 7919 + self.dist.rank) % 2**63)  # dropout differs across ranks
        if resumed is not None:
            self._resume(resumed)

        run = model
        if self.dist.joined:
            from torch.nn.parallel import DistributedDataParallel as DDP

            run = DDP(model, device_ids=[self.device.index] if cuda else None)
        self.run = torch.compile(run) if cfg.compile else run
        self.feed = Feed(self.ds, self.recipe.batch_size, self.device, seed=cfg.seed, rank=self.dist.rank,
                         world=self.dist.world, workers=cfg.workers)
        D.check_batch_size(self.feed.sizes()[0], self.recipe.batch_size, self.dist.world, self.ds.name)
        if cuda and self.ds.train_x is not None:  # whole data sets live on the GPU when they fit
            free = torch.cuda.mem_get_info(self.device)[0]
            if self.ds.train_x.numel() + self.ds.test_x.numel() < free // 4:
                self.ds.train_x, self.ds.test_x = self.ds.train_x.to(self.device), self.ds.test_x.to(self.device)
                self.ds.train_y, self.ds.test_y = self.ds.train_y.to(self.device), self.ds.test_y.to(self.device)

    # -- files
    def _prepare_out(self) -> None:
        if not self.dist.main:
            return
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"--out {self.out} is a file, not a folder")
        if (self.out / "last.safetensors").exists() and not self.cfg.resume:
            raise RunError(f"{self.out} already holds a run (last.safetensors)",
                           "continue it with --resume, or give another --out: a run is never overwritten")
        self.out.mkdir(parents=True, exist_ok=True)

    def _meta(self) -> dict:
        files, main = spec_files(self.spec)
        return {"network": self.net.name, "params": self.net.params, "files": files, "main": main,
                "recipe": self.recipe.model_dump(), "data": self.ds.name, "data_source": self.cfg.data,
                "seed": self.cfg.seed, "memory": self.memory,
                "best_test_acc": self.best}

    def _resumed_checkpoint(self) -> ckpt.Checkpoint | None:
        """The run's last checkpoint, on the training device, checked to be of this network."""
        path = self.out / "last.safetensors"
        if not path.exists():
            self.log(f"no checkpoint in {self.out}: starting a new run")
            return None
        ck = ckpt.load(path, map_location=self.device)
        if ck.meta.get("params") != json.loads(json.dumps(self.net.params)) or ck.meta.get("network") != self.net.name:
            raise RunError(f"{path} was trained as network '{ck.meta.get('network')}' with parameters "
                           f"{ck.meta.get('params')}, not '{self.net.name}' with {self.net.params}",
                           "resume with the same spec and --set values, or give another --out")
        return ck

    def _resume(self, ck: ckpt.Checkpoint) -> None:
        path = self.out / "last.safetensors"
        try:
            self.model.load_state_dict(ck.model)
            self.opt.load_state_dict(ck.optimizer)
            self.sched.load_state_dict(ck.scheduler)
        except (RuntimeError, KeyError, ValueError) as e:
            raise RunError(f"{path} does not fit this network: {e}") from None
        self.start_epoch, self.best = ck.epoch, float(ck.meta.get("best_test_acc", -1.0))
        ckpt.set_rng_state(ck.rng)
        self.metrics = [m for m in read_metrics(self.out / "metrics.jsonl") if m.get("epoch", 0) <= ck.epoch]
        recorded = ck.meta.get("memory")
        changed = f" (trained in {recorded})" if recorded not in (None, self.memory) else ""
        note = f", memory mode {self.memory}{changed}"
        self.log(f"resuming {path} after epoch {ck.epoch}{note}")

    def _save(self, epoch: int, improved: bool) -> None:
        if not self.dist.main:
            return
        write_metrics(self.out / "metrics.jsonl", self.metrics)
        ck = ckpt.Checkpoint(model=self.model.state_dict(), optimizer=self.opt.state_dict(),
                             scheduler=self.sched.state_dict(), epoch=epoch, rng=ckpt.rng_state(), meta=self._meta())
        ckpt.save(self.out / "last.safetensors", ck)
        if improved:
            ckpt.save(self.out / "best.safetensors", ck)

    # -- data
    def _batches(self, train: bool, epoch: int) -> tuple[Iterator, int]:
        return self.feed.epoch(train, epoch)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _reduce(self, *vals: torch.Tensor) -> list[float]:
        """Sums over the ranks, read once at the end of an epoch. `vals` are on the training device:
        NCCL reduces only CUDA tensors, and stacking mixes no devices."""
        t = torch.stack([v.detach().double() for v in vals])
        if self.dist.joined:
            tdist.all_reduce(t)
        return t.tolist()

    # -- epochs
    def train_epoch(self, epoch: int, bar) -> tuple[float, float, int]:
        self.run.train()
        it, n = self._batches(True, epoch)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        task = bar.add_task(f"epoch {epoch + 1}/{self.recipe.epochs}", total=n, stats="")
        every = max(1, n // 20)
        readout = Readout(self.device)
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(it):
            with self._autocast():
                logits = self.run(self._prep(x))
                loss = F.cross_entropy(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % every == 0 or step + 1 == n:
                rate = seen * self.dist.world / (time.perf_counter() - t0)
                shown = readout.read(loss_sum, correct, seen)  # never waits for the device
                stats = f"loss {shown[0]:.3f}  acc {shown[1]:.3f}  " if shown else ""
                bar.update(task, completed=step + 1, stats=f"{stats}{rate:,.0f} img/s")
        bar.remove_task(task)
        count = torch.full((), float(seen), dtype=torch.float64, device=self.device)
        total_loss, total_correct, total_seen = self._reduce(loss_sum, correct, count)
        return total_loss / max(total_seen, 1), total_correct / max(total_seen, 1), int(total_seen)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.run.eval()
        it, _ = self._batches(False, 0)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = torch.zeros((), device=self.device, dtype=torch.float64)
        for x, y in it:
            with self._autocast():
                logits = self.run(self._prep(x)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        total_loss, total_correct, total = self._reduce(loss_sum, correct, seen)
        return total_loss / max(total, 1), total_correct / max(total, 1)

    def fit(self) -> list[dict]:
        r = self.recipe
        self.log(f"training {self.net.name} ({sum(p.numel() for p in self.model.parameters()):,} parameters) on "
                 f"{self.ds.name} ({self.feed.sizes()[0]:,} train / {self.feed.sizes()[1]:,} test), recipe "
                 f"{r.name}: {r.epochs} epoch{'' if r.epochs == 1 else 's'}, batch {r.batch_size}, lr {r.lr}, device {self.device}"
                 + (f" × {self.dist.world} process{'es' * (self.dist.world > 1)} (DDP)" if self.dist.joined else "")
                 + (", bf16" if self.amp else "") + (", channels_last" if self.channels_last else "")
                 + (", compiled" if self.cfg.compile else "") + (", lean memory" if self.memory == "lean" else ""))
        with _progress(self.cfg.progress and self.dist.main) as bar:
            for epoch in range(self.start_epoch, r.epochs):
                t0 = time.perf_counter()
                lr = self.opt.param_groups[0]["lr"]
                train_loss, train_acc, seen = self.train_epoch(epoch, bar)
                self.sched.step()
                test_loss, test_acc = self.evaluate()
                seconds = time.perf_counter() - t0
                improved = test_acc > self.best
                self.best = max(self.best, test_acc)
                row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
                       "test_acc": test_acc, "lr": lr, "seconds": round(seconds, 3),
                       "images_per_s": round(seen / seconds, 1)}
                if not all(math.isfinite(v) for v in (train_loss, test_loss)):
                    raise RunError(f"the loss became {train_loss} in epoch {epoch + 1}",
                                   "lower the learning rate (--lr)")
                self.metrics.append(row)
                self._save(epoch + 1, improved)
                self.log(f"epoch {epoch + 1:>3}/{r.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
                         f"test loss {test_loss:.4f} acc {test_acc:.4f}  lr {lr:.4g}  {seconds:.1f} s")
        if self.dist.joined:
            tdist.barrier()
        return self.metrics


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Train as `cfg` says; under torchrun, each rank (even a single one) joins the process group."""
    if not launched_by_torchrun():
        return Trainer(cfg, log=log).fit()
    dist = join_process_group(cfg.device)
    try:
        return Trainer(cfg, dist, log).fit()
    finally:
        leave_process_group()
