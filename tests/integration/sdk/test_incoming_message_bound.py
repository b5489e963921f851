"""The client reads messages of a bounded size from its engine: 64 MiB, or the engine's own named limit plus room
for its envelope. Past it the connection is closed with 1009 and made again, and the calls in flight say why."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from iii import InitOptions, register_worker
from iii.connection import MAX_INCOMING_MESSAGE_SIZE
from iii.errors import ConnectionLostError
from iii_engine import Engine, EngineConfig
from tests.services import skip_on_external_engine

from .conftest import FAST_RECONNECT, EngineThread, ServedOnThread, reconnected, wait_until


def test_a_message_over_the_bound_closes_the_connection_and_fails_the_calls_in_flight_saying_so(
        fake: EngineThread) -> None:
    owner = register_worker(fake.url, InitOptions(worker_name="owner", reconnection_config=FAST_RECONNECT))
    caller = register_worker(fake.url, InitOptions(worker_name="caller", reconnection_config=FAST_RECONNECT))
    release = threading.Event()
    try:
        owner.register_function("held", lambda _: release.wait(20))
        fake.wait_registered("held")
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                caller.trigger({"function_id": "held", "payload": None, "timeout_ms": 20_000})
            except BaseException as exc:
                outcome.append(exc)

        calling = threading.Thread(target=call)
        calling.start()
        fake.wait_for(lambda: "held" in fake.calls_in_flight())
        old = caller.worker_id
        # (no JSON: the client must not need to read it to refuse it)
        fake.send_to(caller, "x" * (MAX_INCOMING_MESSAGE_SIZE + 1))
        calling.join(10)
        assert not calling.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLostError), outcome
        assert f"over this client's limit of {MAX_INCOMING_MESSAGE_SIZE:,} bytes (1009)" in str(outcome[0])
        wait_until(lambda: reconnected(caller, old))
        release.set()
        # the new connection serves calls
        owner.register_function("echo", lambda d: d)
        fake.wait_registered("echo")
        assert caller.trigger({"function_id": "echo", "payload": 5, "timeout_ms": 5000}) == 5
    finally:
        release.set()
        caller.shutdown()
        owner.shutdown()


@pytest.fixture
def big_limit() -> Iterator[ServedOnThread[Engine]]:
    """Our engine (no modules) that takes messages of up to 96 MiB from its workers."""
    skip_on_external_engine("needs our engine with a large max_message_size")
    config = EngineConfig(host="127.0.0.1", port=0, modules=[], max_message_size=96 * 1024 * 1024)
    with ServedOnThread(lambda: Engine(config=config)) as served:
        yield served


def test_an_engine_naming_a_larger_limit_has_messages_up_to_it_read(big_limit: ServedOnThread[Engine]) -> None:
    owner = register_worker(big_limit.url, InitOptions(worker_name="owner"))
    caller = register_worker(big_limit.url, InitOptions(worker_name="caller"))
    try:
        size = MAX_INCOMING_MESSAGE_SIZE + 4 * 1024 * 1024
        owner.register_function("big", lambda _: "y" * size)
        wait_until(lambda: "big" in {f.function_id for f in caller.list_functions()})
        result = caller.trigger({"function_id": "big", "payload": None, "timeout_ms": 20_000})
        assert isinstance(result, str) and len(result) == size
    finally:
        caller.shutdown()
        owner.shutdown()
