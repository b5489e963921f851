"""The round trip ``on_registrations_ready`` waits for after the replay costs the same on a busy engine as on an idle
one: its answer was the whole worker list (every worker with its functions), once per connection of every worker
with a callback."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack

import websockets

from iii import InitOptions
from iii.connection import Frame
from iii.iii import III

OTHER_WORKERS = 30


async def test_the_round_trip_answer_does_not_grow_with_the_workers_on_the_engine(engine_url: str) -> None:
    async with AsyncExitStack() as others:
        for _ in range(OTHER_WORKERS):  # a busy engine: workers that stay connected
            await others.enter_async_context(websockets.connect(engine_url))
        client = III(engine_url, InitOptions(worker_name="ready"))
        try:
            answers: list[int] = []  # sizes of the answers to the client's own calls
            deliver = client._conn._on_frame

            def recording(raw: Frame) -> None:
                if json.loads(raw).get("type") == "invocationresult":
                    answers.append(len(raw))
                deliver(raw)

            client._conn._on_frame = recording  # (before the first connection: the constructor only starts it)
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            client.register_function("f", lambda data: data)
            client.on_registrations_ready(lambda: loop.call_soon_threadsafe(ready.set))
            await client.connect_async()
            async with asyncio.timeout(10):
                await ready.wait()
            # the callback ran after the round trip, whose answer is all the client was answered
            assert len(answers) == 1
            assert answers[0] < 300, answers  # before: about 300 bytes per worker on the engine
            # the function the replay sent is in place on the engine once the callback runs
            assert "f" in [f.function_id for f in await client.list_functions_async()]
        finally:
            await client.shutdown_async()
