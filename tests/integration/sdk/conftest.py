"""Fixtures: an engine on its own thread and loop, so tests can use both the sync and the async SDK API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III, register_worker

from .fake_engine import FakeEngine

T = TypeVar("T")

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


class EngineThread:
    """A :class:`FakeEngine` served from a background loop; ``run(coro)`` executes on that loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = FakeEngine()
        self.run(self.engine.start())

    @property
    def url(self) -> str:
        return self.engine.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        self.run(self.engine.wait_for(predicate, timeout), timeout + 1)

    def close(self) -> None:
        self.run(self.engine.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    e = EngineThread()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def make_worker(engine: EngineThread) -> Iterator[Callable[..., III]]:
    made: list[III] = []

    def make(name: str = "w", **options: Any) -> III:
        options.setdefault("reconnection_config", FAST_RECONNECT)
        client = register_worker(engine.url, InitOptions(worker_name=name, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()
