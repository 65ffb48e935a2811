"""`train` (in this process, or in several under torchrun) and `eval` of a checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RunError
from .common import (AllowNonfiniteOpt, AllowPathOpt, MaxMemoryOpt, SetOpt, SpecArg, ThreadsOpt, TrustLegacyOpt, app,
                     guarded, memory_limit, out, parse_sets)



def loader_workers(data: Optional[str], workers: Optional[int]) -> int:
    """The loader processes a run on `data` starts: `workers` where given; for an image folder
    (a directory with train/), the loader's default; none for data held in memory."""
    if workers is not None:
        return workers
    if data is not None and not data.startswith("synthetic-") and (Path(data).expanduser() / "train").is_dir():
        from archspec.runtime.data import default_workers

        return default_workers()
    return 0


@app.command()
def train(
    spec: str = SpecArg,
    set_: Optional[List[str]] = SetOpt,
    data: Optional[str] = typer.Option(None, "--data", metavar="SOURCE",
                                       help="A CIFAR-10/100 folder (python or binary layout), an image folder "
                                            "(train/ and val/), or synthetic-cifar10[:N]; default: the digits "
                                            "bundled with scikit-learn."),
    recipe: str = typer.Option("quick", "--recipe",
                               help="cifar, imagenet, imagenet-convnext, imagenet-efficientnet or quick."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0),
    momentum: Optional[float] = typer.Option(None, "--momentum", min=0.0, max=1.0),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", min=0.0),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov"),
    milestones: Optional[str] = typer.Option(None, "--milestones", metavar="F,F,...",
                                             help="Fractions of training at which the rate drops (e.g. 0.5,0.75)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", help="The factor of each drop (0.1)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", metavar="NAME", help="sgd, adamw or rmsprop."),
    schedule: Optional[str] = typer.Option(None, "--schedule", metavar="NAME",
                                           help="step (drops at --milestones), cosine or onecycle."),
    schedule_per: Optional[str] = typer.Option(None, "--schedule-per", metavar="UNIT",
                                               help="epoch or step: how often the schedule moves."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", min=0.0, metavar="E",
                                                  help="A linear warmup to --lr over this many epochs first."),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", min=0.0, help="Where the cosine schedule ends."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", min=0.0, max=1.0, metavar="F",
                                                    help="Label smoothing of the training loss (0.1)."),
    clip_grad: Optional[float] = typer.Option(None, "--clip-grad", min=0.0, metavar="NORM",
                                              help="Clip each step's gradient to this norm."),
    no_decay_norms: Optional[bool] = typer.Option(None, "--no-decay-norms/--decay-norms",
                                                  help="No weight decay on norm weights, biases and scales."),
    recipe_set: Optional[List[str]] = typer.Option(None, "--recipe-set", metavar="FIELD=VALUE",
                                                   help="Any other recipe field (betas=0.9,0.95, eps=1e-3, alpha, "
                                                        "warmup_from, pct_start, lr_batch, step_every); repeatable."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    out_dir: Path = typer.Option(Path("runs/last"), "-o", "--out", metavar="DIR",
                                 help="Checkpoints (last/best.safetensors), metrics (metrics.jsonl, metrics.csv, "
                                      "TensorBoard events) and config.json go here."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compile_: str = typer.Option("none", "--compile", metavar="MODE",
                                 help="none; regional (torch.compile once per layer structure: compile time flat in "
                                      "depth); whole (torch.compile the network); cudagraph (each training step "
                                      "replayed as one CUDA graph); regional+cudagraph (compiled layers, the step "
                                      "replayed as one CUDA graph)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (default: on for CUDA)."),
    memory: Optional[str] = typer.Option(None, "--memory", metavar="MODE",
                                         help="fast (plain ops), lean (memory linear in depth) or auto (lean where "
                                              "fast would not fit the GPU). Default: fast; with --resume, the mode "
                                              "the run was trained in."),
    val_split: Optional[str] = typer.Option(None, "--val-split", metavar="N|F",
                                            help="Training images held out to choose best.safetensors on: a count "
                                                 "(5000) or a fraction (0.1). Default 0: train on every training "
                                                 "image, as the papers do, and write no best; with --resume, the "
                                                 "run's own split."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, metavar="N",
                                          help="Image-folder loader processes [default: one per usable core, "
                                               "at most 8]; 0 decodes in the training process."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard",
                                     help="TensorBoard event files in --out (where tensorboard is installed)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", metavar="N",
                                             help="Image folders: the side images are cropped to (8 to 4096) "
                                                  "[default: 224]."),
    crop: Optional[float] = typer.Option(None, "--crop", metavar="F",
                                         help="Image folders: the evaluation centre crop's share of the resized "
                                              "shorter side, in (0, 1] [default: 0.875]."),
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
    nproc: int = typer.Option(1, "--nproc", min=1, help="Launch this many processes with torchrun (DDP)."),
    threads: Optional[int] = ThreadsOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Train SPEC with a recipe; every epoch is checkpointed atomically and can be resumed."""

    def run():
        from archspec.runtime.train.config import check_out_dir
        from archspec.runtime.train.recipes import parse_fields, recipe as check_recipe

        sets = parse_sets(set_)
        tweaks = {**parse_fields(recipe_set or ()), "momentum": momentum, "weight_decay": weight_decay,
                  "nesterov": nesterov, "gamma": gamma, "optimizer": optimizer, "schedule": schedule, "schedule_per": schedule_per,
                  "warmup_epochs": warmup_epochs, "min_lr": min_lr, "label_smoothing": label_smoothing,
                  "clip_grad": clip_grad, "no_decay_norms": no_decay_norms}
        if milestones is not None:
            try:
                tweaks["milestones"] = tuple(float(m) for m in milestones.split(",") if m.strip())
            except ValueError:
                raise RunError(f"--milestones needs fractions such as 0.5,0.75, got {milestones!r}") from None
        check_recipe(recipe, **{**tweaks, "epochs": epochs, "batch_size": batch_size, "lr": lr})
        from archspec.runtime.train.split import parse_val_split

        split = parse_val_split(val_split) if val_split is not None else None
        check_out_dir(out_dir)  # every flag and the output folder, before processes start or data loads
        if nproc > 1:
            return _launch(nproc)
        from archspec.runtime.threads import use_threads
        from archspec.runtime.train.host_memory import keep_freed_memory
        from archspec.runtime.train import TrainConfig, train as run_training

        lead = int(os.environ.get("RANK", "0")) == 0
        use_threads(threads, loader_workers(data, workers), log=out.print if lead else None)  # each process its share
        keep_freed_memory()

        from archspec.library import find

        cfg = TrainConfig(spec=str(find(str(spec))), sets=sets, data=data, recipe=recipe, epochs=epochs,
                          batch_size=batch_size, lr=lr, tweaks=tweaks, seed=seed, out=out_dir, resume=resume,
                          device=device, compile=compile_, amp=amp, memory=memory, progress=not quiet,
                          val_split=split, workers=workers, tensorboard=tensorboard, threads=threads,
                          image_size=image_size, crop=crop, trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite,
                          allow_paths=tuple(str(p) for p in allow_path or ()), max_memory=memory_limit(max_memory))
        rows = run_training(cfg, log=lambda m: out.print(m))
        if rows and int(os.environ.get("RANK", "0")) == 0:
            last = rows[-1]
            top5 = f", top-5 {last['test_top5']:.4f}" if "test_top5" in last else ""
            best = max((r for r in rows if "val_acc" in r), key=lambda r: r["val_acc"], default=None)
            chosen = (f"best: epoch {best['epoch']}, validation accuracy {best['val_acc']:.4f} "
                      f"(test {best['test_acc']:.4f})" if best else "no validation split, so no best")
            out.print(f"done: test accuracy {last['test_acc']:.4f}{top5} after {last['epoch']} "
                      f"epoch{'' if last['epoch'] == 1 else 's'}; {chosen}; wrote {out_dir}")

    guarded(run)


def _launch(nproc: int) -> None:
    """`--nproc N`: the same command once per process under torchrun."""
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            argv.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "archspec", *argv]
    raise typer.Exit(subprocess.call(cmd))


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="A .safetensors file from archspec train."),
    data: Optional[str] = typer.Option(None, "--data", metavar="SOURCE",
                                       help="Test data (default: the data set it was trained on, when that is a "
                                            "built-in one: digits, or synthetic-cifar10/100 at its default size; "
                                            "otherwise --data is needed)."),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
    max_memory: Optional[str] = MaxMemoryOpt,
    threads: Optional[int] = ThreadsOpt,
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
) -> None:
    """Test accuracy of a checkpoint, rebuilt from the spec it carries."""

    def run():
        from archspec.runtime.threads import use_threads
        from archspec.runtime.train import evaluate_checkpoint

        use_threads(threads, loader_workers(data, None))

        r = evaluate_checkpoint(checkpoint, data, device, max_memory=memory_limit(max_memory),
                                trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite)
        if as_json:
            print(json.dumps(r))
        else:
            top5 = f", top-5 {r['test_top5']:.4f}" if "test_top5" in r else ""
            out.print(f"{r['network']} after epoch {r['epoch']} on {r['data']}: test accuracy {r['test_acc']:.4f}"
                      f"{top5}, loss {r['test_loss']:.4f} ({r['images']:,} images)")

    guarded(run)
