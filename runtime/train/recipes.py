"""Training recipes: the papers' settings as named presets. Every field can be overridden."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from archspec.errors import RunError, did_you_mean


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    gamma: float = Field(0.1, gt=0, le=1)  # the learning rate is multiplied by this at each milestone
    milestones: tuple[float, ...] = ()  # fractions of training at which the rate drops
    step_every: PositiveInt | None = None  # or: a drop every this many epochs

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
        return self

    def milestone_epochs(self) -> list[int]:
        if self.step_every:
            return list(range(self.step_every, self.epochs, self.step_every))
        return sorted({max(1, round(f * self.epochs)) for f in self.milestones if 0 < f < 1})


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # DenseNet / DelugeNet / SeqConv / GUNN CIFAR: SGD, Nesterov 0.9, wd 1e-4, lr 0.1, batch 64, 300
    # epochs, ÷10 at 50% and 75%
    Recipe(name="cifar", epochs=300, batch_size=64, lr=0.1, milestones=(0.5, 0.75)),
    # ImageNet: 100 epochs, batch 256, ÷10 every 30 epochs
    Recipe(name="imagenet", epochs=100, batch_size=256, lr=0.1, step_every=30),
    # a few minutes on a laptop: the same schedule, shortened
    Recipe(name="quick", epochs=20, batch_size=64, lr=0.1, milestones=(0.5, 0.75)),
)}


def recipe(name: str, **overrides) -> Recipe:
    """The named recipe with the fields given (None values keep the recipe's)."""
    base = RECIPES.get(name)
    if base is None:
        raise RunError(f"unknown recipe '{name}'",
                       did_you_mean(name, RECIPES) or f"recipes: {', '.join(RECIPES)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes.get("milestones") is not None and "step_every" not in changes:
        changes["step_every"] = None  # milestones given replace a recipe's regular drops
    try:
        return Recipe.model_validate({**base.model_dump(), **changes})
    except ValueError as e:
        first = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
        msg = first["msg"].removeprefix("Value error, ")
        field = f"{first['loc'][0]} " if first.get("loc") else ""
        raise RunError(f"recipe '{name}': {field}{msg[:1].lower()}{msg[1:]}") from None
