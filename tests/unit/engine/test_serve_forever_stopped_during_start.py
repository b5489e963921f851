"""``Engine.serve_forever()`` stopped while its start is under way returns: a stop asked for is not a failed start.

Before: it raised :class:`EngineStartError` ("the engine was stopped during its start", or "the start under way when
this start was called did not start the engine" when it waited for another caller's start), as a start that could
not start the engine does. A genuine start failure still raises.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from iii_engine import Engine, EngineConfig, EngineStartError, ModuleSpec, closing
from iii_engine.modules.state.module import StateModule

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def hung_start(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """The state module's start waits for good (a store that never answers its open), cancelled by a stop after
    0.1 s; the event is set once it waits."""
    monkeypatch.setattr(closing, "MODULE_START_WAIT_S", 0.1)
    entered = asyncio.Event()

    async def start(self: StateModule) -> None:
        entered.set()
        await asyncio.get_running_loop().create_future()

    monkeypatch.setattr(StateModule, "start", start)
    return entered


def _engine() -> Engine:
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[ModuleSpec("modules::state::StateModule")]))


async def test_serve_forever_stopped_during_its_start_returns(hung_start: asyncio.Event) -> None:
    engine = _engine()
    serving = asyncio.create_task(engine.serve_forever())
    await asyncio.wait_for(hung_start.wait(), 5)
    await asyncio.wait_for(engine.stop(), 5)
    assert await asyncio.wait_for(serving, 5) is None  # before: EngineStartError, stopped during its start
    assert not engine.ready.is_set() and not engine.modules


async def test_serve_forever_waiting_for_a_start_that_is_stopped_returns(hung_start: asyncio.Event) -> None:
    engine = _engine()
    starting = asyncio.create_task(engine.start())
    await asyncio.wait_for(hung_start.wait(), 5)
    serving = asyncio.create_task(engine.serve_forever())  # waits for the start under way
    await asyncio.sleep(0)  # a turn, so that it does wait for it
    await asyncio.wait_for(engine.stop(), 5)
    with pytest.raises(EngineStartError, match="stopped during its start"):  # start()'s own caller is still told
        await asyncio.wait_for(starting, 5)
    assert await asyncio.wait_for(serving, 5) is None  # before: EngineStartError, did not start the engine


async def test_serve_forever_still_raises_a_failed_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        engine = Engine(config=EngineConfig(host="127.0.0.1", port=taken.getsockname()[1], modules=[]))
        with pytest.raises(EngineStartError, match="cannot listen on") as failed:
            await asyncio.wait_for(engine.serve_forever(), 5)
    assert "\n" not in str(failed.value)
