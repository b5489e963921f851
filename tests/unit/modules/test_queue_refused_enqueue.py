"""An enqueue whose store connection could not be opened (refused) says the job was not enqueued: nothing was sent.
A push that was sent and then lost its connection (redis-py's retry then finding the server gone) keeps saying
the job may have been stored, with its id.

Before: both said "the store did not confirm job <id> ... (if it reached the store, it will run)", although a
refused connect happens before the push is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from fake_services import FakeServices
from test_queue_stop import _drop_keys

from iii_engine.modules.base import EngineError
from iii_engine.modules.queue.module import QueueModule
from iii_engine.modules.queue.redis_store import RedisQueueStore
from tests.services import require_redis

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

MARK = "h2-cut-at-this-push"


@contextlib.asynccontextmanager
async def cut_at_mark(url: str) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A proxy to Redis at ``url`` (yields its URL, and an event set once it cut): it forwards until a client sends
    :data:`MARK`, then drops that write, cuts the client's connection and refuses new ones (the push was sent, and
    its retry finds the server gone)."""
    target, cut, pipes = urlsplit(url), asyncio.Event(), set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port or 6379)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, watch: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if watch and MARK.encode() in data:
                        server.close()  # refused from now on
                        cut.set()
                        break
                    sink.write(data)
                    await sink.drain()
            writer.transport.abort()
            up_writer.transport.abort()

        for both in (pipe(reader, up_writer, watch=True), pipe(up_reader, writer, watch=False)):
            task = asyncio.ensure_future(both)
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", cut
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    chosen = f"refused-{uuid.uuid4().hex[:8]}:"  # the Redis _drop_keys cleans
    yield chosen
    await _drop_keys(chosen)


async def started(services: FakeServices, url: str, prefix: str) -> QueueModule:
    adapter = {"class": "modules::queue::RedisAdapter", "config": {"redis_url": url, "key_prefix": prefix}}
    module = QueueModule(services, {"queue_configs": {"jobs": {}}, "adapter": adapter})
    await module.start()
    return module


async def test_an_enqueue_whose_connection_was_refused_says_it_was_not_enqueued(services: FakeServices,
                                                                                prefix: str) -> None:
    module = await started(services, require_redis(), prefix)
    kept = module.store
    module.store = RedisQueueStore("redis://127.0.0.1:1/0", key_prefix=prefix)  # nothing listens on port 1
    try:
        with pytest.raises(EngineError) as refused:
            await module.enqueue("jobs", "orders::process", {"n": 1})
    finally:
        await module.store.close()
        module.store = kept
        await module.stop()
    message = refused.value.message
    assert refused.value.code == "enqueue_error"
    assert message.startswith("Queue 'jobs': the job was not enqueued (it never reached the store): Error 111 "), \
        message
    assert "if it reached the store" not in message


async def test_a_push_sent_then_cut_still_says_it_may_have_been_stored(services: FakeServices, prefix: str) -> None:
    async with cut_at_mark(require_redis()) as (url, cut):
        module = await started(services, url, prefix)
        try:
            with pytest.raises(EngineError) as unconfirmed:
                await module.enqueue("jobs", "orders::process", {"mark": MARK})
            assert cut.is_set()  # the push was written, then its connection went, and new ones were refused
        finally:
            await module.stop()
    message = unconfirmed.value.message
    assert message.startswith("Queue 'jobs': the store did not confirm job "), message
    assert message.endswith("(if it reached the store, it will run)"), message
