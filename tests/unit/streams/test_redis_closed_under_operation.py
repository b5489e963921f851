"""A ``RedisStream`` closed while an operation's command is on the wire: the operation's outcome is unknown.

An engine's stop answered 5-24 ``state::set`` calls per run with ``RedisStream is closed (Connection closed by
server.)``, read as "not done", and every one of them was in Redis after the restart. The error now says the
operation ran when the store closed (a write's caller adds whether it may have been applied: ``applied``), and does
not pass redis-py's "by server" off as the reason.
"""

from __future__ import annotations

import asyncio

import fakeredis
from redis.exceptions import ConnectionError as RedisConnectionError

from iii_streams.errors import StreamClosedError, StreamUnavailableError
from iii_streams.redis import RedisStream


def test_a_connection_cut_by_the_stores_own_close_says_the_write_may_have_been_applied() -> None:
    async def demo() -> tuple[object, object]:
        store = RedisStream(fakeredis.FakeAsyncRedis())
        cut = RedisConnectionError("Connection closed by server.")
        before = store._wrap_error(cut, "RedisStream.set")  # Redis itself went away
        await store.aclose()
        return before, store._wrap_error(cut, "RedisStream.set")

    before, after = asyncio.run(demo())
    assert isinstance(before, StreamUnavailableError)
    assert isinstance(after, StreamClosedError)
    # the operation's own words; a write's caller adds its outcome (StreamClosedError.with_outcome, its applied)
    assert str(after) == "RedisStream.set: the RedisStream was closed while this operation ran (redis-py: Connection " \
        "closed by server.)"
    restated = after.with_outcome(sent=True)
    assert restated.applied is None and str(restated).endswith("; the write had been sent and may have been applied "
                                                                "(outcome unknown)")
