"""Frames over the engine's ``max_message_size`` other than calls and results never cost a worker its connection.

Registrations are replayed on every connect: one over the limit (a huge description, metadata, request format,
trigger config) made the engine close the connection with 1009 at every connect, for ever, and every call of that
worker failed each time. Now ``register_*`` over a known limit raises at once (nothing registered, nothing
replayed), and one made before the limit was known is left out of the replay with an error naming it. A trigger
registration answer or a telemetry frame over the limit is not sent (logged; telemetry is split under the engine's
limit), and every frame is checked against the limit of the socket it is actually written to, so one built before
the connection changed cannot close the new one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace

from iii import InitOptions, OtelConfig, telemetry
from iii.connection import Connection
from iii.errors import InvocationError
from iii.iii import III
from iii.pending_calls import ThreadWaiter
from iii.triggers import TriggerConfig, TriggerHandler
from iii_engine import Engine
from tests.services import skip_on_external_engine

from .conftest import (
    FAST_RECONNECT,
    SMALL_LIMIT,
    MakeWorkerAt,
    ServedOnThread,
    small_limit_engine,
    small_limit_served,
    wait_until,
)

LIMIT = SMALL_LIMIT
BIG = "x" * LIMIT


@pytest.fixture
def ours() -> Iterator[ServedOnThread[Engine]]:
    with small_limit_served() as engine:
        yield engine


@pytest.fixture
def connects(caplog: pytest.LogCaptureFixture) -> Callable[[], int]:
    """How many sockets the clients of this test opened so far (a 1009 loop opens one after another)."""
    caplog.set_level(logging.INFO, logger="iii.connection")
    return lambda: sum(1 for r in caplog.records if r.name == "iii.connection" and r.msg == "Connected to %s")


def _still_on(client: III, worker_id: str | None) -> None:
    """A round trip on ``client``'s connection: anything sent before it reached the engine first (in order), so a
    1009 close it caused has happened by now."""
    client.list_functions()
    assert client.worker_id == worker_id


class Owner(TriggerHandler[Any]):
    def __init__(self, refusal: str = "") -> None:
        self.refusal = refusal
        self.asked = threading.Event()

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        self.asked.set()
        if self.refusal:
            raise RuntimeError(self.refusal)

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        return None


REGISTRATIONS: dict[str, tuple[str, Callable[[III], Any]]] = {
    "function-description": ("'big'", lambda c: c.register_function("big", lambda d: d, description=BIG)),
    "function-metadata": ("'big'", lambda c: c.register_function("big", lambda d: d, metadata={"m": BIG})),
    "function-request_format": ("'big'", lambda c: c.register_function(
        {"id": "big", "request_format": {"type": "string", "description": BIG}}, lambda d: d)),
    "trigger-config": ("'echo'", lambda c: c.register_trigger(
        {"type": "engine::functions-available", "function_id": "echo", "config": {"topic": BIG}})),
    "trigger_type": ("'bigtype'", lambda c: c.register_trigger_type({"id": "bigtype", "description": BIG},
                                                                    Owner())),
    "service": ("'bigservice'", lambda c: c.register_service({"id": "bigservice", "description": BIG})),
}


@pytest.mark.parametrize("kind", list(REGISTRATIONS))
def test_an_oversized_registration_raises_at_once_and_is_never_sent_or_replayed(
        kind: str, ours: ServedOnThread[Engine], workers: MakeWorkerAt, connects: Callable[[], int]) -> None:
    client = workers(ours.url, "w")
    client.register_function("echo", lambda d: d)
    wait_until(lambda: "echo" in ours.engine.registry.functions)
    worker_id = client.worker_id
    named, register = REGISTRATIONS[kind]
    with pytest.raises(ValueError) as refused:
        register(client)
    message = str(refused.value)
    assert named in message and f"{LIMIT:,} bytes" in message and "max_message_size" in message
    _still_on(client, worker_id)
    assert connects() == 1
    registry = ours.engine.registry
    assert "big" not in registry.functions and "bigtype" not in registry.trigger_types
    assert not [t for t in registry.triggers.values() if t.function_id == "echo"]
    if kind.startswith("function"):  # nothing was kept: the id is free, a fitting registration takes it
        client.register_function("big", lambda d: d, description="fits")
        wait_until(lambda: "big" in registry.functions)
    # The book holds nothing over the limit: a new connection replays cleanly.
    port = int(ours.url.rsplit(":", 1)[1])
    ours.run(ours.engine.stop())
    ours.engine = small_limit_engine(port)
    ours.run(ours.engine.start())
    wait_until(lambda: client.worker_id not in (None, worker_id))
    _still_on(client, client.worker_id)
    assert connects() == 2


def test_a_registration_made_before_the_limit_was_known_is_left_out_of_the_replay(
        ours: ServedOnThread[Engine], connects: Callable[[], int], caplog: pytest.LogCaptureFixture) -> None:
    url = ours.url
    ours.run(ours.engine.stop())
    client = III(url, InitOptions(worker_name="early", reconnection_config=FAST_RECONNECT))
    try:
        assert client.get_connection_state() != "connected"  # nothing listens: the limit is not known
        client.register_function("small", lambda d: d)
        client.register_function("big", lambda d: d, description=BIG)
        client.register_service({"id": "bigservice", "description": BIG})
        client.register_trigger({"type": "engine::functions-available", "function_id": "small",
                                 "config": {"topic": BIG}})
        ours.engine = small_limit_engine(int(url.rsplit(":", 1)[1]))
        ours.run(ours.engine.start())
        wait_until(lambda: client.worker_id is not None)
        worker_id = client.worker_id
        assert client.trigger({"function_id": "small", "payload": 5, "timeout_ms": 10_000}) == 5
        _still_on(client, worker_id)
        assert connects() == 1
        registry = ours.engine.registry
        assert "small" in registry.functions and "big" not in registry.functions
        assert not list(registry.triggers.values())
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        for named in ("function 'big'", "service 'bigservice'", "trigger "):
            assert any(named in e and f"{LIMIT:,} bytes" in e for e in errors), (named, errors)
    finally:
        client.shutdown()


def test_an_oversized_trigger_registration_answer_is_not_sent(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt, connects: Callable[[], int]) -> None:
    owner, other = workers(ours.url, "owner"), workers(ours.url, "other")
    refusing = Owner(refusal=BIG)
    owner.register_trigger_type({"id": "hook", "description": "hooks"}, refusing)
    other.register_function("f", lambda d: d)
    wait_until(lambda: "hook" in ours.engine.registry.trigger_types and "f" in ours.engine.registry.functions)
    worker_id = owner.worker_id
    other.register_trigger({"type": "hook", "function_id": "f", "config": {}})
    assert refusing.asked.wait(10)
    _still_on(owner, worker_id)
    assert connects() == 2


def test_an_oversized_telemetry_frame_is_not_sent(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt, connects: Callable[[], int]) -> None:
    client = workers(ours.url, "w")
    worker_id = client.worker_id
    client.send_telemetry(b"LOGS" + b'{"resourceLogs":[],"x":"%s"}' % BIG.encode())
    _still_on(client, worker_id)
    assert connects() == 1


def test_span_batches_are_split_under_a_smaller_engine_limit(
        ours: ServedOnThread[Engine], workers: MakeWorkerAt, connects: Callable[[], int]) -> None:
    telemetry.shutdown_otel()
    on = OtelConfig(enabled=True, service_name="hbig2", fetch_instrumentation_enabled=False, metrics_enabled=False,
                    logs_enabled=False)
    try:
        client = workers(ours.url, "w", otel=on)
        worker_id = client.worker_id
        exporter = telemetry.runtime().tracer_provider.own_processor._batch_processor._exporter
        tracer = trace.get_tracer("hbig2")
        for _ in range(8):  # 8 spans of LIMIT/4: one frame of them is twice the limit
            with tracer.start_as_current_span("big") as span:
                span.set_attribute("payload", "y" * (LIMIT // 4))
        assert telemetry.force_flush()
        _still_on(client, worker_id)
        assert connects() == 1
        assert exporter.oversized == 0  # split, none dropped
    finally:
        telemetry.shutdown_otel()


async def test_every_frame_is_checked_against_the_limit_of_the_socket_it_is_written_to() -> None:
    """A frame built before the connection changed (a call made on another thread while the socket was replaced)
    reaches the socket through any of the send paths: each checks it against the socket's own limit."""
    skip_on_external_engine("needs our engine with a small max_message_size")
    engine = small_limit_engine()
    await engine.start()
    loop = asyncio.get_running_loop()
    refused: list[tuple[str, int, int]] = []
    answers: dict[str, asyncio.Future[str]] = {}

    def on_frame(raw: str | bytes) -> None:
        for key, future in answers.items():
            if key in str(raw) and not future.done():
                future.set_result(str(raw))

    ready = asyncio.Event()
    conn = Connection(engine.url, on_frame=on_frame, on_ready=ready.set,
                      on_oversized=lambda key, size, limit: refused.append((key, size, limit)))

    async def round_trip() -> None:
        key = str(uuid.uuid4())  # (the engine takes UUID invocation ids only)
        answers[key] = loop.create_future()
        await conn.send(f'{{"type":"invokefunction","function_id":"engine::functions::list","invocation_id":"{key}",'
                        '"data":{}}')
        assert "invocationresult" in await asyncio.wait_for(answers[key], 10)

    try:
        await conn.start()
        await asyncio.wait_for(ready.wait(), 10)
        big = '{"type":"invokefunction","function_id":"f","invocation_id":"%s","data":"%s"}'
        assert not await conn.send(big % ("k1", BIG), "k1")
        conn.send_now(big % ("k2", BIG), "k2")
        assert not conn.write_now(big % ("k3", BIG))  # not written: its sender queues it (checked there)
        conn.send_soon(big % ("k4", BIG), "k4")  # queued: refused by the flush
        await round_trip()  # (the queue is empty again: what follows takes the direct paths)
        with pytest.raises(ValueError, match=f"over the engine's limit of {LIMIT:,} bytes"):
            await conn.send(big % ("k5", BIG))
        assert not await conn.send(big % ("k6", BIG), own=True)  # the loop's own: dropped, logged
        with pytest.raises(ValueError, match=f"over the engine's limit of {LIMIT:,} bytes"):
            await conn.send_on_this_connection(big % ("k7", BIG))
        await round_trip()
        assert [key for key, _, _ in refused] == ["k1", "k2", "k4"]
        assert all(limit == LIMIT and size > LIMIT for _, size, limit in refused)
        assert conn.state == "connected" and not conn.closed_too_big
    finally:
        await conn.close()
        await engine.stop()


def test_a_call_built_against_no_limit_is_checked_against_the_new_socket(
        workers: MakeWorkerAt, connects: Callable[[], int]) -> None:
    """The race at reconnect, made deterministic: a call's frame is built while the socket has no limit (the engine
    names none), and started once a socket with a limit replaced it."""
    with small_limit_served(production_mode=True) as served:
        client = workers(served.url, "w")
        client.register_function("echo", lambda d: d)
        port = int(served.url.rsplit(":", 1)[1])
        function_id, invocation_id, frame, timeout = client._prepare_call({"function_id": "echo", "payload": BIG})
        wait_until(lambda: client.worker_id is not None)
        first_id = client.worker_id
        served.run(served.engine.stop())
        served.engine = small_limit_engine(port)
        served.run(served.engine.start())
        # the new engine's id: "connected" comes with the socket, the id a frame later (the old one meanwhile)
        wait_until(lambda: client.worker_id not in (None, first_id) and client.get_connection_state() == "connected")
        worker_id = client.worker_id
        assert invocation_id is not None
        assert client.trigger({"function_id": "echo", "payload": "fits", "timeout_ms": 10_000}) == "fits"
        waiter = ThreadWaiter()
        with pytest.raises(InvocationError) as refused:
            client._start_from_outside(client._bridge.post_blocking, invocation_id, function_id, frame, timeout,
                                       waiter)
            waiter.wait(10, lambda: True)
        assert refused.value.code == "message_too_large"
        _still_on(client, worker_id)
        assert connects() == 2
