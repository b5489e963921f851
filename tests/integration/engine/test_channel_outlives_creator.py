"""A channel whose creator leaves before either end attaches stays for a grace (30 s by default): the reference SDK's
``create_channel`` shows a script creating a channel for two workers, handing them its refs and exiting, which
production allows; removed at the creator's disconnect, both ends got 404 and nothing was carried."""

from __future__ import annotations

import websockets

from iii_engine import Engine
from iii_engine.modules.http.channels import channel_url

from .raw import RawWorker, disconnect


async def test_the_ends_of_a_channel_whose_creator_left_still_meet() -> None:
    async with Engine(port=0) as engine:
        creator = await RawWorker.connect(engine.url)
        refs = await creator.result_of("engine::channels::create", {})
        await disconnect(engine, creator)  # the script exits: the refs are with other workers now
        async with websockets.connect(channel_url(engine.url, refs["reader"]), compression=None) as reader, \
                websockets.connect(channel_url(engine.url, refs["writer"]), compression=None) as writer:
            await writer.send(b"carried")
            assert await reader.recv() == b"carried"  # before: both connects refused with HTTP 404
