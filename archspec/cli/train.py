"""`train` (in this process, or in several under torchrun) and `eval` of a checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import RunError
from .common import (AllowNonfiniteOpt, AllowPathOpt, MaxMemoryOpt, SetOpt, ThreadsOpt, TrustLegacyOpt, app, guarded,
                     memory_limit, out, parse_sets)
from .completion import complete_spec


def loader_workers(data: Optional[str], workers: Optional[int]) -> int:
    """The loader processes a run on `data` starts: `workers` where given; for an image folder
    (a directory with train/), the loader's default; none for data held in memory."""
    if workers is not None:
        return workers
    if data is not None and not data.startswith("synthetic-") and (Path(data).expanduser() / "train").is_dir():
        from archspec.runtime.data import default_workers

        return default_workers()
    return 0


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the command line (or its environment) gave the option `name`, rather than its default."""
    source = ctx.get_parameter_source(name)
    return getattr(source, "name", None) in ("COMMANDLINE", "ENVIRONMENT")  # click's enum, or typer's copy of it


def with_file(ctx: typer.Context, file: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig's fields from a config file's settings (`file`) and the command line's (`flags`, by
    TrainConfig field, each under its option's name): an option given on the command line wins, a `--set`
    per parameter; a --recipe given replaces the file's recipe and its fields."""
    out_ = {}
    for field, (option, value) in flags.items():
        out_[field] = value if field not in file or given(ctx, option) else file[field]
    out_["sets"] = {**file.get("sets", {}), **flags["sets"][1]}
    return out_


@app.command()
def train(
    ctx: typer.Context,
    spec: Optional[str] = typer.Argument(None, metavar="SPEC", show_default=False,
                                         help="A spec file (.arch), or a shipped model's name (see `archspec "
                                              "list`); may come from --config instead.",
                                         autocompletion=complete_spec),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE",
                                          help="Settings from a JSON (or, with PyYAML, YAML) file, such as a run's "
                                               "config.json, which replays that run; options given here override "
                                               "it."),
    set_: Optional[List[str]] = SetOpt,
    data: Optional[str] = typer.Option(None, "--data", metavar="SOURCE",
                                       help="A CIFAR-10/100 folder (python or binary layout), an image folder "
                                            "(train/ and val/), or synthetic-cifar10[:N]; default: the digits "
                                            "bundled with scikit-learn."),
    recipe: Optional[str] = typer.Option(None, "--recipe", metavar="NAME", show_default=False,
                                         help="cifar, imagenet, imagenet-convnext, imagenet-efficientnet or quick "
                                              "\\[default: the network's own: its paper's for the shipped models "
                                              "that name one, else quick]."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, metavar="N", show_default="the recipe's",
                                         help="Epochs to train."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N", show_default="the recipe's",
                                             help="Images per training step."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, metavar="X", show_default="the recipe's",
                                       help="The peak learning rate, applied as given (not scaled to the batch size)."),
    momentum: Optional[float] = typer.Option(None, "--momentum", min=0.0, max=1.0, metavar="X",
                                             show_default="the recipe's", help="Momentum of SGD and RMSprop."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", min=0.0, metavar="X",
                                                 show_default="the recipe's", help="Weight decay."),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov", show_default="the recipe's",
                                            help="Nesterov momentum for SGD."),
    milestones: Optional[str] = typer.Option(None, "--milestones", metavar="F,F,...",
                                             help="Fractions of training at which the rate drops (e.g. 0.5,0.75)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", metavar="X", help="The factor of each drop (0.1)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", metavar="NAME", help="sgd, adamw or rmsprop."),
    schedule: Optional[str] = typer.Option(None, "--schedule", metavar="NAME",
                                           help="step (drops at --milestones), cosine or onecycle."),
    schedule_per: Optional[str] = typer.Option(None, "--schedule-per", metavar="UNIT",
                                               help="epoch or step: how often the schedule moves."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs", min=0.0, metavar="E",
                                                  help="A linear warmup to --lr over this many epochs first."),
    min_lr: Optional[float] = typer.Option(None, "--min-lr", min=0.0, metavar="X",
                                           help="Where the cosine schedule ends."),
    label_smoothing: Optional[float] = typer.Option(None, "--label-smoothing", min=0.0, max=1.0, metavar="F",
                                                    help="Label smoothing of the training loss (0.1)."),
    clip_grad: Optional[float] = typer.Option(None, "--clip-grad", min=0.0, metavar="NORM",
                                              help="Clip each step's gradient to this norm."),
    no_decay_norms: Optional[bool] = typer.Option(None, "--no-decay-norms/--decay-norms",
                                                  help="No weight decay on norm weights, biases and scales."),
    recipe_set: Optional[List[str]] = typer.Option(None, "--recipe-set", metavar="FIELD=VALUE",
                                                   help="Any other recipe field (betas=0.9,0.95, eps=1e-3, alpha, "
                                                        "warmup_from, pct_start, lr_batch, step_every, mixup_alpha, "
                                                        "cutmix_alpha, mix_prob, switch_prob, ema=true, ema_decay); "
                                                        "repeatable."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, metavar="N",
                             help="Seed of the initial weights, the data order and the augmentations."),
    out_dir: Path = typer.Option(Path("runs/last"), "-o", "--out", metavar="DIR",
                                 help="Checkpoints (last/best.safetensors), metrics (metrics.jsonl, metrics.csv, "
                                      "TensorBoard events) and config.json go here."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
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
    nproc: int = typer.Option(1, "--nproc", min=1, metavar="N",
                              help="Launch this many processes with torchrun (DDP)."),
    threads: Optional[int] = ThreadsOpt,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    max_memory: Optional[str] = MaxMemoryOpt,
    allow_path: Optional[List[Path]] = AllowPathOpt,
) -> None:
    """Train SPEC with a recipe; every epoch is checkpointed atomically and can be resumed."""

    def run():
        from archspec.runtime.train.config import check_out_dir
        from archspec.runtime.train.recipes import parse_fields, recipe as check_recipe, spec_recipe

        from archspec.runtime.train.config import read_config_file

        file = read_config_file(config) if config is not None else {}
        v = with_file(ctx, file, {
            "spec": ("spec", spec), "sets": ("set_", parse_sets(set_)), "data": ("data", data),
            "recipe": ("recipe", recipe), "epochs": ("epochs", epochs), "batch_size": ("batch_size", batch_size),
            "lr": ("lr", lr), "seed": ("seed", seed), "val_split": ("val_split", val_split),
            "device": ("device", device),
            "compile": ("compile_", compile_), "amp": ("amp", amp), "memory": ("memory", memory),
            "workers": ("workers", workers), "tensorboard": ("tensorboard", tensorboard),
            "image_size": ("image_size", image_size), "crop": ("crop", crop), "threads": ("threads", threads),
            "channels_last": ("channels_last", None)})
        if v["spec"] is None:
            raise RunError("no SPEC to train", "give a spec file or a model's name, or --config FILE naming one")
        tweaks = {**parse_fields(recipe_set or ()), "momentum": momentum, "weight_decay": weight_decay,
                  "nesterov": nesterov, "gamma": gamma, "optimizer": optimizer, "schedule": schedule, "schedule_per": schedule_per,
                  "warmup_epochs": warmup_epochs, "min_lr": min_lr, "label_smoothing": label_smoothing,
                  "clip_grad": clip_grad, "no_decay_norms": no_decay_norms}
        if milestones is not None:
            try:
                tweaks["milestones"] = tuple(float(m) for m in milestones.split(",") if m.strip())
            except ValueError:
                raise RunError(f"--milestones needs fractions such as 0.5,0.75, got {milestones!r}") from None
        if v["recipe"] is not None:
            named = v["recipe"]
        else:  # the spec's own: read (not elaborated) to see which
            from archspec import api, library

            named = spec_recipe(api.parse(library.find(str(v["spec"])), allow_path))
        check_recipe(named, **{**tweaks, "epochs": v["epochs"], "batch_size": v["batch_size"], "lr": v["lr"]})
        from archspec.runtime.train.split import parse_val_split

        split = v["val_split"]
        if isinstance(split, str):
            split = parse_val_split(split)
        check_out_dir(out_dir)  # every flag and the output folder, before processes start or data loads
        if nproc > 1:
            return _launch(nproc)
        from archspec.runtime.threads import use_threads
        from archspec.runtime.train.host_memory import keep_freed_memory
        from archspec.runtime.train import TrainConfig, train as run_training

        lead = int(os.environ.get("RANK", "0")) == 0
        # each process its share
        use_threads(v["threads"], loader_workers(v["data"], v["workers"]), log=out.print if lead else None)
        keep_freed_memory()

        from archspec.library import find

        cfg = TrainConfig(spec=str(find(str(v["spec"]))), sets=v["sets"], data=v["data"], recipe=v["recipe"],
                          epochs=v["epochs"], batch_size=v["batch_size"], lr=v["lr"], tweaks=tweaks, seed=v["seed"],
                          out=out_dir, resume=resume, device=v["device"], compile=v["compile"], amp=v["amp"],
                          memory=v["memory"], progress=not quiet, val_split=split, workers=v["workers"],
                          tensorboard=v["tensorboard"], threads=v["threads"], image_size=v["image_size"],
                          crop=v["crop"], channels_last=v["channels_last"], trust_legacy=trust_legacy,
                          allow_nonfinite=allow_nonfinite,
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
    device: str = typer.Option("auto", "--device", metavar="DEVICE", help="auto, cpu or cuda."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a line."),
    max_memory: Optional[str] = MaxMemoryOpt,
    threads: Optional[int] = ThreadsOpt,
    trust_legacy: bool = TrustLegacyOpt,
    allow_nonfinite: bool = AllowNonfiniteOpt,
    ema: bool = typer.Option(False, "--ema", help="Evaluate the moving average of the weights the run kept "
                                                  "(a recipe with ema), not the weights themselves."),
    confusion: Optional[Path] = typer.Option(None, "--confusion", metavar="DIR",
                                             help="Write the test images' confusion matrix (confusion.png and "
                                                  "confusion.json) into DIR, for at most 100 classes."),
) -> None:
    """Test accuracy of a checkpoint, rebuilt from the spec it carries."""

    def run():
        from archspec.runtime.threads import use_threads
        from archspec.runtime.train import evaluate_checkpoint

        use_threads(threads, loader_workers(data, None))

        if confusion is not None and not confusion.is_dir():
            raise RunError(f"--confusion {confusion}: no such folder", "give an existing folder to write into")
        r = evaluate_checkpoint(checkpoint, data, device, max_memory=memory_limit(max_memory),
                                trust_legacy=trust_legacy, allow_nonfinite=allow_nonfinite,
                                weights="ema" if ema else "model", confusion=confusion is not None)
        if confusion is not None:
            from archspec.runtime.viz.confusion import write_confusion

            counts = r.pop("confusion", None)
            if counts is None:
                raise RunError("the confusion matrix is drawn for at most 100 classes")
            write_confusion(confusion, counts)
        if as_json:
            print(json.dumps(r))
        else:
            top5 = f", top-5 {r['test_top5']:.4f}" if "test_top5" in r else ""
            out.print(f"{r['network']} after epoch {r['epoch']} on {r['data']}: test accuracy {r['test_acc']:.4f}"
                      f"{top5}, loss {r['test_loss']:.4f} ({r['images']:,} images)")

    guarded(run)
