"""``Engine.stop()`` with a PostgreSQL stream store next to silent stores: every write the store acknowledged is in
the database after the stop, and none was cut off mid-commit (the PostgreSQL store's close, side by side with the
silent closes, gets the whole bound and is not let go).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_engine import Engine, closing
from iii_streams import SQLStream, StreamClosedError

from .helpers import engine_config
from .test_engine_stop_one_deadline import BOUND_S, _SilentClose

pytestmark = pytest.mark.timeout(30)


async def test_acknowledged_postgres_writes_survive_a_stop_beside_silent_stores(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", 2 * BOUND_S)
    engine = Engine(config=engine_config(store_url=pg_url))
    await engine.start()
    silent = {"queue": _SilentClose(), "state": _SilentClose()}
    monkeypatch.setattr(engine.module("queue").store, "close", silent["queue"])  # type: ignore[attr-defined]
    monkeypatch.setattr(engine.module("state").store, "aclose", silent["state"])  # type: ignore[attr-defined]
    store = engine.module("stream").store  # type: ignore[attr-defined]
    assert isinstance(store, SQLStream)
    writes = [asyncio.create_task(store.set(StreamSetInput(stream_name="s", group_id="g", item_id=f"i{n}", data=n)))
              for n in range(500)]
    await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)  # group commits under way, more queued
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"):
        await asyncio.wait_for(engine.stop(), 20)
    assert all(close.cancelled is not None for close in silent.values())
    assert "the stream module's store" not in caplog.text  # closed in time, not let go
    acknowledged = []
    for n, write in enumerate(writes):
        assert write.done()
        if write.exception() is None:
            acknowledged.append(n)
        else:  # refused before it ran, never cut off mid-commit
            assert isinstance(write.exception(), StreamClosedError)
            assert "before the write ran" in str(write.exception())
    assert acknowledged
    async with SQLStream.from_url(pg_url) as reopened:
        for n in acknowledged:
            assert await reopened.get(StreamGetInput(stream_name="s", group_id="g", item_id=f"i{n}")) == n
