"""``stream::list``, ``stream::list_groups`` and ``stream::list_all`` are bounded by the engine's ``max_message_size``
on every store (memory, SQLite, PostgreSQL, Redis), as ``state::list`` is: past it one error names the group, the
size and the setting; an answer of exactly the budget comes back whole (UTF-8 bytes counted, not characters: 1-, 2-
and 4-byte characters), one byte more is refused with that size. The stream socket's sync is not bounded so.

Before: no bound. A group of 40 items of 1 MB was answered with one 40 MB frame (another worker's ``stream::get``
waited 212-269 ms), and 8 callers that did not read took the engine from ~90 MB to 827-1,000 MB RSS.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.modules.answers import FRAME_BYTES

from .helpers import SocketClient, Worker, stream_module

pytestmark = [pytest.mark.our_engine("starts our engine with a small max_message_size"), pytest.mark.timeout(30)]

MAX_MESSAGE_SIZE = 64 * 1024
# the bytes an answer may take: Worker.call's invocation ids are uuid4 texts of 36 characters
BUDGET = MAX_MESSAGE_SIZE - FRAME_BYTES - 36
CHARS = ["a", "é", "😀"]  # 1, 2 and 4 bytes of UTF-8


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, max_message_size=MAX_MESSAGE_SIZE,
                          modules=[ModuleSpec("modules::stream::StreamModule",
                                              {"store_url": store_url, "host": "127.0.0.1", "port": 0})])
    async with Engine(config=config) as running:
        yield running


@pytest.fixture
async def worker(engine: Engine) -> AsyncIterator[Worker]:
    w = await Worker.connect(engine.url)
    yield w
    await w.close()


def _values(char: str, size: int) -> list[str]:
    """String items whose list answer is exactly ``size`` bytes: six of ``char`` and an ASCII filler."""
    width = len(char.encode())
    wide = [char * (size * 8 // 10 // 6 // width)] * 6
    # '[' + ']' + per item its two quotes, a comma between two
    filler = size - 3 * (len(wide) + 1) - 1 - sum(len(v.encode()) for v in wide)
    return [*wide, "f" * filler]


async def _fill(worker: Worker, stream: str, group: str, values: list[str]) -> None:
    for i, value in enumerate(values):
        await worker.result("stream::set", {"stream_name": stream, "group_id": group, "item_id": f"i{i}",
                                            "data": value})


def _size_in(message: str) -> int:
    return int(message.split(" is ", 1)[1].split(" ", 1)[0])


@pytest.mark.parametrize("char", CHARS)
async def test_stream_list_of_exactly_the_budget_passes_one_byte_more_fails(worker: Worker, char: str) -> None:
    stream = f"s-{uuid.uuid4().hex[:8]}"
    values = _values(char, BUDGET)
    await _fill(worker, stream, "fits", values)
    assert sorted(await worker.result("stream::list", {"stream_name": stream, "group_id": "fits"})) == sorted(values)
    await _fill(worker, stream, "over", [*values[:-1], values[-1] + "f"])
    error = await worker.error("stream::list", {"stream_name": stream, "group_id": "over"})
    assert error["code"] == "STREAM_GET_GROUP_ERROR", error
    message = error["message"]
    assert f"group 'over' of stream {stream!r}" in message and "max_message_size" in message, message
    assert (_size_in(message), f"over the {BUDGET} bytes") == (BUDGET + 1, f"over the {BUDGET} bytes"), message
    assert await worker.result("stream::list", {"stream_name": stream, "group_id": "nothing-here"}) == []


def _group_names(char: str, size: int, prefix: str) -> list[str]:
    """Group names whose ``stream::list_groups`` answer is exactly ``size`` bytes: eight with ``char``, a filler."""
    width = len(char.encode())
    per = (size * 8 // 10 // 8 - len(prefix) - 2) // width
    wide = [f"{prefix}{i}-" + char * per for i in range(8)]
    filler = size - 3 * (len(wide) + 1) - 1 - sum(len(v.encode()) for v in wide)
    return [*wide, prefix + "f" * (filler - len(prefix))]


@pytest.mark.parametrize("char", CHARS)
async def test_stream_list_groups_of_exactly_the_budget_passes_one_byte_more_fails(worker: Worker,
                                                                                   char: str) -> None:
    stream = f"g-{uuid.uuid4().hex[:8]}"
    names = _group_names(char, BUDGET, "n")
    for name in names:
        await worker.result("stream::set", {"stream_name": stream, "group_id": name, "item_id": "i", "data": 1})
    assert sorted(await worker.result("stream::list_groups", {"stream_name": stream})) == sorted(names)
    # the filler group's item moved to a group of one character more
    await worker.result("stream::delete", {"stream_name": stream, "group_id": names[-1], "item_id": "i"})
    await worker.result("stream::set", {"stream_name": stream, "group_id": names[-1] + "f", "item_id": "i",
                                        "data": 1})
    error = await worker.error("stream::list_groups", {"stream_name": stream})
    assert error["code"] == "STREAM_LIST_GROUPS_ERROR", error
    message = error["message"]
    assert f"the list of {len(names)} groups of stream {stream!r}" in message, message
    assert "max_message_size" in message and _size_in(message) == BUDGET + 1, message


async def test_stream_list_all_over_the_budget_fails_naming_the_counts(engine: Engine, worker: Worker) -> None:
    if type(stream_module(engine).store).__name__ != "MemoryStream":
        pytest.skip("the bound is the engine's, not the store's; other stores share their data across tests")
    for i in range(20):  # 20 groups of 4,000 characters: 80 KB of names
        await worker.result("stream::set", {"stream_name": "all", "group_id": f"{i:02d}" + "g" * 3998,
                                            "item_id": "i", "data": 1})
    error = await worker.error("stream::list_all", {})
    assert error["code"] == "STREAM_LIST_ALL_ERROR", error
    assert "the list of 1 streams and 20 groups" in error["message"] and "max_message_size" in error["message"]
    for i in range(19):
        await worker.result("stream::delete", {"stream_name": "all", "group_id": f"{i:02d}" + "g" * 3998,
                                               "item_id": "i"})
    answer: dict[str, Any] = await worker.result("stream::list_all", {})
    assert answer == {"stream": [{"id": "all", "groups": ["19" + "g" * 3998]}], "count": 1}


async def test_socket_sync_of_a_group_over_the_budget_still_comes(engine: Engine, worker: Worker) -> None:
    # The socket's own bounds (slow-client timers, client_queue_bytes) hold a client that does not read; a sync
    # bigger than max_message_size reaches one that reads (a bound here broke that documented behaviour).
    stream = f"j-{uuid.uuid4().hex[:8]}"
    await _fill(worker, stream, "big", ["y" * 8000] * 10)  # 80 KB of JSON
    await _fill(worker, stream, "small", ["y" * 8000] * 2)
    client = await SocketClient.connect(engine)
    try:
        await client.join("a", stream, "big")
        frame = await client.recv()
        assert (frame["groupId"], frame["event"]) == ("big", {"type": "sync", "data": ["y" * 8000] * 10}), frame
        await client.join("b", stream, "small")
        frame = await client.recv()
        assert (frame["groupId"], frame["event"]) == ("small", {"type": "sync", "data": ["y" * 8000] * 2}), frame
    finally:
        await client.close()
