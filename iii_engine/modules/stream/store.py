"""Which ``iii_streams`` backend an engine module keeps its data in, chosen from the module settings.

Production adapter classes map to our backends; our own ``store_url`` key (any :func:`iii_streams.open_stream`
URL) wins over ``adapter`` when both are given:

============================================  ==================================================================
``modules::stream::adapters::KvStore``        :class:`~iii_streams.MemoryStream`; ``store_method: file_based``
(and ``modules::state::adapters::KvStore``)   keeps the data in SQLite at ``<file_path>/iii_<kind>.sqlite3``
``…::adapters::RedisAdapter``                 :class:`~iii_streams.RedisStream` on ``redis_url``
                                              (default ``redis://localhost:6379``)
``…::adapters::Bridge``                       a remote engine's store (:mod:`~iii_engine.modules.bridge.stores`)
============================================  ==================================================================

The state module's Redis store (through ``RedisAdapter`` or a ``redis://`` ``store_url``) uses the production
state layout, hash ``state:<scope>`` (:data:`iii_streams.redis.STATE_LAYOUT`), so our engine and a production
engine share state through one Redis; memory and SQL stores keep state under an internal stream name.

The stream module lets its store publish the change events of store writes (``publish_events=True``: one Redis
round trip for write + event, as production's scripts do) and publishes the rest (custom streams, ``send``)
itself; the state module has no event feed and opens its store with ``publish_events=False``.

Example:
    >>> type(open_module_store("stream", {})).__name__
    'MemoryStream'
    >>> open_module_store("state", {"adapter": {"class": "modules::state::adapters::Bridge",
    ...                                         "config": {"bridge_url": "http://x"}}})
    Traceback (most recent call last):
    ...
    iii_engine.settings.ConfigError: adapter.config.bridge_url: engine URL 'http://x' has scheme 'http'; expected \
ws:// or wss://

The settings are checked by :class:`~iii_engine.modules.stream.settings.StoreSettings`.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from iii.stream import StreamGetInput
from iii_streams import Backend, MemoryStream, StreamUnavailableError, open_stream
from iii_streams.urls import scheme_of

from ...closing import close_store, module_start_bound
from ...settings import ConfigError
from .. import bridge as _bridge  # noqa: F401 - the package before its modules (CPython gh-83065)
from ..bridge.settings import BridgeAdapterSettings
from ..health import Component, component, link_component, probe
from .settings import KvStoreSettings, RedisStoreSettings, StateSettings, StoreSettings

if TYPE_CHECKING:
    from iii_streams.redis import RedisStream
    from iii_streams.sql import SQLStream

__all__ = ["open_module_store", "prepare_module_store", "store_health"]

log = logging.getLogger(__name__)

Kind = Literal["stream", "state"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# A SQL store's connect and schema check (or migration) at a module's start, at most, unless the module's entry sets
# start_timeout_ms: then what is left of that bound, which a user raises for a slow database or migration. Either
# way it ends _PREPARE_MARGIN of the module's start bound (at most _PREPARE_MARGIN_S) before the engine's cut of the
# start, so the start fails with the store's error naming the database, not with that cut.
_PREPARE_TIMEOUT_S = 10.0
_PREPARE_MARGIN = 0.1
_PREPARE_MARGIN_S = 1.0


def _prepare_timeout() -> float:
    """How long :func:`prepare_module_store` gives the store (see ``_PREPARE_TIMEOUT_S``).

    Example:
        >>> import asyncio
        >>> from iii_engine.closing import start_module_task
        >>> async def bounds(*starts: tuple[float, bool]) -> list[float]:
        ...     async def start() -> None:
        ...         seen.append(_prepare_timeout())
        ...     seen: list[float] = []
        ...     for seconds, configured in starts:
        ...         await start_module_task(start(), seconds, configured=configured)
        ...     return seen
        >>> [f"{bound:.1f}" for bound in asyncio.run(bounds((60, False), (120, True), (2, True), (3, False)))]
        ['10.0', '119.0', '1.8', '2.7']
        >>> _prepare_timeout()  # outside a module's start
        10.0
    """
    start = module_start_bound()
    if start is None:
        return _PREPARE_TIMEOUT_S
    margin = min(start.seconds * _PREPARE_MARGIN, _PREPARE_MARGIN_S)
    # down to 10 ms (the number appears in the store's error); past the engine's cut, anything: it cancels the start
    within = max(math.floor((start.left() - margin) * 100) / 100, 0.01)
    return within if start.configured else min(_PREPARE_TIMEOUT_S, within)


def _kv_store(kind: Kind, settings: KvStoreSettings, events: bool) -> Backend:
    if settings.store_method == "in_memory":
        return MemoryStream(publish_events=events)
    # production writes one file per index every save_interval_ms; a SQLite file gives the same durability
    # with nothing lost between saves
    Path(settings.file_path).mkdir(parents=True, exist_ok=True)
    path = Path(settings.file_path).resolve() / f"iii_{kind}.sqlite3"
    log.info("%s store: file_based KvStore kept in SQLite at %s", kind, path)
    return open_stream(f"sqlite+aiosqlite:///{path}", publish_events=events, create=True)


def _open_url(kind: Kind, url: str, publish_events: bool) -> Backend:
    options: dict[str, Any] = {"publish_events": publish_events}
    if publish_events and scheme_of(url) != "memory":
        # the stream socket follows this store's events for its clients: a lost Redis or LISTEN connection must
        # be reported to it (it closes its clients so they re-sync), not only logged
        options["report_watch_gaps"] = True
    if kind == "state" and scheme_of(url) in _REDIS_SCHEMES:
        from iii_streams.redis import STATE_LAYOUT  # imported here: redis is only needed for Redis stores

        options["layout"] = STATE_LAYOUT
    return open_stream(url, **options)


def open_module_store(kind: Kind, settings: StoreSettings | Mapping[str, Any], *,
                      publish_events: bool = False) -> Backend:
    """The backend for the ``stream`` or ``state`` module (``settings``: its parsed settings, or a mapping of the
    store keys ``store_url`` / ``adapter``).

    Example:
        >>> open_module_store("stream", {"store_url": "memory://"}).publish_events
        False
    """
    if not isinstance(settings, StoreSettings):
        settings = (StateSettings if kind == "state" else StoreSettings).parse(settings)
    if settings.store_url is not None:
        try:
            return _open_url(kind, settings.store_url, publish_events)
        except ValueError as exc:
            raise ConfigError(str(exc), "store_url") from None
    short, adapter = settings.store_adapter
    if isinstance(adapter, KvStoreSettings):
        return _kv_store(kind, adapter, publish_events)
    if isinstance(adapter, RedisStoreSettings):
        try:
            return _open_url(kind, adapter.redis_url, publish_events)
        except ValueError as exc:  # the URL's own store options (key_prefix, channel): a configuration error
            raise ConfigError(str(exc), "adapter.config.redis_url") from None
    assert isinstance(adapter, BridgeAdapterSettings), short
    from ..bridge.stores import open_bridge_store  # the data lives on a remote engine

    return open_bridge_store(kind, adapter.bridge_url)


async def prepare_module_store(kind: Kind, store: Backend) -> Backend:
    """``store`` (from :func:`open_module_store`) made ready before the module's start goes on: a SQL store connects
    once and checks its schema (or migrates, for a ``file_based`` KvStore), and a Redis store checks the server
    answers (a ``PING``), so a database that is unreachable, missing or not migrated stops the start with one line
    naming it, instead of failing every call of a started engine. On failure the store is closed. Other stores are
    returned as they are. Within 10 s, or the module's entry's ``start_timeout_ms`` (a little less: this fails
    first, naming the database), never past the module's start bound.

    Example:
        >>> import asyncio
        >>> store = open_module_store("state", {"store_url": "sqlite+aiosqlite:////nonexistent/dir/s.db"})
        >>> asyncio.run(prepare_module_store("state", store))
        Traceback (most recent call last):
        ...
        iii_streams.errors.StreamUnavailableError: cannot open SQLite database /nonexistent/dir/s.db: unable to \
open database file (directory /nonexistent/dir does not exist)
        >>> store = open_module_store("state", {"store_url": "redis://:secret@127.0.0.1:1/0"})
        >>> asyncio.run(prepare_module_store("state", store))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        iii_streams.errors.StreamUnavailableError: Redis at redis://127.0.0.1:1/0 unreachable: Error 111 ...
    """
    # only a store opened through iii_streams.sql or iii_streams.redis can be one of theirs; looked up here rather
    # than imported, as a memory-only install has neither SQLAlchemy nor redis
    prepared: Backend = store  # the narrowing below (by a module's class) would make it Any
    sql = sys.modules.get("iii_streams.sql")
    redis = sys.modules.get("iii_streams.redis")
    if sql is not None and isinstance(store, sql.SQLStream):
        check = cast("SQLStream", store).prepare(timeout=_prepare_timeout())
    elif redis is not None and isinstance(store, redis.RedisStream):
        check = redis.check_reachable(cast("RedisStream", store).client, timeout=_prepare_timeout())
    else:
        return prepared
    try:
        await check
    except BaseException:
        await close_store(prepared.aclose(), f"the {kind} module's store ({type(prepared).__name__})")
        raise
    return prepared


HEALTH_ITEM: Final = "__iii_health"
"""The group and item id a health probe reads (in the module's own stream name): nothing is written."""


async def store_health(store: Backend | None, stream_name: str) -> Component:
    """``store``'s health component: one read of an item nobody writes (``stream_name``, :data:`HEALTH_ITEM`), so
    the whole path is probed (the pool, the server, the schema; a Bridge's remote engine and its store); a Bridge
    store whose connection is down says so without waiting.

    Example:
        >>> import asyncio
        >>> asyncio.run(store_health(MemoryStream(), "todos"))
        {'status': 'healthy', 'details': {'adapter': 'MemoryStream'}}
        >>> asyncio.run(store_health(None, "todos"))["details"]["error"]
        'no store: the module is not started'
    """
    if store is None:
        return component("no store: the module is not started")
    from ..bridge.stores import BridgeStateStore, BridgeStreamStore  # as open_module_store does

    adapter = type(store).__name__
    if isinstance(store, BridgeStateStore | BridgeStreamStore) and not store.link.connected:
        found = link_component(store.link)
        found["details"]["adapter"] = adapter
        return found
    return await probe(_read_twice_if_lost(store, stream_name), adapter=adapter)


async def _read_twice_if_lost(store: Backend, stream_name: str) -> None:
    """The probe's read, once more when the first met a connection the server had ended: a pool gives each such
    connection out once (a PostgreSQL restart, an idle-session reaper), and one failed read said ``degraded`` after
    every such event, though the next call worked (2 of 3 rounds in an attack)."""
    read = StreamGetInput(stream_name=stream_name, group_id=HEALTH_ITEM, item_id=HEALTH_ITEM)
    try:
        await store.get(read)
    except StreamUnavailableError:
        await store.get(read)
