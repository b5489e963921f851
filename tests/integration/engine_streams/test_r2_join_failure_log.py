"""A stream socket client whose joins keep failing does not flood the engine's log (R2).

Each failed join (its sync read failed or ran out of time) was a WARNING line of its own: any client of the public
stream socket could write the engine's log as fast as it sent joins. Now the first is logged at once, later ones at
most every 10 s with their count and the latest; every client still gets its ``error`` event.
"""

from __future__ import annotations

import logging

import pytest

from iii_engine import Engine

from .helpers import SocketClient, engine_config

pytestmark = [pytest.mark.our_engine("bounds the stream socket's log with its own settings"), pytest.mark.timeout(30)]

JOINS = 300


def _join_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "join" in r.getMessage()
            and r.name.startswith("iii_engine.modules.stream")]


async def test_failing_joins_by_the_hundred_make_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine")
    engine = Engine(config=engine_config(custom_streams=["r2gone"]))  # served by workers: none is connected
    await engine.start()
    try:
        client = await SocketClient.connect(engine)
        for n in range(JOINS):
            await client.join("s", "r2gone", f"g{n}")
        codes = [(await client.recv())["event"].get("code") for _ in range(JOINS)]
        assert codes == ["sync_failed"] * JOINS  # every join told
        warnings = _join_warnings(caplog)
        assert len(warnings) == 1, warnings[:3]
        assert "sync_failed" in warnings[0] and "r2gone" in warnings[0]
        await client.close()
        caplog.clear()
    finally:
        await engine.stop()  # the burst's count is logged by then
    warnings = _join_warnings(caplog)
    assert len(warnings) == 1 and f"{JOINS - 1} " in warnings[0] and f"{JOINS} in all" in warnings[0], warnings
