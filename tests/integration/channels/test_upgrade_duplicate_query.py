"""A channel upgrade naming ``key`` or ``dir`` twice is refused with 400 (attack report on channels, minor).

Before, ``?key=A&key=B&dir=read&dir=write`` was accepted and the last of each won: which one counts is a guess a
proxy in front of the engine (or another server) may make the other way.
"""

from __future__ import annotations

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from iii.iii import III

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("query", ["key={w}&key={w}&dir=write", "key={w}&dir=read&dir=write",
                                   # blank duplicates (parse_qs drops blank values unless told)
                                   "key=&key={w}&dir=write", "key&key={w}&dir=write", "key={w}&dir=&dir=write"],
                         ids=["key-twice", "dir-twice", "blank-key-first", "bare-key-first", "blank-dir-first"])
async def test_duplicate_query_parameters_are_refused(engine_url: str, query: str) -> None:
    worker = III(engine_url)
    await worker.connect_async()
    try:
        ref = (await worker.create_channel_async()).writer_ref
        url = f"{engine_url}/ws/channels/{ref.channel_id}?{query.format(w=ref.access_key)}"
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(url):
                pass
        assert refused.value.response.status_code == 400
        assert b"key= and dir= once each" in refused.value.response.body
        # The channel is untouched: its writer still attaches with a well-formed upgrade.
        async with websockets.connect(f"{engine_url}/ws/channels/{ref.channel_id}?key={ref.access_key}&dir=write"):
            pass
    finally:
        await worker.shutdown_async()
