"""``iii_engine.event_loop``: an embedded engine on the chosen loop, the process-wide choice the SDK's loop thread
follows, and a missing uvloop refused in one line instead of a silent fall-back."""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Iterator

import pytest
import websockets

from iii.loop_bridge import LoopBridge
from iii_engine import Engine, EngineConfig
from iii_engine.event_loop import EventLoopUnavailable, loop_factory, run, use

MISSING = "the uvloop event loop needs the package 'uvloop': pip install 'iii-toolkit[uvloop]'"


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import uvloop`` fails as if the extra were not installed."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.fixture
def restore_policy() -> Iterator[None]:
    yield
    asyncio.set_event_loop_policy(None)


async def _engine_answers() -> tuple[type[asyncio.AbstractEventLoop], str]:
    async with Engine(port=0, config=EngineConfig(modules=[])) as engine, websockets.connect(engine.url) as ws:
        first = await asyncio.wait_for(ws.recv(), 5)
        return type(asyncio.get_running_loop()), str(first)


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_run_puts_an_embedded_engine_on_the_chosen_loop(name: str) -> None:
    uvloop = pytest.importorskip("uvloop")
    loop_type, first = run(_engine_answers(), name)
    assert (loop_type is uvloop.Loop) == (name == "uvloop")
    assert '"workerregistered"' in first


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="event loop must be asyncio or uvloop, got 'trio'"):
        loop_factory("trio")


@pytest.mark.usefixtures("no_uvloop")
def test_run_without_uvloop_raises_one_line_and_never_starts_the_coroutine() -> None:
    started = False

    async def main() -> None:
        nonlocal started
        started = True

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be a RuntimeWarning
        with pytest.raises(EventLoopUnavailable) as caught:
            run(main(), "uvloop")
    assert str(caught.value) == MISSING and "\n" not in str(caught.value)
    assert isinstance(caught.value, ModuleNotFoundError) and caught.value.name == "uvloop"
    assert not started


@pytest.mark.usefixtures("no_uvloop", "restore_policy")
def test_use_without_uvloop_raises_and_keeps_the_policy() -> None:
    before = asyncio.get_event_loop_policy()
    with pytest.raises(EventLoopUnavailable, match="iii-toolkit\\[uvloop\\]"):
        use("uvloop")
    assert asyncio.get_event_loop_policy() is before


@pytest.mark.usefixtures("restore_policy")
def test_use_makes_the_sdk_loop_thread_a_uvloop_one() -> None:
    uvloop = pytest.importorskip("uvloop")
    use("uvloop")
    bridge = LoopBridge()
    try:
        assert isinstance(bridge.loop, uvloop.Loop)

        async def add(a: int, b: int) -> int:
            return a + b

        assert bridge.run(add(1, 2)) == 3
    finally:
        bridge.stop()
    use("asyncio")
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
