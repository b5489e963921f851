"""Channel sockets are bounded engine-wide and per creating worker (attack report on channels, p10).

Before, one worker creating channels and attaching both ends of each, idle, took every descriptor of an engine
limited to 1,024 (``max_open_per_worker`` allows 20,000 channels, 40,000 ends): attach #1016 timed out and a second
worker's connect failed (the engine's ``accept()`` got EMFILE). Now an upgrade past ``ChannelRelay.max_sockets``
(a quarter of the open-file limit) or ``max_sockets_per_worker`` (a quarter of that) is refused with HTTP 503 naming the
bound, and other workers still connect and call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import iii.ws_imports  # noqa: F401  # isort: skip - websockets loads whole there
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from iii.channels import build_channel_url
from iii.iii import III
from iii_engine import Engine
from tests.polling import until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def bounded(engine: Engine) -> AsyncIterator[Engine]:
    """The test's engine with 6 channel sockets at most, 4 for one worker's channels."""
    engine.channels.max_sockets = 6
    engine.channels.max_sockets_per_worker = 4
    yield engine


async def _attach(engine: Engine, client: III) -> tuple[ClientConnection, ClientConnection]:
    channel = await client.create_channel_async()
    ends = []
    for ref, direction in ((channel.writer_ref, "write"), (channel.reader_ref, "read")):
        url = build_channel_url(engine.url, ref.channel_id, ref.access_key, direction)
        ends.append(await asyncio.wait_for(websockets.connect(url), 5))
    return ends[0], ends[1]


async def _refused(engine: Engine, client: III) -> str:
    """Attach the writer of a new channel of ``client``'s, expecting the refusal: its body."""
    channel = await client.create_channel_async()
    ref = channel.writer_ref
    with pytest.raises(InvalidStatus) as refused:
        await asyncio.wait_for(websockets.connect(build_channel_url(engine.url, ref.channel_id, ref.access_key,
                                                                    "write")), 5)
    response = refused.value.response
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    return response.body.decode()


async def test_idle_channel_ends_past_the_bounds_are_refused_and_other_workers_still_work(bounded: Engine) -> None:
    """Before: every attach succeeded (a fifth socket of one worker's channels included), up to the engine's
    open-file limit."""
    engine = bounded
    hog, other, late = III(engine.url), III(engine.url), III(engine.url)
    sockets: list[ClientConnection] = []
    try:
        await hog.connect_async()
        for _ in range(2):  # its share: 4 sockets
            sockets.extend(await _attach(engine, hog))
        body = await _refused(engine, hog)
        assert "max_sockets_per_worker 4" in body, body

        # another worker connects and moves a stream through a channel of its own, byte for byte
        await other.connect_async()
        channel = await other.create_channel_async()
        payload = bytes(range(256)) * 4096
        await channel.writer.write(payload)
        await channel.writer.close_async()
        got = await asyncio.wait_for(channel.reader.read_all(), 10)
        assert got == payload

        # the engine-wide bound: the other worker's 2 idle sockets fill it, then everyone is refused
        await until(lambda: engine.channels.socket_stats()["sockets"] == 4)
        sockets.extend(await _attach(engine, other))
        body = await _refused(engine, other)
        assert "ChannelRelay.max_sockets 6" in body, body
        assert engine.channels.socket_stats()["refused"] == 2

        # workers still connect and call with every channel socket place taken
        await late.connect_async()
        refs = await asyncio.wait_for(late.create_channel_async(), 5)
        assert refs.writer_ref.channel_id

        # places come back as sockets close
        for ws in sockets:
            await ws.close()
        await until(lambda: engine.channels.socket_stats()["sockets"] == 0)
        sockets = list(await _attach(engine, late))
    finally:
        for ws in sockets:
            ws.transport.abort()
        for client in (hog, other, late):
            await client.shutdown_async()


async def test_the_second_end_of_a_half_attached_channel_passes_its_workers_bound(bounded: Engine,
                                                                                 caplog: pytest.LogCaptureFixture
                                                                                 ) -> None:
    """Four channels' writers took a worker's four places and their readers were refused until the attach
    deadline (272 refusals, no byte moved): the second end of a channel whose first is attached always gets in.
    A worker at its bound is warned of once (a line per refusal before), and the SDK's error names the bound."""
    from iii.channels import ChannelConnectionError

    engine = bounded
    client = III(engine.url)
    writers: list[ClientConnection] = []
    try:
        await client.connect_async()
        channels = [await client.create_channel_async() for _ in range(4)]
        for channel in channels:  # every place of the worker's taken by a first end
            ref = channel.writer_ref
            writers.append(await asyncio.wait_for(websockets.connect(
                build_channel_url(engine.url, ref.channel_id, ref.access_key, "write")), 5))
        for _ in range(3):
            await _refused(engine, client)  # a new channel's first end: refused
        assert caplog.text.count("refusing channel upgrades with HTTP 503") == 1
        for channel, writer in zip(channels, writers, strict=True):
            await writer.send(b"x" * 1000)
            await writer.close()
            assert await asyncio.wait_for(channel.reader.read_all(), 10) == b"x" * 1000  # its reader got in
        await until(lambda: engine.channels.socket_stats()["sockets"] == 0)
        # the SDK's own error says what the engine said
        for _ in range(2):
            writers.extend(await _attach(engine, client))
        refused = await client.create_channel_async()
        said = r"HTTP 503: too many channel sockets .*max_sockets_per_worker 4.*\(temporary: try again after 1 s\)"
        with pytest.raises(ChannelConnectionError, match=said):
            await refused.writer.write(b"x")
    finally:
        for writer in writers:
            await writer.close()
        await client.shutdown_async()
