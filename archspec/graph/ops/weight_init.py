"""Initialisations of weights and biases by name, for the ops with weights (conv, linear), so that a spec
starts a network as its authors' code or torchvision does. Each scheme is a distribution whose spread
follows the layer's fans, counted as torch counts them: fan_in = inputs per output × kernel area,
fan_out = outputs × kernel area (not divided by groups). The rules only: `compiler.init` draws the tensors."""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

from pydantic import PositiveFloat, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .base import OpArgs

WeightInit = Literal["default", "he_normal", "he_normal_in", "he_uniform", "he_uniform_in", "torch",
                     "uniform_out", "uniform_inv_out", "normal", "trunc_normal", "zeros"]
BiasInit = Literal["zeros", "torch"]

# name → (distribution, spread from (fan_in, fan_out, std)): a uniform's bound, a normal's std
_SCHEMES: dict[str, tuple[str, Callable[[int, int, float], float]]] = {
    "he_normal": ("normal", lambda i, o, s: math.sqrt(2 / o)),  # the papers' code; torchvision's ResNet, VGG, ...
    "he_normal_in": ("normal", lambda i, o, s: math.sqrt(2 / i)),  # torchvision's DenseNet
    "he_uniform": ("uniform", lambda i, o, s: math.sqrt(6 / o)),  # SeqConv
    "he_uniform_in": ("uniform", lambda i, o, s: math.sqrt(6 / i)),  # torchvision's SqueezeNet
    "torch": ("uniform", lambda i, o, s: 1 / math.sqrt(i)),  # torch's own reset: ShuffleNet, classifiers
    "uniform_out": ("uniform", lambda i, o, s: math.sqrt(3 / o)),  # SeqConv's and MnasNet's classifiers
    "uniform_inv_out": ("uniform", lambda i, o, s: 1 / math.sqrt(o)),  # EfficientNet's classifier
    "normal": ("normal", lambda i, o, s: s),  # MobileNet's, VGG's and RegNet's classifiers (std 0.01)
    # ConvNeXt (std 0.02) and GoogLeNet (0.01): torch's trunc_normal_, whose bounds ±2 are absolute
    "trunc_normal": ("trunc_normal", lambda i, o, s: s),
    "zeros": ("zeros", lambda i, o, s: 0.0),
}
_STD = {"normal": 0.01, "trunc_normal": 0.02}  # the std where a spec gives none


class InitArgs(OpArgs):
    """The initialisation arguments a weighted op takes, after its own. `default` is the op's own scheme."""

    trailing = ("init", "std", "bias_init")

    init: WeightInit = "default"
    std: Optional[PositiveFloat] = None
    bias_init: BiasInit = "zeros"

    @field_validator("std")
    @classmethod
    def _std_needs_a_normal(cls, v: float | None, info: ValidationInfo) -> float | None:
        init = info.data.get("init", "default")
        if v is not None and init not in _STD:
            raise PydanticCustomError("std", 'sets the spread of init="normal" or "trunc_normal", not of '
                                      'init="{init}"', {"init": init})
        return v


def fans(weight) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or convolution (out, in/groups, kh, kw) weight."""
    area = math.prod(weight.shape[2:])
    return weight.shape[1] * area, weight.shape[0] * area


def draw(a: InitArgs, default: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """How to draw a weight by `a.init` (`default` standing for the op's own scheme): the distribution
    ("normal", "uniform", "trunc_normal" or "zeros") and its spread (a normal's std, a uniform's bound)."""
    scheme = default if a.init == "default" else a.init
    kind, spread = _SCHEMES[scheme]
    return kind, spread(fan_in, fan_out, a.std if a.std is not None else _STD.get(scheme, 0.0))
