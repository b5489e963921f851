"""Every use of redis-py internals, in one module: the Redis watch's pub/sub that never reconnects by itself.

redis-py's ``PubSub._execute`` reconnects the connection and subscribes it again when a read fails, even with no
retries configured, and a client that retries then reads on. In that reconnect Python 3.11's ``asyncio.wait_for``
returns normally when a cancellation arrives as the awaited send completes (python/cpython#86296): a cancelled
watcher was subscribed again and read on for good. :func:`one_shot` makes a client's ``PubSub`` raise instead, so
the watch's own loop closes it and subscribes a fresh one.

What it relies on is checked once at import (:data:`MISSING` names what this redis-py lacks); without it
:func:`one_shot` leaves the ``PubSub`` as it is (redis-py's own reconnect, the watch's cancellation check still in
place) and says so once.

Example:
    >>> import redis.asyncio as aioredis
    >>> pubsub = one_shot(aioredis.Redis().pubsub())
    >>> isinstance(pubsub, OneShotPubSub) == (not MISSING)
    True
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Final

from redis.asyncio.client import PubSub

__all__ = ["MISSING", "OneShotPubSub", "one_shot"]

log = logging.getLogger(__name__)


def _missing() -> tuple[str, ...]:
    """Names of the redis-py internals :class:`OneShotPubSub` overrides that this redis-py lacks or changed."""
    lacking = []
    execute = getattr(PubSub, "_execute", None)
    if not inspect.iscoroutinefunction(execute) or list(inspect.signature(execute).parameters)[:3] != [
            "self", "conn", "command"]:
        lacking.append("PubSub._execute(self, conn, command, *args, **kwargs)")
    return tuple(lacking)


MISSING: Final = _missing()
"""The internals this redis-py lacks (empty when :func:`one_shot` works as documented)."""

_warned = False


class OneShotPubSub(PubSub):
    """A ``PubSub`` that never reconnects its connection itself: a failed send or read raises to its caller (the
    store's one reader task, the only one that reads or closes it, then subscribes a fresh one)."""

    async def _execute(self, conn: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        return await command(*args, **kwargs)


def one_shot(pubsub: PubSub) -> PubSub:
    """``pubsub`` (made by its client: its pool, encoder and event dispatcher) run the :class:`OneShotPubSub` way
    when this redis-py has what that needs; as it is otherwise.

    Example:
        >>> import redis.asyncio as aioredis
        >>> client = aioredis.Redis()  # nothing connects until the first command
        >>> pubsub = one_shot(client.pubsub(ignore_subscribe_messages=False))
        >>> pubsub.connection_pool is client.connection_pool, pubsub.ignore_subscribe_messages
        (True, False)
    """
    global _warned
    if not MISSING:
        pubsub.__class__ = OneShotPubSub
    elif not _warned:
        _warned = True
        log.warning("redis-py %s lacks %s: Redis watches use its own reconnect (a watch cancelled during it may keep "
                    "its subscription until the connection fails)", _version(), ", ".join(MISSING))
    return pubsub


def _version() -> str:
    import redis

    return str(getattr(redis, "__version__", "?"))
