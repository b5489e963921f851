"""``SQLStream``: stream items in SQLite (aiosqlite, the default) or PostgreSQL (asyncpg) through SQLAlchemy 2.

Schema: :mod:`iii_streams.schema`, created by the Alembic migrations (``iii-streams migrate URL``, or
automatically for SQLite). Every write is one transaction that reads the old value, writes the new one and,
on PostgreSQL, queues a ``NOTIFY`` delivered at commit. Atomicity per item:

- PostgreSQL: ``SELECT … FOR UPDATE`` on the row; a missing row is created with ``INSERT … ON CONFLICT DO
  NOTHING`` and the whole step is retried if another writer created it first.
- SQLite: ``BEGIN IMMEDIATE`` (the database's single write lock, also across processes), and writers of one
  ``SQLStream`` queue on an ``asyncio.Lock`` rather than spinning on SQLite's busy handler.

``watch()`` uses ``LISTEN`` on PostgreSQL (sees writes from every process) and an in-process hub on SQLite
(sees this object's writes only). PostgreSQL limits a notification to 8000 bytes: larger events are sent
without ``data`` and with ``"truncated": true``, and the watcher reads create/update values back.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     async with SQLStream.from_url("sqlite+aiosqlite://") as s:
    ...         await s.set(StreamSetInput(stream_name="a:b", group_id="'; DROP TABLE x; --", item_id="1", data=[1]))
    ...         return await s.list_groups(StreamListGroupsInput(stream_name="a:b"))
    >>> asyncio.run(demo())
    ["'; DROP TABLE x; --"]
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from iii.stream import (
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
)
from iii.stream_ops import Op, apply_update, parse_ops
from iii.wire import dumps, loads

from .base import Backend
from .events import EventHub, StreamEvent, Subscription, Watch, custom_event, event_json_parts, make_event
from .migrate import migrate_with, normalize_url
from .schema import TABLE_NAME, group_key, item_key, items, stream_key

__all__ = ["NOTIFY_CHANNEL", "SQLStream", "SchemaMissingError"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL: Final = "iii_streams_events"
_NOTIFY_LIMIT: Final = 7999  # PostgreSQL refuses payloads of 8000 bytes or more

_RETRY: Final = object()  # a writer lost the race to create the row: run the step again


class SchemaMissingError(RuntimeError):
    """The database has no stream table yet."""


class _ListenSubscription:
    """One ``LISTEN`` connection feeding a queue (PostgreSQL)."""

    def __init__(self, store: SQLStream, maxsize: int) -> None:
        self._store = store
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue(maxsize)
        self._conn: AsyncConnection | None = None
        self._driver: Any = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if not payload:
            return
        try:
            event = loads(payload)
        except ValueError:
            log.warning("stream watch: ignoring a non-JSON notification")
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(event)

    async def start(self) -> _ListenSubscription:
        self._conn = await self._store.engine.connect()
        raw = await self._conn.get_raw_connection()
        self._driver = raw.driver_connection
        await self._driver.add_listener(NOTIFY_CHANNEL, self._on_notify)
        return self

    async def get(self) -> StreamEvent:
        while True:
            event = await self._queue.get()
            if not event.pop("truncated", False) or await self._store._fill_truncated(event):
                # keep the wrapper's key order for events rebuilt from a reference
                order = ("type", "timestamp", "streamName", "groupId", "id", "event")
                return {k: event[k] for k in order if k in event}

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await self._driver.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        await conn.close()


def _install_sqlite_hooks(engine: AsyncEngine, file_backed: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control away from the driver so BEGIN IMMEDIATE below is what runs
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if file_backed:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class SQLStream(Backend):
    """An ``IStream`` in a SQL database; build it with :meth:`from_url` or from an ``AsyncEngine``.

    ``create`` applies the migrations on first use (default: yes for SQLite, no for PostgreSQL, where
    ``iii-streams migrate URL`` is the deliberate step).

    Example:
        >>> SQLStream.from_url("sqlite:///streams.db").dialect
        'sqlite'
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        create: bool | None = None,
        publish_events: bool = True,
        owns_engine: bool = False,
        watch_queue_size: int = 10_000,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"SQLStream supports SQLite and PostgreSQL, not {self.dialect!r}")
        self.publish_events = publish_events
        self._pg = self.dialect == "postgresql"
        self._create = (not self._pg) if create is None else create
        self._owns_engine = owns_engine
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._hub = EventHub(watch_queue_size)
        self._watch_queue_size = watch_queue_size
        database = engine.url.database
        in_memory = not self._pg and (database in (None, "", ":memory:") or "mode=memory" in str(engine.url))
        if not self._pg:
            _install_sqlite_hooks(engine, file_backed=not in_memory)
        # SQLite: one writer at a time anyway; an in-memory database is a single shared connection, so reads
        # must queue too or they would run inside (and end) another task's transaction
        self._write_lock: asyncio.Lock | None = None if self._pg else asyncio.Lock()
        self._read_lock: asyncio.Lock | None = self._write_lock if in_memory else None
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLStream:
        """Open ``sqlite+aiosqlite:///path.db`` (``sqlite://`` works too; no path = in memory) or
        ``postgresql+asyncpg://user@host/db``. ``create``, ``publish_events`` and ``watch_queue_size`` are for
        this class; other options go to ``create_async_engine`` (e.g. ``pool_size``).

        Example:
            >>> SQLStream.from_url("postgresql://app@db/app").dialect
            'postgresql'
        """
        own = {k: options.pop(k) for k in ("create", "publish_events", "watch_queue_size") if k in options}
        sa_url = make_url(normalize_url(url))
        if sa_url.get_backend_name() == "sqlite":
            options.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_async_engine(sa_url, **options)
        return cls(engine, owns_engine=True, **own)

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        async with self._ready_lock:
            if self._ready:
                return
            if self._closed:
                raise RuntimeError("SQLStream is closed")
            if self._create:
                async with self._write_lock if self._write_lock is not None else contextlib.nullcontext():
                    await migrate_with(self.engine)
            self._ready = True

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._connection(self._reader.connect, self._read_lock)

    def _write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self._connection(self.engine.begin, self._write_lock)

    @contextlib.asynccontextmanager
    async def _connection(
        self,
        open_connection: Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]],
        lock: asyncio.Lock | None,
    ) -> AsyncIterator[AsyncConnection]:
        if not self._ready:
            await self._prepare()
        # lock before connecting: in-memory SQLite is one shared connection (see __init__)
        async with lock if lock is not None else contextlib.nullcontext():
            try:
                async with open_connection() as conn:
                    yield conn
            except (OperationalError, ProgrammingError) as exc:
                self._explain_missing_table(exc)
                raise

    def _explain_missing_table(self, exc: Exception) -> None:
        text = str(exc)
        if TABLE_NAME in text and ("no such table" in text or "does not exist" in text):
            raise SchemaMissingError(
                f"table {TABLE_NAME} does not exist in {self.engine.url.render_as_string(hide_password=True)}: "
                "run `iii-streams migrate URL` or open the store with create=True"
            ) from exc

    def _notify_sql(self, payload: str, event: StreamEvent | None = None) -> Any:
        if len(payload.encode()) > _NOTIFY_LIMIT:
            if event is None:
                event = loads(payload)
            assert event is not None
            slim = {**event, "event": {**event["event"], "data": None}, "truncated": True}
            if "event" in event["event"]:  # a custom event: its data lives one level down
                slim["event"]["event"] = {**event["event"]["event"], "data": None}
            payload = dumps(slim)
            if len(payload.encode()) > _NOTIFY_LIMIT and event.get("id") is not None:
                # the names alone are too long: send the row's key, the watcher reads names and value back
                key = item_key(event["streamName"], event["groupId"], event["id"])
                ref = {"type": "stream", "timestamp": event["timestamp"], "ref": key.hex(), "truncated": True}
                payload = dumps({**ref, "event": slim["event"]})
            if len(payload.encode()) > _NOTIFY_LIMIT:
                log.warning("stream event for %.80r… too large for NOTIFY; not sent", event.get("streamName"))
                payload = ""
        return select(func.pg_notify(NOTIFY_CHANNEL, payload))

    async def _emit_change(
        self, conn: AsyncConnection, stream_name: str, group_id: str, item_id: str, kind: str, text: str
    ) -> StreamEvent | None:
        """Queue the NOTIFY in the transaction (PostgreSQL) or return the event to publish after commit."""
        if not self.publish_events:
            return None
        if self._pg:
            head, tail = event_json_parts(stream_name, group_id, item_id)
            await conn.execute(self._notify_sql(f'{head}{kind}","data":{text}{tail}'))
            return None
        if self._hub.active:
            return make_event(stream_name, group_id, item_id, kind, loads(text))
        return None

    async def _fill_truncated(self, event: StreamEvent) -> bool:
        """Complete an event sent without its data (or names); ``False`` if it can no longer be resolved."""
        inner = event.get("event", {})
        ref = event.pop("ref", None)
        if ref is not None:
            query = select(items.c.stream_name, items.c.group_id, items.c.item_id, items.c.value).where(
                items.c.item_key == bytes.fromhex(ref)
            )
            async with self._read() as conn:
                row = (await conn.execute(query)).first()
            if row is None:
                return False  # deleted meanwhile: the names are gone with the row
            event.update(streamName=row.stream_name, groupId=row.group_id, id=row.item_id)
            event["event"] = inner
            if inner.get("type") in ("create", "update"):
                inner["data"] = loads(row.value)
            return True
        if inner.get("type") in ("create", "update") and event.get("id") is not None:
            inner["data"] = await self.get(
                StreamGetInput(stream_name=event["streamName"], group_id=event["groupId"], item_id=event["id"])
            )
        return True

    async def _write_item(self, stream_name: str, group_id: str, item_id: str, compute: Any) -> tuple[Any, Any]:
        """Read-modify-write one item atomically; ``compute(old) -> (new_value, text)``."""
        key = item_key(stream_name, group_id, item_id)
        locked = select(items.c.value).where(items.c.item_key == key)
        if self._pg:
            locked = locked.with_for_update()
        while True:
            async with self._write() as conn:
                old_text = (await conn.execute(locked)).scalar_one_or_none()
                old = None if old_text is None else loads(old_text)
                new, text = compute(old)
                if old_text is not None:
                    await conn.execute(update(items).where(items.c.item_key == key).values(value=text))
                else:
                    created = await conn.execute(self._insert(key, stream_name, group_id, item_id, text))
                    if created.first() is None:
                        await conn.rollback()
                        continue  # someone created the row after our SELECT; now it can be locked
                kind = "create" if old is None else "update"
                event = await self._emit_change(conn, stream_name, group_id, item_id, kind, text)
            if event is not None:
                self._hub.publish(event)
            return old, new

    def _insert(self, key: bytes, stream_name: str, group_id: str, item_id: str, text: str) -> Any:
        values = {
            "item_key": key,
            "group_key": group_key(stream_name, group_id),
            "stream_key": stream_key(stream_name),
            "stream_name": stream_name,
            "group_id": group_id,
            "item_id": item_id,
            "value": text,
        }
        if self._pg:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(items).values(values).on_conflict_do_nothing(index_elements=["item_key"]).returning(
                items.c.id
            )
        return insert(items).values(values).returning(items.c.id)

    # -- IStream -----------------------------------------------------------------------------------------------

    async def get(self, input: StreamGetInput) -> Any:
        key = item_key(input.stream_name, input.group_id, input.item_id)
        async with self._read() as conn:
            text = (await conn.execute(select(items.c.value).where(items.c.item_key == key))).scalar_one_or_none()
        return None if text is None else loads(text)

    async def set(self, input: StreamSetInput) -> StreamSetResult[Any]:
        text = dumps(input.data)
        old, _ = await self._write_item(
            input.stream_name, input.group_id, input.item_id, lambda _old: (input.data, text)
        )
        return StreamSetResult[Any](old_value=old, new_value=input.data)

    async def update(self, input: StreamUpdateInput) -> StreamUpdateResult[Any]:
        ops: builtins.list[Op] = parse_ops(input.ops)  # invalid ops fail before the database is touched

        def compute(old: Any) -> tuple[Any, str]:
            new = apply_update(old, ops)[1]
            return new, dumps(new)

        old, new = await self._write_item(input.stream_name, input.group_id, input.item_id, compute)
        return StreamUpdateResult[Any](old_value=old, new_value=new)

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        key = item_key(input.stream_name, input.group_id, input.item_id)
        async with self._write() as conn:
            text = (
                await conn.execute(delete(items).where(items.c.item_key == key).returning(items.c.value))
            ).scalar_one_or_none()
            if text is None:
                return StreamDeleteResult(old_value=None)
            event = await self._emit_change(conn, input.stream_name, input.group_id, input.item_id, "delete", text)
        if event is not None:
            self._hub.publish(event)
        return StreamDeleteResult(old_value=loads(text))

    async def list(self, input: StreamListInput) -> builtins.list[Any]:
        query = (
            select(items.c.value)
            .where(items.c.group_key == group_key(input.stream_name, input.group_id))
            .order_by(items.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).scalars().all()
        return [loads(text) for text in rows]

    async def list_groups(self, input: StreamListGroupsInput) -> builtins.list[str]:
        query = (
            select(items.c.group_id)
            .where(items.c.stream_key == stream_key(input.stream_name))
            .group_by(items.c.group_key, items.c.group_id)
            .order_by(func.min(items.c.id))
        )
        async with self._read() as conn:
            return builtins.list((await conn.execute(query)).scalars().all())

    # -- Backend extras ------------------------------------------------------------------------------------------

    async def list_all(self) -> builtins.list[tuple[str, builtins.list[str]]]:
        query = select(items.c.stream_name, items.c.group_id).distinct()
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        streams: dict[str, builtins.list[str]] = {}
        for name, group in rows:
            streams.setdefault(name, []).append(group)
        return [(name, sorted(groups)) for name, groups in sorted(streams.items())]

    async def send(self, stream_name: str, group_id: str, id: str | None, type: str, data: Any) -> None:
        await self.publish(custom_event(stream_name, group_id, id, type, data))

    async def publish(self, event: StreamEvent) -> None:
        if self._pg:
            async with self._read() as conn:
                await conn.execute(self._notify_sql(dumps(event), event))
        else:
            dumps(event)  # refuse what could not be sent over PostgreSQL either
            self._hub.publish(event)

    def watch(
        self, stream_name: str | None = None, group_id: str | None = None, item_id: str | None = None
    ) -> Watch:
        async def opener() -> Subscription:
            if self._pg:
                return await _ListenSubscription(self, self._watch_queue_size).start()
            return self._hub.subscribe()

        return Watch(opener, self._filter(stream_name, group_id, item_id))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_engine:
            await self.engine.dispose()
