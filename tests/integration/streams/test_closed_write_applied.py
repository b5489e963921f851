"""A write the store's own close cut short says whether it may have been applied (``StreamClosedError.applied``),
as a lost connection's ``StreamUnavailableError`` does: ``False`` when it had not been sent (nothing applied),
``None`` when it had (outcome unknown). Before, ``StreamClosedError`` had no ``applied`` and Redis's always said
"it may have been applied", SQL's said neither.

SQL (a real SQLite file): a write held before its transaction's first statement and one held at its commit, their
batch runner then stopped (the close of a loop that still ran it); a write queued behind a running batch when the
store closes. Redis (the test server, keys under this test's own prefix, through a relay that stops passing the
store's commands on): an update whose script was written when the close cut its connection, and one queued behind
it.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.exc import DisconnectionError

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii_streams import RedisStream, SQLStream, StreamClosedError, StreamUnavailableError
from iii_streams.redis import KeyLayout
from tests.integration.streams.conftest import delete_redis_keys
from tests.integration.streams.sqlite_statements import before_statements
from tests.polling import until
from tests.services import require_redis
from tests.stall_relay import Relay

pytestmark = pytest.mark.timeout(30)

ITEM = {"stream_name": "s", "group_id": "g", "item_id": "n"}


def _increment() -> StreamUpdateInput:
    return StreamUpdateInput(**ITEM, ops=[UpdateIncrement(path="n", by=1)])


class _Held:
    """A hook for ``before_statements``: the statement waits until :attr:`release` is set."""

    def __init__(self) -> None:
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    async def __call__(self) -> None:
        self.reached.set()
        await self.release.wait()


async def test_sql_a_write_cut_before_it_was_sent_was_not_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "select.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="warm", data=0))
        held = _Held()
        before_statements(monkeypatch, "SELECT", held)  # its transaction's read
        write = asyncio.ensure_future(store.set(StreamSetInput(**ITEM, data=1)))
        await held.reached.wait()
        for runner in list(store._writes._runners):
            runner.cancel()
        with pytest.raises(StreamClosedError) as caught:
            await write
        monkeypatch.undo()
        assert caught.value.applied is False, str(caught.value)
        assert str(caught.value) == ("SQLStream writes was closed while a write was in flight; the write was not sent "
                                     "and not applied")
        assert await store.get(StreamGetInput(**ITEM)) is None


async def test_sql_a_write_cut_at_its_commit_that_landed_gets_its_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut as its commit was handed to the driver, which runs it all the same: the batch waits for it, so the write
    applied is published to watchers (a cut that lost those events made watchers silently miss the change), and its
    caller gets its result (it was told "may have been applied", ``applied`` None)."""
    path = tmp_path / "commit.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="warm", data=0))
        held = _Held()
        async with store.watch(stream_name="s") as events:
            before_statements(monkeypatch, "COMMIT", held)
            write = asyncio.ensure_future(store.set(StreamSetInput(**ITEM, data=1)))
            await held.reached.wait()
            for runner in list(store._writes._runners):
                runner.cancel()
            held.release.set()
            result = await write
            monkeypatch.undo()
            assert (result.old_value, result.new_value) == (None, 1)
            event_seen = await asyncio.wait_for(anext(events), 10)
        assert event_seen["event"] == {"type": "create", "data": 1}
        assert await store.get(StreamGetInput(**ITEM)) == 1


async def test_sql_a_write_queued_at_the_close_was_not_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queued.db"
    store = SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True)
    await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="warm", data=0))
    held = _Held()
    before_statements(monkeypatch, "COMMIT", held)
    first = asyncio.ensure_future(store.set(StreamSetInput(stream_name="s", group_id="g", item_id="first", data=1)))
    await held.reached.wait()
    queued = asyncio.ensure_future(store.set(StreamSetInput(**ITEM, data=1)))
    await until(lambda: len(store._writes._pending[b""]) == 1)  # (SQLite's one queue, behind the batch under way)
    closing = asyncio.ensure_future(store.aclose())
    with pytest.raises(StreamClosedError) as caught:
        await queued
    held.release.set()
    await first  # the batch under way commits
    await closing
    assert caught.value.applied is False, str(caught.value)
    assert "was closed before the write ran; the write was not sent and not applied" in str(caught.value)
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}") as again:
        assert await again.get(StreamGetInput(**ITEM)) is None
        assert await again.get(StreamGetInput(stream_name="s", group_id="g", item_id="first")) == 1


@pytest.mark.redis
async def test_redis_updates_cut_by_the_close_tell_whether_they_were_sent() -> None:
    url = require_redis()
    parts = urlsplit(url)
    relay = Relay(parts.port or 6379)
    await relay.start()
    layout = KeyLayout(f"closedwrite{uuid.uuid4().hex[:10]}")
    try:
        store = RedisStream.from_url(urlunsplit(parts._replace(netloc=f"127.0.0.1:{relay.port}")), layout=layout,
                                     channel=f"{layout.prefix}-events", max_connections=1)
        await store.set(StreamSetInput(**ITEM, data={"n": 0}))
        for _ in range(2):  # the script loaded, the item's text known: the next update sends its script at once
            await store.update(_increment())
        relay.blackhole()  # the relay drops what the store sends on its connection, and leaves it open
        pool = store.client.connection_pool
        sent = asyncio.ensure_future(store.update(_increment()))
        await until(lambda: len(pool._in_use_connections) == 1)  # taken, and (no await between) the script written
        queued = asyncio.ensure_future(store.update(_increment()))  # behind it, in the hash's queue
        await until(lambda: len(store._updates._pending[layout.key("s", "g")]) == 1)
        await store.aclose()  # waits 2 s for the batch in flight, then cuts its connection
        errors = await asyncio.gather(sent, queued, return_exceptions=True)
        assert all(isinstance(error, StreamClosedError) for error in errors), errors
        cut, refused = errors
        assert isinstance(cut, StreamClosedError) and isinstance(refused, StreamClosedError)
        assert cut.applied is None
        assert "the write had been sent and may have been applied (outcome unknown)" in str(cut)
        assert refused.applied is False, str(refused)
        assert "was closed before the write ran; the write was not sent and not applied" in str(refused)
    finally:
        await relay.close()
        await delete_redis_keys(f"{layout.prefix}:*")


async def test_sql_a_pinned_write_whose_transaction_failed_before_its_commit_was_not_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch re-run twice for callers that gave up keeps its writes from then on (pinned: a caller giving up no
    # longer withdraws its write). Its transaction then lost its connection before the commit: nothing was applied.
    # Such writes counted as sent from the start of the run, and their callers were told "may have been applied"
    # (12,900 of them under repeated backend kills).
    path = tmp_path / "pinned.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="warm", data=0))
        callers: dict[str, asyncio.Future[object]] = {}
        runs = 0
        apply_writes = SQLStream._apply_writes

        async def give_up_then_lose(self: SQLStream, conn: object, writes: object) -> object:
            nonlocal runs
            runs += 1
            out = await apply_writes(self, conn, writes)  # type: ignore[arg-type]
            if runs in (1, 2):  # a caller gives up while the statements run: the batch runs again without it
                callers["BC"[runs - 1]].cancel()
                await asyncio.wait([callers["BC"[runs - 1]]])
            else:  # the third run, its writes pinned: the connection is lost before the commit
                raise DisconnectionError("connection lost (test)")
            return out

        monkeypatch.setattr(SQLStream, "_apply_writes", give_up_then_lose)
        for item in "ABC":
            callers[item] = asyncio.ensure_future(store.set(StreamSetInput(stream_name="s", group_id="g",
                                                                           item_id=item, data=1)))
        outcomes = await asyncio.gather(*callers.values(), return_exceptions=True)
        monkeypatch.undo()
        assert runs == 3
        error = outcomes[0]
        assert isinstance(error, StreamUnavailableError), outcomes
        assert error.applied is False, str(error)
        assert "the write was not sent and not applied" in str(error)
        assert await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="A")) is None
