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


def _ignored_reports(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("iii_engine.modules.stream")
            and r.levelno == logging.INFO and "stream client" in r.getMessage()]


async def test_ignored_messages_by_the_hundred_make_one_report(caplog: pytest.LogCaptureFixture) -> None:
    # Before: one INFO line per frame (not JSON, malformed, a leave of a subscription the client does not have).
    caplog.set_level(logging.INFO, "iii_engine.modules.stream")
    engine = Engine(config=engine_config())
    await engine.start()
    try:
        client = await SocketClient.connect(engine)
        for n in range(JOINS):
            await client.ws.send("{nope" if n % 3 == 0 else '{"type":"hello"}' if n % 3 == 1 else
                                 '{"type":"leave","data":{"subscriptionId":"x","streamName":"s","groupId":"g"}}')
        await client.join("ok", "r2plain", "g")
        for _ in range(JOINS // 3 * 2):  # the frames not JSON and those of an unknown type are answered
            assert (await client.recv())["event"]["code"] == "invalid_message"
        assert (await client.recv())["event"] == {"type": "sync", "data": []}  # every frame before it was handled
        reports = _ignored_reports(caplog)
        assert len(reports) == 1, reports[:3]
        assert "not JSON" in reports[0]
        await client.close()
        caplog.clear()
    finally:
        await engine.stop()
    reports = _ignored_reports(caplog)
    assert len(reports) == 1, reports
    assert f"{JOINS - 1} stream client message(s)" in reports[0] and f"{JOINS} in all" in reports[0]
    assert "100 leave of nothing" in reports[0] and "100 malformed" in reports[0]
