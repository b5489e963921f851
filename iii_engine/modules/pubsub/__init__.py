"""The pubsub module: ``module`` (``publish`` and the ``subscribe`` trigger type), ``bus`` (local and Redis
delivery) and ``settings``."""

from .module import PubSubModule

__all__ = ["PubSubModule"]
