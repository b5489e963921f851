"""Attack round on the Redis store's compare-and-set update path (a96054e, d84dd38): a write script whose reply
is lost after Redis ran it must not be applied twice."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from iii.stream import StreamDeleteInput, StreamSetInput, StreamUpdateInput, UpdateIncrement
from iii.wire import loads
from iii_streams import RedisStream
from iii_streams.errors import StreamError
from tests.integration.streams.sent_commands import record_script_calls
from tests.services import require_redis


class _ReplyDroppingProxy:
    """A TCP proxy to Redis that, once armed, swallows the next reply starting with ``drop`` (``:1``: the write
    script's "written") and cuts that client connection: Redis ran the command, the client never hears so."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.armed = False
        self.drop = b":1\r\n"
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def up() -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()

        async def down() -> None:
            with contextlib.suppress(Exception):
                while data := await up_reader.read(65536):
                    if self.armed and data.startswith(self.drop):
                        self.armed = False
                        self.dropped += 1
                        break
                    writer.write(data)
                    await writer.drain()
            writer.close()
            up_writer.close()

        for job in (up(), down()):
            task = asyncio.ensure_future(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _counter(client: aioredis.Redis, key: str) -> int:
    raw = await client.hget(key, "i")
    assert raw is not None
    n: int = loads(raw)["n"]
    return n


async def _dropped_write_reply(remembered: bool, client_retries: bool) -> None:
    url = require_redis()
    host, port = url.split("//")[1].split("/")[0].split(":")
    proxy = _ReplyDroppingProxy(host, int(port))
    proxied = await proxy.start()
    stream = f"attack4-{uuid.uuid4().hex[:8]}"
    key = f"stream:{stream}:g"
    channel = f"attack4-events-{uuid.uuid4().hex[:8]}"
    direct = aioredis.Redis.from_url(url)
    client: aioredis.Redis | None = None
    pubsub = direct.pubsub()
    await pubsub.subscribe(channel)
    try:
        # a client told to retry (redis-py's own Retry) re-sends a command whose connection dropped
        client = (aioredis.Redis.from_url(proxied, retry=Retry(NoBackoff(), 3),
                                          retry_on_error=[RedisConnectionError]) if client_retries else None)
        async with (RedisStream(client, channel=channel) if client is not None
                    else RedisStream.from_url(proxied, channel=channel)) as store:
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data={"n": 0}))
            increment = StreamUpdateInput(stream_name=stream, group_id="g", item_id="i",
                                          ops=[UpdateIncrement(path="n", by=1)])
            if remembered:  # the next update skips the read: the script checks the remembered text
                await store.update(increment)
            before = await _counter(direct, key)
            proxy.armed = True
            with contextlib.suppress(RedisError, OSError, StreamError):  # an unknown outcome: an error at most
                await store.update(increment)
            assert proxy.dropped == 1
            after = await _counter(direct, key)
            assert after == before + 1, f"one increment applied {after - before} times"
        await direct.publish(channel, b"end")  # after every event of the store's: one channel keeps the order
        datas = []
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            if message["data"] == b"end":
                break
            datas.append(loads(message["data"])["event"]["data"]["n"])
        assert datas == [*range(before + 2)], datas  # one event per applied write, in order
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await direct.delete(key)
        await direct.aclose()
        if client is not None:
            await client.aclose()
        await proxy.close()


async def test_a_write_script_reply_lost_after_redis_ran_it_is_not_applied_again() -> None:
    """redis-py re-sends a command whose reply a dropped connection lost; the re-sent script finds the item no
    longer holding the text read, which looked like another process's write: the update was read again and
    applied a second time (n went 0 -> 2 for one increment)."""
    await _dropped_write_reply(remembered=False, client_retries=True)


async def test_a_lost_reply_on_the_remembered_path_is_not_applied_again() -> None:
    await _dropped_write_reply(remembered=True, client_retries=True)


async def test_a_lost_reply_through_from_url_is_an_error_and_applied_once() -> None:
    await _dropped_write_reply(remembered=False, client_retries=False)


async def test_a_set_whose_reply_is_lost_publishes_one_event() -> None:
    """The set script run again by the client's retry published the change a second time (and answered the new
    value as the old one)."""
    url = require_redis()
    host, port = url.split("//")[1].split("/")[0].split(":")
    proxy = _ReplyDroppingProxy(host, int(port))
    proxied = await proxy.start()
    stream = f"attack4-{uuid.uuid4().hex[:8]}"
    channel = f"attack4-events-{uuid.uuid4().hex[:8]}"
    direct = aioredis.Redis.from_url(url)
    pubsub = direct.pubsub()
    await pubsub.subscribe(channel)
    client = aioredis.Redis.from_url(proxied, retry=Retry(NoBackoff(), 3), retry_on_error=[RedisConnectionError])
    try:
        async with RedisStream(client, channel=channel) as store:
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data={"n": 0}))
            proxy.drop, proxy.armed = b"$", True  # the old value's bulk reply
            with contextlib.suppress(StreamError):
                await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data={"n": 5}))
            assert proxy.dropped == 1
        await direct.publish(channel, b"end")
        datas = []
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            if message["data"] == b"end":
                break
            datas.append(loads(message["data"])["event"]["data"]["n"])
        assert datas == [0, 5], datas
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await direct.delete(f"stream:{stream}:g")
        await direct.aclose()
        await client.aclose()
        await proxy.close()


async def test_the_scripts_go_out_once_each_with_a_fixed_argument_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts are sent on a pooled connection directly (not through the client's retrying execute_command):
    still one EVALSHA per batch whose argument count does not grow with the batch's events."""
    url = require_redis()
    sent = record_script_calls(monkeypatch)
    stream = f"attack4-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(url, channel=f"attack4-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            results = await asyncio.gather(*(
                store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="i",
                                               ops=[UpdateIncrement(path="n", by=1)]))
                for _ in range(40)))
        finally:
            await store.client.delete(f"stream:{stream}:g")
    assert sorted(r.new_value["n"] for r in results) == list(range(1, 41))
    # command, sha, key count, key, channel, field count, absent flags, field, text read, new text, events
    assert sent and max(sent) <= 11 and len(sent) < 40, sent


async def test_a_script_redis_no_longer_holds_is_loaded_and_sent_again() -> None:
    """NOSCRIPT (Redis restarted, SCRIPT FLUSH) means Redis ran nothing: the script is loaded and sent once more."""
    url = require_redis()
    stream = f"attack4-{uuid.uuid4().hex[:8]}"
    async with RedisStream.from_url(url, channel=f"attack4-events-{uuid.uuid4().hex[:8]}") as store:
        try:
            for script in (store._set_script, store._write_script, store._delete_script):
                script.sha = "0" * 40  # a digest Redis does not know
            await store.set(StreamSetInput(stream_name=stream, group_id="g", item_id="i", data={"n": 1}))
            result = await store.update(StreamUpdateInput(stream_name=stream, group_id="g", item_id="i",
                                                          ops=[UpdateIncrement(path="n", by=1)]))
            assert result.new_value == {"n": 2}
            deleted = await store.delete(StreamDeleteInput(stream_name=stream, group_id="g", item_id="i"))
            assert deleted.old_value == {"n": 2}
            assert "0" * 40 not in {store._set_script.sha, store._write_script.sha, store._delete_script.sha}
        finally:
            await store.client.delete(f"stream:{stream}:g")
