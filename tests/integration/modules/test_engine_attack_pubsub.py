"""Attack Q-E on the pubsub module's Redis adapter: its subscriber connection to Redis breaks or stalls.

The engine reaches the real Redis through a TCP proxy this test controls, so one engine's connection can be cut
or held without touching anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import pytest
from module_worker import ModuleWorker
from redis.asyncio import Redis

from iii_engine import Engine, EngineConfig, ModuleSpec

pytestmark = [pytest.mark.redis, pytest.mark.our_engine("configures the pubsub Redis adapter through a proxy")]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


class RedisProxy:
    """Forwards TCP connections to the real Redis; :meth:`cut` closes every one, :meth:`hold` stops forwarding
    what clients send (their commands wait in the proxy) until :meth:`release`."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RedisProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._open.set()
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        self._writers.update((client_writer, server_writer))
        for task in (asyncio.create_task(self._pipe(client_reader, server_writer, held=True)),
                     asyncio.create_task(self._pipe(server_reader, client_writer, held=False))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, held: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if held:
                    await self._open.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


def engine_on(redis_url: str) -> Engine:
    settings = {"adapter": {"class": "modules::pubsub::RedisAdapter", "config": {"redis_url": redis_url}}}
    return Engine(config=EngineConfig(host="127.0.0.1", port=0,
                                      modules=[ModuleSpec("modules::pubsub::PubSubModule", settings)]))


async def listen(worker: ModuleWorker, function_id: str, trigger_id: str, topic: str) -> asyncio.Queue[Any]:
    got: asyncio.Queue[Any] = asyncio.Queue()
    await worker.function(function_id, got.put)
    await worker.trigger(trigger_id, "subscribe", function_id, {"topic": topic})
    return got


async def publish_until_received(redis: Redis, topic: str, got: asyncio.Queue[Any], within: float = 10.0) -> Any:
    """Publish numbered messages until one arrives (a broken subscription loses those sent before it is back)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    n = 0
    while True:
        n += 1
        await redis.publish(topic, json.dumps(n))
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(got.get(), 0.2)
        assert loop.time() < deadline, f"nothing on {topic!r} arrived within {within} s ({n} published)"


async def test_messages_arrive_again_after_the_subscriber_connection_to_redis_breaks() -> None:
    # before: the reader task ended with the ConnectionError, and every later message was lost without a word
    topic = f"qe-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as worker:
            got = await listen(worker, "qe::on", "qe-sub", topic)
            assert await publish_until_received(redis, topic, got) == 1
            proxy.cut()
            assert isinstance(await publish_until_received(redis, topic, got), int)
            # and a new subscription on the renewed connection works too
            other = f"{topic}-2"
            got2 = await listen(worker, "qe::on2", "qe-sub2", other)
            await redis.publish(other, json.dumps("x"))
            assert await asyncio.wait_for(got2.get(), 5) == "x"
    finally:
        await redis.aclose()


async def test_a_subscribe_redis_never_confirmed_leaves_no_ghost_subscriber() -> None:
    # before: the trigger whose register failed (the engine does not keep it) stayed a subscriber of the module,
    # got every message of its topic, and was never removed
    topic = f"qe-{uuid.uuid4()}"
    redis = Redis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        async with RedisProxy() as proxy, engine_on(proxy.url) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("pubsub")
            ghost: asyncio.Queue[Any] = asyncio.Queue()
            await worker.function("qe::ghost", ghost.put)
            proxy.hold()  # the SUBSCRIBE waits in the proxy: Redis never confirms it in time
            await worker.send({"type": "registertrigger", "id": "qe-ghost", "trigger_type": "subscribe",
                               "function_id": "qe::ghost", "config": {"topic": topic}})
            for _ in range(3):  # the register waits out the 10 s confirmation before this engine answers us
                with contextlib.suppress(TimeoutError):
                    await worker.sync()
                    break
            proxy.release()
            listing = (await worker.call("engine::triggers::list", {}))["result"]["triggers"]
            assert "qe-ghost" not in [t["id"] for t in listing]
            assert not module._bus._confirm  # no future left per failed subscribe
            real = await listen(worker, "qe::real", "qe-real", topic)
            await publish_until_received(redis, topic, real)
            # both handlers are on this worker, the ghost's call would have been sent first: it is in already
            assert ghost.empty(), ghost.get_nowait()
    finally:
        await redis.aclose()
