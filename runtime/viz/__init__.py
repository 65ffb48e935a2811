"""Pictures of networks: their wiring (`archspec graph`) and what training made of their cross-layer
connections (`archspec inspect`)."""

from .files import draw, save_figure
from .view import LEVELS, View, units_of, view

__all__ = ["draw", "save_figure", "view", "units_of", "View", "LEVELS"]
