"""The observability module (``modules::observability::OtelModule``): telemetry stores, ``engine::*`` query
functions, alerts and the ``log`` trigger type.

Example:
    >>> from iii_engine.modules.observability import OtelModule
    >>> OtelModule.name
    'observability'
"""

from .module import OtelModule

__all__ = ["OtelModule"]
