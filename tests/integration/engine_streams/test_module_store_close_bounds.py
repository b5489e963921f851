"""A module's store whose close never returns (its Redis or PostgreSQL connection went silent) must not hang the
engine: the stream, state and queue modules' stops, and the stream module's failed start, wait for it at most
``STORE_CLOSE_TIMEOUT_S``, then cancel the close, let it go and warn naming the store.

Before: ``await self.store.aclose()`` (stream, state) and ``await self.store.close()`` (queue) had no deadline, so
``Engine.stop()`` (and ``Engine.start()`` failing in the stream module) never returned.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from iii_engine import Engine, ModuleStartError, closing
from iii_engine.modules.stream import module as stream_module
from iii_engine.modules.stream.socket import StreamSocketServer
from iii_streams import MemoryStream

from .helpers import engine_config

pytestmark = pytest.mark.timeout(30)

BOUND_S = 0.3


class _SilentClose:
    """A close that waits for an answer that never comes (cancellable, as a socket read is)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.mark.parametrize(("name", "method"), [("stream", "aclose"), ("state", "aclose"), ("queue", "close")])
async def test_engine_stop_ends_when_a_module_store_never_closes(
        name: str, method: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    engine = Engine(config=engine_config())
    await engine.start()
    module = engine.module(name)
    store = getattr(module, "store", None)
    assert store is not None
    silent = _SilentClose()
    monkeypatch.setattr(store, method, silent)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"):
        await asyncio.wait_for(engine.stop(), 10)  # before: never returned
    took = loop.time() - began
    assert silent.calls == 1
    assert silent.cancelled.is_set()
    assert took < BOUND_S + 3, took
    assert f"the {name} module's store ({type(store).__name__}) did not end within {BOUND_S:g} s" in caplog.text


async def test_failed_stream_start_closes_its_store_within_the_bound(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(closing, "STORE_CLOSE_TIMEOUT_S", BOUND_S)
    silent = _SilentClose()
    store = MemoryStream()
    monkeypatch.setattr(store, "aclose", silent)
    monkeypatch.setattr(stream_module, "open_module_store", lambda *args, **kwargs: store)

    async def cannot_listen(self: StreamSocketServer) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(StreamSocketServer, "start", cannot_listen)
    engine = Engine(config=engine_config())
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.WARNING, logger="iii_engine.closing"), pytest.raises(ModuleStartError):
        await asyncio.wait_for(engine.start(), 10)  # before: the failed start's close never returned
    took = loop.time() - began
    assert silent.calls == 1  # closed once: the stop after the failed start does not wait for it again
    assert silent.cancelled.is_set()
    assert took < BOUND_S + 3, took
    assert "the stream module's store (MemoryStream) did not end within" in caplog.text
