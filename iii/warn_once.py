"""Warnings said once per process and key: the fallbacks taken where a library's internals are not as expected
(``iii.otel_internals``, ``iii_channels.asyncio_internals``, ``iii_streams.redis_internals``) say so once, not at
every use.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["WarnOnce"]


class WarnOnce:
    """Log a warning on ``log`` the first time its key is given, and never again for that key (thread-safe).

    Example:
        >>> said = WarnOnce(logging.getLogger("demo"))
        >>> said("demo._thing", "internal %s not found", "demo._thing"), said("demo._thing", "again")
        (True, False)
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: object) -> bool:
        """Warn ``message % args`` unless ``key`` was warned about already; whether it warned now."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
        self._log.warning(message, *args, stacklevel=2)  # the record names the caller's module and line
        return True
