"""Every use of redis-py internals, in one module: the Redis watch's pub/sub that never reconnects by itself, the
options of a pool made like another (what a pool adds to its own ``connection_kwargs`` left out), and whether a
failed command certainly sent nothing (:func:`sent_nothing`, from where in redis-py its error came), and whether a
pool's connection may be taken and given back without its locks and records (:func:`pool_idle`,
:func:`plain_give_back`).

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

import asyncio
import importlib
import inspect
import logging
from typing import Any, Final

from redis.asyncio.client import PubSub, Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool

from iii.warn_once import WarnOnce

__all__ = ["MISSING", "PLAIN_POOL_MISSING", "POOL_INJECTED", "RAW_REPLY", "SENT_NOTHING_MISSING", "OneShotPubSub",
           "give_back_plain", "like_pool_options", "notify_one", "one_shot", "plain_give_back", "pool_idle",
           "raw_reply", "sent_nothing", "take_plain"]

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

_warn_once = WarnOnce(log)


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
    if not MISSING:
        pubsub.__class__ = OneShotPubSub
    else:
        _warn_once("missing", "redis-py %s lacks %s: Redis watches use its own reconnect (a watch cancelled during "
                   "it may keep its subscription until the connection fails)", _version(), ", ".join(MISSING))
    return pubsub


def _version() -> str:
    import redis

    return str(getattr(redis, "__version__", "?"))


# What redis-py pools add to their own connection_kwargs, as known (the probe below adds what this redis-py adds):
# the maintenance notifications' handler and its config, the address the pool started from, the HIMPORT registry.
_KNOWN_INJECTED: Final = frozenset({
    "maint_notifications_pool_handler", "maint_notifications_config", "oss_cluster_maint_notifications_handler",
    "orig_host_address", "orig_socket_timeout", "orig_socket_connect_timeout", "himport_registry"})


def _pool_injected() -> frozenset[str]:
    """The ``connection_kwargs`` keys a pool adds itself: those of a pool made (never connected) with RESP3, which
    enables the maintenance notifications' handler where this redis-py has one, plus :data:`_KNOWN_INJECTED`."""
    given: dict[str, Any] = {"host": "probe.invalid", "protocol": 3}
    try:
        found = set(ConnectionPool(**given).connection_kwargs) - set(given)
    except Exception:  # a redis-py whose pool refuses these: the known keys alone
        found = set()
    return frozenset(found) | _KNOWN_INJECTED


POOL_INJECTED: Final = _pool_injected()
"""``connection_kwargs`` keys a redis-py pool adds for its own connections: copied into another pool, the first
pool's handler would act on that pool's connections."""


def like_pool_options(pool: object) -> dict[str, Any] | None:
    """The options of a new pool whose connections are made as ``pool``'s (its connection class and the options it
    was given), or ``None`` for a pool they cannot be copied from: none (a cluster client's), or one whose
    connections are bound to it (a Sentinel pool's ask it for the master's address, through a ``connection_pool``
    it adds). Its maintenance notifications' config goes to the new pool as the pool's own option (the new pool
    makes its own handler), not to its connections.

    Example:
        >>> pool = ConnectionPool(host="example.invalid", client_name="app", protocol=3)
        >>> options = like_pool_options(pool)
        >>> options["client_name"], "maint_notifications_pool_handler" in options, "himport_registry" in options
        ('app', False, False)
    """
    connection_class = getattr(pool, "connection_class", None)
    given = getattr(pool, "connection_kwargs", None)
    if connection_class is None or not isinstance(given, dict) or "connection_pool" in given:
        return None
    options = {key: value for key, value in given.items() if key not in POOL_INJECTED}
    if given.get("maint_notifications_config") is not None:
        options["maint_notifications_config"] = given["maint_notifications_config"]
    return {"connection_class": connection_class, **options}


# redis-py's functions that write a command: an error raised under one of them may come after the command was sent
_SENDING: Final = frozenset({"_send_command_parse_response", "send_command", "send_packed_command", "_execute"})


def _sent_nothing_missing() -> tuple[str, ...]:
    """The redis-py functions :func:`sent_nothing` reads tracebacks for that this redis-py lacks."""
    wanted = [(ConnectionPool, "get_connection"), (Redis, "_send_command_parse_response"),
              (AbstractConnection, "send_command"), (AbstractConnection, "send_packed_command")]
    return tuple(f"{owner.__name__}.{name}" for owner, name in wanted if not callable(getattr(owner, name, None)))


SENT_NOTHING_MISSING: Final = _sent_nothing_missing()
"""What this redis-py lacks of what :func:`sent_nothing` relies on (empty when it can tell)."""


def sent_nothing(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a redis-py 8 command, certainly came before the command was written: it came out
    of the pool handing the command its connection (``get_connection``, which opens it), and out of no function
    that writes. redis-py opens a connection there before its ``Retry`` sends anything; a retry that reconnects
    after a first attempt was sent fails under ``send_command`` instead, and that command may have run. ``False``
    (not certain) whenever this redis-py lacks those functions (:data:`SENT_NOTHING_MISSING`).

    Example:
        >>> import asyncio
        >>> from redis.exceptions import ConnectionError as RedisConnectionError
        >>> async def refused() -> bool:
        ...     client = Redis(port=1)  # nothing listens there
        ...     try:
        ...         await client.ping()
        ...     except RedisConnectionError as exc:
        ...         return sent_nothing(exc)
        ...     finally:
        ...         await client.aclose()
        ...     return False
        >>> asyncio.run(refused()) == (not SENT_NOTHING_MISSING)
        True
        >>> sent_nothing(RedisConnectionError("Connection closed by server."))  # not raised: where from is unknown
        False
    """
    if SENT_NOTHING_MISSING:
        return False
    names = set()
    frame = exc.__traceback__
    while frame is not None:
        names.add(frame.tb_frame.f_code.co_name)
        frame = frame.tb_next
    return "get_connection" in names and not names & _SENDING


# -- a pool's uncontended take and give-back (iii_streams.redis._WaitingPool) ----------------------------------------

def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# redis-py's pool metrics (OpenTelemetry), recorded by every take and give-back when enabled; and its release event
_pool_metrics: Any = _optional("redis.asyncio.observability.recorder")
_RELEASED: Any = getattr(_optional("redis.event"), "AsyncAfterConnectionReleasedEvent", None)
_REAUTH: Any = getattr(_optional("redis.event"), "AsyncReAuthConnectionListener", None)


def _plain_pool_missing() -> tuple[str, ...]:
    """What :func:`pool_idle` and :func:`plain_give_back` read that this redis-py lacks."""
    lacking = []
    if _pool_metrics is None or not hasattr(_pool_metrics, "_async_collector_resolved"):
        lacking.append("redis.asyncio.observability.recorder._async_collector_resolved")
    if _RELEASED is None or _REAUTH is None:
        lacking.append("redis.event.AsyncReAuthConnectionListener")
    pool = ConnectionPool(host="probe.invalid")
    for name in ("_available_connections", "_in_use_connections", "_lock", "_event_dispatcher"):
        if not hasattr(pool, name):
            lacking.append(f"ConnectionPool.{name}")
    if not hasattr(getattr(pool, "_event_dispatcher", None), "_event_listeners_mapping"):
        lacking.append("EventDispatcher._event_listeners_mapping")
    return tuple(lacking)


PLAIN_POOL_MISSING: Final = _plain_pool_missing()
"""What this redis-py lacks of what the plain take and give-back rely on (empty when they can be used)."""


def pool_idle(pool: Any) -> bool:
    """Whether a blocking pool's connection may be taken or given back without its locks and records: nobody holds
    or waits for its condition or its lock, it is in no maintenance, and redis-py was found to record no pool
    metrics (looked up once, at its first record). ``False`` whenever anything is not known so
    (:data:`PLAIN_POOL_MISSING`).

    Example:
        >>> pool_idle(ConnectionPool(host="probe.invalid"))  # not a blocking pool: no condition to tell
        False
    """
    if PLAIN_POOL_MISSING or _pool_metrics is None:
        return False
    if _pool_metrics._async_collector_resolved is not True or _pool_metrics._async_metrics_collector is not None:
        return False
    condition, lock = getattr(pool, "_condition", None), getattr(pool, "_lock", None)
    return (getattr(pool, "_in_maintenance", True) is False and isinstance(condition, asyncio.Condition)
            and isinstance(lock, asyncio.Lock) and not condition.locked() and not lock.locked())


def plain_give_back(pool: Any, connection: Any) -> bool:
    """Whether giving ``connection`` back to ``pool`` (:func:`pool_idle`) does nothing but move it from in use to
    available: it is in use and not marked to reconnect, and its release listeners are redis-py's re-auth alone,
    with no new credentials waiting.

    Example:
        >>> from redis.asyncio import BlockingConnectionPool
        >>> plain_give_back(BlockingConnectionPool(host="probe.invalid"), object())
        False
    """
    if PLAIN_POOL_MISSING or connection not in pool._in_use_connections:
        return False
    should_reconnect = getattr(connection, "should_reconnect", None)
    if not callable(should_reconnect) or should_reconnect() or getattr(connection, "_re_auth_token", 0) is not None:
        return False
    listeners = pool._event_dispatcher._event_listeners_mapping.get(_RELEASED, ())
    return all(type(listener) is _REAUTH for listener in listeners)


def take_plain(pool: Any) -> Any | None:
    """An available connection of ``pool`` taken as redis-py takes one (the last given back), without its locks
    and records, when :func:`pool_idle`; else ``None`` (take it redis-py's way). The caller checks the connection
    (``ensure_connection``) as redis-py does.

    Example:
        >>> take_plain(ConnectionPool(host="probe.invalid")) is None
        True
    """
    if not pool_idle(pool) or not pool._available_connections:
        return None
    connection = pool._available_connections.pop()
    pool._in_use_connections.add(connection)
    return connection


def give_back_plain(pool: Any, connection: Any) -> bool:
    """Give ``connection`` back to ``pool`` as redis-py does, without its locks and records, when that is all
    redis-py would do (:func:`pool_idle`, :func:`plain_give_back`); ``False``: nothing done (give it back redis-py's
    way).

    Example:
        >>> give_back_plain(ConnectionPool(host="probe.invalid"), object())
        False
    """
    if not pool_idle(pool) or not plain_give_back(pool, connection):
        return False
    pool._in_use_connections.remove(connection)
    pool._available_connections.append(connection)
    return True


async def notify_one(pool: Any) -> None:
    """Wake one task waiting on a blocking pool's condition (it checks again whether a connection is free), as
    redis-py's give-back does; nothing for a pool without one. Why: Python 3.11's ``asyncio.Condition`` loses a
    notify whose waiter is cancelled before it wakes (fixed in 3.13), and the next waiter then waits on with a
    connection free.

    Example:
        >>> asyncio.run(notify_one(ConnectionPool(host="probe.invalid")))  # no condition: nothing to do
    """
    condition = getattr(pool, "_condition", None)
    if isinstance(condition, asyncio.Condition):
        async with condition:
            condition.notify()


# -- replies as bytes whatever the client decodes (iii_streams.redis) -------------------------------------------------

_NEVER_DECODE: Any = getattr(_optional("redis.client"), "NEVER_DECODE", None)
RAW_REPLY: Final[dict[str, Any]] = {_NEVER_DECODE: True} if isinstance(_NEVER_DECODE, str) else {}
"""Options of ``execute_command`` that make redis-py hand a reply's strings back as bytes, even on a client made with
``decode_responses=True`` (whose decode of one stored value that is not UTF-8 failed the whole reply, every item's
update of a batch with it); empty when this redis-py has no such option (the reply is then decoded as the client
says). A test checks it with this redis-py."""


async def raw_reply(client: Redis, *command: Any) -> Any:
    """``command``'s reply, its strings as bytes (:data:`RAW_REPLY`).

    Example:
        >>> import asyncio, fakeredis
        >>> async def demo() -> Any:
        ...     client = fakeredis.FakeAsyncRedis(decode_responses=True)
        ...     await client.hset("h", "f", "v")
        ...     return await raw_reply(client, "HGET", "h", "f")
        >>> asyncio.run(demo())
        b'v'
    """
    return await client.execute_command(*command, **RAW_REPLY)  # type: ignore[no-untyped-call]
