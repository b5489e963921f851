"""The client reads messages of a bounded size from its engine: 1 GiB, or the engine's own named limit plus room
for its envelope. Past it the connection is closed with 1009 and made again, and the calls in flight say why.
(The bound is lowered to 64 MiB here, so that passing it is quick.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from iii import InitOptions, connection, register_worker
from iii.errors import ConnectionLostError
from iii_engine import Engine, EngineConfig
from tests.services import skip_on_external_engine

from .conftest import FAST_RECONNECT, EngineThread, RealEngineThread, ServedOnThread, reconnected, wait_until

MAX_INCOMING_MESSAGE_SIZE = 64 * 1024 * 1024


@pytest.fixture(autouse=True)
def lower_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "MAX_INCOMING_MESSAGE_SIZE", MAX_INCOMING_MESSAGE_SIZE)


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


def test_an_engines_own_answer_larger_than_what_it_takes_from_a_worker_is_read(
        real: RealEngineThread, monkeypatch: pytest.MonkeyPatch) -> None:
    # The re-attack's case at the default bound: registrations each under the engine's 4 MiB limit, whose list is
    # larger; at a first bound of 64 MiB, list_functions failed with 1009 and took an unrelated call with it.
    monkeypatch.setattr(connection, "MAX_INCOMING_MESSAGE_SIZE", 1024 * 1024 * 1024)
    owner = register_worker(real.url, InitOptions(worker_name="owner"))
    try:
        description = "d" * (3 * 1024 * 1024)

        def listed() -> int:
            return len([f for f in owner.list_functions() if f.function_id.startswith("f")])

        # 72 MiB of descriptions, in steps the outbound queue (64 MiB) takes
        for step in range(3):
            for n in range(8 * step, 8 * step + 8):
                owner.register_function(f"f{n}", lambda d: d, description=description)
            wait_until(lambda step=step: listed() == 8 * step + 8, 30)  # type: ignore[misc]
    finally:
        owner.shutdown()
