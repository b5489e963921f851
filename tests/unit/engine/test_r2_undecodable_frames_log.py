"""A worker sending undecodable frames by the thousand does not flood the engine's log (R2).

Before, each one was a WARNING line of its own: any connected worker could write the engine's log as fast as it
could send garbage. Now the first few of each 10 s get a line each with their reasons, later ones are logged at most
every 10 s with their count (and the latest reason); none is lost from the count.
"""

from __future__ import annotations

import logging

import pytest

from iii.wire import dumps
from iii_engine import Engine
from iii_engine.engine import UNDECODABLE_LOG_BURST
from tests.unit.engine.test_undecodable_result import CALL_ID, _answer, _connect, _next, engine

__all__ = ["engine"]  # the fixture, shared

pytestmark = pytest.mark.timeout(20)


def _undecodable_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "undecodable" in r.getMessage()]


async def test_a_thousand_garbage_frames_make_a_few_warnings(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine")
    ws = await _connect(engine)
    try:
        for n in range(1000):
            await ws.send(_answer(f'"function_id":"w.f","result":NaN,"n":{n}') if n % 2 else "{not json")
        await ws.send(dumps({"type": "ping"}))
        await _next(ws, "pong")  # every garbage frame was handled before the ping
    finally:
        await ws.close()
    warnings = _undecodable_warnings(caplog)
    assert len(warnings) == UNDECODABLE_LOG_BURST + 1, warnings[:5]  # the burst, then the first one counted
    assert all("invalid JSON" in warning for warning in warnings)  # each names why
    assert engine.undecodable_frames == 1000
    caplog.clear()
    await engine.stop()  # the burst's count is logged by then, not lost with its timer
    warnings = _undecodable_warnings(caplog)
    more = 1000 - UNDECODABLE_LOG_BURST - 1
    assert len(warnings) == 1 and f"{more} more undecodable" in warnings[0] and "1000 in all" in warnings[0], warnings
    assert CALL_ID not in engine.invocations.pending


async def test_a_broken_call_answered_with_an_error_is_not_said_dropped(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "iii_engine")
    ws = await _connect(engine)
    try:
        await ws.send(f'{{"type":"invokefunction","invocation_id":"{CALL_ID}","function_id":"w.f","data":NaN}}')
        answer = await _next(ws, "invocationresult")
    finally:
        await ws.close()
    assert answer["error"]["code"] == "invalid_message"
    (warning,) = _undecodable_warnings(caplog)
    # before: "dropped undecodable frame", as if its sender had been left waiting
    assert "undecodable frame, answered with an error: invalid JSON" in warning, warning
