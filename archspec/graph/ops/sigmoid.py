"""sigmoid: the logistic function 1/(1+e^-x) (gates, such as squeeze-and-excitation's); 0 parameters,
shape-preserving."""

from __future__ import annotations

from .activation import Activation, from_output
from .base import Saves, register


@register
class Sigmoid(Activation):
    kind = "sigmoid"
    saves = Saves(inputs=False)
    aliases = ("logistic", "sigm")
    function = "torch.sigmoid"
    backward = from_output("sigmoid_backward")  # σ' = σ(1 − σ)
