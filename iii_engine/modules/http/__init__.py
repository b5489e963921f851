"""The HTTP side of the engine: the REST API module (``api``, with its request ``routes``, response ``channels``
and ``settings``) and the HTTP functions module (``functions``, with its URL ``security`` rules)."""

from .api import RestApiModule
from .functions import HttpFunctionsModule

__all__ = ["HttpFunctionsModule", "RestApiModule"]
