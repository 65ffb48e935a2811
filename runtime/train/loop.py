"""The training loop: one rank's model, optimizer and data, epoch after epoch, each ending in an
evaluation (of the held-out validation images, where there are any, and of the test split), a metrics
row (metrics.jsonl, metrics.csv, TensorBoard) and an atomic checkpoint. `best` is chosen on the
validation images only: the test split is reported, never selected on. A recipe's random erasing, mixup
and CutMix change each training batch on the device, drawn from a generator of (seed, epoch, rank), and
the loss takes the mixed soft targets (label smoothing on top); accuracy is scored on the images' own
labels. Its RandAugment or TrivialAugment runs where an image folder's images are decoded. Under a
recipe with `ema`, a moving average of the weights follows every step, is evaluated beside them each
epoch (`ema_val_*`, `ema_test_*` in the metrics) and is saved in both checkpoints. Every tensor the loop
makes is made on the training device, so one code path serves the CPU, a GPU and DDP ranks."""

from __future__ import annotations

import functools
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from archspec.compiler.activation_memory import refuse_above
from archspec.errors import RunError
from archspec.runtime import data as D
from archspec.runtime.data.augment import Mixing, random_erasing
from archspec.runtime.data.preprocessing import preprocessing_of
from archspec.runtime.data.transforms import AutoAugment
from archspec.runtime.threads import usable_cores
from archspec.runtime.viz.confusion import write_confusion

from . import checkpoint as ckpt
from .board import Board
from .config import TrainConfig
from .devices import Dist, join_process_group, launched_by_torchrun, leave_process_group, pick_device
from .feed import Feed, Readout
from .lock import RunLock
from .metrics import read_metrics, write_metrics
from . import optim
from .progress import RunClock, progress_bar
from .recipes import Recipe, recipe as get_recipe, spec_recipe
from .runconfig import run_config, write_run_config
from .scores import Tally, tally_batches
from .specfiles import fit_network, read_spec, spec_files
from .split import check_val_split, val_count
from .step import Step, StepConfig, assemble


def make_optimizer(model: nn.Module, r: Recipe, cfg: StepConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer for `model`, as a step of `cfg` needs it (`optim.make_optimizer`)."""
    return optim.make_optimizer(model, r, captures=cfg.captures, device=cfg.device)


def make_mixing(r: Recipe, classes: int) -> Mixing | None:
    """The recipe's mixup and CutMix of training batches, or None where it mixes none."""
    mixing = Mixing(classes, r.mixup_alpha, r.cutmix_alpha, r.mix_prob, r.switch_prob)
    return mixing if mixing.active else None


def batch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The CPU generator an epoch's random erasing and mixing draw from: of (seed, epoch, rank) alone, so a
    resumed run augments as one that never stopped."""
    return torch.Generator().manual_seed(((seed * 1000033 + epoch) * 65537 + rank + 17) % 2**63)


def make_loss(r: Recipe) -> Callable:
    """The training loss: cross-entropy, with the recipe's label smoothing."""
    if not r.label_smoothing:
        return F.cross_entropy
    return functools.partial(F.cross_entropy, label_smoothing=r.label_smoothing)


# curves.png is redrawn after an epoch once this many seconds have passed since it was last drawn, and after
# the last epoch: drawing takes about 0.2 s, as long as a quarter of a small network's epoch on a CPU
CURVES_EVERY = 5.0

class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Dist | None = None, log: Callable[[str], None] = print):
        self.cfg, self.dist = cfg, dist or Dist()
        self.confusion = None  # the last test evaluation's counts, (true, predicted), for ≤ 100 classes
        self.curves_drawn = -math.inf  # when curves.png was last drawn (time.monotonic)
        self.log = log if self.dist.main else (lambda s: None)
        self.device = pick_device(cfg.device, self.dist)
        cuda = self.device.type == "cuda"
        if cuda:  # batch shapes are static (the last, partial one adds one more search): cuDNN picks its fastest kernels
            torch.backends.cudnn.benchmark = True
        self.ds = D.load(cfg.data, seed=cfg.seed, image_size=cfg.image_size, crop=cfg.crop)
        self.spec = read_spec(cfg.spec, cfg.allow_paths)
        self.net = fit_network(self.spec, cfg.sets, self.ds)
        named = cfg.recipe if cfg.recipe is not None else spec_recipe(self.spec)
        self.recipe = get_recipe(named, **{**cfg.tweaks, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                                           "lr": cfg.lr})
        if cfg.recipe is None and named != "quick":  # quick: the recipe of any network without its own
            self.log(f"recipe {named}: {self.net.name}'s own (--recipe names another)")
        self.auto_augment = self._auto_augment()
        self.start_epoch, self.best, self.best_epoch = 0, -1.0, 0
        self.out = Path(cfg.out)
        self.metrics: list[dict] = []
        self._prepare_out()
        resumed = self._resumed_checkpoint() if cfg.resume else None
        self._keep_threads(resumed)
        recorded = resumed.meta.get("memory") if resumed is not None else None
        self.step_cfg = StepConfig(self.device, cfg.memory or recorded or "fast", cfg.compile, cfg.amp,
                                   cfg.channels_last, ddp=self.dist.joined)
        self.amp, self.channels_last, self.compile = self.step_cfg.amp, self.step_cfg.channels_last, self.step_cfg.compile
        self.memory = self.step_cfg.memory_for(self.net, self.recipe.batch_size)
        refuse_above(self.net, self.recipe.batch_size, training=True, device=str(self.device),
                     limit=cfg.max_memory)  # before any tensor exists
        self.val_split = self._val_split(resumed)

        torch.manual_seed(cfg.seed)
        self.model, self.run = assemble(self.net, self.step_cfg, self.memory)  # `model`: the module whose state is saved
        self.opt = make_optimizer(self.model, self.recipe, self.step_cfg)
        self.ema = optim.make_ema(self.model, self.recipe)
        self.mixing = make_mixing(self.recipe, self.ds.classes)
        torch.manual_seed((cfg.seed * 7919 + self.dist.rank) % 2**63)  # dropout differs across ranks
        self.step = Step(self.model, self.run, self.opt, self.step_cfg, self.recipe.batch_size,
                         loss_fn=make_loss(self.recipe), clip=self.recipe.clip_grad)
        held = val_count(self._train_images(), self.val_split, self.ds.name) if self.val_split else 0
        self.feed = Feed(self.ds, self.recipe.batch_size, self.device, seed=cfg.seed, rank=self.dist.rank,
                         world=self.dist.world, workers=cfg.workers, val=held)
        D.check_batch_size(self.feed.sizes()[0], self.recipe.batch_size, self.dist.world, self.ds.name)
        if self.auto_augment is not None:
            self.feed.loaders[0].set_augment(self.auto_augment)
        # the schedule counts this rank's training steps; neither it nor the feed draws from the global RNG
        self.sched = optim.make_scheduler(self.opt, self.recipe, self.feed.batches("train", 0)[1])
        self.sched_each_step = optim.steps_each(self.recipe)
        if resumed is not None:
            self._resume(resumed)
        if cuda:  # whole data sets live on the GPU when they fit
            self.feed.keep_on(self.device, torch.cuda.mem_get_info(self.device)[0] // 4)
        if self.dist.main:  # only now: a run refused above leaves no folder behind
            self.out.mkdir(parents=True, exist_ok=True)

    # -- data
    def _auto_augment(self) -> AutoAugment | None:
        """The recipe's RandAugment or TrivialAugment, for an image folder's training images."""
        r = self.recipe
        if r.auto_augment == "none":
            return None
        if self.ds.folder is None:
            raise RunError(f"auto_augment {r.auto_augment} augments image folders' images as they are decoded; "
                           f"{self.ds.name} is held in memory", "use random_erasing, mixup_alpha or cutmix_alpha")
        return AutoAugment(r.auto_augment, r.randaugment_ops, r.randaugment_magnitude)

    def _train_images(self) -> int:
        return self.ds.train_images  # image folders: as the folder was counted (the feed refuses a split)

    def _val_split(self, resumed: ckpt.Checkpoint | None) -> int | float:
        """The split asked for; on --resume the one the run was trained with, which may not change."""
        asked = self.cfg.val_split
        if asked is not None:
            check_val_split(asked)
        if resumed is None:
            return asked or 0
        recorded = resumed.meta.get("val_split", 0)
        if asked is not None and asked != recorded:
            raise RunError(f"{self.out} was trained with --val-split {recorded}, not {asked}",
                           "resume with the run's split (leave --val-split out), or give another --out")
        return recorded

    def _keep_threads(self, resumed: ckpt.Checkpoint | None) -> None:
        """On --resume without --threads, the CPU thread count the run was trained with (a count of at most
        the usable cores): another count sums in another order, and the resumed run would drift from one
        that never stopped."""
        recorded = resumed.meta.get("threads") if resumed is not None else None
        if self.cfg.threads is not None or type(recorded) is not int or not 1 <= recorded <= usable_cores():
            return
        if recorded != torch.get_num_threads():
            torch.set_num_threads(recorded)
            self.log(f"{recorded} CPU thread{'s' * (recorded > 1)}, as the run was trained with (--threads to change)")

    # -- files
    def _prepare_out(self) -> None:
        if not self.dist.main:
            return
        if self.out.exists() and not self.out.is_dir():
            raise RunError(f"--out {self.out} is a file, not a folder")
        if (self.out / "last.safetensors").exists() and not self.cfg.resume:
            raise RunError(f"{self.out} already holds a run (last.safetensors)",
                           "continue it with --resume, or give another --out: a run is never overwritten")

    def _meta(self) -> dict:
        files, main = spec_files(self.spec)
        return {"network": self.net.name, "params": self.net.params, "files": files, "main": main,
                "recipe": self.recipe.model_dump(), "data": self.ds.name, "data_source": self.cfg.data,
                "seed": self.cfg.seed, "memory": self.memory, "val_split": self.val_split,
                "val_images": self.feed.size("val"), "best_val_acc": self.best, "best_epoch": self.best_epoch,
                "threads": torch.get_num_threads(), "preprocessing": preprocessing_of(self.ds)}

    def _resumed_checkpoint(self) -> ckpt.Checkpoint | None:
        """The run's last checkpoint, on the training device, checked to be of this network."""
        path = self.out / "last.safetensors"
        if not path.exists():
            self.log(f"no checkpoint in {self.out}: starting a new run")
            return None
        ck = ckpt.load(path, map_location=self.device, trust_legacy=self.cfg.trust_legacy,
                       allow_nonfinite=self.cfg.allow_nonfinite)
        if ck.meta.get("params") != json.loads(json.dumps(self.net.params)) or ck.meta.get("network") != self.net.name:
            raise RunError(f"{path} was trained as network '{ck.meta.get('network')}' with parameters "
                           f"{ck.meta.get('params')}, not '{self.net.name}' with {self.net.params}",
                           "resume with the same spec and --set values, or give another --out")
        return ck

    def _resume(self, ck: ckpt.Checkpoint) -> None:
        path = self.out / "last.safetensors"
        if self.ema is not None and ck.ema is None:
            raise RunError(f"{path} was trained without a moving average of the weights (ema)",
                           "resume with the run's recipe, or give another --out")
        try:
            self.model.load_state_dict(ck.model)
            self.opt.load_state_dict(ck.optimizer)
            self.sched.load_state_dict(ck.scheduler)
            if self.ema is not None:
                self.ema.load_state_dict(ck.ema)
        except (RuntimeError, KeyError, ValueError) as e:
            raise RunError(f"{path} does not fit this network: {e}") from None
        self.start_epoch = ck.epoch
        self.best, self.best_epoch = float(ck.meta.get("best_val_acc", -1.0)), int(ck.meta.get("best_epoch", 0))
        ckpt.set_rng_state(ck.rng)
        self.metrics = [m for m in read_metrics(self.out / "metrics.jsonl") if m.get("epoch", 0) <= ck.epoch]
        recorded = ck.meta.get("memory")
        changed = f" (trained in {recorded})" if recorded not in (None, self.memory) else ""
        note = f", memory mode {self.memory}{changed}"
        self.log(f"resuming {path} after epoch {ck.epoch}{note}")

    def _save(self, epoch: int, improved: bool) -> None:
        """`last` holds everything a resume needs; `best` only the weights (and what describes them), so
        that `model.load_state_dict(safetensors.torch.load_file(best))` takes it as it is."""
        if not self.dist.main:
            return
        due = epoch == self.recipe.epochs or time.monotonic() - self.curves_drawn >= CURVES_EVERY
        write_metrics(self.out / "metrics.jsonl", self.metrics, curves=due)
        if due:
            self.curves_drawn = time.monotonic()
        if self.confusion is not None:
            write_confusion(self.out, self.confusion)
        weights, meta = self.model.state_dict(), self._meta()
        ema = self.ema.state_dict() if self.ema is not None else None
        ckpt.save(self.out / "last.safetensors",
                  ckpt.Checkpoint(model=weights, optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(),
                                  epoch=epoch, rng=ckpt.rng_state(), meta=meta, ema=ema))
        if improved:
            ckpt.save(self.out / "best.safetensors",
                      ckpt.Checkpoint(model=weights, optimizer=None, scheduler=None, epoch=epoch, rng={}, meta=meta,
                                      ema=ema))

    def _batches(self, part: str, epoch: int) -> tuple[Iterator, int]:
        return self.feed.batches(part, epoch)

    def _reduce(self, *vals: torch.Tensor) -> list[float]:
        """Sums over the ranks, read once at the end of an epoch. `vals` are on the training device:
        NCCL reduces only CUDA tensors, and stacking mixes no devices."""
        t = torch.stack([v.detach().double() for v in vals])
        if self.dist.joined:
            tdist.all_reduce(t)
        return t.tolist()

    # -- epochs
    def train_epoch(self, epoch: int, bar, on_step: Callable[[float], None] | None = None) -> dict[str, float]:
        """One epoch of SGD; its mean loss, top-1 (and top-5) accuracy and image count over all ranks.
        `on_step` hears the share of the epoch's steps done, now and then."""
        self.step.train()
        it, n = self._batches("train", epoch)
        tally = Tally(self.device, self.ds.classes)
        task = bar.add_task(f"epoch {epoch + 1}/{self.recipe.epochs}", total=n, stats="")
        every = max(1, n // 20)
        readout = Readout(self.device)
        erasing, mixing = self.recipe.random_erasing, self.mixing
        draws = batch_generator(self.cfg.seed, epoch, self.dist.rank) if erasing or mixing is not None else None
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(it):
            if erasing:
                x = random_erasing(x, erasing, draws)
            logits, loss = self.step(*mixing(x, y, draws)) if mixing is not None else self.step(x, y)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if self.sched_each_step:
                self.sched.step()
            tally.add(logits, y, loss * len(y))
            if (i + 1) % every == 0 or i + 1 == n:
                rate = tally.seen * self.dist.world / (time.perf_counter() - t0)
                shown = readout.read(tally.loss, tally.top1, tally.seen)  # never waits for the device
                stats = f"loss {shown[0]:.3f}  acc {shown[1]:.3f}  " if shown else ""
                bar.update(task, completed=i + 1, stats=f"{stats}{rate:,.0f} img/s")
                if on_step is not None:
                    on_step((i + 1) / n)
        bar.remove_task(task)
        return tally.totals(self._reduce)

    @torch.no_grad()
    def evaluate(self, part: str = "test", ema: bool = False) -> dict[str, float]:
        """Mean loss, top-1 (and top-5) accuracy of `part` (val or test) over all ranks, in eval mode, of the
        weights or (`ema`) of their moving average."""
        self.step.train(False)
        it, _ = self._batches(part, 0)
        forward = self.step.predict if not ema else self._ema_predict
        counted = part == "test" and not ema  # the test split's confusion matrix, of the weights themselves
        tally = tally_batches(forward, it, Tally(self.device, self.ds.classes, confusion=counted))
        if counted:
            self.confusion = tally.matrix(tdist.all_reduce if self.dist.joined else None)
        return tally.totals(self._reduce)

    def _ema_predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (float32) of the moving average of the weights, computed as the step's forward is."""
        self.ema.train(False)
        with self.step_cfg.autocast():
            return self.ema(self.step_cfg.layout(x)).float()

    def fit(self) -> list[dict]:
        r = self.recipe
        split = f" / {self.feed.size('val'):,} val" if self.feed.has_val else ""
        self.log(f"training {self.net.name} ({sum(p.numel() for p in self.model.parameters()):,} parameters) on "
                 f"{self.ds.name} ({self.feed.sizes()[0]:,} train{split} / {self.feed.sizes()[1]:,} test), recipe "
                 f"{r.name}: {r.epochs} epoch{'' if r.epochs == 1 else 's'}, batch {r.batch_size}, lr {r.peak_lr()}, device {self.device}"
                 + (f" × {self.dist.world} process{'es' * (self.dist.world > 1)} (DDP)" if self.dist.joined else "")
                 + (", bf16" if self.amp else "") + (", channels_last" if self.channels_last else "")
                 + ("" if self.compile == "none" else f", compile {self.compile}") + (", lean memory" if self.memory == "lean" else ""))
        if not self.feed.has_val:
            self.log("no validation split (--val-split 0): best.safetensors is not written; the test split is "
                     "reported, never selected on")
        board = None
        if self.dist.main:
            write_run_config(self.out / "config.json", run_config(self))
            board = Board(self.out, enabled=self.cfg.tensorboard, resumed_after=self.start_epoch, log=self.log)
        try:
            with progress_bar(self.cfg.progress and self.dist.main) as bar:
                self._epochs(bar, board)
        finally:
            if board is not None:
                board.close()
        if self.dist.joined:
            tdist.barrier()
        return self.metrics

    def _epochs(self, bar, board: Board | None) -> None:
        r = self.recipe
        left = r.epochs - self.start_epoch
        run_clock = RunClock(left)
        run_task = bar.add_task("run", total=left, stats="", eta=None) if left > 0 else None

        def show(done: float, epoch: int, ended: bool = False) -> None:
            if run_task is not None:
                bar.update(run_task, completed=epoch - self.start_epoch + done, stats=f"epoch {epoch + 1}/{r.epochs}",
                           eta=run_clock.between() if ended else run_clock.remaining(done))

        for epoch in range(self.start_epoch, r.epochs):
            run_clock.start_epoch()
            t0 = time.perf_counter()
            lr = float(self.opt.param_groups[0]["lr"])  # a tensor on the device for CUDA-graph steps
            show(0.0, epoch)
            trained = self.train_epoch(epoch, bar, lambda done: show(done, epoch))
            train_seconds = time.perf_counter() - t0
            if not self.sched_each_step:
                self.sched.step()
            val = self.evaluate("val") if self.feed.has_val else None
            test = self.evaluate("test")
            averaged = {}
            if self.ema is not None:
                averaged = {**(_prefixed("ema_val", self.evaluate("val", ema=True)) if val else {}),
                            **_prefixed("ema_test", self.evaluate("test", ema=True))}
            seconds = time.perf_counter() - t0
            improved = val is not None and val["acc"] > self.best
            if improved:
                self.best, self.best_epoch = val["acc"], epoch + 1
            row = {"epoch": epoch + 1, **_prefixed("train", trained), **(_prefixed("val", val) if val else {}),
                   **_prefixed("test", test), **averaged, "lr": lr, "seconds": round(seconds, 3),
                   "images_per_s": round(trained["images"] / seconds, 1)}
            losses = [trained["loss"], test["loss"]] + ([val["loss"]] if val else [])
            losses += [v for k, v in averaged.items() if k.endswith("_loss")]
            if not all(math.isfinite(v) for v in losses):
                bad = next(v for v in losses if not math.isfinite(v))
                raise RunError(f"the loss became {bad} in epoch {epoch + 1}",
                               "lower the learning rate (--lr)")
            self.metrics.append(row)
            self._save(epoch + 1, improved)
            if board is not None:
                board.epoch(row)
            run_clock.end_epoch(train_seconds)
            show(1.0, epoch, ended=True)
            self.log(_epoch_line(row, r.epochs, improved))


def _prefixed(part: str, scores: dict[str, float]) -> dict[str, float]:
    """`train_loss`, `train_acc`, `train_top5` from a tally's totals (its image count left out)."""
    return {f"{part}_{k}": v for k, v in scores.items() if k != "images"}


def _epoch_line(row: dict, epochs: int, best: bool) -> str:
    def part(name: str) -> str:
        if f"{name}_loss" not in row:
            return ""
        top5 = f" top5 {row[f'{name}_top5']:.4f}" if f"{name}_top5" in row else ""
        return f"  {name} loss {row[f'{name}_loss']:.4f} acc {row[f'{name}_acc']:.4f}{top5}"

    parts = "".join(part(name) for name in ("train", "val", "test", "ema_test"))
    return (f"epoch {row['epoch']:>3}/{epochs}{parts}  lr {row['lr']:.4g}  {row['seconds']:.1f} s"
            + ("  (best)" if best else ""))


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Train as `cfg` says; under torchrun, each rank (even a single one) joins the process group. The
    writing process holds the lock of `cfg.out` from before the run folder is read until the run ends, so
    a second run into the same folder is refused (`lock.RunLock`)."""
    if not launched_by_torchrun():
        with RunLock(cfg.out):
            return _fit(Trainer(cfg, log=log))
    dist = join_process_group(cfg.device)
    try:
        with RunLock(cfg.out) if dist.main else nullcontext():
            return _fit(Trainer(cfg, dist, log))
    finally:
        leave_process_group()


def _fit(trainer: Trainer) -> list[dict]:
    try:
        return trainer.fit()
    finally:
        trainer.feed.close()  # image-folder workers end with the run, not at garbage collection
