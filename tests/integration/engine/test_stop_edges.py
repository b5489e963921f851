"""Edges of the engine's start and stop an attack of its life cycle found: a host name the idna codec refuses, an
enqueue during the stop, and a handshake cut off before asyncio gave it a transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.protocol import State

from iii_engine import Engine, EngineConfig
from iii_engine.modules.base import EngineStartError
from iii_engine.server import Listener

from .raw import RawWorker

pytestmark = [pytest.mark.timeout(20), pytest.mark.our_engine("engine-core test: start and stop edges")]


@pytest.mark.parametrize("host", ["a..b", "."])
async def test_a_host_name_the_idna_codec_refuses_is_one_line(host: str) -> None:
    """Before, a 66-line traceback ending in UnicodeError ('label empty or too long'): `host: ${PREFIX}.local`
    with PREFIX empty is enough."""
    engine = Engine(config=EngineConfig(host=host, port=0, modules=[]))
    with pytest.raises(EngineStartError, match=f"^cannot listen on {host}:0: .*label empty or too long"):
        await engine.start()
    assert engine.modules == {}


async def test_an_enqueue_while_the_stop_stops_the_modules_is_engine_stopping() -> None:
    """The queue module stops before the connections close: enqueues arriving then were answered
    'QueueModule not loaded' (49 of ~830 in the attack), which reads as a misconfiguration, not as retry-safe."""
    engine = Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[]))
    await engine.start()
    try:
        worker = await RawWorker.connect(engine.url)
        engine.invocations.modules_stopping = True  # where the stop's module loop sets it
        frame = await worker.call("jobs::run", {"x": 1}, action={"type": "enqueue", "queue": "q"})
        assert frame["error"]["code"] == "engine_stopping"
        assert "jobs::run was not enqueued; safe to retry" in frame["error"]["message"]
        await worker.close()
    finally:
        await engine.stop()
    assert engine.invocations.modules_stopping  # the stop set it ...
    await engine.start()
    try:
        assert not engine.invocations.modules_stopping  # ... and the next start cleared it
    finally:
        await engine.stop()


async def test_a_handshake_without_a_transport_is_let_go_quietly() -> None:
    """asyncio can make a connection's protocol and fail to make its transport as the server closes: resetting it
    raised AttributeError in a task nobody awaited (12-17 tracebacks per stop during a connect flood)."""

    class NoTransport:
        state = State.CONNECTING

        async def wait_closed(self) -> None:
            return None

    fake: Any = NoTransport()
    await asyncio.wait_for(Listener._end_handshake(fake), 5)  # no AttributeError
