"""A worker's ``create_stream`` over an ``iii_streams`` store passes the engine's message size limit to its
``stream::list``: a group over it is refused (the error names the group and the limit) without the store's ``list()``
building it. Before, the glue had no limit from the client and built the whole group first."""

from __future__ import annotations

from typing import Any

from iii import III
from iii.stream import StreamListInput, StreamSetInput
from iii_streams import MemoryStream


class CountingMemory(MemoryStream):
    lists = 0

    async def list(self, input: StreamListInput, **kwargs: Any) -> Any:
        self.lists += 1
        return await super().list(input, **kwargs)


async def test_a_workers_stream_refuses_a_group_over_the_engines_limit_unbuilt(engine_url: str) -> None:
    store = CountingMemory()
    for i in range(6):  # 6 MB: over the engine's 4 MiB
        await store.set(StreamSetInput(stream_name="big", group_id="g", item_id=f"i{i}", data="x" * 1_000_000))
    await store.set(StreamSetInput(stream_name="big", group_id="small", item_id="a", data=1))
    server, caller = III(engine_url), III(engine_url)
    await server.connect_async()
    await caller.connect_async()
    try:
        server.create_stream("big", store)
        await server.list_functions_async()  # the registrations reached the engine
        small = await caller.trigger_async({"function_id": "stream::list",
                                            "payload": {"stream_name": "big", "group_id": "small"}})
        assert small == [1] and store.lists == 0
        try:
            await caller.trigger_async({"function_id": "stream::list",
                                        "payload": {"stream_name": "big", "group_id": "g"}})
        except Exception as exc:  # the handler's error, as the caller gets it
            assert "group 'g'" in str(exc) and "max_message_size" in str(exc), exc
        else:
            raise AssertionError("a 6 MB group was answered")
        assert store.lists == 0  # refused from the stored sizes: never built
    finally:
        await server.shutdown_async()
        await caller.shutdown_async()
