"""SQL store: an item whose stored value another program wrote as text that is not UTF-8 (SQLite) or not JSON.

Its reads and writes fail with :class:`StreamDataError` naming the item, its writes not applied (``applied``
``False``) and its row left as it is; every other write of the same batch goes through, with its event. Before, on
SQLite, text that is not UTF-8 failed every write of the batch that met it as "database unreachable" (retryable,
and about the connection), and a value that is not JSON failed with a bare ``ValueError`` naming nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from iii.stream import StreamDeleteInput, StreamGetInput, StreamListInput, StreamSetInput, StreamUpdateInput
from iii_streams import SQLStream, StreamDataError
from iii_streams.schema import TABLE_NAME, item_key

# (the item's stored JSON text {"v":"\xff"} with a byte no UTF-8 text holds, as SQLite text)
_NOT_UTF8: bytes = b'{"v":"\xff"}'
_NOT_JSON: str = "{not json"

class Rows:
    """Another program's access to the store's rows: ``corrupt`` writes an unreadable value, ``raw`` reads one."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind, self.url = kind, url

    async def _run(self, sql: str, *args: Any) -> Any:
        if self.kind.startswith("sqlite"):
            other = sqlite3.connect(self.url.removeprefix("sqlite+aiosqlite:///"), isolation_level=None, timeout=5)
            try:
                row = other.execute(sql.replace("$1", "?").replace("$2", "?"), args).fetchone()
                return None if row is None else row[0]
            finally:
                other.close()
        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def corrupt(self, stream: str, item: str) -> None:
        value = (f"CAST(X'{_NOT_UTF8.hex()}' AS TEXT)" if self.kind.endswith("utf8") else f"'{_NOT_JSON}'")
        await self._run(f"UPDATE {TABLE_NAME} SET value = {value} WHERE item_key = $1", item_key(stream, "g", item))

    async def repair(self, stream: str, item: str, text: str) -> None:
        await self._run(f"UPDATE {TABLE_NAME} SET value = $1 WHERE item_key = $2", text, item_key(stream, "g", item))

    async def raw(self, stream: str, item: str) -> bytes:
        cast = "CAST(value AS BLOB)" if self.kind.startswith("sqlite") else "convert_to(value, 'UTF8')"
        key = item_key(stream, "g", item)
        raw: bytes = await self._run(f"SELECT {cast} FROM {TABLE_NAME} WHERE item_key = $1", key)
        return raw


@pytest.fixture(params=["sqlite-not-utf8", "sqlite-not-json", "postgresql-not-json"])
def rows(request: pytest.FixtureRequest, tmp_path: Path) -> Rows:
    kind: str = request.param
    # (resolved here, outside the event loop: the PostgreSQL fixture makes its database with asyncio.run)
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}" if kind.startswith("sqlite") else request.getfixturevalue("pg_url")
    return Rows(kind, url)


@pytest.fixture
async def setup(rows: Rows) -> AsyncIterator[tuple[SQLStream, Rows]]:
    async with SQLStream.from_url(rows.url, timeout=10) as store:
        yield store, rows


def _names(stream: str, item: str) -> dict[str, str]:
    return {"stream_name": stream, "group_id": "g", "item_id": item}


async def test_an_unreadable_value_fails_only_its_own_item(setup: tuple[SQLStream, Rows]) -> None:
    store, rows = setup
    stream = f"u-{uuid.uuid4().hex[:8]}"
    for item in ("bad", "ok"):
        await store.set(StreamSetInput(**_names(stream, item), data={"v": item}))
    await rows.corrupt(stream, "bad")
    raw = await rows.raw(stream, "bad")
    assert raw in (_NOT_UTF8, _NOT_JSON.encode())
    why = "not UTF-8 text" if rows.kind.endswith("utf8") else "not JSON"

    with pytest.raises(StreamDataError, match=f"item 'bad' of group 'g' of stream '{stream}': its stored value is "
                                              f"{why}") as read:
        await store.get(StreamGetInput(**_names(stream, "bad")))
    assert read.value.applied is None
    with pytest.raises(StreamDataError, match=why) as listed:
        await store.list(StreamListInput(stream_name=stream, group_id="g"))
    if why == "not JSON":  # (SQLite's own error for text that is not UTF-8 does not say whose it is)
        assert "item 'bad'" in str(listed.value)

    async with store.watch(stream_name=stream) as events:
        # one batch: the writes of other items, new and existing, and one of the unreadable item in their midst
        calls: list[Awaitable[Any]] = [store.set(StreamSetInput(**_names(stream, f"n{i}"), data=i)) for i in range(4)]
        calls.append(store.update(StreamUpdateInput(**_names(stream, "bad"),
                                                    ops=[{"type": "set", "path": "x", "value": 1}])))
        calls += [store.set(StreamSetInput(**_names(stream, "ok"), data={"v": "new"})),
                  store.delete(StreamDeleteInput(**_names(stream, "bad"))),
                  store.set(StreamSetInput(**_names(stream, "bad"), data="over"))]
        results = await asyncio.gather(*calls, return_exceptions=True)
        # before (SQLite, not UTF-8): all eight failed with StreamUnavailableError "database unreachable"
        assert [getattr(r, "new_value", r) for r in results[:4]] == [0, 1, 2, 3]
        assert getattr(results[5], "new_value", results[5]) == {"v": "new"}
        for refused in (results[4], results[6], results[7]):
            assert isinstance(refused, StreamDataError), refused
            assert refused.applied is False
            assert "item 'bad'" in str(refused) and why in str(refused) and "not applied" in str(refused)
        seen = [await asyncio.wait_for(anext(events), 10) for _ in range(5)]
    assert sorted(event["id"] for event in seen) == ["n0", "n1", "n2", "n3", "ok"]  # none for "bad"

    assert await rows.raw(stream, "bad") == raw  # the refused writes changed nothing
    assert await store.get(StreamGetInput(**_names(stream, "ok"))) == {"v": "new"}
    assert await store.get(StreamGetInput(**_names(stream, "n3"))) == 3
    # the item's writes one at a time, each on its own path (a known value, a locking transaction)
    for write in (lambda: store.set(StreamSetInput(**_names(stream, "bad"), data=1)),
                  lambda: store.update(StreamUpdateInput(**_names(stream, "bad"),
                                                         ops=[{"type": "set", "path": "x", "value": 1}])),
                  lambda: store.delete(StreamDeleteInput(**_names(stream, "bad")))):
        with pytest.raises(StreamDataError, match="not applied"):
            await write()
    assert await rows.raw(stream, "bad") == raw
    # repaired by another program, the item is served again: the text that is not JSON was not kept as the item's
    # known value (every later set and update was refused from it, without reading the row)
    await rows.repair(stream, "bad", '{"x": 0}')
    assert await store.get(StreamGetInput(**_names(stream, "bad"))) == {"x": 0}
    update = await store.update(StreamUpdateInput(**_names(stream, "bad"),
                                                  ops=[{"type": "set", "path": "x", "value": 1}]))
    assert (update.old_value, update.new_value) == ({"x": 0}, {"x": 1})
    assert (await store.set(StreamSetInput(**_names(stream, "bad"), data=2))).old_value == {"x": 1}


async def test_list_text_refuses_a_group_holding_a_value_that_is_not_json(setup: tuple[SQLStream, Rows]) -> None:
    """``list_text`` splices the stored texts unparsed (the engine's ``stream::list`` and its socket joins): one that
    is not JSON made the answer unparsable (a worker's reading of frames ended on it) or a wrong list with no error
    (an empty text: ``[0,,2]``, or ``[]`` for a group of one; ``1,2``: two items)."""
    store, rows = setup
    stream = f"lt-{uuid.uuid4().hex[:8]}"
    group = StreamListInput(stream_name=stream, group_id="g")
    for n, item in enumerate(("first", "bad", "last")):
        await store.set(StreamSetInput(**_names(stream, item), data=n))
    assert await store.list_text(group) == await store.list_text(group, max_bytes=100) == "[0,1,2]"
    bad_texts = [None] if rows.kind.endswith("utf8") else ["{not json", "", "1,2", " "]
    for bad in bad_texts:
        if bad is None:
            await rows.corrupt(stream, "bad")
        else:
            await rows.repair(stream, "bad", bad)
        for max_bytes in (None, 1000):
            with pytest.raises(StreamDataError) as caught:
                await store.list_text(group, max_bytes=max_bytes)
            if bad is not None:  # (SQLite's own error for text that is not UTF-8 does not say whose it is)
                assert f"item 'bad' of group 'g' of stream '{stream}': its stored value is not JSON" in str(
                    caught.value), (bad, str(caught.value))
    await rows.repair(stream, "bad", '"fixed"')
    assert await store.list_text(group) == await store.list_text(group, max_bytes=100) == '[0,"fixed",2]'
