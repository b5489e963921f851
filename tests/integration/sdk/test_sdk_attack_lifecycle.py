"""Attack Q-R: the SDK's connection life cycle (reconnects, re-registration, calls across outages).

Each test reproduces one fault found by attacking a worker whose engine stalls, dies or comes back; each failed on
the code before its fix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from iii import InitOptions, TriggerAction
from iii.iii import III, register_worker

from .conftest import FAST_RECONNECT, EngineThread, reconnected, wait_until


@pytest.fixture
def client(fake: EngineThread) -> Iterator[III]:
    worker = register_worker(fake.url, InitOptions(worker_name="a", reconnection_config=FAST_RECONNECT))
    yield worker
    worker.shutdown()


def _stall_then_cut(fake: EngineThread, client: III) -> Any:
    """Make ``client``'s socket back up (the engine stops reading and an 8 MiB fire-and-forget call fills the
    buffers), so frames sent from now on stay in the SDK's outbound queue; returns a function that then cuts the
    connection as a killed engine would (no close handshake) and waits until the client noticed."""
    worker = fake.worker(client)

    async def pause() -> None:
        worker.ws.transport.pause_reading()

    fake.run(pause())
    big = {"function_id": "f", "payload": "x" * (8 << 20), "action": TriggerAction.Void()}
    threading.Thread(target=client.trigger, args=(big,), daemon=True).start()
    wait_until(lambda: client._conn._ws is not None and client._conn._ws.transport.get_write_buffer_size() > 0)

    def cut() -> None:
        old = client.worker_id

        async def abort() -> None:
            worker.ws.transport.abort()

        fake.run(abort())
        wait_until(lambda: client.get_connection_state() != "connected" or reconnected(client, old))
        return None

    return cut


def _frame_with(client: III, text: str) -> str | bytes | None:
    """The first queued frame containing ``text`` (None when there is none)."""
    return next((frame for frame, _ in client._conn._backlog if text in str(frame)), None)


def test_a_trigger_unregistered_during_an_outage_stays_unregistered(fake: EngineThread, client: III) -> None:
    # Before: a registration frame still queued when the socket died was sent again after the next connection's
    # replay; the unregister made during the outage was not (the replay covers it), so the trigger came back.
    client.register_function("f", lambda data: data)
    fake.wait_registered("f")
    cut = _stall_then_cut(fake, client)
    first = client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "* * * * * *"}})
    second = client.register_trigger({"type": "cron", "function_id": "f", "config": {"expression": "*/2 * * * * *"}})
    # The first one's frame is being written (the write waits for the stalled engine); the second is queued.
    wait_until(lambda: [frame for frame, _ in client._conn._backlog] == [_frame_with(client, "*/2")])
    old = client.worker_id
    cut()
    second.unregister()
    first.unregister()
    wait_until(lambda: reconnected(client, old))
    fake.wait_registered("f")
    client.list_functions()  # a round trip after the replay: anything queued before it has been handled
    assert fake.worker_triggers() == []
    assert [f["id"] for f in fake.worker(client).frames if f["type"] == "registerfunction"] == ["f"]
