"""``SQLStream(report_watch_gaps=True)`` on PostgreSQL: a watch whose LISTEN connection was replaced raises
``StreamGapError`` (a ``StreamLagError``) once, where the notifications are missing: after what it had received
before the loss and before anything the new connection delivers; then it reads on. As the Redis store does.
Without the option only the warning says so (the default, unchanged)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from iii.stream import StreamSetInput
from iii_streams import SQLStream, StreamGapError, StreamLagError
from iii_streams import sql as sql_module
from tests.integration.streams.test_sql_watch_shared import _terminate_listen
from tests.polling import until
from tests.stall_relay import Relay

pytestmark = pytest.mark.timeout(30)


def _store(pg_url: str, app: str, **options: Any) -> SQLStream:
    engine = create_async_engine(pg_url, connect_args={"server_settings": {"application_name": app}})
    return SQLStream(engine, owns_engine=True, **options)


def _set(n: int) -> StreamSetInput:
    return StreamSetInput(stream_name="gaps", group_id="g", item_id=str(n), data=n)


async def _read(watch: Any) -> Any:
    async with asyncio.timeout(10):
        return (await anext(watch))["event"]["data"]


async def _lose_connection(store: SQLStream, app: str) -> None:
    listener: Any = store._listener
    ended = listener.driver
    assert await _terminate_listen(app) == 1
    await until(lambda: listener.driver not in (None, ended))  # listening again


async def test_each_watcher_gets_one_gap_where_the_notifications_are_missing(pg_url: str) -> None:
    app = f"gap{uuid.uuid4().hex[:12]}"
    async with _store(pg_url, app, report_watch_gaps=True) as store:
        first, second = store.watch(stream_name="gaps"), store.watch(stream_name="gaps")
        async with first, second:
            await store.set(_set(1))
            assert await _read(second) == 1  # the first has not read it yet
            await _lose_connection(store, app)
            await store.set(_set(2))
            # what came before the loss, then the gap, then what the new connection delivers
            assert await _read(first) == 1
            for watch in (first, second):
                with pytest.raises(StreamGapError, match="notifications sent in between were lost") as caught:
                    await _read(watch)
                assert isinstance(caught.value, StreamLagError)  # lag handling catches it too
                assert await _read(watch) == 2
            late = store.watch(stream_name="gaps")
            async with late:  # a watcher that came after the outage missed nothing: no gap for it
                await store.set(_set(3))
                assert [await _read(w) for w in (first, second, late)] == [3, 3, 3]


async def test_without_the_option_the_watch_reads_on_without_an_error(pg_url: str) -> None:
    app = f"gap{uuid.uuid4().hex[:12]}"
    async with _store(pg_url, app) as store, store.watch(stream_name="gaps") as watch:
        await _lose_connection(store, app)
        await store.set(_set(4))
        assert await _read(watch) == 4


def test_the_option_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="report_watch_gaps must be True or False, got 'yes'"):
        SQLStream.from_url("sqlite://", report_watch_gaps="yes")


async def test_a_half_open_listen_connection_is_probed_cut_and_replaced(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LISTEN connection gone silent without a reset (a NAT that forgot it) is never ended by the driver: before,
    every later notification was lost without a word, for good. Now a quiet connection is probed (``SELECT 1``)
    and, with no answer, cut and replaced: the gap is reported and later notifications arrive."""
    monkeypatch.setattr(sql_module, "_QUIET_S", 0.3)
    monkeypatch.setattr(sql_module, "_PONG_S", 0.3)
    target = make_url(pg_url)
    assert target.host == "127.0.0.1" and target.port is not None
    relay = Relay(target.port)
    await relay.start()
    app = f"gap{uuid.uuid4().hex[:12]}"
    store = _store(target.set(port=relay.port).render_as_string(hide_password=False), app, report_watch_gaps=True)
    try:
        async with _store(pg_url, f"w{app}") as writer, store.watch(stream_name="gaps") as watch:
            await writer.set(_set(1))
            assert await _read(watch) == 1
            relay.blackhole()  # the LISTEN connection goes silent, still open; new connections flow
            with pytest.raises(StreamGapError):
                await _read(watch)
            await writer.set(_set(2))
            assert await _read(watch) == 2
    finally:
        relay.cut()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.aclose(), 5)
        await relay.close()
