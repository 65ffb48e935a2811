"""archspec: a compiler from short architecture specs to PyTorch modules."""

from .api import build, network, parse, summary
from .language.errors import Loc, SpecError

__all__ = ["build", "network", "parse", "summary", "Loc", "SpecError"]
__version__ = "0.1.0"
