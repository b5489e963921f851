"""Attacks on PostgreSQL big creates and updates sent in parts (8027883), all held: payloads at and around the
8000-byte limit and the part size, filled with 1- to 4-byte characters (cuts inside a character); two stores
racing updates of one big item (both watchers see every value once, in the same order, the last one stored); 300
big creates of different items at once (batches over the 2048 notifications of one statement)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from iii.stream import StreamGetInput, StreamSetInput, StreamUpdateInput, UpdateSet
from iii_streams.events import event_json_parts
from tests.integration.streams.test_hsb_sql_big_events import _next, _store

pytestmark = pytest.mark.timeout(60)


def _sized(name: str, total: int, fill: str) -> str:
    """A string value whose create or update notification is about ``total`` UTF-8 bytes."""
    head, tail = event_json_parts(name, "g", "i")
    base = len((head + 'create","data":""' + tail).encode())
    return fill * ((total - base) // len(fill.encode()))


async def test_values_around_the_notification_and_part_limits_arrive_exact(pg_url: str) -> None:
    name = f"rs21{uuid.uuid4().hex[:10]}"
    async with _store(pg_url, name) as store, store.watch(stream_name=name) as watch:
        values: list[Any] = []
        for total in (7990, 7998, 7999, 8000, 8001, 8002, 15870, 15871, 15872, 15873, 16000):
            for fill in ("a", "é", "€", "😀"):
                values.append(_sized(name, total, fill))
                values.append(_sized(name, total, fill)[:-1] + "a")
        values.append("😀" * 10000)
        for v in values:
            await store.set(StreamSetInput(stream_name=name, group_id="g", item_id="i", data=v))
        for k, v in enumerate(values):
            ev = await _next(watch)
            assert ev["event"]["data"] == v, (k, len(v))


async def test_racing_big_updates_and_wide_batches_reach_every_watcher_once(pg_url: str) -> None:
    name = f"rs21{uuid.uuid4().hex[:10]}"
    async with _store(pg_url, name) as a, _store(pg_url, name) as b, a.watch(stream_name=name) as wa, \
            b.watch(stream_name=name) as wb:
        big = "x" * 20_000
        await a.set(StreamSetInput(stream_name=name, group_id="g", item_id="c", data={"n": -1, "pad": big}))
        await asyncio.gather(*(s.update(StreamUpdateInput(stream_name=name, group_id="g", item_id="c",
                                                         ops=[UpdateSet(path="n", value=i)]))
                               for i, s in enumerate([a, b] * 100)))
        seqs = []
        for w in (wa, wb):
            seq = [(await _next(w))["event"] for _ in range(201)]
            seqs.append([e["data"]["n"] for e in seq])
        assert seqs[0] == seqs[1]
        assert sorted(seqs[0]) == list(range(-1, 200)), seqs[0]
        last = await a.get(StreamGetInput(stream_name=name, group_id="g", item_id="c"))
        assert last == {"n": seqs[0][-1], "pad": big}
        # many different items in one batch, and > 2048 parts
        items = [f"i{k}" for k in range(300)]
        await asyncio.gather(*(a.set(StreamSetInput(stream_name=name, group_id="g", item_id=i,
                                                   data={"i": i, "pad": "y" * 60_000})) for i in items))
        got = [(await _next(wa)) for _ in items]
        assert sorted(e["id"] for e in got) == sorted(items)
        assert all(e["event"]["data"]["pad"] == "y" * 60_000 for e in got)

