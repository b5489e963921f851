"""The worker module, always loaded: the ``engine::*`` built-ins about workers, functions, triggers and
channels."""

from .module import WorkerModule

__all__ = ["WorkerModule"]
