"""Training recipes: the papers' settings as named presets. Every field can be overridden. A recipe
names the optimizer (torch.optim's SGD, AdamW or RMSprop), the schedule (torch.optim.lr_scheduler's
step drops, cosine or one-cycle, after an optional linear warmup, stepped per epoch or per step), label
smoothing, mixup and CutMix of the training batches, random erasing, RandAugment or TrivialAugment
(image folders), gradient clipping, whether norms, biases and scales are exempt from weight decay, and an
exponential moving average of the weights (EMA); `optim` builds them. A network trains with its paper's
recipe when none is named: the one its spec declares (`spec_recipe`)."""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from archspec.errors import RunError, SpecError, did_you_mean
from archspec.language.loader import Spec, declared_recipe


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    lr_batch: PositiveInt | None = None  # lr is for batches of this size: a run applies lr × batch_size / lr_batch
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    gamma: float = Field(0.1, gt=0, le=1)  # the learning rate is multiplied by this at each milestone
    milestones: tuple[float, ...] = ()  # fractions of training at which the rate drops
    step_every: PositiveInt | PositiveFloat | None = None  # or: a drop every this many epochs
    optimizer: Literal["sgd", "adamw", "rmsprop"] = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment averages
    alpha: float = Field(0.99, gt=0, lt=1)  # RMSprop's mean-square average (TensorFlow's `decay`: 0.9)
    eps: float | None = Field(None, gt=0)  # AdamW's or RMSprop's epsilon; None: torch's default
    no_decay_norms: bool = False  # no weight decay on norm weights, biases and scales
    schedule: Literal["step", "cosine", "onecycle"] = "step"
    schedule_per: Literal["epoch", "step"] = "epoch"  # the schedule's unit: epochs, or optimizer steps
    warmup_epochs: float = Field(0, ge=0)  # a linear warmup first, from lr × warmup_from to lr (kept as a share
    # of training when only the epochs are changed)
    warmup_from: float = Field(1e-3, gt=0, le=1)
    min_lr: float = Field(0, ge=0)  # where cosine ends
    pct_start: float = Field(0.3, gt=0, lt=1)  # the share of one-cycle spent rising
    label_smoothing: float = Field(0, ge=0, lt=1)
    clip_grad: PositiveFloat | None = None  # the largest gradient norm a step applies; None: no clipping
    mixup_alpha: float = Field(0, ge=0)  # mixup's Beta(alpha, alpha); 0: no mixup
    cutmix_alpha: float = Field(0, ge=0)  # CutMix's Beta(alpha, alpha); 0: no CutMix
    mix_prob: float = Field(1.0, ge=0, le=1)  # the share of batches mixed (where an alpha is set)
    switch_prob: float = Field(0.5, ge=0, le=1)  # the share of mixed batches cut, not blended, where both are set
    random_erasing: float = Field(0, ge=0, le=1)  # the share of training images with a box erased
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"  # image folders: torchvision's policy
    randaugment_ops: PositiveInt = 2  # RandAugment's N, operations an image
    randaugment_magnitude: int = Field(9, ge=0, le=30)  # and M, their strength of 30
    ema: bool = False  # an exponential moving average of the weights and buffers, evaluated and saved alongside
    ema_decay: float = Field(0.9999, ge=0, lt=1)  # its weight on the average so far, at every step

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"are two averaging factors in [0, 1), such as 0.9,0.999; got {value}")
        return value

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        """A milestone outside (0, 1) or out of order would be dropped silently, not obeyed."""
        if not all(0 < f < 1 for f in value):
            bad = next(f for f in value if not 0 < f < 1)
            raise ValueError(f"are fractions of training between 0 and 1 (exclusive), such as 0.5,0.75; got {bad}")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"must increase, such as 0.5,0.75; got {','.join(map(str, value))}")
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> "Recipe":
        if self.milestones and self.step_every:
            raise ValueError(f"the rate drops either at milestones or every step_every ({self.step_every}) "
                             "epochs, not both")
        if self.schedule != "step" and (self.milestones or self.step_every):
            raise ValueError(f"milestones and step_every are the step schedule's; schedule {self.schedule} "
                             "takes neither")
        if self.step_every and self.schedule_per == "epoch" and self.step_every != int(self.step_every):
            raise ValueError(f"a drop every {self.step_every} epochs needs schedule_per step")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise ValueError("one-cycle rises by itself (pct_start): give no warmup_epochs")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than the {self.epochs} epochs")
        return self

    def peak_lr(self) -> float:
        """The rate the optimizer starts from (the schedule's peak): `lr`, scaled linearly to the batch
        size where the recipe gives its lr for another (`lr_batch`)."""
        return self.lr * self.batch_size / self.lr_batch if self.lr_batch else self.lr

    def milestone_epochs(self) -> list[int]:
        """The epochs after which the step schedule drops the rate."""
        return self.milestone_steps(1)

    def milestone_steps(self, per_epoch: int) -> list[int]:
        """The schedule steps after which the step schedule drops the rate, counted from the start of
        training, at `per_epoch` schedule steps an epoch."""
        total = self.epochs * per_epoch
        if self.step_every:
            every = self.step_every * per_epoch
            return sorted({max(1, round(k * every)) for k in range(1, int(total / every) + 1)} - {total})
        return sorted({max(1, round(f * total)) for f in self.milestones if 0 < f < 1})


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # DenseNet / DelugeNet / SeqConv / GUNN CIFAR: SGD, Nesterov 0.9, wd 1e-4, lr 0.1, batch 64, 300
    # epochs, ÷10 at 50% and 75%
    Recipe(name="cifar", epochs=300, batch_size=64, lr=0.1, milestones=(0.5, 0.75)),
    # ImageNet: 100 epochs, batch 256, ÷10 every 30 epochs
    Recipe(name="imagenet", epochs=100, batch_size=256, lr=0.1, step_every=30),
    # a few minutes on a laptop: the same schedule, shortened
    Recipe(name="quick", epochs=20, batch_size=64, lr=0.1, milestones=(0.5, 0.75)),
    # ConvNeXt (Liu et al. 2022, appendix A.1): AdamW, lr 4e-3·batch/4096, wd 0.05, 300 epochs, cosine per
    # step after 20 warmup epochs, label smoothing 0.1, no decay on norms and biases
    Recipe(name="imagenet-convnext", epochs=300, batch_size=1024, lr=4e-3, lr_batch=4096, optimizer="adamw",
           weight_decay=0.05, schedule="cosine", schedule_per="step", warmup_epochs=20, label_smoothing=0.1,
           no_decay_norms=True),
    # EfficientNet (Tan & Le 2019, section 5.2, and its TPU code): RMSprop decay 0.9, momentum 0.9, eps 1e-3,
    # wd 1e-5 (not on batch norms), lr 0.256·batch/4096 ×0.97 every 2.4 epochs, 350 epochs after 5 warmup
    # epochs, label smoothing 0.1
    Recipe(name="imagenet-efficientnet", epochs=350, batch_size=256, lr=0.256, lr_batch=4096, optimizer="rmsprop",
           momentum=0.9, alpha=0.9, eps=1e-3, weight_decay=1e-5, gamma=0.97, step_every=2.4, schedule_per="step",
           warmup_epochs=5, label_smoothing=0.1, no_decay_norms=True),
)}


def spec_recipe(spec: Spec) -> str:
    """The recipe a run of `spec` takes when it names none: the one its network declares (`network
    convnext_imagenet(...) recipe "imagenet-convnext" { ... }`; an alias's own or the network's it names),
    `quick` where none does. A name that is no recipe is an error at the spec's text."""
    declared = declared_recipe(spec)
    if declared is None:
        return "quick"
    if str(declared) not in RECIPES:
        raise SpecError(f"unknown recipe '{declared}'", getattr(declared, "loc", None),
                        did_you_mean(str(declared), RECIPES) or f"recipes: {', '.join(RECIPES)}", spec.sources)
    return str(declared)


def parse_fields(items: list[str] | tuple[str, ...]) -> dict[str, object]:
    """`FIELD=VALUE` words (`--recipe-set`) as recipe overrides: a comma, or a field that holds several,
    makes a tuple (`betas=0.9,0.95`, `milestones=0.5`); `none` is None; anything else stays text for the
    recipe's own checks to convert (`eps=1e-3`)."""
    fields = set(Recipe.model_fields) - {"name"}
    out: dict[str, object] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise RunError(f"--recipe-set takes FIELD=VALUE, got {item!r}", "such as --recipe-set betas=0.9,0.95")
        if key not in fields:
            raise RunError(f"a recipe has no field '{key}'",
                           did_you_mean(key, fields) or f"fields: {', '.join(sorted(fields))}")
        value = value.strip()
        many = "," in value or getattr(Recipe.model_fields[key].annotation, "__origin__", None) is tuple
        out[key] = (None if value.lower() == "none" else
                    tuple(v.strip() for v in value.split(",") if v.strip()) if many else value)
    return out


def recipe(name: str | Mapping[str, Any], **overrides) -> Recipe:
    """The named recipe, or the recipe whose fields `name` holds (as `model_dump` writes them: a run's
    config.json), with the fields given (None values keep the recipe's). A RunError about one field
    carries its name as `field`."""
    base = RECIPES.get(name) if isinstance(name, str) else _whole(name)
    if base is None:
        raise RunError(f"unknown recipe '{name}'",
                       did_you_mean(name, RECIPES) or f"recipes: {', '.join(RECIPES)}")
    name = base.name
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("milestones") is not None and "step_every" not in changes:
        changes["step_every"] = None  # milestones given replace a recipe's regular drops
    if changes.get("schedule", "step") != "step":  # another schedule replaces the recipe's drops
        changes.setdefault("milestones", ())
        changes.setdefault("step_every", None)
    if "epochs" in changes and "warmup_epochs" not in changes:  # a shorter run warms up for the same share
        changes["warmup_epochs"] = base.warmup_epochs * changes["epochs"] / base.epochs
    if "lr" in changes and "lr_batch" not in changes:
        changes["lr_batch"] = None  # an lr given is the rate applied, not one to scale to the batch size
    return _validated(name, {**base.model_dump(), **changes})


def _whole(fields: Mapping[str, Any]) -> Recipe:
    """The recipe of the fields given, as they are; a field left out is the named recipe's where the
    name is one (else its default: no name is `custom`)."""
    known = RECIPES.get(fields.get("name")) if isinstance(fields.get("name"), str) else None
    start = known.model_dump() if known is not None else {"name": "custom"}
    return _validated(str(fields.get("name", "custom")), {**start, **fields})


def _validated(name: str, fields: Mapping[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(fields)
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
        msg = first["msg"].removeprefix("Value error, ")
        field = f"{first['loc'][0]} " if first.get("loc") else ""
        err = RunError(f"recipe '{name}': {field}{msg[:1].lower()}{msg[1:]}")
        err.field = str(first["loc"][0]) if first.get("loc") else None
        raise err from None
