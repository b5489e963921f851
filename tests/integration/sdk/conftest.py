"""Fixtures: an engine on its own thread and loop, so tests can use both the sync and the async SDK API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Generic, Protocol, Self, TypeVar

import pytest

from iii import InitOptions, ReconnectionConfig
from iii.iii import III, register_worker

from .fake_engine import FakeEngine

T = TypeVar("T")

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


class Servable(Protocol):
    """What :class:`ServedOnThread` needs of an engine (our ``iii_engine.Engine`` or the :class:`FakeEngine`)."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


E = TypeVar("E", bound=Servable)


class ServedOnThread(Generic[E]):
    """An engine started on a background loop of its own; ``run(coro)`` executes on that loop and waits.

    Example: ``with ServedOnThread(FakeEngine) as served: served.run(served.engine.restart())``.
    """

    def __init__(self, make_engine: Callable[[], E]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = make_engine()
        self.run(self.engine.start())

    @property
    def url(self) -> str:
        return self.engine.url

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.engine.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class EngineThread(ServedOnThread[FakeEngine]):
    """A :class:`FakeEngine` served from a background loop; ``run(coro)`` executes on that loop."""

    def __init__(self) -> None:
        super().__init__(FakeEngine)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        self.run(self.engine.wait_for(predicate, timeout), timeout + 1)


def workers_of(url: str) -> Iterator[Callable[..., III]]:
    """Fixture body: yield ``make(name="w", **options)`` registering workers on ``url``; shut them all down after."""
    made: list[III] = []

    def make(name: str = "w", **options: Any) -> III:
        options.setdefault("reconnection_config", FAST_RECONNECT)
        client = register_worker(url, InitOptions(worker_name=name, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()


@pytest.fixture
def engine() -> Iterator[EngineThread]:
    with EngineThread() as served:
        yield served


@pytest.fixture
def make_worker(engine: EngineThread) -> Iterator[Callable[..., III]]:
    yield from workers_of(engine.url)
