"""Fixtures: an engine on its own thread and loop, so tests can use both the sync and the async SDK API.

Two engines serve the SDK tests:
- ``fake``: the recording :class:`FakeEngine` (every frame a worker sent is kept; it can send any frame, reject
  handshakes). Tests that assert on frames use it.
- ``served``: parametrised over the fake and our real ``iii_engine.Engine``. Behavioural tests use it, through
  the :class:`Harness` views both engines offer (registered ids, calls in flight, restart on the same port).

Example::

    def test_call(served: Harness, make_worker: MakeWorker) -> None:
        a, b = make_worker("a"), make_worker("b")
        a.register_function("f", lambda d: d)
        served.wait_registered("f")
        assert b.trigger({"function_id": "f", "payload": 1}) == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, Generic, Protocol, Self, TypeVar

import pytest

from iii import InitOptions, ReconnectionConfig, telemetry
from iii.iii import III, register_worker
from iii.wire import dumps
from iii_engine import Engine, EngineConfig, ModuleSpec
from iii_engine.config import ChannelSettings
from iii_engine.modules.catalogue import DEFAULT_MODULES
from tests.services import skip_on_external_engine
from tests.stall_relay import Relay

from .fake_engine import FakeEngine, FakeWorker

T = TypeVar("T")

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=20, max_delay_ms=200, jitter_factor=0.0)


def in_thread(call: Callable[[], Any]) -> Future[Any]:
    """``call()`` in a thread of its own (a sync SDK call that blocks until the engine answers); its outcome as a
    future."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future
MakeWorker = Callable[..., III]
MakeWorkerAt = Callable[..., III]  # make(url, name="w", **options)

_OWN_PORT_MODULES = ("modules::stream::StreamModule", "modules::api::RestApiModule")


def engine_test_config() -> EngineConfig:
    """The default modules, every extra listener on a free loopback port."""
    modules = [ModuleSpec(name, {"host": "127.0.0.1", "port": 0} if name in _OWN_PORT_MODULES else {})
               for name in DEFAULT_MODULES]
    return EngineConfig(host="127.0.0.1", port=0, modules=modules)


class Servable(Protocol):
    """What :class:`ServedOnThread` needs of an engine (our ``iii_engine.Engine`` or the :class:`FakeEngine`)."""

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


E = TypeVar("E", bound=Servable)


async def _end_leftovers() -> None:
    """Cancel the tasks still on the running loop (but this one) and wait for them to end (5 s at most)."""
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    if left:
        await asyncio.wait(left, timeout=5)


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
        try:
            self.run(self.engine.stop())
        finally:
            # As asyncio.run does before it closes its loop: a task left pending on a closed loop is collected
            # later, in whatever thread runs the collection, and its clean-up (a websockets close, which asks for
            # the current task) then ran against that thread's loop: it cancelled another test's task.
            self.run(_end_leftovers())
            self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Harness(Protocol):
    """What behavioural tests see of either engine. Views read the engine's tables (snapshots); predicates given
    to ``wait_for`` run on the engine's loop and are re-checked whenever the engine handled a frame."""

    kind: str

    @property
    def url(self) -> str: ...

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None: ...

    def function_ids(self) -> set[str]: ...

    def calls_in_flight(self) -> set[str]: ...

    def worker_triggers(self) -> list[dict[str, Any]]: ...

    def worker_trigger_types(self) -> set[str]: ...

    def wait_registered(self, *ids: str) -> None: ...

    def send_to(self, client: III, frame: dict[str, Any] | str) -> None: ...

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def restart(self) -> None: ...


class _Views:
    """``wait_registered`` on top of ``wait_for`` and ``function_ids``, shared by both harnesses."""

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        raise NotImplementedError

    def function_ids(self) -> set[str]:
        raise NotImplementedError

    def wait_registered(self, *ids: str) -> None:
        """Wait until the engine has every id (registrations are never acknowledged,
        docs/protocol.md#production-behaviour-our-sdk-copes-with T2)."""
        self.wait_for(lambda: set(ids) <= self.function_ids())


class EngineThread(ServedOnThread[FakeEngine], _Views):
    """A :class:`FakeEngine` served from a background loop; ``run(coro)`` executes on that loop."""

    kind = "fake"

    def __init__(self) -> None:
        super().__init__(FakeEngine)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        self.run(self.engine.wait_for(predicate, timeout), timeout + 1)

    def function_ids(self) -> set[str]:
        return set(self.engine.functions)

    def calls_in_flight(self) -> set[str]:
        return {route.function_id for route in list(self.engine.routes.values())}

    def worker_triggers(self) -> list[dict[str, Any]]:
        return [{k: t.get(k) for k in ("id", "trigger_type", "function_id", "config")}
                for _, t in list(self.engine.triggers.values())]

    def worker_trigger_types(self) -> set[str]:
        return set(self.engine.trigger_types)

    def worker(self, client: III) -> FakeWorker:
        """The engine-side record of ``client`` (its frames); one round trip first, so ``workerregistered``
        was processed."""
        client.list_functions()
        assert client.worker_id is not None
        return self.engine.workers[client.worker_id]

    def send_to(self, client: III, frame: dict[str, Any] | str) -> None:
        self.run(self.engine.send(self.worker(client), frame))

    def stop(self) -> None:
        self.run(self.engine.stop())

    def start(self) -> None:
        self.run(self.engine.start())

    def restart(self) -> None:
        self.run(self.engine.restart())


class RealEngineThread(ServedOnThread[Engine], _Views):
    """Our engine with the default modules, served from a background loop; restarts keep the port."""

    kind = "real"

    def __init__(self) -> None:
        self._changed = asyncio.Condition()
        super().__init__(self._watched_engine)
        self._port = self.engine.port

    def _watched_engine(self, port: int = 0) -> Engine:
        """A new engine whose frame handling and disconnect cleanup wake :meth:`wait_for`.

        The engine has no change notification of its own; its state only changes while it handles a frame or
        cleans up after a worker, so those two are wrapped.
        """
        engine = Engine(config=engine_test_config(), port=port)
        changed = self._changed
        # The frame handler's name follows the engine's own refactoring (per-event since the protocol core).
        handler = "_on_event" if hasattr(engine, "_on_event") else "_on_frame"
        for name in (handler, "_cleanup"):
            original = getattr(engine, name)

            async def notifying(*args: Any, _original: Callable[..., Coroutine[Any, Any, None]] = original) -> None:
                try:
                    await _original(*args)
                finally:
                    async with changed:
                        changed.notify_all()

            setattr(engine, name, notifying)
        return engine

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(predicate)

        self.run(wait(), timeout + 1)

    def function_ids(self) -> set[str]:
        return set(self.engine.registry.functions)

    def calls_in_flight(self) -> set[str]:
        return {p.function_id for p in list(self.engine.invocations.pending.values())}

    def worker_triggers(self) -> list[dict[str, Any]]:
        return [t.info() for t in list(self.engine.registry.triggers.values()) if t.registrant is not None]

    def worker_trigger_types(self) -> set[str]:
        return {t.id for t in list(self.engine.registry.trigger_types.values()) if t.owner is not None}

    def send_to(self, client: III, frame: dict[str, Any] | str) -> None:
        client.list_functions()
        assert client.worker_id is not None
        connection = self.engine.workers[client.worker_id]
        text = frame if isinstance(frame, str) else dumps(frame)

        async def post() -> None:
            assert connection.post(text), "the engine's outbox to this worker is closed"

        self.run(post())

    def stop(self) -> None:
        self.run(self.engine.stop())

    def start(self) -> None:
        self.engine = self._watched_engine(self._port)
        self.run(self.engine.start())

    def restart(self) -> None:
        self.stop()
        self.start()


SMALL_LIMIT = 64 * 1024


def small_limit_engine(port: int = 0, production_mode: bool = False) -> Engine:
    """Our engine without modules, its ``max_message_size`` :data:`SMALL_LIMIT` (frames over it are cheap to build);
    ``port`` brings it back on the URL a stopped one had."""
    return Engine(config=EngineConfig(host="127.0.0.1", port=0, modules=[], max_message_size=SMALL_LIMIT,
                                      channels=ChannelSettings(production_mode=production_mode)), port=port)


@contextlib.contextmanager
def small_limit_served(production_mode: bool = False) -> Iterator[ServedOnThread[Engine]]:
    """:func:`small_limit_engine` on a background loop (skips the test against an external engine)."""
    skip_on_external_engine("needs our engine with a small max_message_size")
    with ServedOnThread(lambda: small_limit_engine(production_mode=production_mode)) as served:
        yield served


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a client-side condition. The SDK exposes its connection state and worker id only as getters, so
    there is no event to wait on; engine-side conditions use ``Harness.wait_for`` instead."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(0.002)


def reconnected(client: III, old_worker_id: str | None) -> bool:
    """Whether ``client`` is on a new connection the engine has already named (so its old one is gone)."""
    return client.worker_id not in (None, old_worker_id)


def workers_at() -> Iterator[MakeWorkerAt]:
    """Fixture body: yield ``make(url, name="w", **options)`` registering workers on any URL (tests that restart an
    engine on another port); shut them all down after."""
    made: list[III] = []

    def make(url: str, name: str = "w", **options: Any) -> III:
        options.setdefault("reconnection_config", FAST_RECONNECT)
        client = register_worker(url, InitOptions(worker_name=name, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown()


def workers_of(url: str) -> Iterator[MakeWorker]:
    """Fixture body: yield ``make(name="w", **options)`` registering workers on ``url``; shut them all down after."""
    for make in workers_at():
        yield functools.partial(make, url)


@pytest.fixture
def fake() -> Iterator[EngineThread]:
    """The recording fake engine (frame-level assertions)."""
    with EngineThread() as served:
        yield served


@pytest.fixture
def client(fake: EngineThread) -> Iterator[III]:
    """One client of :func:`fake` that reconnects fast (the life-cycle attack tests cut and stall its socket)."""
    worker = register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=FAST_RECONNECT))
    yield worker
    worker.shutdown()


@pytest.fixture
def make_fake_worker(fake: EngineThread) -> Iterator[MakeWorker]:
    """Workers on :func:`fake`."""
    yield from workers_of(fake.url)


@pytest.fixture(params=["fake", "real"])
def served(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The fake engine, then our real engine: behavioural tests run against both."""
    if request.param == "real":
        skip_on_external_engine("the harness reads our engine's tables and restarts it")
    harness: EngineThread | RealEngineThread = EngineThread() if request.param == "fake" else RealEngineThread()
    with harness:
        yield harness


@pytest.fixture
def make_worker(served: Harness) -> Iterator[MakeWorker]:
    """Workers on :func:`served`."""
    yield from workers_of(served.url)


@pytest.fixture
def real() -> Iterator[RealEngineThread]:
    """Our real engine alone (tests that read what it counted or restart it)."""
    with RealEngineThread() as served:
        yield served


@pytest.fixture
def make_real_worker(real: RealEngineThread) -> Iterator[MakeWorker]:
    """Workers on :func:`real`."""
    yield from workers_of(real.url)


@pytest.fixture
def relay(real: RealEngineThread) -> Iterator[Relay]:
    """A relay in front of ``real`` (run on its loop) that can stall, cut or blackhole its connections."""
    relay = Relay(real.engine.port)
    real.run(relay.start())
    yield relay
    real.run(relay.close())


@pytest.fixture
def fresh_telemetry() -> Iterator[None]:
    """Telemetry is process-wide: start and end the test from "not initialised". Ask for it with
    ``pytest.mark.usefixtures`` so it is set up before, and torn down after, the engine and workers of the test."""
    telemetry.shutdown_otel()
    yield
    telemetry.shutdown_otel()


@pytest.fixture
def workers() -> Iterator[MakeWorkerAt]:
    """Workers on whichever engine URL each is given (see :func:`workers_at`)."""
    yield from workers_at()


@pytest.fixture
async def worker() -> AsyncIterator[III]:
    """One client, connected on the test's loop, of our engine (default configuration) embedded in that same loop:
    tests can patch and gate both sides without threads. The client is shut down before the engine stops."""
    async with Engine(port=0) as engine:
        client = III(engine.url)
        await client.connect_async()
        try:
            yield client
        finally:
            await client.shutdown_async()
