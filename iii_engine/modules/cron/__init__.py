"""The cron module: ``module`` (the ``cron`` trigger type), ``expr`` (the schedule syntax), ``locks`` (one firing
per tick across engines) and ``settings``."""

from .module import CronModule

__all__ = ["CronModule"]
