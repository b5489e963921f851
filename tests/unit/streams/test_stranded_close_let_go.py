"""A close of a connection stranded in its set-up that outlasts the wait for it is let go once, with a warning.

Before: nothing was said, and a store's close, which waits for them twice (in its dispose, then after its last
cuts), waited for the same close twice: 4 s instead of 2 with a close held in a hung driver call.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from iii_streams import engine_bounds
from iii_streams.engine_bounds import stranded_closes_ended

pytestmark = pytest.mark.timeout(30)


async def test_a_close_outlasting_the_wait_is_let_go_once_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    loop = asyncio.get_running_loop()
    hung: asyncio.Future[None] = loop.create_future()  # a close held in a driver call that does not end
    engine_bounds._CLOSING[hung] = engine.sync_engine
    hung.add_done_callback(engine_bounds._closed)
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="iii_streams.engine_bounds"):
        await stranded_closes_ended(engine, 0.3)
        await stranded_closes_ended(engine, 0.3)  # the store's second wait: not for it again
    assert 0.3 <= loop.time() - started < 0.55
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["1 connection(s) cut short in their set-up did not close within 0.3 s; left to close by "
                     "themselves"]
    assert hung in engine_bounds._LET_GO  # still held: it ends by itself
    hung.set_result(None)
    await asyncio.sleep(0)  # (its done callback runs in the next loop turn)
    assert hung not in engine_bounds._LET_GO and hung not in engine_bounds._CLOSING
    await engine.dispose()
