"""`archspec train`: a compiled network, a data set and a recipe, trained on CUDA or the CPU, one
process or several (torchrun). Every epoch ends in an atomic checkpoint and a metrics line, so a run
killed at any moment resumes where it stopped; on the CPU a resumed run is bit-identical to one that
never stopped."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec.language.errors import RunError
from archspec.graph.ir import Network

from . import checkpoint as ckpt
from . import data as D
from .recipes import Recipe, recipe as get_recipe

# Spec parameters that follow the data set unless the user sets them.
DATA_PARAMS = ("classes", "channels", "size")


@dataclass
class TrainConfig:
    spec: str
    sets: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    recipe: str = "quick"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    tweaks: dict[str, Any] = field(default_factory=dict)  # any other recipe field
    seed: int = 0
    out: Path = Path("runs/last")
    resume: bool = False
    device: str = "auto"
    compile: bool = False
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    progress: bool = True
    workers: int = 4  # image folders only


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


# ---- pieces -----------------------------------------------------------------------------------

def pick_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RunError("--device cuda: no CUDA device is available here", "use --device cpu or auto")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise RunError(f"unknown device '{name}'", "devices: auto, cpu, cuda")
    return torch.device("cpu")


def spec_files(spec) -> tuple[dict[str, str], str]:
    """The spec's files by resolved path, and the main one: enough to rebuild it anywhere."""
    files = {str(Path(label).resolve()) if not label.startswith("<") else label: text
             for label, text in spec.sources.items()}
    main = str(Path(spec.file).resolve()) if not spec.file.startswith("<") else spec.file
    return files, main


def spec_from_files(files: Mapping[str, str], main: str):
    """Rebuild a spec saved by `spec_files`, in a scratch folder that mirrors the original paths."""
    if main.startswith("<"):
        return archspec.parse(files[main])
    with tempfile.TemporaryDirectory(prefix="archspec-spec-") as tmp:
        for path, text in files.items():
            target = Path(tmp) / path.lstrip("/\\").replace(":", "")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return archspec.parse(Path(tmp) / main.lstrip("/\\").replace(":", ""))


def fit_network(spec, sets: Mapping[str, Any], ds: D.Dataset) -> Network:
    """The spec's network for this data: `classes`, `channels` and `size` follow the data set unless set."""
    net = archspec.network(spec, **sets)
    follow = {k: v for k, v in zip(DATA_PARAMS, (ds.classes, ds.shape[0], ds.shape[1]))
              if k in net.params and k not in sets and net.params[k] != v}
    if follow:
        net = archspec.network(spec, **{**sets, **follow})
    want, out = tuple(net.shape(net.input)), tuple(net.shape(net.output))
    if want != ds.shape:
        raise RunError(f"network '{net.name}' takes {'×'.join(map(str, want))} inputs, but the data set "
                       f"'{ds.name}' holds {'×'.join(map(str, ds.shape))} images",
                       "give the spec `channels` and `size` parameters (they follow the data), or --set them")
    if out != (ds.classes,):
        raise RunError(f"network '{net.name}' ends in {'×'.join(map(str, out))} outputs, but the data set "
                       f"'{ds.name}' has {ds.classes} classes",
                       "give the spec a `classes` parameter for its classifier (it follows the data)")
    return net


def make_optimizer(model: nn.Module, r: Recipe) -> tuple[torch.optim.Optimizer, Any]:
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=r.momentum, nesterov=r.nesterov and r.momentum > 0,
                          weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, r.milestone_epochs(), gamma=r.gamma)
    return opt, sched


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True,
                    disable=not enabled)


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite the metrics file atomically (it is small: one line per epoch)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything after it is redone
    return rows


class Feed:
    """Batches of one data set on one device, this rank's share: in-memory sets through `data.batches`
    (augmented on the device), image folders through their loaders (decoded in worker processes)."""

    def __init__(self, ds: D.Dataset, batch_size: int, device: torch.device, *, seed: int = 0, rank: int = 0,
                 world: int = 1, workers: int = 4):
        self.ds, self.bs, self.device, self.seed, self.rank, self.world = ds, batch_size, device, seed, rank, world
        self.loaders = None
        if ds.folder is not None:
            self.loaders = D.folder_loaders(ds.folder, ds.size, batch_size, workers, rank, world, seed=seed)

    def sizes(self) -> tuple[int, int]:
        if self.loaders is not None:
            return len(self.loaders[0].dataset), len(self.loaders[1].dataset)
        return len(self.ds.train_y), len(self.ds.test_y)

    def epoch(self, train: bool, epoch: int = 0) -> tuple[Iterator, int]:
        if self.loaders is not None:
            loader = self.loaders[0] if train else self.loaders[1]
            if train:
                loader.set_epoch(epoch)
            dev = self.device
            it = ((D.normalize(x.to(dev, non_blocking=True), self.ds), y.to(dev, non_blocking=True)) for x, y in loader)
            return it, len(loader)
        x, y = (self.ds.train_x, self.ds.train_y) if train else (self.ds.test_x, self.ds.test_y)
        n = D.steps_per_epoch(len(y), self.bs, self.world, train=train)
        return D.batches(x, y, self.bs, train=train, ds=self.ds, device=self.device, epoch=epoch, seed=self.seed,
                         rank=self.rank, world=self.world), n


class Readout:
    """Mean loss and accuracy from running sums on the device, read for display without waiting for
    it: each read starts a non-blocking copy to the host and shows the newest copy already arrived."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host = torch.zeros(3, dtype=torch.float64, pin_memory=self.cuda)
        self.event = torch.cuda.Event() if self.cuda else None
        self.shown: tuple[float, float] | None = None

    def read(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float] | None:
        if not self.cuda:
            return float(loss_sum) / seen, float(correct) / seen
        if self.event.query():  # the last copy has landed: show it, start the next
            if self.host[2] > 0:
                self.shown = (float(self.host[0] / self.host[2]), float(self.host[1] / self.host[2]))
            count = torch.full((), float(seen), dtype=torch.float64, device=loss_sum.device)
            self.host.copy_(torch.stack([loss_sum.double(), correct.double(), count]), non_blocking=True)
            self.event.record()
        return self.shown


# ---- the loop ---------------------------------------------------------------------------------

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
        self.spec = archspec.parse(cfg.spec) if isinstance(cfg.spec, str) else cfg.spec
        self.net = fit_network(self.spec, cfg.sets, self.ds)

        torch.manual_seed(cfg.seed)
        model = archspec.build(self.net).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the module whose state is saved
        self.opt, self.sched = make_optimizer(model, self.recipe)
        self.start_epoch, self.best = 0, -1.0
        self.out = Path(cfg.out)
        self.metrics: list[dict] = []
        self._prepare_out()
        torch.manual_seed(cfg.seed * 7919 + self.dist.rank)  # dropout differs across ranks
        if cfg.resume:
            self._resume()

        run = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            run = DDP(model, device_ids=[self.device.index] if cuda else None)
        self.run = torch.compile(run) if cfg.compile else run
        self.feed = Feed(self.ds, self.recipe.batch_size, self.device, seed=cfg.seed, rank=self.dist.rank,
                         world=self.dist.world, workers=cfg.workers)
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
                "seed": self.cfg.seed,
                "best_test_acc": self.best}

    def _resume(self) -> None:
        path = self.out / "last.safetensors"
        if not path.exists():
            self.log(f"no checkpoint in {self.out}: starting a new run")
            return
        ck = ckpt.load(path, map_location=self.device)
        if ck.meta.get("params") != json.loads(json.dumps(self.net.params)) or ck.meta.get("network") != self.net.name:
            raise RunError(f"{path} was trained as network '{ck.meta.get('network')}' with parameters "
                           f"{ck.meta.get('params')}, not '{self.net.name}' with {self.net.params}",
                           "resume with the same spec and --set values, or give another --out")
        try:
            self.model.load_state_dict(ck.model)
            self.opt.load_state_dict(ck.optimizer)
            self.sched.load_state_dict(ck.scheduler)
        except (RuntimeError, KeyError, ValueError) as e:
            raise RunError(f"{path} does not fit this network: {e}") from None
        self.start_epoch, self.best = ck.epoch, float(ck.meta.get("best_test_acc", -1.0))
        ckpt.set_rng_state(ck.rng)
        self.metrics = [m for m in read_metrics(self.out / "metrics.jsonl") if m.get("epoch", 0) <= ck.epoch]
        self.log(f"resuming {path} after epoch {ck.epoch}")

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
        t = torch.stack([v.detach().double() for v in vals])
        if self.dist.world > 1:
            torch.distributed.all_reduce(t)
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
        total_loss, total_correct, total_seen = self._reduce(loss_sum, correct, torch.tensor(float(seen)))
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
                 f"{r.name}: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr}, device {self.device}"
                 + (f" × {self.dist.world} processes" if self.dist.world > 1 else "")
                 + (", bf16" if self.amp else "") + (", channels_last" if self.channels_last else "")
                 + (", compiled" if self.cfg.compile else ""))
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
        if self.dist.world > 1:
            torch.distributed.barrier()
        return self.metrics


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Train as `cfg` says; under torchrun, one process per rank joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Trainer(cfg, log=log).fit()
    import torch.distributed as tdist

    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(dist.local_rank % torch.cuda.device_count())
    tdist.init_process_group("nccl" if cuda else "gloo")
    try:
        return Trainer(cfg, dist, log).fit()
    finally:
        tdist.destroy_process_group()


def network_of(ck: ckpt.Checkpoint, path: str | Path) -> Network:
    """The network a checkpoint was trained as, rebuilt from the spec text it carries."""
    try:
        spec = spec_from_files(ck.meta["files"], ck.meta["main"])
        params = ck.meta["params"]
    except KeyError as e:
        raise RunError(f"{path} does not say what network it holds (no {e} in its metadata)") from None
    return archspec.network(spec, **params)


def load_trained(path: str | Path, device: torch.device | str = "cpu") -> tuple[Network, nn.Module, ckpt.Checkpoint]:
    """A checkpoint's network, its module with the trained weights, and the checkpoint itself."""
    ck = ckpt.load(path)
    net = network_of(ck, path)
    model = archspec.build(net).to(device)
    try:
        model.load_state_dict(ck.model)
    except RuntimeError as e:
        raise RunError(f"{path}: the weights do not fit network '{net.name}': {e}") from None
    return net, model, ck


def model_from_source(source: str | Path, sets: Mapping[str, Any], seed: int = 0) -> tuple[Network, nn.Module]:
    """A spec (weights initialised from `seed`) or a checkpoint (its trained weights), in eval mode."""
    if Path(source).suffix == ".safetensors":
        if sets:
            raise RunError("--set applies to a spec; a checkpoint carries its own parameters")
        net, model, _ = load_trained(source)
    else:
        net = archspec.network(source, **sets)
        torch.manual_seed(seed)
        model = archspec.build(net)
    return net, model.eval()


def evaluate_checkpoint(path: str | Path, data: str | None = None, device: str = "auto",
                        batch_size: int = 256) -> dict:
    """Test loss and accuracy of a checkpoint, rebuilt from the spec it carries."""
    dev = pick_device(device, Dist())
    net, model, ck = load_trained(path, dev)
    meta = ck.meta
    ds = D.load(data if data is not None else meta.get("data_source"), seed=int(meta.get("seed", 0)))
    if tuple(net.shape(net.input)) != ds.shape or tuple(net.shape(net.output)) != (ds.classes,):
        raise RunError(f"{path} holds network '{net.name}' for {'×'.join(map(str, net.shape(net.input)))} "
                       f"images and {net.shape(net.output)[0]} classes; data set '{ds.name}' does not match")
    model.eval()
    feed = Feed(ds, batch_size, dev, workers=2)
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for x, y in feed.epoch(train=False)[0]:
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
    n = feed.sizes()[1]
    return {"network": net.name, "data": ds.name, "epoch": ck.epoch, "test_loss": loss_sum / n,
            "test_acc": correct / n, "images": n}
