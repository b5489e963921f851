"""``state::list`` and ``state::list_groups`` answers are bounded by the engine's ``max_message_size``, on every
store (memory, SQLite, PostgreSQL, Redis): past it the call fails with one error naming the scope, the size and the
setting; an answer that fits is the whole list, as production's.

Before: a scope of 150 items of 1 MB was answered with one 150 MB frame (36 times the 4 MiB limit), built in 4-8.6 s
of the event loop; 8 callers that did not read took the engine from 203 MB to 4,973 MB RSS.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec

from .helpers import Worker

pytestmark = pytest.mark.our_engine("starts our engine with a small max_message_size")

MAX_MESSAGE_SIZE = 64 * 1024
ITEM = "y" * 8000


@pytest.fixture
async def worker(store_url: str) -> AsyncIterator[Worker]:
    config = EngineConfig(host="127.0.0.1", port=0, max_message_size=MAX_MESSAGE_SIZE,
                          modules=[ModuleSpec("modules::state::StateModule", {"store_url": store_url})])
    async with Engine(config=config) as engine:
        w = await Worker.connect(engine.url)
        yield w
        await w.close()


async def test_state_list_over_max_message_size_fails_naming_scope_size_and_setting(worker: Worker) -> None:
    scope = f"big-{uuid.uuid4().hex}"
    for i in range(20):  # 160 KB of JSON, over 64 KiB
        await worker.result("state::set", {"scope": scope, "key": f"k{i}", "value": ITEM})
    error = await worker.error("state::list", {"scope": scope})
    assert error["code"] == "LIST_ERROR", error
    message = error["message"]
    assert f"scope {scope!r}" in message and "max_message_size" in message, message
    size = int(message.split(" is ", 1)[1].split(" ", 1)[0])
    assert size >= 20 * (len(ITEM) + 2), message
    # an answer that fits is the whole list, in production's shape
    small = f"small-{uuid.uuid4().hex}"
    for i in range(5):
        await worker.result("state::set", {"scope": small, "key": f"k{i}", "value": {"i": i, "s": ITEM}})
    assert sorted(await worker.result("state::list", {"scope": small}), key=lambda v: v["i"]) == [
        {"i": i, "s": ITEM} for i in range(5)]
    assert await worker.result("state::list", {"scope": "nothing-here"}) == []


async def test_state_list_bound_counts_utf8_bytes_not_characters(worker: Worker) -> None:
    scope = f"wide-{uuid.uuid4().hex}"
    for i in range(5):  # 40,000 characters (under the bound) but 80,000 bytes (over it)
        await worker.result("state::set", {"scope": scope, "key": f"k{i}", "value": "é" * 8000})
    error = await worker.error("state::list", {"scope": scope})
    assert error["code"] == "LIST_ERROR" and "max_message_size" in error["message"], error


async def test_state_list_groups_over_max_message_size_fails_naming_the_count(worker: Worker) -> None:
    prefix = uuid.uuid4().hex
    for i in range(400):  # 400 scope names of 200 characters: 80 KB of JSON
        await worker.result("state::set", {"scope": f"{prefix}-{i:04d}-" + "s" * 162, "key": "k", "value": 1})
    error = await worker.error("state::list_groups", {})
    assert error["code"] == "LIST_GROUPS_ERROR", error
    message = error["message"]
    assert int(message.split(" scopes", 1)[0].rsplit(" ", 1)[1]) >= 400 and "max_message_size" in message, error
