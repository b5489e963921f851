"""``ChannelRelay.fill`` on a channel whose stream ended before its write end came.

Its reader left first: the body goes nowhere, as a fill of a live channel whose reader is gone drops it, and the fill
returns. Before, it raised ``ChannelRefused(409, "channel write end is already attached")`` (no writer had been) and
dropped the record all the same. Its writer failed first (a write end was attached): 409, the record kept for the
reader.
"""

from __future__ import annotations

import pytest

from iii_engine.channels import ChannelRefused, ChannelRelay
from tests.polling import until

pytestmark = pytest.mark.timeout(30)


async def test_a_fill_after_the_reader_left_returns_and_the_channel_goes() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner="w1")
    writer, reader = refs["writer"], refs["reader"]
    await relay.open_local(reader["channel_id"], reader["access_key"], "read").close()
    await until(lambda: len(relay) == 0, 5)  # the live channel gave way to its ended record
    relay.fill(writer["channel_id"], writer["access_key"], b"abc", chunk_size=2)  # before: ChannelRefused (409)
    with pytest.raises(ChannelRefused, match=r"\(404\)"):  # the write end was told once; the record is gone
        relay.fill(writer["channel_id"], writer["access_key"], b"abc", chunk_size=2)
    await relay.close()


async def test_a_fill_after_a_writer_failed_is_refused_and_the_reader_still_told() -> None:
    relay = ChannelRelay()
    refs = relay.create(None, owner="w1")
    writer, reader = refs["writer"], refs["reader"]
    relay.open_local(writer["channel_id"], writer["access_key"], "write").abort()
    await until(lambda: len(relay) == 0, 5)
    with pytest.raises(ChannelRefused, match=r"\(409\).*write end is already attached"):
        relay.fill(writer["channel_id"], writer["access_key"], b"abc", chunk_size=2)
    assert relay.check(reader["channel_id"], reader["access_key"], "read") is None  # kept for the reader
    await relay.close()
