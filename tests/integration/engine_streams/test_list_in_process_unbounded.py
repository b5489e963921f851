"""An in-process caller of ``state::list`` / ``stream::list`` / ``stream::list_groups`` / ``stream::list_all``
(``Engine.invoke``: the answer is a value, never a frame) gets the whole list however large; a worker's call (a
frame) is still refused past ``max_message_size``.

Before: the bound of fe9f04a / c54c82c applied to in-process calls too: ``Engine.invoke("stream::list")`` of a 5 MB
group failed with ``STREAM_GET_GROUP_ERROR`` at the default 4 MiB limit, where it had returned the group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iii_engine import Engine, EngineConfig, ModuleSpec

from .helpers import Worker

pytestmark = [pytest.mark.our_engine("starts our engine with a small max_message_size"), pytest.mark.timeout(30)]

MAX_MESSAGE_SIZE = 64 * 1024
ITEM = "y" * 8000
ITEMS = 20  # 160 KB of JSON: over 64 KiB


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    config = EngineConfig(host="127.0.0.1", port=0, max_message_size=MAX_MESSAGE_SIZE,
                          modules=[ModuleSpec("modules::state::StateModule", {"store_url": "memory://"}),
                                   ModuleSpec("modules::stream::StreamModule",
                                              {"store_url": "memory://", "host": "127.0.0.1", "port": 0})])
    async with Engine(config=config) as running:
        yield running


async def test_in_process_list_calls_get_the_whole_list_past_max_message_size(engine: Engine) -> None:
    for i in range(ITEMS):
        await engine.invoke("state::set", {"scope": "big", "key": f"k{i}", "value": ITEM})
        await engine.invoke("stream::set", {"stream_name": "s", "group_id": "g", "item_id": f"i{i}", "data": ITEM})
        # group names of 8,000 characters: the list of groups, and of all streams, is over the limit too
        await engine.invoke("stream::set", {"stream_name": "names", "group_id": f"{i:02d}{ITEM}", "item_id": "x",
                                            "data": 1})
    assert await engine.invoke("state::list", {"scope": "big"}) == [ITEM] * ITEMS
    assert await engine.invoke("stream::list", {"stream_name": "s", "group_id": "g"}) == [ITEM] * ITEMS
    groups = await engine.invoke("stream::list_groups", {"stream_name": "names"})
    assert sorted(groups) == [f"{i:02d}{ITEM}" for i in range(ITEMS)]
    everything = await engine.invoke("stream::list_all", {})
    assert {entry["id"]: len(entry["groups"]) for entry in everything["stream"]} == {"s": 1, "names": ITEMS}

    # a worker's call is a frame: still refused past the limit, naming it
    worker = await Worker.connect(engine.url)
    try:
        error = await worker.error("stream::list", {"stream_name": "s", "group_id": "g"})
        assert error["code"] == "STREAM_GET_GROUP_ERROR" and "max_message_size" in error["message"], error
        error = await worker.error("state::list", {"scope": "big"})
        assert error["code"] == "LIST_ERROR" and "max_message_size" in error["message"], error
    finally:
        await worker.close()
