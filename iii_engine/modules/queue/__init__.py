"""The queue module: ``module`` (functions and trigger type), ``settings``, ``consumer`` (the retry loop) and the
job stores (``store`` in memory, ``redis_store``)."""

from .module import QueueModule

__all__ = ["QueueModule"]
