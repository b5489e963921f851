"""The state module: ``module`` (the ``state::*`` functions and the ``state`` trigger type) and ``settings``."""

from .module import StateModule

__all__ = ["StateModule"]
